"""Which importance criterion prunes best? Zero-shot LM loss on the dev split of the real default teacher
(SmolLM2-135M-Instruct) pruned by every width criterion and aggregation, and by three depth criteria,
all from one set of scores computed in one run (the benchmark chooses the default criterion, so it measures on dev,
not on the test split the reports use).

    python benchmarks/pruning_criteria.py [--calib-seqs 64] [--val-seqs 32] [--out docs/pruning_criteria.md]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from minitron.data import TokenData, default_data
from minitron.numerics import lm_loss
from minitron.importance import AGGREGATIONS, CALIB_SEED, Scores, calibration, compute_scores
from minitron.load import load_model, load_tokenizer
from minitron.prune import PruneConfig, apply_plan, check_target, make_plan

WIDTH = dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6)  # 2 query heads per KV group
DROP = 10  # of 30 layers
# (hidden_score, head_score) variants of activation importance beside the default (norms, attn), at (mean, l2)
VARIANTS = [("norms", "o_proj"), ("pooled", "attn"), ("pooled", "o_proj")]
NOTES = "<!-- notes: written by hand, kept when the tables are regenerated -->"


def label(criterion: str, hidden: str, head: str) -> str:
    """activation, or activation with its non-default hidden/head scores named."""
    extra = [f"hidden {hidden}"] * (hidden != "norms") + [f"heads {head}"] * (head != "attn")
    return f"{criterion} ({', '.join(extra)})" if extra else criterion


def evaluate(model, val) -> float:
    return lm_loss(model, val.split(4))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib-seqs", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--layer-loss-seqs", type=int, default=8)
    p.add_argument("--val-seqs", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("docs/pruning_criteria.md"))
    p.add_argument("--scores", type=Path, default=Path("runs/bench/pruning_scores"),
                   help="where the scores are cached (reused when present: delete to recompute)")
    args = p.parse_args()
    torch.manual_seed(0)
    tok, teacher = load_tokenizer("default"), load_model("default")
    data = TokenData.open(default_data("default"))
    val = data.spread("dev", args.val_seqs, args.seq_len).batch["input_ids"]  # selection: the dev split
    batches = calibration("default", tok, None, args.calib_seqs, args.seq_len, 8, seed=CALIB_SEED)
    loss_batches = calibration("default", tok, None, args.layer_loss_seqs, args.seq_len, 8, seed=1235)
    scores, score_s = cached_scores(args, teacher, batches, loss_batches)
    rows = [("teacher (unpruned)", "-", evaluate(teacher, val))]
    width = check_target(teacher.config, WIDTH)
    runs = [("activation", s, b, "norms", "attn") for s in AGGREGATIONS for b in AGGREGATIONS] + \
        [("activation", "mean", "l2", hidden, head) for hidden, head in VARIANTS] + \
        [(c, "-", "-", "norms", "attn") for c in ("wanda", "taylor", "magnitude", "random")]
    for criterion, s, b, hidden, head in runs:
        plan = make_plan(scores, teacher.config, width,
                         PruneConfig(criterion=criterion, seq_agg=s if s != "-" else "mean",
                                     batch_agg=b if b != "-" else "l2", hidden_score=hidden, head_score=head))
        loss = evaluate(apply_plan(copy.deepcopy(teacher), plan), val)
        rows.append((label(criterion, hidden, head), f"seq {s}, batch {b}" if s != "-" else "-", loss))
        print(f"{rows[-1][0]:>10} {rows[-1][1]:>22}  dev loss {loss:.3f}", flush=True)
    depth = check_target(teacher.config, {"num_hidden_layers": 30 - DROP})
    depth_rows = []
    for name, crit in [("Block Influence (10 lowest)", "bi"), ("LM-loss increase (10 lowest)", "loss"),
                       ("best contiguous block of 10", "block"), ("random 10", "random")]:
        plan = make_plan(scores, teacher.config, depth, PruneConfig(layer_criterion=crit))
        loss = evaluate(apply_plan(copy.deepcopy(teacher), plan), val)
        depth_rows.append((name, plan.drop, loss))
        print(f"{name:>30} drop {plan.drop} dev loss {loss:.3f}", flush=True)
    axis_rows = per_axis(teacher, scores, val)
    write_report(args, rows, depth_rows, axis_rows, score_s)


def cached_scores(args, teacher, batches, loss_batches) -> tuple[Scores, float]:
    if (args.scores / "scores.json").is_file():
        scores = Scores.load(args.scores)
        return scores, scores.meta["seconds"]
    t = time.time()
    scores = compute_scores(teacher, batches, ["activation", "wanda", "magnitude", "taylor", "random"],
                            loss_batches, block_sizes=[DROP])
    scores.meta["seconds"] = time.time() - t
    scores.save(args.scores)
    return scores, scores.meta["seconds"]


AXIS_COLUMNS = [("activation", "norms", "attn"), ("activation", "pooled", "o_proj"), ("wanda", "norms", "attn"),
                ("taylor", "norms", "attn"), ("magnitude", "norms", "attn"), ("random", "norms", "attn")]


def per_axis(teacher, scores, val) -> list[tuple[str, str, float]]:
    """Each width axis pruned alone, to see where the criteria differ."""
    rows = []
    for axis, size in WIDTH.items():
        target = check_target(teacher.config, {axis: size})
        for criterion, hidden, head in AXIS_COLUMNS:
            plan = make_plan(scores, teacher.config, target,
                             PruneConfig(criterion=criterion, hidden_score=hidden, head_score=head))
            rows.append((f"{axis}={size}", label(criterion, hidden, head),
                         evaluate(apply_plan(copy.deepcopy(teacher), plan), val)))
            print(f"{rows[-1][0]:>24} {rows[-1][1]:>30} dev loss {rows[-1][2]:.3f}", flush=True)
    return rows


def write_report(args, rows, depth_rows, axis_rows, score_s) -> None:
    teacher_loss = rows[0][2]
    best_random = next(r[2] for r in rows if r[0] == "random")
    lines = [
        "# Pruning criteria on the real default teacher",
        "",
        "Zero-shot (no distillation) dev-split LM loss of SmolLM2-135M-Instruct pruned by each criterion. "
        f"Calibration: {args.calib_seqs} sequences × {args.seq_len} tokens of the default corpus (train split); "
        f"measured on {args.val_seqs} × {args.seq_len} tokens of the dev split (windows spread over the whole "
        "split), the same for every row. "
        f"All scores come from one scoring run ({score_s:.0f} s on this machine's 2 CPU cores).",
        "",
        "Reproduce: `.venv/bin/python benchmarks/pruning_criteria.py` "
        f"(`--calib-seqs {args.calib_seqs} --val-seqs {args.val_seqs}`).",
        "",
        f"## Width: hidden 576→384, MLP 1536→1024, heads 9→6 (2 per KV group)",
        "",
        "| criterion | aggregation | dev loss | perplexity | loss vs random |",
        "|---|---|---|---|---|",
    ]
    for name, agg, loss in rows:
        lines.append(f"| {name} | {agg} | {loss:.3f} | {torch.tensor(loss).exp():.1f} | "
                     f"{'' if name.startswith('teacher') else f'{loss / best_random:.2f}×'} |")
    lines += ["", f"## Depth: drop {DROP} of 30 layers", "", "| criterion | layers dropped | dev loss | perplexity |",
              "|---|---|---|---|"]
    for name, drop, loss in depth_rows:
        lines.append(f"| {name} | {drop} | {loss:.3f} | {torch.tensor(loss).exp():.1f} |")
    lines += ["", "## Each width axis alone", "", "The same scores, one axis pruned at a time "
              "(activation: sequence mean, batch L2; the second column is the other hidden score on hidden_size "
              "and the other head score on num_attention_heads).", "", "| pruned | " +
              " | ".join(label(*c) for c in AXIS_COLUMNS) + " |", "|---|" + "---|" * len(AXIS_COLUMNS)]
    for axis in dict.fromkeys(r[0] for r in axis_rows):
        lines.append(f"| {axis} | " + " | ".join(f"{l:.3f}" for a, _, l in axis_rows if a == axis) + " |")
    lines += ["", f"Teacher loss on the same dev tokens: {teacher_loss:.3f}.", ""]
    old = args.out.read_text() if args.out.is_file() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # the hand-written reading of the results stays
    args.out.write_text("\n".join(lines) + "\n" + notes)
    (args.out.with_suffix(".json")).write_text(json.dumps(
        {"width": [dict(criterion=n, aggregation=a, val_loss=l) for n, a, l in rows],
         "depth": [dict(criterion=n, dropped=d, val_loss=l) for n, d, l in depth_rows],
         "per_axis": [dict(pruned=a, criterion=c, val_loss=l) for a, c, l in axis_rows],
         "scoring_seconds": score_s, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
