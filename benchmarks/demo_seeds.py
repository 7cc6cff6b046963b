"""The demo against variants of its recipe, seed by seed: `minitron compress --config configs/demo.yaml` as it ships
(*demo*) and with each row's flags, once per data order (`--distill.seed`); every student then measured side by side
on the same windows of the dev split (what choices are made on), the test split (what is reported) and out-of-domain
English (the King James Bible, in no corpus), with its KL from the teacher. Each row against the demo, seed by seed:
the paired difference with its 95% t-interval and its reading (`minitron.stats.verdict`), the table of
benchmarks/recipe.py (docs/results.md renders both from their JSON with the same `seeds` block).

    python benchmarks/demo_seeds.py [--rows stages2] [--seeds 0 1 2] [--out docs/demo_stages.md]
    python benchmarks/demo_seeds.py --rows correct --out docs/demo_correction.md   # teacher correction first
    python benchmarks/demo_seeds.py --rows layers-loss --out docs/demo_layers.md   # layers one by one

Each run is a compress run directory in --work (default: the minitron cache, which outlives runs/, so a comparison
can run over several sessions), resumed when it is there (a finished one is only measured again);
`make demo`'s own run (--demo-run, when finished) stands for the demo's seed 0, the same student. About 10 minutes a
run on 2 CPU cores with bf16 units.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from results_tables import benchmark  # noqa: E402 (a sibling script)

from minitron.data import TokenData, default_data  # noqa: E402
from minitron.eval import ood_windows  # noqa: E402
from minitron.load import cache_dir, load_model, load_tokenizer  # noqa: E402
from minitron.stats import fmt_mean_sd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"
DEMO = yaml.safe_load(CONFIG.read_text())
RECIPE = benchmark("recipe")  # its per-model measures and its paired table
ROWS = {  # name: (what differs from the demo, compress flags)
    "demo": ("configs/demo.yaml as it ships: pruned once, distilled once", []),
    "stages2": ("`--stages 2`: pruned and distilled in two rounds, each a geometric share of the way to the demo's "
                "target, the 204,800 tokens split evenly between them", ["--stages", "2"]),
    "correct": ("`--correct-teacher 51200`: the teacher first fine-tuned on 51,200 tokens of the corpus (a quarter of "
                "the distillation's, as in the one-seed comparison of docs/results.md), then pruned and distilled "
                "from", ["--correct-teacher", "51200"]),
    "layers-loss": ("`--prune.layer-criterion loss`: the 3 layers removed one by one by their LM-loss increase, not as "
                    "the best contiguous block", ["--prune.layer_criterion", "loss"]),
}
MEASURES = ("dev_loss", "test_loss", "ood_loss", "test_kl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=["stages2"], choices=[r for r in ROWS if r != "demo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data orders (--distill.seed)")
    p.add_argument("--val-seqs", type=int, default=32, help="windows of 256 tokens of each held-out text")
    p.add_argument("--work", type=Path, default=cache_dir() / "bench" / "demo-seeds")
    p.add_argument("--demo-run", type=Path, default=Path(DEMO["out"]), help="`make demo`'s run: the demo's seed 0")
    p.add_argument("--out", type=Path, default=Path("docs/demo_stages.md"))
    args = p.parse_args()
    seq_len = DEMO["distill"]["seq_len"]
    data = TokenData.open(default_data(DEMO["teacher"]))
    windows = {"dev": data.spread("dev", args.val_seqs, seq_len), "test": data.spread("test", args.val_seqs, seq_len),
               "ood": ood_windows(load_tokenizer(DEMO["teacher"]), seq_len, args.val_seqs)}
    teacher = load_model(DEMO["teacher"])
    results = {"teacher": RECIPE.measured(teacher, None, windows)}
    for seed in args.seeds:  # seed by seed, so that the pairs complete as the runs go
        for name in ["demo", *args.rows]:
            run = run_dir(args, name, seed)
            row = results.setdefault(name, {"seeds": {}, "pruned": {}})
            row["pruned"][str(seed)] = RECIPE.measured(load_model(run / "pruned"), teacher, windows)
            timings = json.loads((run / "metrics.json").read_text())["timings_s"]
            row["seeds"][str(seed)] = {**RECIPE.measured(load_model(run / "student"), teacher, windows),
                                       "wall_s": sum(v for k, v in timings.items() if k != "evaluate")}
            print(f"{name:>8} seed {seed}: " + ", ".join(f"{k} {row['seeds'][str(seed)][k]:.3f}" for k in MEASURES),
                  flush=True)
            write(args, results)  # after every run: an interrupted comparison keeps what it measured


def run_dir(args, name: str, seed: int) -> Path:
    """One row's compress run with one data order, run (or resumed) unless it is finished."""
    if (name, seed) == ("demo", 0) and (args.demo_run / "metrics.json").is_file():
        return args.demo_run
    run = args.work / f"{name}-seed{seed}"
    if not (run / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "minitron", "compress", "--config", str(CONFIG), "--out", str(run),
                        "--resume", "--distill.seed", str(seed), "--eval.tasks", "[]", "--eval.tokens", "1024",
                        *ROWS[name][1]], check=True)  # compress's own measures: a few windows (ours are below)
    return run


def write(args, results: dict) -> None:
    saved = {"baseline": "demo", "settings": {"config": "configs/demo.yaml", "seeds": args.seeds,
                                              "val_seqs": args.val_seqs, "rows": {r: ROWS[r] for r in results
                                                                                  if r in ROWS}},
             "rows": results}
    args.out.with_suffix(".json").write_text(json.dumps(saved, indent=1) + "\n")
    args.out.write_text(render(saved) + "\n")
    print(f"wrote {args.out}", flush=True)


def render(saved: dict) -> str:
    """Each row's measures (mean ± standard deviation over the seeds), its share of the demo's teacher–pruned gap
    closed out of domain, its wall time, then the paired table."""
    rows, s = saved["rows"], saved["settings"]
    teacher, demo_pruned = rows["teacher"], rows["demo"]["pruned"]
    lines = ["# The demo against variants of its recipe, seed by seed", "",
             f"`{s['config']}` run by `benchmarks/demo_seeds.py` as it ships (*demo*) and with each row's flags, once "
             f"per data order (seeds {', '.join(map(str, s['seeds']))}); every model measured on {s['val_seqs']} "
             "windows of 256 tokens spread over the dev split, the test split and the King James Bible "
             f"(out-of-domain). Teacher: dev {teacher['dev_loss']:.3f}, test {teacher['test_loss']:.3f}, "
             f"out-of-domain {teacher['ood_loss']:.3f}. *Closed out of domain*: the share of the teacher–pruned gap "
             "of the demo's pruned model that the student closed; the wall time is that of compress's score, prune "
             "and distil stages (every round's), on this machine.", "",
             "| row | what differs | pruned dev loss (the last round's start) | dev loss | test loss | out-of-domain loss | test KL | "
             "closed out of domain | wall time |", "|---|---|---|---|---|---|---|---|---|"]
    for name, (desc, _) in s["rows"].items():
        runs = rows[name]["seeds"]
        closed = [(demo_pruned[k]["ood_loss"] - r["ood_loss"]) / (demo_pruned[k]["ood_loss"] - teacher["ood_loss"])
                  for k, r in runs.items() if k in demo_pruned]
        col = {k: fmt_mean_sd([r[k] for r in runs.values()]) for k in MEASURES}
        pruned = fmt_mean_sd([m["dev_loss"] for m in rows[name]["pruned"].values()])
        lines.append(f"| {name} | {desc} | {pruned} | {col['dev_loss']} | {col['test_loss']} | {col['ood_loss']} | "
                     f"{col['test_kl']} | {sum(closed) / len(closed):.0%} | "
                     f"{sum(r['wall_s'] for r in runs.values()) / len(runs) / 60:.1f} min |")
    return "\n".join(lines + ["", *RECIPE.paired_table(rows, saved["baseline"])])


if __name__ == "__main__":
    main()
