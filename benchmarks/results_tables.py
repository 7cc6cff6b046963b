"""The tables in docs/ and the README that are generated from a JSON a run wrote, never typed: each sits between
two HTML comments that name its renderer and its JSON,

    <!-- generated: demo docs/demo/metrics.json -->
    | model | ... |
    <!-- end generated -->

and `python benchmarks/results_tables.py` rewrites every such block from its JSON (tests/test_docs.py checks that each
block is what its JSON renders to, so a figure in the docs is always the one measured).

Renderers:
- demo: compress's metrics.json (and the tasks.json beside it): teacher, pruned and distilled on the test split, on
  out-of-domain English, KL to the teacher and the benchmarks, with the share of the gap distillation closed.
- tasks: compress's tasks.json: each benchmark task's accuracy ± standard error for the three models, and their means.
- benchmarks: a tasks.json-like JSON of benchmarks/demo_benchmarks.py: `tasks`' table with the paired differences.
- eval_tasks: a `minitron eval --tasks ... --out` JSON: one model's tasks, as `tasks` shows them.
- corpus: docs/data.json (benchmarks/corpus_table.py): each part of the corpora, its source, licence, tokens and share.
- search: search.json: the distilled candidates and the best zero-shot ones, by final rank.
- seeds: a JSON of benchmarks/recipe.py: each row against its baseline, the paired differences over seeds with
  their 95% intervals and the verdict (the benchmark's own table).
- corpus_seeds: benchmarks/corpus_mix.py's JSON: each corpus against the baseline's, likewise.
- demo_corpus: benchmarks/demo_corpus.py's JSON: the demo on the default corpus against the demo on the documentation.
- search_speed, score_speed, throughput, tasks_speed, generate_speed: those benchmarks' own tables; scaling:
  benchmarks/scaling.py's table of student quality against distillation tokens, with its fit; llama_cpp_check:
  llama.cpp's greedy tokens against transformers' for a tiny model of every exported family (`--tiny --json`);
  gguf_convert: a GGUF teacher's reading, minitron's against transformers', in time and memory.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from minitron.report import paired_text, pct_ci, stage_seconds, task_table

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (\w+) (\S+) -->\n)(.*?)(<!-- end generated -->)", re.S)
WHERE = {"test": "test split", "ood": "out-of-domain (KJV)"}


def render_demo(metrics: dict, tasks: dict | None) -> str:
    """Teacher, pruned and distilled side by side: loss ± 95% interval and KL on each held-out set, mean benchmark
    accuracy; the last row the share of the teacher–pruned gap distillation closed."""
    held_out = list(metrics["held_out"])
    head = [f"{WHERE[w]} loss" for w in held_out] + [f"{WHERE[w]} KL" for w in held_out]
    head += ["benchmarks (mean accuracy)"] if tasks else []
    lines = ["| model | parameters | " + " | ".join(head) + " |", "|---" * (2 + len(head)) + "|"]
    for name, label in (("teacher", "teacher"), ("pruned", "pruned, no training"), ("distilled", "distilled")):
        m = metrics[name]
        cells = [f"{m[f'{w}_loss']:.3f} ± {m[f'{w}_ci95']:.3f}" for w in held_out]
        cells += [f"{m[f'{w}_kl']:.3f} ± {m[f'{w}_kl_ci95']:.3f}" if f"{w}_kl" in m else "–" for w in held_out]
        cells += [f"{tasks['mean_accuracy'][name]:.3f}"] if tasks else []
        lines.append(f"| {label} | {m['params']:,} | " + " | ".join(cells) + " |")
    closed, ci = metrics["gap_closed"], metrics.get("gap_closed_ci95", {})
    cells = [pct_ci(closed.get(k), ci.get(k)) for k in [*held_out, *(f"{w}_kl" for w in held_out)]]
    cells += [pct_ci(tasks.get("gap_closed"), tasks.get("gap_closed_ci95"))] if tasks else []
    lines.append("| gap closed by distillation | | " + " | ".join(cells) + " |")
    lines.append("")
    for w in held_out:
        info = metrics["held_out"][w]
        lines.append(f"{WHERE[w]}: {info['tokens']:,} tokens, {info['windows']} windows of {info['seq_len']} spread over "
                     f"{info['documents']} of its {info['split_documents']} documents.")
    if tasks:
        n = {t: r["samples"] for t, r in tasks["results"]["teacher"].items()}
        lines.append("Benchmarks: " + ", ".join(f"{t} ({k} documents)" for t, k in n.items()) + ", zero-shot, "
                     "through lm-evaluation-harness" + paired_text(tasks.get("paired", {})) + ".")
    timings = stage_seconds(metrics, tasks)
    if timings:
        lines.append(f"Distilled on {metrics['tokens']:,} tokens on {metrics['device']}; wall time by stage: "
                     + ", ".join(f"{k} {v:,.0f} s" for k, v in timings.items())
                     + f"; all stages {sum(timings.values()) / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def render_tasks(tasks: dict) -> str:
    """tasks.json's table, as the run's report shows it (`minitron.report.task_table`)."""
    return "\n".join(task_table(tasks)) + "\n"


def render_benchmarks(tasks: dict) -> str:
    """`render_tasks`' table with the distilled model's paired differences from the other two below it, and the
    machine and command of a benchmark's JSON (benchmarks/demo_benchmarks.py)."""
    paired = paired_text(tasks.get("paired", {})).removeprefix("; ")
    lines = [render_tasks(tasks), f"Paired differences of the mean accuracy: {paired}." if paired else ""]
    if "command" in tasks:
        lines.append(f"{tasks['machine']}; `{tasks['command']}`, {tasks['seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def render_eval_tasks(metrics: dict) -> str:
    """The tasks of one model's `minitron eval --tasks ... --out` JSON, as `render_tasks` shows them."""
    return render_tasks({"results": {metrics["model"]: metrics["tasks"]}})


def render_corpus(data: dict, mix: str = "default") -> str:
    """Each part of the corpora: its kind, source, licence, documents and tokens per split, and its share of the
    `mix` with how many times over its training tokens that share reads it."""
    parts, shares = data["parts"], data["mixes"][mix]
    train_total = sum(p["splits"]["train"]["tokens"] for p in parts.values())
    lines = [f"| part | kind | text | package | licence | documents | train tokens | dev tokens | test tokens | "
             f"share of `{mix}` | times read |", "|---" * 11 + "|"]
    for name, p in parts.items():
        s = p["splits"]
        share = shares.get(name)
        passes = "–" if share is None else f"{share * train_total / s['train']['tokens']:.2f}"
        lines.append(f"| {name} | {p['kind']} | {p['about']} | {p['package']} | {p['licence']} | "
                     f"{sum(v['documents'] for v in s.values()):,} | {s['train']['tokens']:,} | "
                     f"{s['dev']['tokens']:,} | {s['test']['tokens']:,} | {pct(share)} | {passes} |")
    return "\n".join(lines) + "\n"


def render_search(search: dict, shown: int = 8) -> str:
    """The candidates by final rank: every distilled one, then the best of the rest by zero-shot loss."""
    rows = search["candidates"]
    keep = [r for r in rows if r["distilled_loss"] is not None or r["error"]]
    keep += [r for r in rows if r not in keep][:max(0, shown - len(keep))]
    lines = ["| rank | hidden / heads / MLP / layers | parameters | zero-shot loss (rank) | distilled loss |",
             "|---|---|---|---|---|"]
    for r in keep:
        s = r["sizes"]
        after = f"{r['distilled_loss']:.3f}" if r["distilled_loss"] is not None else (r["error"] or "–")
        lines.append(f"| {r['rank']} | {s['hidden_size']} / {s['num_attention_heads']} / {s['intermediate_size']} / "
                     f"{s['num_hidden_layers']} | {r['params']:,} | {r['zero_shot_loss']:.3f} ({r['zero_shot_rank']}) "
                     f"| {after} |")
    return "\n".join(lines) + "\n"


def benchmark(name: str):
    """Another benchmark script of this folder, as a module (the benchmarks are scripts, not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x + 0.0:.0%}"


def render(kind: str, source: Path) -> str:
    """A block's content from its JSON."""
    if kind == "demo":
        tasks = source.with_name("tasks.json")
        return render_demo(json.loads(source.read_text()), json.loads(tasks.read_text()) if tasks.is_file() else None)
    if kind in ("tasks", "benchmarks", "search", "eval_tasks", "corpus"):
        return globals()[f"render_{kind}"](json.loads(source.read_text()))
    if kind == "seeds":
        saved = json.loads(source.read_text())
        return "\n".join(benchmark("recipe").paired_table(saved["rows"], saved["baseline"])) + "\n"
    if kind in ("search_speed", "score_speed", "throughput", "tasks_speed", "generate_speed", "scaling",
                "llama_cpp_check", "gguf_convert"):
        return benchmark(kind).table(json.loads(source.read_text()))
    if kind == "throughput_sentence":
        return benchmark("throughput").sentence(json.loads(source.read_text()))
    if kind == "demo_corpus":
        return benchmark("demo_corpus").tables(json.loads(source.read_text()))
    if kind == "corpus_seeds":
        saved = json.loads(source.read_text())
        return "\n".join(benchmark("corpus_mix").paired_table(saved, saved["baseline"])) + "\n"
    raise ValueError(f"no renderer {kind!r}")


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(renderer, JSON path, current content) of every generated block of a document."""
    return [(m.group(2), m.group(3), m.group(4)) for m in BLOCK.finditer(text)]


def regenerate(path: Path) -> bool:
    """Rewrite every generated block of `path` from its JSON; whether anything changed."""
    text = path.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + render(m.group(2), REPO / m.group(3)) + m.group(5), text)
    if new != text:
        path.write_text(new)
    return new != text


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


if __name__ == "__main__":
    changed = [p for p in documents() if regenerate(p)]
    print("rewrote " + (", ".join(str(p.relative_to(REPO)) for p in changed) or "nothing"), file=sys.stderr)
