"""Which distillation recipe recovers a half-size student best for a small budget? The real default teacher
(SmolLM2-135M-Instruct) pruned once to the old demo's target, then the same student distilled with each recipe for the
same number of tokens: global batch size, peak learning rate, sequence length, warm-up and decay, the logit loss
and the precision. Each row is trained with every --seeds data order; every model is measured on 32 x 256 tokens of
the dev split, of the test split (windows spread over each whole split) and of out-of-domain English, with its KL
from the teacher. Each row is compared with --baseline seed by seed: the paired difference with its 95% interval,
a tie unless the dev interval excludes 0 and test agrees (minitron.stats).

    python benchmarks/recipe.py [--tokens 65536] [--rows win-b1k win-cekd ...] [--seeds 0 1 2] [--out docs/recipe.md]

A row whose student is already in --work (same recipe and budget) is evaluated again without retraining; its
recorded wall time is kept. Wall times are comparable only within one run on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from minitron.data import TokenData, default_data
from minitron.distill import TrainConfig, distill
from minitron.eval import measure, ood_windows
from minitron.load import load_model, load_tokenizer
from minitron.numerics import cpu_has_native_bf16
from minitron.prune import PruneConfig, prune
from minitron.stats import fmt_interval, fmt_mean_sd, paired, verdict

TARGET = dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6)  # the old demo's
NOTES = "<!-- notes: written by hand, kept when the tables are regenerated -->"
BASE = dict(seq_len=256, micro_batch=4, global_batch_tokens=1024, lr=1e-3, min_lr=1e-4, warmup_steps=None,
            loss="forward_kl", precision="bf16")
POOLED = dict(prune=dict(hidden_score="pooled"))  # the student the first rows were measured on (see NOTES)
WINNER = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo.yaml").read_text())["target"]  # the demo's shape
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
    "win-b1k": ("as b1k, on the demo's shape (configs/demo.yaml's target)", dict(target=WINNER)),
    "win-s128": ("as win-b1k, sequences of 128 (8 x 128)", dict(target=WINNER, seq_len=128, micro_batch=8)),
    "win-cekd": ("as win-b1k, CE + forward KL, 0.5 each", dict(target=WINNER, loss="ce_kd")),
    "win-min0": ("as win-b1k, cosine decay to 0", dict(target=WINNER, min_lr=0.0)),
    "win-all3": ("as win-b1k, sequences of 128, CE + KL and decay to 0", dict(target=WINNER, **ALL3)),
    "win-s512": ("as win-b1k, sequences of 512 (2 x 512)", dict(target=WINNER, seq_len=512, micro_batch=2)),
    "win-lr2e-3": ("as win-b1k, lr 2e-3 → 2e-4 (twice the default's peak)",
                   dict(target=WINNER, lr=2e-3, min_lr=2e-4)),
    "win-fp32": ("as win-b1k, in fp32 (what --precision auto picks on CPUs without bf16 units)",
                 dict(target=WINNER, precision="fp32")),
    "win-old-speed": ("as win-b1k, with the CPU's speed defaults before issue 32: no activation checkpointing, "
                      "1,024-token loss chunks", dict(target=WINNER, activation_checkpointing=False, chunk_tokens=1024)),
    # issue 16's comparison: today's default against the default before issues 16 and 17, side by side
    "old-default": ("the default before issues 16-17: hidden 384, MLP 1024, 6 heads by the papers' score, hidden "
                    "channels scored pooled, 4,096-token batches (bf16)", dict(global_batch_tokens=4096, **POOLED)),
    "new-default": ("today's default (configs/demo.yaml): the demo's shape, CE + forward KL",
                    dict(target=WINNER, loss="ce_kd")),
}


def held_out(args) -> str:
    """What the losses were measured on: recorded beside them, so that figures measured otherwise are not reused."""
    return (f"dev split (selection) and test split, {args.val_seqs} windows of 256 spread over each; out-of-domain "
            f"text as many; seeds {args.seeds}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=65536, help="training tokens per row")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data orders each row is trained with")
    p.add_argument("--baseline", default="win-b1k", choices=list(ROWS),
                   help="the row every other one is compared with, seed by seed")
    p.add_argument("--val-seqs", type=int, default=32)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16" if cpu_has_native_bf16() else "fp32",
                   help="of every row but those that set their own (default: bf16 where the CPU has it natively)")
    p.add_argument("--work", type=Path, default=Path("runs/bench/recipe"), help="pruned student and runs")
    p.add_argument("--out", type=Path, default=Path("docs/recipe.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    data = TokenData.open(default_data("default"))
    teacher = load_model("default")
    windows = {"dev": data.spread("dev", args.val_seqs, 256), "test": data.spread("test", args.val_seqs, 256),
               "ood": ood_windows(load_tokenizer("default"), 256, args.val_seqs)}
    results = load_results(args)
    results["teacher"] = measured(teacher, None, windows)
    starts = {}  # each pruned student's losses, measured once
    for seed in args.seeds:  # seed by seed, so that the pairs complete as the run goes
        for name in args.rows:
            changes = dict(ROWS[name][1])
            target = changes.pop("target", TARGET)
            pruned = pruned_student(args, target, changes.pop("prune", {}))
            if pruned not in starts:
                starts[pruned] = measured(load_model(pruned), teacher, windows)
            row = results.setdefault(name, {"seeds": {}})
            row["pruned"] = starts[pruned]  # each row's own start
            recipe = {**BASE, "precision": args.precision, **changes, "seed": seed}
            run = train(args, name, seed, recipe, pruned, data)
            row["seeds"][str(seed)] = {**run, **measured(load_model(args.work / run_name(name, seed) / "student"),
                                                         teacher, windows)}
            print(f"{name:>12} seed {seed}  dev {row['seeds'][str(seed)]['dev_loss']:.3f}  "
                  f"test {row['seeds'][str(seed)]['test_loss']:.3f}  ({run['wall_s']:.0f} s)", flush=True)
            write_report(args, results)  # after every run, so that an interrupted run keeps what it measured
    write_report(args, results)


def measured(model, teacher, windows: dict) -> dict:
    """A model's loss on each held-out set and, with a teacher, its KL from the teacher (`minitron.eval.measure`)."""
    models = {"model": model, **({"teacher": teacher} if teacher is not None else {})}
    out = {}
    for where, w in windows.items():
        m = measure(models, w, 4, "teacher" if teacher is not None else None)["model"]
        out[f"{where}_loss"] = m["loss"]
        if "kl" in m:
            out[f"{where}_kl"] = m["kl"]
    return out


def run_name(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}-seed{seed}"


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
    same = saved.get("tokens") == args.tokens and saved.get("held_out") == held_out(args)
    return saved.get("rows", {}) if same else {}  # rows measured on other tokens are measured again


def train(args, name: str, seed: int, recipe: dict, pruned: Path, data: TokenData) -> dict:
    """Distil one row's student with one data order (or reuse the one already there): its recipe, wall time and
    training speed."""
    run = args.work / run_name(name, seed)
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
             "tokens_per_s": round(result.tokens_per_s, 1), "train_loss": result.loss, "recipe_name": name}
    record.write_text(json.dumps(saved) + "\n")
    return saved


def write_report(args, results: dict) -> None:
    teacher = results["teacher"]
    lines = ["# Distillation recipes for a small budget", "",
             f"SmolLM2-135M-Instruct pruned (by default to the old demo's target, hidden 384 / MLP 1024 / 6 heads; "
             f"*shape-*, *win-* and *new-default* rows to other shapes) and distilled for {args.tokens:,} tokens of the "
             f"default corpus with each recipe, once per data order (seeds {', '.join(map(str, args.seeds))}). "
             f"Measured on {args.val_seqs} × 256 tokens spread over the dev split (what choices are made on), as many "
             f"of the test split (what is reported) and of out-of-domain English (the King James Bible, never "
             f"trained on). Mean ± standard deviation over the seeds. Teacher: dev {teacher['dev_loss']:.3f}, test "
             f"{teacher['test_loss']:.3f}, out-of-domain {teacher['ood_loss']:.3f}.", "",
             f"Reproduce: `.venv/bin/python benchmarks/recipe.py --tokens {args.tokens} --seeds "
             f"{' '.join(map(str, args.seeds))} --baseline {args.baseline} --out {args.out} --rows ROW ...`", "",
             "| row | recipe (changes to b1k) | pruned dev loss | dev loss | test loss | out-of-domain loss | test KL | "
             "tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for name, (desc, _) in ROWS.items():
        seeds = results.get(name, {}).get("seeds", {})
        if not seeds:
            continue
        runs = list(seeds.values())
        col = {k: fmt_mean_sd([r[k] for r in runs]) for k in ("dev_loss", "test_loss", "ood_loss", "test_kl")}
        lines.append(f"| {name} | {desc} | {results[name]['pruned']['dev_loss']:.3f} | {col['dev_loss']} | "
                     f"{col['test_loss']} | {col['ood_loss']} | {col['test_kl']} | "
                     f"{sum(r['tokens_per_s'] for r in runs) / len(runs):.0f} |")
    lines += ["", f"## Each row against {args.baseline}, seed by seed", "", *paired_table(results, args.baseline)]
    old = args.out.read_text() if args.out.is_file() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # the hand-written reading of the results stays
    args.out.write_text("\n".join(lines) + "\n\n" + notes)
    args.out.with_suffix(".json").write_text(json.dumps({"tokens": args.tokens, "held_out": held_out(args),
                                                         "baseline": args.baseline, "rows": results}, indent=2) + "\n")


def paired_table(results: dict, baseline: str) -> list[str]:
    """Each row against the baseline: the mean paired difference (same data order) with its 95% t-interval on dev,
    test, out-of-domain text and KL, and the verdict (`minitron.stats.verdict`)."""
    base = results.get(baseline, {}).get("seeds", {})
    lines = ["The mean paired difference (row − baseline, same data order) with its 95% t-interval; negative is "
             "better. A difference whose dev interval holds 0 is a tie; *better* or *worse* needs the dev interval "
             "to exclude 0 and the test difference to have the same sign.", "",
             "| row | seeds | dev | test | out-of-domain | test KL | reading |", "|---|---|---|---|---|---|---|"]
    for name in [*(n for n in ROWS if n in results), *(n for n in results if n not in ROWS)]:  # another script's too
        seeds = results[name].get("seeds", {})
        common = sorted(set(seeds) & set(base))
        if name == baseline or not common:
            continue
        diff = {k: paired([seeds[s][k] for s in common], [base[s][k] for s in common])
                for k in ("dev_loss", "test_loss", "ood_loss", "test_kl")}
        lines.append(f"| {name} | {len(common)} | {fmt_interval(diff['dev_loss'])} | {fmt_interval(diff['test_loss'])} | "
                     f"{fmt_interval(diff['ood_loss'])} | {fmt_interval(diff['test_kl'])} | "
                     f"{verdict(diff['dev_loss'], diff['test_loss'])} |")
    return lines


if __name__ == "__main__":
    main()
