"""The demo's score stage, as it was and as it is: the same `minitron score` call that `compress --config
configs/demo.yaml` makes (its criterion, calibration sequences and length, the removal losses of the block of layers
it drops), in fresh processes, alternately (--rounds each). Arms:

  before  as before issue 32: the single-layer removal losses too (`--layer-loss`, what every depth pruning computed),
          glibc's default malloc (every block over 32 MB mapped afresh)
  glibc   only the block length it removes, glibc's default malloc
  now     only the block length it removes, freed memory kept for reuse (what `minitron score` does on the CPU)
  bf16    as now, computed in bf16 (`--dtype bfloat16`)

    python benchmarks/score_speed.py [--rounds 2] [--arms before glibc now bf16] [--out docs/score_speed.json]

Every fp32 arm's tensors must agree with `now`'s to within 1e-5; bf16's largest differences are reported, with
whether it removes the same block (`--report` compares the saved scores again, with the JSON's seconds). Prints
each run's wall time and, last, a JSON line: the median seconds of each arm, their ratios to `now`, the
differences. The demo's data is the default corpus.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import machine  # noqa: E402 (a sibling script)

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
ARMS = {"before": ["--layer-loss"], "glibc": [], "now": [], "bf16": ["--dtype", "bfloat16"]}
GLIBC = ("before", "glibc")  # run with scoring's reuse of freed memory switched off, as before issue 32
LAUNCH = """import sys, minitron.importance.walk as walk
if sys.argv[1] == "off":
    walk.reuse_freed_memory = lambda: False
from minitron.cli import main
main(sys.argv[2:])
"""


def run(arm: str, out: Path) -> float:
    k = 30 - DEMO["target"]["num_hidden_layers"]  # SmolLM2-135M has 30 layers
    cmd = [sys.executable, "-c", LAUNCH, "off" if arm in GLIBC else "on", "score", "--model", "default", "--out",
           str(out), "--overwrite", "--calib-seqs", str(DEMO["prune"]["calib_seqs"]), "--seq-len",
           str(DEMO["prune"]["seq_len"]), "--layer-loss-seqs", str(min(8, DEMO["prune"]["calib_seqs"])),
           "--block-sizes", str(k), "--criteria", "activation", *ARMS[arm]]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.time() - start


def differences(tensors: dict, arm: str) -> dict:
    """Largest difference of an arm's tensors from `now`'s, over the tensors both hold, relative to each tensor's
    largest magnitude (activation scores are sums of squares, losses are nats); the block losses' largest difference
    in nats, and whether the block it removes (the smallest loss) is the same."""
    shared = sorted(set(tensors[arm]) & set(tensors["now"]))
    a, b = ({k: t[k].float() for k in shared} for t in (tensors[arm], tensors["now"]))
    rel = {k: float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in shared}
    blocks = [k for k in shared if "block_loss" in k]
    return {"max_rel_diff": max(rel.values()), "block_loss_max_abs_diff": max(float((a[k] - b[k]).abs().max())
                                                                               for k in blocks),
            "shared_tensors": len(shared),
            "only_here": sorted(set(tensors[arm]) - set(tensors["now"])),
            "same_block": all(int(tensors[arm][k].argmin()) == int(tensors["now"][k].argmin()) for k in blocks)}


def table(summary: dict) -> str:
    """docs/performance.md's table (results_tables renders it from the JSON)."""
    lines = ["| arm | median s | vs now | largest difference from now (relative) | block losses' (nats) | "
             "same block removed |", "|---|---|---|---|---|---|"]
    for arm, sec in summary["median_s"].items():
        d = summary["differences"].get(arm)
        lines.append(f"| {arm} | {sec:.1f} | {summary['vs_now'][arm]:.2f}× | "
                     + (f"{d['max_rel_diff']:.2g} | {d['block_loss_max_abs_diff']:.2g} | "
                        f"{'yes' if d['same_block'] else 'no'} |" if d else "– | – | – |"))
    return "\n".join(lines) + f"\n\n{summary['machine']}; `{summary['command']}`.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--work", type=Path, default=Path("runs/bench/score_speed"))
    p.add_argument("--out", type=Path, default=Path("docs/score_speed.json"))
    p.add_argument("--report", action="store_true", help="compare the scores in --work again, with --out's seconds")
    args = p.parse_args()
    arms = list(dict.fromkeys([*args.arms, "now"]))  # `now` is what the others are compared with
    seconds = json.loads(args.out.read_text())["seconds"] if args.report else {arm: [] for arm in arms}
    for r in range(0 if args.report else args.rounds):
        for arm in arms:
            seconds[arm].append(run(arm, args.work / arm))
            print(f"round {r}: {arm:>6} {seconds[arm][-1]:.1f} s", flush=True)
    tensors = {arm: load_file(args.work / arm / "scores.safetensors") for arm in arms}
    median = {arm: statistics.median(s) for arm, s in seconds.items()}
    summary = {"seconds": seconds, "median_s": median,
               "vs_now": {arm: median[arm] / median["now"] for arm in arms},
               "differences": {arm: differences(tensors, arm) for arm in arms if arm != "now"},
               "machine": machine(),
               "command": json.loads(args.out.read_text())["command"] if args.report else
               f"python benchmarks/score_speed.py --rounds {args.rounds} --arms " + " ".join(args.arms)}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("median_s", "vs_now", "differences")}))


if __name__ == "__main__":
    main()
