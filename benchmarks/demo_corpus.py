"""The demo distilled on the default corpus (the general mix) against the same demo distilled on the documentation
alone: `minitron compress --config configs/demo.yaml` twice, the same teacher, shape, recipe and token budget, the
corpus the only difference (calibration included). Both students, the teacher and the pruned model are then
measured side by side on the same windows: the documentation's test split, the general mix's test split and the
King James Bible (out-of-domain English no corpus holds), with the KL from the teacher on each test split; each
student's benchmark accuracy is its run's own (tasks.json). The paired difference general − docs is over the same
windows, with its 95% t-interval.

    python benchmarks/demo_corpus.py [--general-run runs/smollm2-135m-half] [--docs-run runs/demo-docs]

The general run is `make demo`'s own (configs/demo.yaml's out). A finished run is reused (compress resumes with
`--resume`); about 35 minutes per run on 2 CPU cores in fp32.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from minitron.data import TokenData, default_data
from minitron.eval import log_probs, ood_windows
from minitron.load import load_model, load_tokenizer
from minitron.numerics import label_weights, windows_in_batches
from minitron.pipeline import mean_accuracy
from minitron.report import pct_ci, task_table
from minitron.stats import fmt_interval, paired, ratio_ci
from minitron.tasks import paired_benchmarks

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
CORPORA = {"docs": "docs", "general": "default"}  # a run's name: the corpus it is distilled on (`--corpus`)
MODELS = ("teacher", "pruned docs", "docs", "pruned general", "general")  # pruned X: run X's pruned model
LABELS = {"teacher": "teacher", "pruned docs": "docs: pruned", "docs": "docs: student",  # the tables' headers
          "pruned general": "general: pruned", "general": "general: student"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--general-run", type=Path, default=Path(DEMO["out"]), help="the demo's run (`make demo`)")
    p.add_argument("--docs-run", type=Path, default=Path("runs/demo-docs"), help="the demo on the documentation")
    p.add_argument("--out", type=Path, default=Path("docs/demo_corpus.md"))
    args = p.parse_args()
    data = {name: default_data("default", corpus=spec) for name, spec in CORPORA.items()}
    runs = {"docs": args.docs_run, "general": args.general_run}
    for name, spec in CORPORA.items():  # the general run is `make demo`'s own command, on the default corpus
        compress(runs[name], data[name] if spec != "default" else None)
    seq_len, n = DEMO["distill"]["seq_len"], DEMO["eval"]["tokens"] // DEMO["distill"]["seq_len"]
    windows = {f"{name} test": TokenData.open(path).spread("test", n, seq_len) for name, path in data.items()}
    windows["out-of-domain"] = ood_windows(load_tokenizer("default"), seq_len, n)
    models = {"teacher": load_model("default", device="cpu")}
    for name in CORPORA:
        models[f"pruned {name}"], models[name] = load_model(runs[name] / "pruned"), load_model(runs[name] / "student")
    models = {name: models[name] for name in MODELS}
    results = {"settings": {"config": "configs/demo.yaml", "windows": n, "seq_len": seq_len, "corpora": CORPORA,
                            "runs": {name: str(run) for name, run in runs.items()}},
               "measures": {where: per_window(models, w) for where, w in windows.items()},
               "tasks": {name: json.loads((runs[name] / "tasks.json").read_text()) for name in CORPORA}}
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(render(results) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


def compress(run: Path, data: Path | None) -> None:
    """The demo's compress on one corpus (resumed; a finished run is kept as it is)."""
    if not (run / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "minitron", "compress", "--config", str(REPO / "configs" / "demo.yaml"),
                        "--out", str(run), "--resume", *(["--data", str(data)] if data else [])], check=True)


@torch.no_grad()
def per_window(models: dict, windows) -> dict:
    """Each model's loss per window (mean over its labels) and, but for the teacher, its KL from the teacher."""
    out = {name: {"loss": [], "kl": []} for name in models}
    for batch in windows_in_batches(windows.batch, 4):
        ids, weight = batch["input_ids"], label_weights(batch)
        logp = {name: log_probs(m, ids) for name, m in models.items()}
        for name in models:
            ce = -logp[name].gather(-1, ids[:, 1:, None]).squeeze(-1)
            out[name]["loss"] += ((ce * weight).sum(1) / weight.sum(1)).tolist()
            if name != "teacher":
                kl = (logp["teacher"].exp() * (logp["teacher"] - logp[name])).sum(-1)
                out[name]["kl"] += ((kl * weight).sum(1) / weight.sum(1)).tolist()
    return out


def render(results: dict) -> str:
    s = results["settings"]
    return "\n".join(["# The demo on the general mix against the documentation alone", "",
                      f"`{s['config']}` run twice by `benchmarks/demo_corpus.py`: distilled on the default corpus "
                      "(`general`) and on the documentation alone (`docs`), everything else the same. Measured side "
                      f"by side on {s['windows']} windows of {s['seq_len']} tokens spread over each test split and "
                      "over the King James Bible. Mean loss (nats per token) ± the 95% interval over windows; "
                      "*closed* is the share of the teacher–pruned gap distillation closed (each student against its "
                      "own run's pruned model); the difference is general − docs over the same windows (negative: "
                      "the general student is better).", "",
                      "Reproduce: `.venv/bin/python benchmarks/demo_corpus.py`", "", tables(results)])


def tables(results: dict) -> str:
    """The losses and KL side by side with the paired difference, then the benchmarks."""
    lines = ["| measured on | " + " | ".join(LABELS[n] for n in MODELS) + " | closed: docs | closed: general | "
             "general − docs |", "|---|---|---|---|---|---|---|---|---|"]
    for where, m in results["measures"].items():
        for key, label in (("loss", where), ("kl", f"{where}, KL from the teacher")):
            cells = [cell(m[name][key]) if m[name][key] else "0" for name in MODELS]
            closed = [pct_ci(*closed_share(m, key, name)) for name in CORPORA]
            lines.append(f"| {label} | " + " | ".join(cells + closed) +
                         f" | {fmt_interval(paired(m['general'][key], m['docs'][key]))} |")
    return "\n".join(lines + [""] + benchmark_table(results["tasks"])) + "\n"


def closed_share(m: dict, key: str, name: str) -> tuple[float, float]:
    """The share of the teacher–pruned gap in `key` (loss or KL) that run `name`'s student closed, with the half-width
    of its 95% interval over the windows (the ratio estimator, as the report's)."""
    pruned, student = torch.tensor(m[f"pruned {name}"][key]), torch.tensor(m[name][key])
    top = torch.tensor(m["teacher"]["loss"]) if key == "loss" else torch.zeros_like(pruned)
    return ratio_ci(pruned - student, pruned - top, torch.ones_like(pruned, dtype=torch.bool))


def benchmark_table(tasks: dict) -> list[str]:
    """Each run's own tasks.json: every model's main score per task and its mean, then the students' paired
    differences (each against its own pruned model, and general against docs) over the same documents."""
    rows = {"teacher": tasks["general"]["results"]["teacher"]}
    for name in CORPORA:
        rows[f"pruned {name}"], rows[name] = tasks[name]["results"]["pruned"], tasks[name]["results"]["distilled"]
    table = {"results": {LABELS[n]: rows[n] for n in MODELS},
             "mean_accuracy": {LABELS[n]: mean_accuracy(rows[n]) for n in MODELS}}
    lines = [f"Benchmarks (each run's own `tasks.json`: the main score ± its standard error on the first "
             f"{tasks['docs']['limit']} documents of each task; acc_norm for HellaSwag):", "", *task_table(table)]
    pairs = {f"{n} student − its pruned model": paired_benchmarks(rows[n], rows[f"pruned {n}"]) for n in CORPORA}
    pairs["general student − docs student"] = paired_benchmarks(rows["general"], rows["docs"])
    said = [f"{what} {p['difference']:+.3f} ± {p['ci95']:.3f}" for what, p in pairs.items() if p is not None]
    return lines + (["", f"Paired over the same documents (mean accuracy, 95% interval): {'; '.join(said)}."]
                    if said else [])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def cell(values: list[float]) -> str:
    m = mean(values)
    half = paired(values, [0.0] * len(values))[1]
    return f"{m:.3f} ± {half:.3f}"


if __name__ == "__main__":
    main()
