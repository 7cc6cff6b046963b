"""The demo's score stage, as it was and as it is: the same `minitron score` call that `compress --config
configs/demo.yaml` makes (its criterion, calibration sequences and length, the removal losses of the block of layers
it drops), once with the single-layer removal losses it used to compute as well (`--layer-loss`, what every depth
pruning computed before) and once without (what it computes now: only the block length it removes). Run alternately
in fresh processes (--rounds each); every tensor both compute must agree to within 1e-5.

    python benchmarks/score_speed.py [--rounds 2] [--out docs/score_speed.json]

Prints each run's wall time and, last, a JSON line: the median seconds of each arm, their ratio and the largest
difference between the tensors both computed. The demo's data is the default corpus.
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

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
ARMS = {"before": ["--layer-loss"], "now": []}  # before: single layers too; now: the dropped block's length only


def run(arm: str, out: Path) -> float:
    k = 30 - DEMO["target"]["num_hidden_layers"]  # SmolLM2-135M has 30 layers
    cmd = [sys.executable, "-m", "minitron", "score", "--model", "default", "--out", str(out), "--overwrite",
           "--calib-seqs", str(DEMO["prune"]["calib_seqs"]), "--seq-len", str(DEMO["prune"]["seq_len"]),
           "--layer-loss-seqs", str(min(8, DEMO["prune"]["calib_seqs"])), "--block-sizes", str(k),
           "--criteria", "activation", *ARMS[arm]]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("runs/bench/score_speed"))
    p.add_argument("--out", type=Path, default=Path("docs/score_speed.json"))
    args = p.parse_args()
    seconds = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS:
            seconds[arm].append(run(arm, args.work / arm))
            print(f"round {r}: {arm:>6} {seconds[arm][-1]:.1f} s", flush=True)
    tensors = {arm: load_file(args.work / arm / "scores.safetensors") for arm in ARMS}
    shared = sorted(set(tensors["before"]) & set(tensors["now"]))
    diff = max(float((tensors["before"][k].float() - tensors["now"][k].float()).abs().max()) for k in shared)
    median = {arm: statistics.median(s) for arm, s in seconds.items()}
    summary = {"seconds": seconds, "median_s": median, "speedup": median["before"] / median["now"],
               "shared_tensors": len(shared), "only_before": sorted(set(tensors["before"]) - set(tensors["now"])),
               "max_abs_diff": diff, "command": "python benchmarks/score_speed.py --rounds " + str(args.rounds)}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("median_s", "speedup", "max_abs_diff")}))


if __name__ == "__main__":
    main()
