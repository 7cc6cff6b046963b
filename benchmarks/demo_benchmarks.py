"""The demo's three models on more benchmark documents than `make demo` has time for: the teacher, the pruned and
the distilled model of a finished demo run on the first --limit documents of each default task, with the distilled
model's paired differences (document by document) from the other two and their 95% intervals: does the student keep
more of the teacher's benchmark accuracy than the pruned model, beyond the 50 documents of the demo's report?

    make demo && python benchmarks/demo_benchmarks.py [--run runs/smollm2-135m-half] [--limit 500]
        [--out docs/demo_benchmarks.json]

Writes a JSON of tasks.json's form (results_tables' `tasks` renderer shows it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import machine  # noqa: E402 (a sibling script)

from minitron.io import write_json  # noqa: E402
from minitron.load import pick_device  # noqa: E402
from minitron.pipeline import benchmark, run_models  # noqa: E402
from minitron.tasks import MC_TASKS  # noqa: E402

DEMO = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path(DEMO["out"]), help="a finished `make demo` run directory")
    p.add_argument("--teacher", default=DEMO["teacher"], help="the teacher the run distilled from")
    p.add_argument("--limit", type=int, default=500, help="documents of each task")
    p.add_argument("--tasks", nargs="+", default=list(MC_TASKS))
    p.add_argument("--out", type=Path, default=Path("docs/demo_benchmarks.json"))
    args = p.parse_args()
    if not (args.run / "student").exists():
        sys.exit(f"error: {args.run} holds no distilled student; run `make demo` first")
    saved = benchmark(run_models(args.teacher, args.run), args.tasks, args.limit, pick_device("auto"))
    saved.update(machine=machine(), command="python " + " ".join(sys.argv))
    write_json(args.out, saved)
    paired = saved["paired"]["distilled-pruned"]
    print(f"mean accuracy {saved['mean_accuracy']}; distilled - pruned {paired['difference']:+.3f} ± "
          f"{paired['ci95']:.3f} over {paired['documents']} documents; wrote {args.out}")


if __name__ == "__main__":
    main()
