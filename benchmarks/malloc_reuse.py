"""Does keeping freed memory in glibc's heap (what `distill` does on the CPU, `reuse_freed_memory`) speed training?
The demo's pruned student distilled for 16 steps from the default teacher, alternately with glibc's default
(every block over 32 MB its own mmap, unmapped when freed) and with the reuse, in fresh processes.

    python benchmarks/malloc_reuse.py --student runs/smollm2-135m-half/pruned [--rounds 2] [--work runs/bench/malloc]

Prints, per run: wall time, system time, minor page faults, the tokens/s of the last step, the final loss.
"""
from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ARM = """import sys, minitron.distill.loop as loop
if sys.argv[1] == "default":
    loop.reuse_freed_memory = lambda: False  # glibc's default behaviour
from minitron.cli import main
main(sys.argv[2:])
"""


def run(arm: str, student: str, out: Path) -> dict:
    args = ["distill", "--teacher", "default", "--student", student, "--tokens", "16384", "--global-batch-tokens",
            "1024", "--seq-len", "256", "--precision", "bf16", "--eval-every", "0", "--save-every", "1000",
            "--out", str(out), "--overwrite"]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    proc = subprocess.run([sys.executable, "-c", ARM, arm, *args], capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = proc.stderr.replace("\r", "\n").strip().splitlines()
    speed = [line for line in last if "tok_s=" in line][-1]
    return {"wall_s": time.time() - start, "sys_s": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt, "tok_s": float(re.search(r"tok_s=([\d.]+)", speed)[1]),
            "loss": re.search(r"loss=([\d.]+)", speed)[1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", required=True, help="a pruned student of the default teacher")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("runs/bench/malloc"))
    args = p.parse_args()
    results = {"default": [], "reuse": []}
    for k in range(args.rounds):
        for arm in results:
            r = run(arm, args.student, args.work / f"{arm}-{k}")
            results[arm].append(r)
            print(f"{arm:>8}: {r['wall_s']:.1f} s wall, {r['sys_s']:.1f} s system, {r['faults']:,} minor faults, "
                  f"{r['tok_s']:.0f} tok/s at the last step, loss {r['loss']}", flush=True)
    ratio = sum(r["tok_s"] for r in results["reuse"]) / sum(r["tok_s"] for r in results["default"])
    print(f"reuse / default tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
