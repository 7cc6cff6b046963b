"""metrics.json (+ training log, importance scores) -> report.md and PNG plots people read."""
from __future__ import annotations

import json
import math
from pathlib import Path


from minitron.distill.config import distill_words
from minitron.errors import pyplot, require
from minitron.io import read_json, read_jsonl
from minitron.importance import Scores
from minitron.prune import PruneConfig
from minitron.tasks import main_score


MODELS = ("teacher", "pruned", "distilled")


def plot_training(log: list[dict], metrics: dict, out: Path, objective: str = "distillation loss",
                  validation: str = "dev windows") -> Path | None:
    """Two panels against training tokens: the training objective (e.g. KL to the teacher) and the cross-entropy on
    the run's validation windows (the dev split: `validation` says how many), with the teacher's and the pruned
    model's test loss as lines for scale. They are different quantities, so they get separate axes."""
    train = [(r["tokens"], r["loss"]) for r in log if "loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in log if r.get("val_loss") is not None]
    if not train:
        return None
    plt, ticker = pyplot(), require("matplotlib.ticker")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(*zip(*train), lw=1, alpha=0.8)
    left.set_title(f"training objective ({objective})", fontsize=10)
    left.set_ylabel("nats/token")
    if val:
        right.plot(*zip(*val), "o-", label="student")
    for name, style in (("teacher", "--"), ("pruned", ":")):
        if metrics.get(name, {}).get("test_loss") is not None:
            right.axhline(metrics[name]["test_loss"], ls=style, c="gray", label=f"{name} (test split)")
    right.set_title(f"student's cross-entropy on {validation}", fontsize=10)
    right.set_ylabel("nats/token")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))  # 100k, 1.5M: labels that fit
        ax.xaxis.set_major_locator(ticker.MaxNLocator(6))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_importance(scores_dir: Path, out: Path) -> Path | None:
    """Importance per layer and kind: mean head scores per layer (of a hybrid's recurrent layers, their heads'), mean
    MLP-neuron scores, Block Influence, hidden channels."""
    if not (scores_dir / "scores.safetensors").is_file():
        return None
    scores = Scores.load(scores_dir)
    if "activation" not in scores.criteria():
        return None
    w = PruneConfig(criterion="activation").width(scores)
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    # 0 in a hybrid's other layers: Mamba-2's and Gated DeltaNet's heads, short convolutions' channels
    recurrent = next((w[unit] for unit in ("mamba", "delta", "conv") if unit in w), None)
    heads = w["heads"].mean(1) + (recurrent.mean(1) if recurrent is not None else 0)
    panels = [(axes[0, 0], heads, "attention heads (recurrent units in recurrent layers): mean importance"
               if recurrent is not None else "attention heads: mean importance", "layer"),
              (axes[0, 1], w["mlp"].flatten(1).mean(1),  # a mixture of experts: over every expert's neurons
               f"{'experts' if w['mlp'].dim() == 3 else 'MLP'} neurons: mean importance", "layer"),
              (axes[1, 0], scores.layer("bi"), "Block Influence (1 - cos)", "layer")]
    for ax, values, title, xlabel in panels:
        ax.bar(range(len(values)), values.tolist())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
    hidden = w["hidden"].sort(descending=True).values
    axes[1, 1].plot(hidden.tolist())
    axes[1, 1].set_yscale("log")
    axes[1, 1].set_title("hidden channels, sorted (log scale)", fontsize=10)
    axes[1, 1].set_xlabel("channel rank")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


LAYER_CRITERIA = {"block": "the contiguous block whose removal raises the LM loss least",
                  "loss": "the layers whose removal raises the LM loss least", "bi": "the lowest Block Influence",
                  "random": "chosen at random"}


def pruning_words(pruning: dict) -> str:
    """How pruning.json says the model was pruned: width criterion (and aggregation), dropped layers."""
    how = pruning["prune"]
    words = f"width by {how['criterion']} importance"
    if how["criterion"] == "activation":
        scores = {"pooled": "; hidden channels pooled over every norm", "attn": "; heads before o_proj"}
        extra = "".join(scores.get(how[k], "") for k in ("hidden_score", "head_score"))
        words += f" ({how['seq_agg']} over the sequence, {how['batch_agg']} over the batch{extra})"
    drop = pruning.get("dropped_layers") or []
    if drop:
        why = "given explicitly" if how["drop_layers"] else LAYER_CRITERIA.get(how["layer_criterion"], "")
        words += f"; decoder layers {', '.join(map(str, drop))} removed ({why})"
    return words


def recipe_sentence(run: Path, metrics: dict) -> str:
    """What ran, read from the files the stages wrote (pruning.json, train_config.json, stages.json)."""
    pruning = read_json(run / "pruned" / "pruning.json")
    training = read_json(run / "distill" / "train_config.json")
    how = f" ({pruning_words(pruning)})" if pruning else ""
    loss = f" ({distill_words(training)})" if training else ""
    return f"Teacher `{metrics['teacher_spec']}` pruned to {metrics['target_desc']}{how}, then distilled on " \
           f"{metrics['tokens']:,} tokens{loss}."


def _row(name: str, m: dict, held_out: list[str]) -> str:
    def fmt(key, spec):
        return format(m[key], spec) if m.get(key) is not None else "–"

    def loss(where):
        return f"{fmt(f'{where}_loss', '.3f')} ± {fmt(f'{where}_ci95', '.3f')}" if m.get(f"{where}_loss") else "–"

    def kl(where):
        return f"{fmt(f'{where}_kl', '.3f')} ± {fmt(f'{where}_kl_ci95', '.3f')}" if m.get(f"{where}_kl") else "–"
    cells = [f"{loss(w)} | {kl(w)}" for w in held_out]
    return f"| {name} | {fmt('params', ',')} | {' | '.join(cells)} | {fmt('gen_tokens_per_s', '.1f')} |"


HELD_OUT = {"test": "test split", "ood": "out-of-domain"}


def results_table(metrics: dict, tasks: dict | None) -> list[str]:
    """Teacher, pruned and distilled side by side on every measure, with the share of the gap distillation closed."""
    held_out = list(metrics["held_out"])
    head = " | ".join(f"{HELD_OUT[w]} loss | {HELD_OUT[w]} KL" for w in held_out)
    lines = [f"| model | parameters | {head} | generation tokens/s |", "|---" * (3 + 2 * len(held_out)) + "|"]
    names = [("teacher", "teacher"), ("pruned", "pruned (no training)"), ("distilled", "distilled")]
    if metrics.get("original_teacher"):
        names.insert(1, ("original_teacher", "teacher before correction"))
    lines += [_row(label, metrics.get(name, {}), held_out) for name, label in names]
    closed, ci = metrics.get("gap_closed", {}), metrics.get("gap_closed_ci95", {})
    cells = [f"{pct_ci(closed.get(w), ci.get(w))} | {pct_ci(closed.get(f'{w}_kl'), ci.get(f'{w}_kl'))}"
             for w in held_out]
    lines += [f"| gap closed by distillation | | {' | '.join(cells)} | |", ""]
    for w in held_out:
        info = metrics["held_out"][w]
        lines.append(f"- {HELD_OUT[w]}: {info['tokens']:,} tokens in {info['windows']} windows of {info['seq_len']} "
                     f"spread over {info['documents']} of its {info['split_documents']} documents"
                     + (" (the King James Bible, which no training corpus of minitron's holds)" if w == "ood" else ""))
    if tasks:
        mean = tasks["mean_accuracy"]
        lines.append(f"- benchmarks (multiple choice, mean accuracy): teacher {mean['teacher']:.3f}, pruned "
                     f"{mean['pruned']:.3f}, distilled {mean['distilled']:.3f}; gap closed "
                     f"{pct_ci(tasks.get('gap_closed'), tasks.get('gap_closed_ci95'))}"
                     + paired_text(tasks.get("paired", {})))
    return lines + ["", "Loss: cross-entropy in nats per token, ± the half-width of its 95% interval over the windows. "
                    "KL: KL(teacher ‖ model) per token on the same windows. Gap closed: (pruned − distilled) / "
                    "(pruned − teacher), or for KL 1 − distilled / pruned, ± its 95% interval over the windows.", ""]


def paired_text(paired: dict[str, dict]) -> str:
    """The paired benchmark differences (tasks.json's "paired") as a clause of the report's benchmarks line, e.g.
    '; distilled − pruned +0.040 ± 0.081, distilled − teacher −0.087 ± 0.075 (paired over the same 150 ...)'."""
    if not paired:
        return ""
    parts = [f"{name.replace('-', ' − ')} {p['difference']:+.3f} ± {p['ci95']:.3f}" for name, p in paired.items()]
    documents = next(iter(paired.values()))["documents"]
    return f"; {', '.join(parts)} (paired over the same {documents} documents, 95% interval)"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x + 0.0:.0%}"  # + 0.0: no "-0%"


def pct_ci(x: float | None, half: float | None) -> str:
    """A share with the half-width of its 95% interval, "76% ± 5%" (the share alone where there is none)."""
    return _pct(x) + (f" ± {half:.0%}" if x is not None and half is not None and not math.isnan(half) else "")


def benchmark_lines(saved: dict | None) -> list[str]:
    """The section of RUN/tasks.json (`compress --eval.tasks`): `task_table` with what it measured."""
    if not saved:
        return []
    limit = f" on the first {saved['limit']} documents of each task" if saved.get("limit") else ""
    return ["## Benchmarks", "", f"Zero-shot, through lm-evaluation-harness{limit}: accuracy ± standard error for the "
            "multiple-choice tasks (acc_norm: normalised by the choices' lengths; chance: guessing at random), word "
            "perplexity for kjv (lower is better).", "", *task_table(saved), ""]


def task_table(tasks: dict) -> list[str]:
    """The benchmarks of tasks.json (or of any {"results": {model: run_tasks results}, "mean_accuracy": {model:
    mean}}): each task's main metric ± its standard error (lm-eval's), the models side by side in their order there
    (tasks.json's: teacher, pruned, distilled), with the accuracy a uniform guess expects (– for a perplexity task)
    and the mean of the multiple-choice tasks."""
    models = list(tasks["results"])
    lines = ["| task | documents | chance | " + " | ".join(models) + " |", "|---" * (3 + len(models)) + "|"]
    for task, first in tasks["results"][models[0]].items():
        metric = main_score(task, first)[0]
        cells = []
        for m in models:
            r = tasks["results"][m][task]
            err = r.get(f"{metric}_stderr")
            cells.append(f"{r[metric]:.3f}" + (f" ± {err:.3f}" if err is not None else ""))
        chance = f"{first['chance']:.3f}" if first.get("chance") is not None else "–"
        lines.append(f"| {task} ({metric}) | {first['samples']} | {chance} | " + " | ".join(cells) + " |")
    if "mean_accuracy" in tasks:
        chances = [r["chance"] for r in tasks["results"][models[0]].values() if r.get("chance") is not None]
        chance = f"{sum(chances) / len(chances):.3f}" if chances else "–"
        lines.append(f"| mean of the multiple-choice tasks | | {chance} | "
                     + " | ".join(f"{tasks['mean_accuracy'][m]:.3f}" for m in models) + " |")
    return lines


def stage_seconds(metrics: dict, tasks: dict | None) -> dict:
    """Each stage's wall seconds: metrics.json's (score to evaluate) and the benchmarks' from tasks.json."""
    return {**metrics.get("timings_s", {}), **({"tasks": tasks["seconds"]} if tasks and "seconds" in tasks else {})}


def write_report(run: Path) -> Path:
    """report.md (and plots) for a run directory holding metrics.json."""
    metrics = json.loads((run / "metrics.json").read_text())
    log = run / "distill" / "metrics.jsonl"
    train_config = run / "distill" / "train_config.json"
    objective = json.loads(train_config.read_text())["loss"] if train_config.is_file() else "distillation loss"
    records = [r for _, r in read_jsonl(log)] if log.is_file() else []
    dev = read_json(run / "distill" / "train_config.json") or {}
    validation = f"the dev split ({dev.get('eval_seqs', '?')} windows of {dev.get('seq_len', '?')} tokens)"
    training = plot_training(records, metrics, run / "loss.png", objective.replace("_", " "), validation)
    importance = plot_importance(run / "scores" if (run / "scores").is_dir() else run / "search" / "scores",
                                 run / "importance.png")
    t, d = metrics.get("teacher", {}), metrics.get("distilled", {})
    tasks = read_json(run / "tasks.json")
    ood = " and of out-of-domain English" if "ood" in metrics["held_out"] else ""
    lines = [f"# minitron run `{run.name}`", "", recipe_sentence(run, metrics) + " Every model is measured on the same "
             f"windows of the test split (documents the distillation never saw){ood}; "
             f"generation speed is greedy decoding on {metrics['device']}.", "", *results_table(metrics, tasks)]
    if metrics.get("correction_tokens"):
        lines += [f"The teacher was first corrected (fine-tuned with cross-entropy) on "
                  f"{metrics['correction_tokens']:,} tokens of the data; the table's teacher is the corrected one, "
                  f"which was scored, pruned and distilled from. Tokens in all: "
                  f"{metrics['correction_tokens'] + metrics['tokens']:,}.", ""]
    if metrics.get("stages", 1) > 1:
        lines += [f"The target was reached in {metrics['stages']} rounds of pruning and distillation (RUN/stage-K), "
                  f"their tokens together {metrics['tokens']:,}; the pruned model and the curves below are the last "
                  "round's.", ""]
    if d.get("params") and t.get("params"):
        lines += [f"The student has {d['params'] / t['params']:.0%} of the teacher's parameters and generates "
                  f"{d['gen_tokens_per_s'] / t['gen_tokens_per_s']:.2f}× as fast here.", ""]
    lines += benchmark_lines(tasks)
    if (run / "search" / "search.md").is_file():  # the shape came from `minitron search`
        table = (run / "search" / "search.md").read_text().split("\n", 2)[2]
        plot = ["", "![rank by zero-shot loss against rank after distillation](search/search.png)", ""] \
            if (run / "search" / "search.png").is_file() else [""]
        lines += ["## Shape search", "", table.rstrip(), *plot]
    if training:
        lines += ["## Training", "", f"![loss against tokens]({training.name})", ""]
    if importance:
        lines += ["## Importance", "", f"![importance per layer and kind]({importance.name})", ""]
    if metrics.get("prompt"):
        lines += ["## One prompt, three models", "", f"Chat prompt: *{metrics['prompt']}* (each model's own chat "
                  f"template, greedy); then the continuation of the plain text "
                  f"*{metrics.get('continuation_prompt', '')}* (greedy, repetition penalty 1.3).", ""]
        for name in MODELS:
            m = metrics.get(name, {})
            if m.get("sample") is not None:
                reply = m["sample"].strip() or "(ended its turn without a word)"
                lines += [f"**{name}** — chat reply:", "", "```", reply, "```", ""]
            if m.get("continuation") is not None:
                lines += [f"**{name}** — continuation:", "", "```", m["continuation"].strip(), "```", ""]
    timings = stage_seconds(metrics, tasks)
    if timings:
        lines += ["## Time", "", " · ".join(f"{k} {v:.0f} s" for k, v in timings.items()) +
                  f" · all {sum(timings.values()) / 60:.1f} min (each stage as timed by the invocation that "
                  "finished it)", ""]
    path = run / "report.md"
    path.write_text("\n".join(lines))
    return path
