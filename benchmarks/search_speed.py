"""Where `minitron search --params 0.5 --distill-top 0` spends its time, before and after issue 32, item 3: the
same search on the default teacher and corpus, each arm in a fresh process, one after the other on one machine.

    python benchmarks/search_speed.py [--arms before bf16-s8 bf16 check fp32] [--work runs/bench/search_speed]
                                      [--out docs/search_speed.json]

Arms (search.json's own clock: the scores, each part of the zero-shot ranking):
  before   what search did before: 24 of the shapes sampled, each measured on all 32 dev windows, in fp32, with
           glibc's default malloc (every block over 32 MB mapped afresh: neither scoring nor the ranking kept freed
           memory)
  bf16-s8  every shape within the budget, screened on 8 dev windows, the best 24 measured on all 32, the scores and
           losses in bf16 (--dtype bfloat16)
  bf16     the same with the default screening (4 windows), from bf16-s8's scores
  check    every shape measured on all 32 windows, in bf16, from bf16-s8's scores: whether each screening keeps the
           shapes a full ranking puts first (the top 4 that --distill-top 4 would train)
  fp32     the defaults: every shape, screened on 4 windows, the best 24 on 32, fp32

An arm whose results are in WORK/ARM.json is not run again (the runs take 10-30 minutes each); delete the file to
measure it again. The last line printed is a JSON object: each arm's seconds, ratios to `before`, and the check.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TOP = 4  # the shapes --distill-top 4 would go on to distil
ARMS = {  # name: (what it is, search flags)
    "before": ("24 sampled shapes, every one on 32 dev windows, fp32, glibc's default malloc",
               ["--max-candidates", "24", "--screen-seqs", "0"]),
    "bf16-s8": ("every shape, screened on 8 windows, the best 24 on 32, bf16", ["--screen-seqs", "8", "--dtype",
                                                                             "bfloat16"]),
    "bf16": ("every shape, screened on 4 windows, the best 24 on 32, bf16 (bf16-s8's scores)",
             ["--dtype", "bfloat16"]),
    "check": ("every shape on 32 windows, bf16 (bf16-s8's scores)", ["--screen-seqs", "0", "--dtype", "bfloat16"]),
    "fp32": ("every shape, screened on 4 windows, the best 24 on 32, fp32", []),
}
REUSE = {"bf16": "bf16-s8", "check": "bf16-s8"}  # arms that rank from another arm's scores (counted as its seconds)
# `before` runs minitron with glibc's default malloc, as scoring ran before it kept freed memory for reuse
LAUNCH = """import sys, minitron.importance.walk as walk, minitron.search as search
if sys.argv[1] == "before":
    walk.reuse_freed_memory = search.reuse_freed_memory = lambda: False
from minitron.cli import main
main(sys.argv[2:])
"""


def run(arm: str, work: Path) -> dict:
    """Run one arm's search in a fresh process; its record: wall seconds, search.json's parts, the candidates."""
    flags = list(ARMS[arm][1])
    if arm in REUSE:
        flags += ["--scores", json.loads((work / f"{REUSE[arm]}.json").read_text())["work"] + "/scores"]
    cmd = [sys.executable, "-c", LAUNCH, arm, "search", "--model", "default", "--params", "0.5", "--distill-top", "0",
           "--out", str(work / arm), "--work", str(work / f"{arm}-work"), "--overwrite", *flags]
    start = time.time()
    subprocess.run(cmd, check=True)
    return record(arm, work / f"{arm}-work", round(time.time() - start, 1))


def record(arm: str, search_work: Path, wall: float | None) -> dict:
    """An arm's record from its finished search's search.json (wall: the process's seconds, None if adopted)."""
    found = json.loads((search_work / "search.json").read_text())
    if any(c["zero_shot_loss"] is None and c.get("screen_loss") is None for c in found["candidates"]):
        raise SystemExit(f"{search_work}: the search did not finish")
    return {"what": ARMS[arm][0], "flags": ARMS[arm][1], "wall_s": wall, "work": str(search_work),
            "settings": {k: found["settings"].get(k) for k in ("max_candidates", "val_seqs", "screen_seqs",
                                                                 "screen_keep", "dtype", "scores")},
            "seconds": found["seconds"],
            "candidates": [{k: c.get(k) for k in ("name", "screen_loss", "zero_shot_loss")}
                           for c in found["candidates"]]}


def ranking_s(arm: str, records: dict) -> float:
    """The scores and the zero-shot ranking: what the search costs before any distillation (an arm that reuses
    another's scores is counted with that arm's scoring seconds)."""
    scores = records[REUSE[arm]] if arm in REUSE else records[arm]
    return scores["seconds"]["scores"] + records[arm]["seconds"]["zero_shot"]


def check(screened: dict, full: dict) -> dict:
    """Whether the screened ranking's first TOP shapes are the full ranking's first TOP."""
    def first(rows):
        measured = [r for r in rows if r["zero_shot_loss"] is not None]
        return [r["name"] for r in sorted(measured, key=lambda r: r["zero_shot_loss"])[:TOP]]

    kept = {r["name"] for r in screened["candidates"] if r["zero_shot_loss"] is not None}
    truth = first(full["candidates"])
    loss = {r["name"]: r["zero_shot_loss"] for r in full["candidates"]}
    return {"top": TOP, "screened_top": first(screened["candidates"]), "full_top": truth,
            "same_top": set(first(screened["candidates"])) == set(truth),
            "full_top_kept_by_screening": sum(n in kept for n in truth),
            "worst_kept_full_rank": max(sorted(loss, key=loss.get).index(n) + 1 for n in kept)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--work", type=Path, default=Path("runs/bench/search_speed"))
    p.add_argument("--out", type=Path, default=Path("docs/search_speed.json"))
    p.add_argument("--adopt", nargs="*", default=[], metavar="ARM=DIR",
                   help="take an arm from a finished `minitron search` work directory run with its flags")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for item in args.adopt:
        arm, path = item.split("=", 1)
        (args.work / f"{arm}.json").write_text(json.dumps(record(arm, Path(path), None), indent=1) + "\n")
    records = {}
    for arm in args.arms:
        done = args.work / f"{arm}.json"
        if not done.is_file():
            done.write_text(json.dumps(run(arm, args.work), indent=1) + "\n")
        records[arm] = json.loads(done.read_text())
        print(f"{arm}: {ranking_s(arm, records):.0f} s of scores and ranking, "
              f"{len(records[arm]['candidates'])} shapes", flush=True)
    base = ranking_s("before", records) if "before" in records else None
    summary = {"machine": machine(), "arms": {a: {"what": r["what"], "flags": r["flags"], "wall_s": r["wall_s"],
                                                  "settings": r["settings"],
                                                  "seconds": r["seconds"], "shapes": len(r["candidates"]),
                                                  "ranking_s": round(ranking_s(a, records), 1),
                                                  "vs_before": round(ranking_s(a, records) / base, 3) if base
                                                  else None}
                                              for a, r in records.items()},
               "command": "python benchmarks/search_speed.py --arms " + " ".join(args.arms)}
    if "check" in records:  # each screened bf16 arm against the full ranking
        summary["check"] = {a: check(records[a], records["check"]) for a in ("bf16-s8", "bf16", "fp32")
                            if a in records}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({a: s["ranking_s"] for a, s in summary["arms"].items()} | {"check": summary.get("check")}))


def table(summary: dict) -> str:
    """docs/performance.md's table: each arm's seconds by part and against `before` (results_tables renders it)."""
    def sec(arm: dict, *keys: str) -> str:
        found = [arm["seconds"][k] for k in keys if k in arm["seconds"]]
        return f"{sum(found):.0f}" if found else "–"

    lines = ["| arm | what | shapes | scores (s) | of which removal losses | screening (s) | zero-shot on all "
             "windows (s) | scores + ranking (s) | vs before |", "|---|---|---|---|---|---|---|---|---|"]
    for name, arm in summary["arms"].items():
        screening = sec(arm, "screening.plan", "screening.slice", "screening.loss")
        full = sec(arm, "zero-shot.plan", "zero-shot.slice", "zero-shot.loss", "zero_shot.plan", "zero_shot.slice",
                    "zero_shot.loss")
        vs = f"{arm['vs_before']:.2f}×" if arm["vs_before"] else "–"
        scores = (f"{sec(summary['arms'][REUSE[name]], 'scores')} ({REUSE[name]}'s)" if name in REUSE
                  else sec(arm, "scores"))
        lines.append(f"| {name} | {arm['what']} | {arm['shapes']} | {scores} | "
                     f"{sec(arm, 'scores.removal_losses')} | {screening} | {full} | {arm['ranking_s']:.0f} | {vs} |")
    for name, c in summary.get("check", {}).items():
        lines += ["", f"Screening check, {name}: the full ranking's (check's) first {c['top']} are "
                      f"{', '.join(c['full_top'])}; "
                      f"the screened ranking's are {', '.join(c['screened_top'])} ("
                      + ("the same" if c["same_top"] else "not the same") + f"); {c['full_top_kept_by_screening']} "
                      f"of the full first {c['top']} survive the screening, and the worst survivor is number "
                      f"{c['worst_kept_full_rank']} of the full ranking."]
    return "\n".join(lines) + f"\n\n{summary['machine']}; `{summary['command']}`.\n"


def machine() -> str:
    """The CPU and the cores the runs had (these figures are this machine's)."""
    import os
    import re
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = re.search(r"model name\s*:\s*(.*)", info)
    bf16 = "native bf16" if ("avx512_bf16" in info or "amx_bf16" in info) else "no native bf16"
    return f"{name.group(1).strip() if name else 'unknown CPU'}, {os.cpu_count()} cores, {bf16}"


if __name__ == "__main__":
    main()
