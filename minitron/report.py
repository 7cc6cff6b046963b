"""metrics.json (+ training log, importance scores) -> report.md and PNG plots people read."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from minitron.io import read_jsonl
from minitron.importance import Scores

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODELS = ("teacher", "pruned", "distilled")


def plot_training(log: list[dict], metrics: dict, out: Path) -> Path | None:
    """Training loss and validation loss against tokens, with the teacher's and pruned model's loss as lines."""
    train = [(r["tokens"], r["loss"]) for r in log if "loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in log if r.get("val_loss") is not None]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), lw=1, alpha=0.7, label="training loss (distillation objective)")
    if val:
        ax.plot(*zip(*val), "o-", label="student validation LM loss")
    for name, style in (("teacher", "--"), ("pruned", ":")):
        if metrics.get(name, {}).get("val_loss") is not None:
            ax.axhline(metrics[name]["val_loss"], ls=style, c="gray", label=f"{name} validation LM loss")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_importance(scores_dir: Path, out: Path) -> Path | None:
    """Importance per layer and kind: mean head and MLP-neuron scores per layer, Block Influence, hidden channels."""
    if not (scores_dir / "scores.safetensors").is_file():
        return None
    scores = Scores.load(scores_dir)
    if "activation" not in scores.criteria():
        return None
    w = scores.width("activation")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    panels = [(axes[0, 0], w["heads"].mean(1), "attention heads: mean importance", "layer"),
              (axes[0, 1], w["mlp"].mean(1), "MLP neurons: mean importance", "layer"),
              (axes[1, 0], scores.layer("block_influence"), "Block Influence (1 - cos)", "layer")]
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


def _row(name: str, m: dict) -> str:
    def fmt(key, spec):
        return format(m[key], spec) if m.get(key) is not None else "–"
    return (f"| {name} | {fmt('params', ',')} | {fmt('val_loss', '.3f')} | {fmt('ppl', '.1f')} | "
            f"{fmt('gen_tokens_per_s', '.1f')} |")


def write_report(run: Path) -> Path:
    """report.md (and plots) for a run directory holding metrics.json."""
    metrics = json.loads((run / "metrics.json").read_text())
    log = run / "distill" / "metrics.jsonl"
    training = plot_training([r for _, r in read_jsonl(log)] if log.is_file() else [], metrics, run / "loss.png")
    importance = plot_importance(run / "scores", run / "importance.png")
    t, p, d = (metrics.get(k, {}) for k in MODELS)
    lines = [f"# minitron run `{run.name}`", "",
             f"Teacher `{metrics['teacher_spec']}` pruned to {metrics['target_desc']} by activation importance, then "
             f"distilled on {metrics['tokens']:,} tokens (logit forward KL). Every model is evaluated on the same "
             f"{metrics['val_tokens']:,} held-out tokens; generation speed is greedy decoding on {metrics['device']}.", "",
             "| model | parameters | validation loss | perplexity | generation tokens/s |", "|---|---|---|---|---|",
             _row("teacher", t), _row("pruned (no training)", p), _row("distilled", d), ""]
    if metrics.get("correction_tokens"):
        lines[-1:-1] = [_row("teacher before correction", metrics.get("original_teacher", {}))]
        lines += [f"The teacher was first corrected (fine-tuned with cross-entropy) on "
                  f"{metrics['correction_tokens']:,} tokens of the data; the table's teacher is the corrected one, "
                  f"which was scored, pruned and distilled from. Tokens in all: "
                  f"{metrics['correction_tokens'] + metrics['tokens']:,}.", ""]
    if metrics.get("stages", 1) > 1:
        lines += [f"The target was reached in {metrics['stages']} rounds of pruning and distillation (RUN/stage-K), "
                  f"their tokens together {metrics['tokens']:,}; the pruned model and the curves below are the last "
                  "round's.", ""]
    if p.get("val_loss") and d.get("val_loss") and t.get("val_loss"):
        gap_closed = (p["val_loss"] - d["val_loss"]) / max(p["val_loss"] - t["val_loss"], 1e-9)
        lines += [f"Distillation lowered the student's validation loss from {p['val_loss']:.3f} to {d['val_loss']:.3f} "
                  f"(the teacher's is {t['val_loss']:.3f}): {gap_closed:.0%} of the gap that pruning opened is closed. "
                  f"The student has {d['params'] / t['params']:.0%} of the teacher's parameters and generates "
                  f"{d['gen_tokens_per_s'] / t['gen_tokens_per_s']:.2f}× as fast here.", ""]
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
    timings = metrics.get("timings_s", {})
    if timings:
        lines += ["## Time", "", " · ".join(f"{k} {v:.0f} s" for k, v in timings.items()) +
                  " (each stage as timed by the invocation that finished it)", ""]
    path = run / "report.md"
    path.write_text("\n".join(lines))
    return path
