"""What does reading a GGUF teacher cost? minitron's conversion (`load.convert_gguf`: `gguf_read`, one tensor at a
time into a safetensors checkpoint) against transformers' own GGUF loading (`from_pretrained(gguf_file=...)`, the
whole model dequantised in memory; minitron used it before, then saved the model as well), each in a fresh process
with a fresh cache, in turn, --repeats times: the wall time and the peak resident memory above the process's memory
once its imports are done, and their ratios (medians).

    python benchmarks/gguf_convert.py [--gguf FILE] [--repeats 3] [--out docs/gguf_convert.json]
    python benchmarks/gguf_convert.py --dry --gguf TINY.gguf   # one repeat, its JSON printed (the test's)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import machine  # noqa: E402 (a sibling script)

# Each way as a child process: imports first (the baseline memory), then the reading, then one JSON line.
CHILD = """
import json, os, resource, sys, time
import torch, transformers, gguf
from minitron.load import resolve_model
path, way, cache = sys.argv[1:4]
os.environ["MINITRON_CACHE"] = cache
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if way == "minitron":
    resolve_model(path)
else:
    from pathlib import Path
    p = Path(path)
    transformers.AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": (peak - base) / 1024}))
"""
WAYS = ("minitron", "transformers")


def run_once(gguf: Path, way: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        done = subprocess.run([sys.executable, "-c", CHILD, str(gguf), way, cache], capture_output=True, text=True,
                              check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(saved: dict) -> str:
    """docs/export.md's table (results_tables renders it from the JSON)."""
    lines = ["| reading | seconds | peak memory above imports (MB) |", "|---|---|---|"]
    for way in WAYS:
        r = saved["medians"][way]
        lines.append(f"| {way} | {r['seconds']:.1f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines) + (
        f"\n\nminitron / transformers: {saved['ratios']['seconds']:.2f}× the time, {saved['ratios']['peak_mb']:.2f}× "
        f"the memory (medians of {saved['repeats']} fresh processes each, in turn) for `{saved['gguf']}` "
        f"({saved['mb']:.0f} MB); {saved['machine']}; `{saved['command']}`.\n")


def main() -> None:
    from minitron.load import default_gguf

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", type=Path, default=None, help="the file (default: the default teacher's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/gguf_convert.json"))
    p.add_argument("--dry", action="store_true", help="one repeat, its JSON printed, not written (the test's)")
    args = p.parse_args()
    gguf = args.gguf or default_gguf()
    runs = {way: [] for way in WAYS}
    for _ in range(1 if args.dry else args.repeats):
        for way in WAYS:
            runs[way].append(run_once(gguf, way))
            print(way, runs[way][-1], flush=True)
    medians = {way: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_mb")}
               for way, rs in runs.items()}
    saved = {"gguf": gguf.name, "mb": gguf.stat().st_size / 1e6, "repeats": len(runs["minitron"]), "runs": runs,
             "medians": medians, "ratios": {k: medians["minitron"][k] / medians["transformers"][k]
                                            for k in ("seconds", "peak_mb")},
             "machine": machine(), "command": " ".join(["python benchmarks/gguf_convert.py", *sys.argv[1:]])}
    print(table(saved))
    if args.dry:
        print(json.dumps(saved))
    else:
        args.out.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
