"""Which importance criterion gives the best model after distillation? The real default teacher
(SmolLM2-135M-Instruct) pruned to ~50% of its parameters by each criterion (width), each depth criterion, and
width + depth, then every student distilled on the same budget once per data order (--seeds): the same tokens, the
same batches, measured on the same dev-split tokens (windows spread over the whole split: the benchmark chooses a
default, so it selects on dev) and as many test-split tokens. The zero-shot loss (pruned, before training) of each
row is reported beside it, and each row is compared with --baseline seed by seed (paired differences with their 95%
intervals, a tie unless the dev interval excludes 0 and test agrees: minitron.stats).

    python benchmarks/criteria_after_kd.py [--tokens 32768] [--rows act wanda ...] [--seeds 0 1 2] [--baseline act]
    python benchmarks/criteria_after_kd.py --dry --teacher TINY_DIR --data TINY_DATA --work /tmp/x   # seconds

A row whose student is already in --work (same row, same budget) is evaluated again (pruned and distilled) without
retraining; its recorded wall time and curve are kept. All scores come from one scoring run, cached in WORK/scores.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import torch

from minitron.data import TokenData, default_data
from minitron.distill import TrainConfig, distill
from minitron.numerics import lm_loss
from minitron.importance import score
from minitron.io import read_jsonl
from minitron.load import load_config, load_model
from minitron.prune import PruneConfig, prune
from minitron.numerics import cpu_has_native_bf16
from minitron.search import ParamCounter
from minitron.stats import fmt_interval, fmt_mean_sd, mean_sd, paired, verdict

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOTES = "<!-- notes: written by hand, kept when the tables are regenerated -->"


PAPERS = {"hidden_score": "norms", "head_score": "attn"}  # the papers' activation score (minitron's heads: o_proj)


@dataclass(frozen=True)
class Row:
    key: str  # --rows name and work directory
    label: str  # what the table says
    group: str  # width criteria, aggregation, depth, width + depth
    shape: str  # width, depth or both (`shapes`)
    prune: dict = field(default_factory=dict)  # `minitron.prune.PruneConfig` fields (the rest at its defaults)
    main: bool = False  # drawn in the plot of validation loss against tokens


ROWS = [
    Row("act", "activation: per-norm hidden, heads before o_proj (the papers')", "criterion", "width", PAPERS, True),
    Row("act-oproj", "activation: per-norm hidden, heads after o_proj", "criterion", "width",
        {"head_score": "o_proj"}, True),
    Row("act-pooled", "activation: pooled hidden (all norms, final included)", "criterion", "width",
        {**PAPERS, "hidden_score": "pooled"}, True),
    Row("act-oproj-pooled", "activation: pooled hidden, heads after o_proj", "criterion", "width",
        {"head_score": "o_proj", "hidden_score": "pooled"}, True),
    Row("wanda", "Wanda-style", "criterion", "width", {"criterion": "wanda"}, True),
    Row("taylor", "first-order Taylor", "criterion", "width", {"criterion": "taylor"}, True),
    Row("magnitude", "weight magnitude", "criterion", "width", {"criterion": "magnitude"}),
    Row("random", "random", "criterion", "width", {"criterion": "random"}, True),
    Row("agg-mean-mean", "activation, (batch mean, seq mean)", "aggregation", "width",
        {**PAPERS, "batch_agg": "mean"}),
    Row("agg-l2-l2", "activation, (batch L2, seq L2)", "aggregation", "width", {**PAPERS, "seq_agg": "l2"}),
    Row("agg-var-var", "activation, (batch var, seq var)", "aggregation", "width",
        {**PAPERS, "seq_agg": "var", "batch_agg": "var"}),
    # the aggregations again on minitron's default score (heads after o_proj), against it over seeds
    Row("agg-mean", "activation (minitron's), (batch mean, seq mean)", "aggregation", "width", {"batch_agg": "mean"}),
    Row("agg-l2", "activation (minitron's), (batch L2, seq L2)", "aggregation", "width", {"seq_agg": "l2"}),
    Row("depth-bi", "depth only: Block Influence (lowest layers)", "depth", "depth", {"layer_criterion": "bi"}),
    Row("depth-loss", "depth only: LM-loss increase (lowest layers)", "depth", "depth", {"layer_criterion": "loss"}),
    Row("depth-block", "depth only: best contiguous block", "depth", "depth", {"layer_criterion": "block"}, True),
    Row("width-depth", "width + depth: activation, best contiguous block", "width + depth", "both", PAPERS, True),
]
# about 40 minutes on 2 CPU cores at --tokens 32768 (~3 min a row, ~7 min of scoring); `--rows all` adds
# magnitude, (var, var) and Block Influence, the three rows the zero-shot benchmark puts last in their groups
DEFAULT_ROWS = [r.key for r in ROWS if r.key not in ("magnitude", "agg-var-var", "depth-bi", "agg-mean", "agg-l2")]
BATCH_SEQS = 4  # sequences a step: 1,024-token batches at --seq-len 256, the recipe's best (docs/recipe.md)
CRITERIA = ["activation", "wanda", "magnitude", "taylor", "random"]


def shapes(config) -> dict[str, dict[str, int]]:
    """The three targets: width (hidden, MLP and query heads per KV group at about 2/3: SmolLM2's 384 / 1024 / 6,
    the demo's, 50% of the parameters), depth (the layer count nearest the same parameters) and both (hidden and MLP
    at about 5/6 and the width's heads, then the layer count nearest the same parameters)."""
    def size(v: int, f: float) -> int:
        return max(16, round(v * f / 16) * 16)

    q = config.num_attention_heads // config.num_key_value_heads
    heads = config.num_key_value_heads * max(1, round(q * 2 / 3))
    width = {"hidden_size": size(config.hidden_size, 2 / 3), "intermediate_size": size(config.intermediate_size, 2 / 3),
             "num_attention_heads": heads}
    count = ParamCounter(config)
    full = {"hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
            "num_attention_heads": config.num_attention_heads, "num_hidden_layers": config.num_hidden_layers}
    budget = count({**full, **width})

    def nearest_depth(sizes: dict) -> int:
        return min(range(1, config.num_hidden_layers), key=lambda L: abs(count({**sizes, "num_hidden_layers": L}) - budget))

    both = {"hidden_size": size(config.hidden_size, 5 / 6), "intermediate_size": size(config.intermediate_size, 5 / 6),
            "num_attention_heads": heads}
    return {"width": width, "depth": {"num_hidden_layers": nearest_depth(full)},
            "both": {**both, "num_hidden_layers": nearest_depth({**full, **both})}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768, help="training tokens per row")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=[r.key for r in ROWS] + ["all"])
    p.add_argument("--teacher", default="default")
    p.add_argument("--data", type=Path, default=None, help="token data (default: the default corpus)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--calib-seqs", type=int, default=64)
    p.add_argument("--val-seqs", type=int, default=32, help="dev windows (selection), and as many test windows")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data orders each row is distilled with")
    p.add_argument("--baseline", default="act", choices=[r.key for r in ROWS],
                   help="the row every other one is compared with, seed by seed (default: the papers' score)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16" if cpu_has_native_bf16() else "fp32")
    p.add_argument("--curve-points", type=int, default=4, help="validation losses along each run, for the plot")
    p.add_argument("--curve-seqs", type=int, default=8, help="dev sequences the runs validate on, for the curves")
    p.add_argument("--work", type=Path, default=Path("runs/bench/criteria_kd"), help="scores, students and runs")
    p.add_argument("--out", type=Path, default=Path("docs/criteria_after_kd.md"))
    p.add_argument("--dry", action="store_true", help="tiny budgets (with a tiny --teacher): a check that it runs")
    args = p.parse_args(argv)
    if args.dry:
        args.seq_len, args.calib_seqs, args.val_seqs, args.curve_points, args.curve_seqs = 32, 4, 2, 2, 2
        args.tokens, args.precision = min(args.tokens, 512), "fp32"
    if "all" in args.rows:
        args.rows = [r.key for r in ROWS]
    torch.manual_seed(0)
    config = load_config(args.teacher)
    targets = shapes(config)
    data = TokenData.open(args.data or default_data(args.teacher))
    held_out = {split: data.spread(split, args.val_seqs, args.seq_len).batch["input_ids"].split(4)
                for split in ("dev", "test")}  # selection on dev; test says whether it holds
    rows = [r for r in ROWS if r.key in args.rows]
    scores_dir = cached_scores(args, config, targets, rows)
    teacher_loss = lm_loss(load_model(args.teacher), held_out["dev"])
    results = []
    for row in rows:
        results.append(run_row(args, row, targets[row.shape], scores_dir, data, held_out))
        r = results[-1]
        print(f"{row.key:>14}  zero-shot {r['zero_shot']:.3f}  after KD {r['val_loss']:.3f} (dev, mean of "
              f"{len(r['seeds'])} seeds)", flush=True)
    write_report(args, targets, teacher_loss, results)


def cached_scores(args, config, targets: dict, rows: list[Row]) -> Path:
    """Every criterion's scores and the removal losses of the depth rows' blocks, from one scoring run."""
    path = args.work / "scores"
    if not (path / "scores.json").is_file():
        ks = sorted({config.num_hidden_layers - targets[s]["num_hidden_layers"] for s in ("depth", "both")} - {1})
        score(args.teacher, data=args.data, out=path, criteria=CRITERIA, calib_seqs=args.calib_seqs,
              seq_len=args.seq_len, layer_loss=True, block_sizes=ks, device="cpu", overwrite=True)
    return path


def run_row(args, row: Row, target: dict, scores_dir: Path, data: TokenData, held_out: dict) -> dict:
    """Prune one row once, distil it with every seed (or reuse a run already in WORK with the same row, budget and
    seed) and measure each student on dev and test. `val_loss` is the mean dev loss over the seeds."""
    pruned = args.work / row.key / "pruned"
    result = prune(args.teacher, target=target, out=pruned, scores=scores_dir, device="cpu", overwrite=True,
                   prune=PruneConfig(**row.prune))
    seeds = {str(seed): distil_seed(args, row, target, seed, pruned, data) for seed in args.seeds}
    for seed, run in seeds.items():  # measured again each time: the same dev and test tokens for every row
        student = load_model(args.work / row.key / run_dir(seed) / "student")
        run.update({f"{split}_loss": lm_loss(student, batches) for split, batches in held_out.items()})
    return {"key": row.key, "tokens": args.tokens, "target": target, "params": result["params_after"],
            "dropped_layers": result["dropped_layers"], "zero_shot": lm_loss(load_model(pruned), held_out["dev"]),
            "seeds": seeds, "val_loss": mean_sd([r["dev_loss"] for r in seeds.values()])[0],
            "curve": seeds[str(args.seeds[0])]["curve"]}


def run_dir(seed: int | str) -> str:
    return "run" if int(seed) == 0 else f"run-seed{seed}"


def distil_seed(args, row: Row, target: dict, seed: int, pruned: Path, data: TokenData) -> dict:
    """One distillation of a row's pruned student with data order `seed`: its wall time and validation curve."""
    run = args.work / row.key / run_dir(seed)
    record = run / "bench.json"
    if record.is_file() and (run / "student").is_dir():
        saved = json.loads(record.read_text())
        if (saved["key"], saved["tokens"], saved["target"], saved["seed"]) == (row.key, args.tokens, target, seed):
            return saved
    start = time.time()
    steps = max(1, args.tokens // (BATCH_SEQS * args.seq_len))
    distill(TrainConfig(student=str(pruned), out=run, tokens=args.tokens, teacher=args.teacher, seed=seed,
                        data=str(data.path), seq_len=args.seq_len, micro_batch=BATCH_SEQS,
                        global_batch_tokens=BATCH_SEQS * args.seq_len, lr=args.lr, min_lr=args.lr / 10,
                        loss="forward_kl", precision=args.precision, eval_every=max(1, steps // args.curve_points),
                        eval_seqs=args.curve_seqs, save_every=10**9, device="cpu", overwrite=True))
    curve = [(r["tokens"], r["val_loss"]) for _, r in read_jsonl(run / "metrics.jsonl") if "val_loss" in r]
    saved = {"key": row.key, "tokens": args.tokens, "target": target, "seed": seed,
             "wall_s": round(time.time() - start, 1), "curve": curve}
    record.write_text(json.dumps(saved) + "\n")
    return saved


def write_report(args, targets: dict, teacher_loss: float, results: list[dict]) -> None:
    by_key = {r["key"]: r for r in results}
    rows = [r for r in ROWS if r.key in by_key]
    zero_rank = {k: i + 1 for i, k in enumerate(sorted(by_key, key=lambda k: by_key[k]["zero_shot"]))}
    kd_rank = {k: i + 1 for i, k in enumerate(sorted(by_key, key=lambda k: by_key[k]["val_loss"]))}
    desc = {s: ", ".join(f"{k} {v}" for k, v in t.items()) for s, t in targets.items()}
    lines = ["# Pruning criteria after distillation", "",
             f"The teacher `{args.teacher}` pruned to about 50% of its parameters by each criterion, then each student "
             f"distilled (forward KL) for {args.tokens:,} tokens of the same batches (sequences of {args.seq_len}, "
             f"{BATCH_SEQS * args.seq_len:,}-token batches, AdamW at {args.lr:g} with cosine decay, {args.precision}), "
             f"once per data order (seeds {', '.join(map(str, args.seeds))}). Measured on {args.val_seqs} × "
             f"{args.seq_len} tokens of the dev split (selection) and as many of the test split, windows spread over "
             f"each whole split, the same for every row; mean ± standard deviation over the seeds (the curves: seed "
             f"{args.seeds[0]}'s own validation, {args.curve_seqs} dev windows). Shapes: width = "
             f"{desc['width']}; depth = {desc['depth']}; width + depth = {desc['both']}.", "",
             "Reproduce: `.venv/bin/python benchmarks/criteria_after_kd.py --tokens "
             f"{args.tokens} --seeds {' '.join(map(str, args.seeds))} --baseline {args.baseline}"
             f"{' --rows ' + ' '.join(args.rows) if args.rows != DEFAULT_ROWS else ''}`", "",
             "| group | row | parameters | zero-shot dev loss | rank | dev loss after KD | rank | test loss after KD |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = by_key[row.key]
        runs = list(r["seeds"].values())
        lines.append(f"| {row.group} | {row.label} | {r['params']:,} | {r['zero_shot']:.3f} | {zero_rank[row.key]} | "
                     f"{fmt_mean_sd([x['dev_loss'] for x in runs])} | {kd_rank[row.key]} | "
                     f"{fmt_mean_sd([x['test_loss'] for x in runs])} |")
    lines += ["", f"## Each row against {args.baseline}, seed by seed", "",
              "The mean paired difference (row − baseline, same data order) with its 95% t-interval; negative is "
              "better. A tie unless the dev interval excludes 0 and the test difference has the same sign.", "",
              "| row | seeds | dev | test | reading |", "|---|---|---|---|---|"]
    base = by_key.get(args.baseline, {}).get("seeds", {})
    for row in rows:
        seeds = by_key[row.key]["seeds"]
        common = sorted(set(seeds) & set(base))
        if row.key == args.baseline or not common:
            continue
        diff = {k: paired([seeds[s][k] for s in common], [base[s][k] for s in common])
                for k in ("dev_loss", "test_loss")}
        lines.append(f"| {row.key} | {len(common)} | {fmt_interval(diff['dev_loss'])} | "
                     f"{fmt_interval(diff['test_loss'])} | {verdict(diff['dev_loss'], diff['test_loss'])} |")
    lines += ["", f"Teacher loss on the same dev tokens: {teacher_loss:.3f}.", ""]
    plot = plot_curves(args, rows, by_key)
    if plot:
        lines += [f"![validation loss against training tokens]({plot.name})", ""]
    old = args.out.read_text() if args.out.is_file() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # the hand-written reading of the results stays
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n" + notes)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"tokens": args.tokens, "seq_len": args.seq_len, "lr": args.lr, "val_seqs": args.val_seqs,
         "seeds": args.seeds, "baseline": args.baseline, "precision": args.precision,
         "teacher_loss": teacher_loss, "targets": targets,
         "rows": [{**by_key[r.key], "label": r.label, "group": r.group} for r in rows]}, indent=2) + "\n")
    print(f"wrote {args.out}")


def plot_curves(args, rows: list[Row], by_key: dict) -> Path | None:
    """Validation loss against training tokens for the main rows."""
    main = [r for r in rows if r.main and by_key[r.key]["curve"]]
    if not main:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in main:
        tokens, losses = zip(*by_key[row.key]["curve"])
        ax.plot(tokens, losses, marker="o", ms=3, label=row.key)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = args.out.with_suffix(".png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
