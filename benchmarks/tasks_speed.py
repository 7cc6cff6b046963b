"""How many benchmark requests should go through the model at once? The compress report's tasks stage (the bundled
multiple-choice tasks on the default teacher, configs/demo.yaml's documents of each) run with each of --batch-sizes,
in one process, the arms in turn for --rounds rounds; the accuracies of every arm must equal the first arm's.

    python benchmarks/tasks_speed.py [--batch-sizes 1 8 16] [--rounds 1] [--out docs/tasks_speed.json]

Prints each run's wall time and, last, a JSON line: the median seconds of each batch size, their speed against one
request at a time, and whether the accuracies agree.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import machine  # noqa: E402 (a sibling script)

from minitron.load import load_model, load_tokenizer  # noqa: E402
from minitron.tasks import MC_TASKS, run_tasks  # noqa: E402

DEMO = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())


def table(summary: dict) -> str:
    """docs/performance.md's table (results_tables renders it from the JSON)."""
    first = next(iter(summary["median_s"]))
    lines = [f"| requests per forward | median s | speed vs {first} | accuracies as with {first} |", "|---|---|---|---|"]
    for bs, sec in summary["median_s"].items():
        lines.append(f"| {bs} | {sec:.1f} | {summary['speedup'][bs]:.2f}× | {'yes' if summary['same'][bs] else 'no'} |")
    return "\n".join(lines) + (f"\n\nThe bundled tasks ({', '.join(summary['tasks'])}), first {summary['limit']} "
                               f"documents each, on the default teacher; {summary['machine']}; "
                               f"`{summary['command']}`.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--limit", type=int, default=DEMO["eval"]["limit"], help="documents of each task")
    p.add_argument("--out", type=Path, default=Path("docs/tasks_speed.json"))
    args = p.parse_args()
    model, tok = load_model("default"), load_tokenizer("default")
    run_tasks(model, tok, list(MC_TASKS), limit=2, batch_size=1)  # lm-eval's first call indexes its tasks: not timed
    seconds, accs = {bs: [] for bs in args.batch_sizes}, {}
    for r in range(args.rounds):
        for bs in args.batch_sizes:
            start = time.time()
            results = run_tasks(model, tok, list(MC_TASKS), limit=args.limit, batch_size=bs)
            seconds[bs].append(time.time() - start)
            accs[bs] = {task: v["acc"] for task, v in results.items()}
            print(f"round {r}: batch {bs:>3} {seconds[bs][-1]:.1f} s  {accs[bs]}", flush=True)
    median = {bs: statistics.median(s) for bs, s in seconds.items()}
    first = args.batch_sizes[0]
    summary = {"seconds": seconds, "median_s": median, "speedup": {bs: median[first] / m for bs, m in median.items()},
               "accuracies": accs, "same": {bs: accs[bs] == accs[first] for bs in accs},
               "tasks": list(MC_TASKS), "limit": args.limit, "machine": machine(),
               "command": "python benchmarks/tasks_speed.py --batch-sizes " + " ".join(map(str, args.batch_sizes))
               + f" --rounds {args.rounds}"}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("median_s", "speedup", "same")}))


if __name__ == "__main__":
    main()
