"""Which distillation recipe recovers a half-size student best for a small budget? The real default teacher
(SmolLM2-135M-Instruct) pruned once to the old demo's target, then the same student distilled with each recipe for the
same number of tokens: global batch size, peak learning rate, sequence length, warm-up and decay, the logit loss
and the precision. Every model is evaluated on the same held-out tokens (the demo's: the first 32 x 256 tokens of
the held-out split).

    python benchmarks/recipe.py [--tokens 65536] [--rows b1k b512 ...] [--work runs/bench/recipe] [--out docs/recipe.md]

A row whose student is already in --work (same recipe and budget) is evaluated again without retraining; its
recorded wall time is kept. Wall times are comparable only within one run on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from minitron.data import TokenData, default_data
from minitron.distill import TrainConfig, distill
from minitron.numerics import lm_loss
from minitron.load import load_model
from minitron.prune import PruneConfig, prune

TARGET = dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6)  # the old demo's
NOTES = "<!-- notes: written by hand, kept when the tables are regenerated -->"
BASE = dict(seq_len=256, micro_batch=4, global_batch_tokens=1024, lr=1e-3, min_lr=1e-4, warmup_steps=None,
            loss="forward_kl", precision="bf16")
POOLED = dict(prune=dict(hidden_score="pooled"))  # the student the first rows were measured on (see NOTES)
WINNER = dict(intermediate_size=384, num_hidden_layers=25)  # `minitron search --params 0.5`'s winner
ALL3 = dict(seq_len=128, micro_batch=8, loss="ce_kd", min_lr=0.0)  # the three close changes together
ROWS = {  # name: (description, changes to BASE); every row but one runs under bf16 autocast
    "b1k": ("1,024-token batches (4 x 256), lr 1e-3 → 1e-4, forward KL", {}),
    "b1k-pooled": ("as b1k, the student's hidden channels scored pooled over every norm", POOLED),
    "b1k-fp32": ("as b1k-pooled, in fp32", dict(precision="fp32", **POOLED)),
    "b512": ("as b1k-pooled, 512-token batches (2 x 256)", dict(global_batch_tokens=512, micro_batch=2, **POOLED)),
    "b1k-lr3e-3": ("as b1k-pooled, lr 3e-3 → 3e-4", dict(lr=3e-3, min_lr=3e-4, **POOLED)),
    "b1k-lr3e-4": ("as b1k-pooled, lr 3e-4 → 3e-5", dict(lr=3e-4, min_lr=3e-5, **POOLED)),
    "b1k-s128": ("sequences of 128 (8 x 128)", dict(seq_len=128, micro_batch=8)),
    "b2k": ("2,048-token batches", dict(global_batch_tokens=2048)),
    "b4k": ("4,096-token batches (the demo's old batch)", dict(global_batch_tokens=4096)),
    "b8k": ("8,192-token batches", dict(global_batch_tokens=8192)),
    "b1k-topk": ("top-64 forward KL", dict(loss="topk_kl")),
    "b1k-cekd": ("CE + forward KL, 0.5 each", dict(loss="ce_kd")),
    "b1k-min0": ("cosine decay to 0", dict(min_lr=0.0)),
    "b1k-nowarm": ("no warm-up (default: 5% of the steps)", dict(warmup_steps=0)),
    "b1k-s512": ("sequences of 512 (2 x 512)", dict(seq_len=512, micro_batch=2)),
    # other shapes of about the same size (the old demo's: hidden 384, MLP 1024, 6 heads, 30 layers, 67.6M)
    "shape-576-768-18L": ("hidden 576, MLP 768, 9 heads, 18 layers (68.2M)",
                          dict(target=dict(intermediate_size=768, num_hidden_layers=18))),
    "shape-480-1024-22L": ("hidden 480, MLP 1024, 6 heads, 22 layers (68.2M)",
                           dict(target=dict(hidden_size=480, intermediate_size=1024, num_attention_heads=6,
                                            num_hidden_layers=22))),
    "shape-576-1024-15L": ("hidden 576, MLP 1024, 9 heads, 15 layers (68.1M)",
                           dict(target=dict(intermediate_size=1024, num_hidden_layers=15))),
    "shape-576-768-6h-20L": ("hidden 576, MLP 768, 6 heads, 20 layers (68.2M)",
                             dict(target=dict(intermediate_size=768, num_attention_heads=6, num_hidden_layers=20))),
    "shape-576-768-18L-loss": ("as shape-576-768-18L, layers chosen one by one by LM loss, not as a block",
                               dict(target=dict(intermediate_size=768, num_hidden_layers=18),
                                    prune=dict(layer_criterion="loss"))),
    "shape-576-512-22L": ("hidden 576, MLP 512, 9 heads, 22 layers (67.3M)",
                          dict(target=dict(intermediate_size=512, num_hidden_layers=22))),
    "shape-576-1536-11L": ("hidden 576, MLP 1536, 9 heads, 11 layers: depth only (67.3M)",
                           dict(target=dict(num_hidden_layers=11))),
    "shape-576-384-25L": ("hidden 576, MLP 384, 9 heads, 25 layers: `minitron search --params 0.5`'s winner (67.0M)",
                          dict(target=WINNER)),
    "shape-432-1024-26L": ("hidden 432, MLP 1024, 6 heads, 26 layers (68.7M)",
                           dict(target=dict(hidden_size=432, intermediate_size=1024, num_attention_heads=6,
                                            num_hidden_layers=26))),
    # the close recipe rows again, on the search's winner and with a second data order
    "win-b1k": ("as b1k, on the search's winner (hidden 576, MLP 384, 9 heads, 25 layers)", dict(target=WINNER)),
    "win-s128": ("as win-b1k, sequences of 128 (8 x 128)", dict(target=WINNER, seq_len=128, micro_batch=8)),
    "win-cekd": ("as win-b1k, CE + forward KL, 0.5 each", dict(target=WINNER, loss="ce_kd")),
    "win-min0": ("as win-b1k, cosine decay to 0", dict(target=WINNER, min_lr=0.0)),
    "win-all3": ("as win-b1k, sequences of 128, CE + KL and decay to 0", dict(target=WINNER, **ALL3)),
    "win-b1k-seed1": ("as win-b1k, data seed 1", dict(target=WINNER, seed=1)),
    "win-cekd-seed1": ("as win-cekd, data seed 1", dict(target=WINNER, seed=1, loss="ce_kd")),
    "win-s512": ("as win-b1k, sequences of 512 (2 x 512)", dict(target=WINNER, seq_len=512, micro_batch=2)),
    # issue 16's comparison: today's default against the default before issues 16 and 17, side by side
    "old-default": ("the default before issues 16-17: hidden 384, MLP 1024, 6 heads by the papers' score, hidden "
                    "channels scored pooled, 4,096-token batches (bf16)", dict(global_batch_tokens=4096, **POOLED)),
    "new-default": ("today's default (configs/demo.yaml): the search's winner (hidden 576, MLP 384, 9 heads, 25 layers), "
                    "CE + forward KL", dict(target=WINNER, loss="ce_kd")),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=65536, help="training tokens per row")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--val-seqs", type=int, default=32)
    p.add_argument("--work", type=Path, default=Path("runs/bench/recipe"), help="pruned student and runs")
    p.add_argument("--out", type=Path, default=Path("docs/recipe.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    data = TokenData.open(default_data("default"))
    val = data.fixed("val", args.val_seqs, 256)["input_ids"].split(4)
    results = load_results(args)
    results["teacher"] = {"val_loss": lm_loss(load_model("default"), val)}
    base = pruned_student(args, TARGET)
    starts = {base: lm_loss(load_model(base), val)}  # each pruned student's loss, evaluated once
    results["pruned"] = {"val_loss": starts[base]}
    for name in args.rows:
        changes = dict(ROWS[name][1])
        target = changes.pop("target", TARGET)
        pruned = pruned_student(args, target, changes.pop("prune", {}))
        recipe = {**BASE, **changes}
        row = train(args, name, recipe, pruned, data)
        if pruned not in starts:
            starts[pruned] = lm_loss(load_model(pruned), val)
        row["pruned_val_loss"] = starts[pruned]  # each row's own start
        row["val_loss"] = lm_loss(load_model(args.work / name / "student"), val)
        results[name] = row
        print(f"{name:>12}  val loss {row['val_loss']:.3f}  {row['tokens_per_s']:.0f} tok/s  ({row['wall_s']:.0f} s)",
              flush=True)
        write_report(args, results)  # after every row, so that an interrupted run keeps what it measured
    if not args.rows:
        write_report(args, results)  # the tables from what is recorded


def pruned_student(args, target: dict, options: dict | None = None) -> Path:
    """The teacher pruned to `target` by activation importance (layers by the best contiguous block unless `options`
    say otherwise: `minitron.prune.PruneConfig` fields), once."""
    name = "pruned" if target == TARGET else "pruned-" + "-".join(str(v) for v in target.values())
    name += "".join(f"-{v}" for v in (options or {}).values())
    out = args.work / name
    if not (out / "config.json").is_file():
        prune(model="default", target=target, out=out, overwrite=True,  # heads as when these rows were measured
              prune=PruneConfig(**{"calib_seqs": 32, "seq_len": 256, "head_score": "attn", **(options or {})}))
    return out


def load_results(args) -> dict:
    path = args.out.with_suffix(".json")
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return saved.get("rows", {}) if saved.get("tokens") == args.tokens else {}


def train(args, name: str, recipe: dict, pruned: Path, data: TokenData) -> dict:
    """Distil one row's student (or reuse the one already there): its recipe, wall time and training speed."""
    run = args.work / name
    record = run / "bench.json"
    if record.is_file() and (run / "student").is_dir():
        saved = json.loads(record.read_text())
        if (saved["recipe"], saved["tokens"]) == (recipe, args.tokens):
            return saved
    start = time.time()
    result = distill(TrainConfig(student=str(pruned), out=run, tokens=args.tokens, teacher="default",
                                 data=str(data.path), eval_every=0, save_every=10**9, device="cpu", overwrite=True,
                                 **recipe))
    saved = {"recipe": recipe, "tokens": args.tokens, "wall_s": round(time.time() - start, 1),
             "tokens_per_s": round(result.tokens_per_s, 1), "train_loss": result.loss}
    record.write_text(json.dumps(saved) + "\n")
    return saved


def write_report(args, results: dict) -> None:
    teacher, pruned = results["teacher"]["val_loss"], results["pruned"]["val_loss"]
    base = results.get("b1k", {}).get("tokens_per_s")
    lines = ["# Distillation recipes for a small budget", "",
             f"SmolLM2-135M-Instruct pruned to the old demo's target (hidden 384 / MLP 1024 / 6 heads, 67.6M parameters) "
             f"by activation importance (heads by the papers' score), then distilled for {args.tokens:,} tokens of the "
             f"default corpus with each recipe; AdamW with cosine decay. Every row starts from the same pruned student "
             f"but the other shapes (*shape-*, *win-* and *new-default*) and the rows *as b1k-pooled*, whose student "
             f"had its hidden channels scored pooled over every norm (the score before issue 16 made it per norm): "
             f"each row's start is in its own column. Every row but *new-default* distils with forward KL unless it "
             f"says otherwise; *seed* rows change only the order of the training data. "
             f"Validation: the first "
             f"{args.val_seqs} × 256 tokens of the held-out split, as in the demo's report. Teacher {teacher:.3f}, "
             f"pruned student {pruned:.3f}. Rows were added over several runs of this script, one row at a time on 2 "
             f"CPU cores (AVX512-BF16); the losses do not depend on the run.", "",
             f"Reproduce: `.venv/bin/python benchmarks/recipe.py --tokens {args.tokens}`", "",
             "| row | recipe (changes to b1k) | steps | pruned val loss | val loss | perplexity | gap closed | tokens/s | "
             "speed vs b1k | wall time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (desc, _) in ROWS.items():
        row = results.get(name)
        if row is None or "recipe" not in row:
            continue
        steps = args.tokens // row["recipe"]["global_batch_tokens"]
        start = row.get("pruned_val_loss", pruned)  # the shapes' own pruned students
        closed = (start - row["val_loss"]) / (start - teacher)
        speed = f"{row['tokens_per_s'] / base:.2f}×" if base else ""
        lines.append(f"| {name} | {desc} | {steps} | {start:.3f} | {row['val_loss']:.3f} | {math.exp(row['val_loss']):,.1f} | "
                     f"{closed:.0%} | {row['tokens_per_s']:.0f} | {speed} | {row['wall_s']:.0f} s |")
    lines += ["", "Every row but *b1k-fp32* runs under bf16 autocast (`--precision bf16`); *b1k-fp32* shows what "
              "the precision alone changes.", ""]
    old = args.out.read_text() if args.out.is_file() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # the hand-written reading of the results stays
    args.out.write_text("\n".join(lines) + "\n" + notes)
    args.out.with_suffix(".json").write_text(json.dumps({"tokens": args.tokens, "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
