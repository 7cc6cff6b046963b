"""Does pruning + distillation beat the baselines at the same budget? And do teacher correction and iterative
compression help? The demo's teacher and target (configs/demo.yaml), the same token budget and settings for every
run, each evaluated on the same dev-split tokens every --eval-every tokens: dev loss against tokens, as a Markdown
table and a plot in a section of --out (docs/results.md) that is regenerated in place (the rest of the file, the
hand-written reading included, is kept).

    python benchmarks/baselines.py [--tokens 120000] [--eval-every 8192] [--work runs/bench/baselines]
    python benchmarks/baselines.py --mode recipe [--correct-tokens 30000]     # items 2 and 3 of issue 17
    python benchmarks/baselines.py --dry --teacher T --data D --target hidden_size=48 --out /tmp/r.md  # seconds

--mode baselines (the first Minitron paper's Table 14 at small scale): pruned + distillation, pruned + plain CE
training, random init + distillation, random init + CE. --mode recipe: `compress` as configured, with
--correct-teacher (its tokens counted on top), and with --stages 2 at the same distillation tokens. A run already in
--work with the same settings is reused (an interrupted one resumes); --dry runs tiny budgets (a test runs it).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import matplotlib
import torch
import yaml
from transformers import AutoModelForCausalLM

from minitron import compress
from minitron.cli import parse_mapping
from minitron.data import EVAL_TOKENS, TokenData, default_data
from minitron.eval import EvalConfig
from minitron.distill import TrainConfig, distill
from minitron.distill.config import schedule
from minitron.numerics import lm_loss, windows_in_batches
from minitron.io import read_jsonl
from minitron.load import load_config, load_model
from minitron.prune import PruneConfig, prune

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINES = [  # (label, TrainConfig changes): same student shape, budget, batches and settings
    ("pruned + distillation", dict()),
    ("pruned + CE training", dict(loss="ce", teacher=None)),
    ("random init + distillation", dict(init="random")),
    ("random init + CE training", dict(init="random", loss="ce", teacher=None)),
]
OUTPUT_NAME = {"baselines": "baselines", "recipe": "correction_stages"}  # plot and JSON beside --out
# --dry: a few steps on tiny sequences, in fp32 so that a test's curves are the same on every CPU (with native bf16
# or without: `precision: auto` would pick bf16 on one and fp32 on the other)
DRY = dict(tokens=1024, seq_len=32, micro_batch=4, global_batch_tokens=256, eval_seqs=4, lr=3e-3, min_lr=3e-4,
           precision="fp32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["baselines", "recipe"], default="baselines")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml", help="teacher, target, settings")
    p.add_argument("--tokens", type=int, help="distillation tokens per run (default: the config's)")
    p.add_argument("--eval-every", type=int, default=8192, help="validate every this many training tokens")
    p.add_argument("--correct-tokens", type=int, help="teacher correction tokens (recipe; default: tokens / 4)")
    p.add_argument("--correct-lr", type=float, default=1e-4, help="teacher correction learning rate (recipe)")
    p.add_argument("--teacher", help="override the config's teacher")
    p.add_argument("--data", type=Path, help="token data (default: the default corpus)")
    p.add_argument("--target", type=parse_mapping, help="override the config's target, NAME=VALUE,...")
    p.add_argument("--work", type=Path, default=Path("runs/bench/baselines"), help="runs, reused when finished")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    p.add_argument("--device", default="auto")
    p.add_argument("--dry", action="store_true", help="tiny budgets and sequences, for a test")
    args = p.parse_args()
    setup = Setup.from_args(args)
    rows = baselines(setup) if args.mode == "baselines" else recipe(setup, args)
    write_section(args, setup, rows)


class Setup:
    """The teacher, target, data, training settings and validation windows every run of this invocation shares."""

    def __init__(self, args, config: dict):
        self.teacher = args.teacher or config["teacher"]
        self.target = args.target or config["target"]
        measured = config.get("eval", {})  # compress's eval section
        self.calib_seqs, self.eval_tokens = (4, 128) if args.dry else (config["prune"]["calib_seqs"],
                                                                       measured.get("tokens", EVAL_TOKENS))
        self.ood = not args.dry and measured.get("ood", True)  # compress's out-of-domain measure (the dry run skips it)
        self.data = TokenData.open(args.data if args.data else default_data(self.teacher))
        section = {**config.get("distill", {}), **(DRY if args.dry else {})}
        if args.tokens:
            section["tokens"] = args.tokens
        self.train = TrainConfig(**{**section, "teacher": self.teacher, "data": str(self.data.path),
                                    "device": args.device})
        plan = schedule(self.train, self.data.num_tokens("train"), self.data.num_tokens("dev"), 1, self.data.path)
        every = max(1, (DRY["global_batch_tokens"] if args.dry else args.eval_every) // plan.tokens_per_step)
        self.train = replace(self.train, eval_every=every, save_every=every)
        self.val = self.data.spread("dev", plan.eval_seqs, self.train.seq_len).batch  # what distill validates on
        self.work, self.device, self.config = args.work, args.device, config
        # calibration (and compress's test-split windows) at the distillation's sequence length, as before
        self.prune = PruneConfig(calib_seqs=self.calib_seqs, seq_len=self.train.seq_len)

    @classmethod
    def from_args(cls, args) -> "Setup":
        return cls(args, yaml.safe_load(args.config.read_text()))

    def loss(self, model) -> float:
        return lm_loss(model.eval(), windows_in_batches(self.val, 4))


def baselines(s: Setup) -> list[dict]:
    """Prune once, then train the four students; their validation curves on the dev split (and the teacher's loss)."""
    pruned = s.work / "pruned"
    if not (pruned / "config.json").is_file():
        prune(model=s.teacher, target=s.target, out=pruned, data=s.data.path, prune=s.prune, device=s.device,
              overwrite=True)
    torch.manual_seed(s.train.seed)  # distill's random initialisation, for the curve's first point
    start = {"pretrained": s.loss(load_model(pruned)),
             "random": s.loss(AutoModelForCausalLM.from_config(load_config(pruned), dtype=torch.float32))}
    rows = [{"label": "teacher", "val_loss": s.loss(load_model(s.teacher)), "curve": []}]
    for i, (label, changes) in enumerate(BASELINES):
        cfg = replace(s.train, student=str(pruned), out=s.work / f"run{i}", **changes)
        seconds = train(cfg, label)
        curve = [(0, start[cfg.init])] + [(r["tokens"], r["val_loss"]) for _, r in read_jsonl(cfg.out / "metrics.jsonl")
                                          if r.get("val_loss") is not None]
        rows.append({"label": label, "val_loss": curve[-1][1], "curve": curve, "seconds": seconds,
                     "tokens": curve[-1][0]})
        print(f"{label:>28}: dev loss {curve[-1][1]:.3f} after {curve[-1][0]:,} tokens ({seconds:.0f} s)", flush=True)
    return rows


def train(cfg: TrainConfig, label: str) -> float:
    """Train one run, or reuse it when finished with the same settings (resume it when interrupted): wall seconds."""
    record, settings = cfg.out / "bench.json", json.loads(json.dumps(asdict(cfg), default=str))
    if record.is_file() and json.loads(record.read_text())["settings"] == settings:
        return json.loads(record.read_text())["seconds"]
    saved = cfg.out / "train_config.json"
    same = saved.is_file() and json.loads(saved.read_text()) == {**settings, "resume": False}
    start = time.time()
    distill(replace(cfg, resume=same, overwrite=not same))
    seconds = round(time.time() - start, 1)
    record.write_text(json.dumps({"label": label, "settings": settings, "seconds": seconds}) + "\n")
    return seconds


def recipe(s: Setup, args) -> list[dict]:
    """`compress` three ways at the same distillation tokens: as configured, with teacher correction, in 2 stages
    (without the benchmark tasks: the rows compare losses)."""
    correct_tokens = args.correct_tokens or s.train.tokens // 4
    runs = [("one stage (as configured)", dict()),
            (f"teacher corrected on {correct_tokens:,} tokens", dict(correct_teacher=correct_tokens,
                                                                   correct_lr=args.correct_lr)),
            ("two stages (--stages 2)", dict(stages=2))]
    distill_cfg = replace(s.train, teacher=None, data=None, device="auto")  # compress sets these itself
    rows = []
    for i, (label, extra) in enumerate(runs):
        run = s.work / f"recipe{i}"
        start = time.time()
        metrics = compress(teacher=s.teacher, target=s.target, out=run, data=s.data.path, prune=s.prune,
                           eval=EvalConfig(tokens=s.eval_tokens, ood=s.ood, tasks=[]), distill=distill_cfg,
                           device=s.device, resume=run.exists(), **extra)
        curve, offset = [], 0
        for where in sorted(run.glob("stage-*")) + [run]:
            log = [r for _, r in read_jsonl(where / "distill" / "metrics.jsonl")]
            curve += [(offset + r["tokens"], r["val_loss"]) for r in log if r.get("val_loss") is not None]
            offset += log[-1]["tokens"]
        rows.append({"label": label, "test_loss": metrics["distilled"]["test_loss"],
                     "test_ci95": metrics["distilled"]["test_ci95"], "gap_closed": metrics["gap_closed"]["test"],
                     "curve": curve, "teacher_test_loss": metrics["teacher"]["test_loss"], "tokens": metrics["tokens"],
                     "correction_tokens": metrics.get("correction_tokens", 0),
                     "seconds": round(sum(metrics["timings_s"].values()), 1), "this_call_s": time.time() - start})
        print(f"{label:>36}: test loss {rows[-1]['test_loss']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


# ---------------------------------------------------------------- the section of docs/results.md and its plot

def plot(rows: list[dict], teacher_loss: float | None, out: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        if row["curve"]:
            ax.plot(*zip(*row["curve"]), "o-", ms=3, label=row["label"])
    if teacher_loss is not None:
        ax.axhline(teacher_loss, ls="--", c="gray", label="teacher")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("dev loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def at(curve: list[tuple[int, float]], tokens: int) -> str:
    """The dev loss of the last evaluation at or before `tokens`."""
    seen = [loss for t, loss in curve if t <= tokens]
    return f"{seen[-1]:.3f}" if seen else "–"


def table(args, s: Setup, rows: list[dict]) -> list[str]:
    if args.mode == "baselines":
        marks = sorted({s.train.tokens // 4, s.train.tokens // 2, rows[1]["tokens"]})
        lines = ["| training | " + " | ".join(f"dev loss at {t:,} tokens" for t in marks) + " | perplexity | wall time |",
                 "|---|" + "---|" * (len(marks) + 2)]
        lines.append(f"| teacher | " + " | ".join([f"{rows[0]['val_loss']:.3f}"] * len(marks))
                     + f" | {math.exp(rows[0]['val_loss']):.1f} | |")
        for r in rows[1:]:
            lines.append(f"| {r['label']} | " + " | ".join(at(r["curve"], t) for t in marks)
                         + f" | {math.exp(r['val_loss']):.1f} | {r['seconds']:.0f} s |")
        return lines
    lines = ["| compress | correction tokens | distillation tokens | all tokens | teacher test loss | student test loss "
             "| perplexity | gap closed | wall time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        closed = "–" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"
        lines.append(f"| {r['label']} | {r['correction_tokens']:,} | {r['tokens']:,} | "
                     f"{r['correction_tokens'] + r['tokens']:,} | {r['teacher_test_loss']:.3f} | "
                     f"{r['test_loss']:.3f} ± {r['test_ci95']:.3f} | {math.exp(r['test_loss']):.1f} | {closed} | "
                     f"{r['seconds']:.0f} s |")
    return lines


def write_section(args, s: Setup, rows: list[dict]) -> None:
    """Replace this mode's section of --out (between its markers; appended the first time), keeping the rest."""
    image = args.out.with_name(f"{OUTPUT_NAME[args.mode]}.png")
    # the teacher's line on the curves' dev windows (in recipe mode the table's teacher losses are on the test split)
    teacher = rows[0]["val_loss"] if args.mode == "baselines" else s.loss(load_model(s.teacher))
    title = ("Baselines at the same budget" if args.mode == "baselines"
             else "Teacher correction and iterative compression")
    plot(rows if args.mode == "recipe" else rows[1:], teacher, image, title)
    target = ", ".join(f"{k} {v}" for k, v in s.target.items())
    t = s.train
    command = f"python benchmarks/baselines.py --mode {args.mode} --tokens {t.tokens}" + (" --dry" if args.dry else "")
    what = ("the same pruned student trained by distillation and by plain cross-entropy, and the same shape from "
            "random initialisation trained both ways" if args.mode == "baselines" else
            "`compress` as configured, with `--correct-teacher` (its tokens counted on top) and with `--stages 2`, "
            f"at the same distillation tokens; the table's losses are compress's, on {s.eval_tokens:,} tokens of the "
            "test split (the teacher's too: corrected, it differs per row), the curves' the distillation's own "
            "validation on the dev split")
    begin, end = f"<!-- {args.mode}: begin (generated by benchmarks/baselines.py) -->", f"<!-- {args.mode}: end -->"
    section = [begin, f"## {title}", "",
               f"Teacher `{s.teacher}` to {target}: {what}. Every run: {t.tokens:,} tokens, sequences of "
               f"{t.seq_len}, {t.global_batch_tokens:,}-token batches, AdamW at {t.lr:g} → {t.min_lr:g}, the same "
               f"batches; validation on the same {s.val['input_ids'].shape[0]} × {t.seq_len} tokens of the dev split "
               f"(windows spread over the whole split) every {t.eval_every} steps. One run on this machine.", "",
               f"Reproduce: `{command}`", "", *table(args, s, rows), "",
               f"![dev loss against training tokens]({image.name})", "", end]
    old = args.out.read_text() if args.out.is_file() else ""
    if begin in old and end in old:
        text = old[:old.index(begin)] + "\n".join(section) + old[old.index(end) + len(end):]
    else:
        text = old + ("\n" if old and not old.endswith("\n\n") else "") + "\n".join(section) + "\n"
    args.out.write_text(text)
    settings = json.loads(json.dumps(asdict(t), default=str))
    settings["loss"] = t.loss_name()  # by name: the default resolved
    settings["data"] = Path(settings["data"]).name  # the corpus' cache entry, not this machine's path
    args.out.with_name(f"{OUTPUT_NAME[args.mode]}.json").write_text(json.dumps(
        {"teacher": s.teacher, "target": s.target, "settings": settings, "rows": rows}, indent=2) + "\n")
    print(f"wrote the '{title}' section of {args.out} and {image}")


if __name__ == "__main__":
    main()
