"""Which loss recovers a pruned model best? The real default teacher (SmolLM2-135M-Instruct) pruned to the
demo's half-size target once, then the same student trained on the same token budget with each logit loss the
papers compare (and a hidden-state loss), against conventional training without a teacher and training from
random initialisation. Every run sees the same batches; every model is evaluated on the same dev-split tokens
(windows spread over the whole split: the benchmark chooses the default loss, so it reads dev, not the test split).

    python benchmarks/distill_losses.py [--tokens 32768] [--out docs/distill_losses.md] [--work runs/bench/losses]

Two measures per model: dev LM loss (cross-entropy on the data) and KL(teacher || model) per token, how
closely the model imitates the teacher. A run whose student is already in --work (same label and budget) is
evaluated again without retraining; its recorded wall time is kept.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minitron.data import TokenData, default_data
from minitron.distill import TrainConfig, distill
from minitron.numerics import lm_loss
from minitron.load import load_model
from minitron.prune import PruneConfig, prune

TARGET = dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6)  # the demo's
NOTES = "<!-- notes: written by hand, kept when the tables are regenerated -->"
RUNS = [  # (row label, distill arguments)
    ("forward KL (the papers' choice)", dict(loss="forward_kl")),
    ("reverse KL", dict(loss="reverse_kl")),
    ("JSD, β = 0.5", dict(loss="jsd")),
    ("top-64 forward KL", dict(loss="topk_kl")),
    ("CE + forward KL, 0.5 each", dict(loss="ce_kd")),
    ("forward KL + hidden-state cosine (layers 14, 29)", dict(loss="forward_kl", hidden_loss="cosine",
                                                              layer_pairs=["14:14", "29:29"])),
    ("CE only, no teacher (conventional training)", dict(loss="ce")),
    ("CE only, from random initialisation", dict(loss="ce", init="random")),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768, help="training tokens per run")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-seqs", type=int, default=32)
    p.add_argument("--work", type=Path, default=Path("runs/bench/losses"), help="pruned student and runs")
    p.add_argument("--out", type=Path, default=Path("docs/distill_losses.md"))
    args = p.parse_args()
    data = TokenData.open(default_data("default"))
    val = data.spread("dev", args.val_seqs, args.seq_len).batch["input_ids"]  # selection: the dev split
    pruned = args.work / "pruned"
    if not (pruned / "config.json").is_file():
        prune(model="default", target=TARGET, out=pruned, prune=PruneConfig(calib_seqs=32, seq_len=args.seq_len),
              overwrite=True)
    teacher = load_model("default")
    with torch.no_grad():
        teacher_logp = [F.log_softmax(teacher(input_ids=ids).logits.float(), -1) for ids in val.split(4)]
    rows = [measure("teacher", None, teacher, val, teacher_logp),
            measure("pruned, no training", None, load_model(pruned), val, teacher_logp)]
    for i, (label, kw) in enumerate(RUNS):
        run = args.work / f"run{i}"
        rows.append(measure(label, train(args, run, label, pruned, data, kw), load_model(run / "student"), val,
                            teacher_logp))
        print(f"{label:>50}  dev loss {rows[-1][2]:.3f}  KL {rows[-1][3]:.3f}  ({rows[-1][1]:.0f} s)", flush=True)
    write_report(args, rows)


def train(args, run: Path, label: str, pruned: Path, data: TokenData, kw: dict) -> float:
    """Train one row's student (or reuse the one already there); its wall time in seconds."""
    record = run / "bench.json"
    if record.is_file() and (run / "student").is_dir():
        saved = json.loads(record.read_text())
        if (saved["label"], saved["tokens"]) == (label, args.tokens):
            return saved["wall_s"]
    start = time.time()
    distill(TrainConfig(student=str(pruned), out=run, tokens=args.tokens, teacher="default", data=str(data.path),
                        seq_len=args.seq_len, micro_batch=4, global_batch_tokens=4096, lr=args.lr, min_lr=args.lr / 10,
                        eval_every=0, eval_seqs=4, save_every=10**9, device="cpu", overwrite=True, **kw))
    wall = round(time.time() - start, 1)
    record.write_text(json.dumps({"label": label, "tokens": args.tokens, "wall_s": wall}) + "\n")
    return wall


@torch.no_grad()
def measure(label: str, seconds: float | None, model, val: torch.Tensor, teacher_logp: list[torch.Tensor]) -> tuple:
    """(label, seconds, dev LM loss, mean KL(teacher || model) per predicted token)."""
    kl, count = 0.0, 0
    for ids, t in zip(val.split(4), teacher_logp):
        s = F.log_softmax(model(input_ids=ids).logits.float(), -1)
        kl += (t.exp() * (t - s)).sum().item()
        count += ids.numel()
    return label, seconds, lm_loss(model, val.split(4)), kl / count


def write_report(args, rows) -> None:
    teacher, pruned = rows[0][2], rows[1][2]
    forward_kl = rows[2][2]
    lines = ["# Distillation losses on the real default teacher", "",
             f"SmolLM2-135M-Instruct pruned to hidden 384 / MLP 1024 / 6 heads by activation importance (the demo's "
             f"target, 67.6M parameters), then trained for {args.tokens:,} tokens of the default corpus "
             f"(sequences of {args.seq_len}, 4,096-token batches, AdamW at {args.lr:g} with cosine decay) with each "
             f"loss, all runs on the same batches. Measured on {args.val_seqs} × {args.seq_len} tokens of the "
             f"dev split (windows spread over the whole split), the same for every row. One run on this machine's 2 CPU cores.", "",
             f"Reproduce: `.venv/bin/python benchmarks/distill_losses.py --tokens {args.tokens}`", "",
             "| training | dev loss | perplexity | gap closed | loss vs forward KL | KL(teacher ‖ model) | wall time |",
             "|---|---|---|---|---|---|---|"]
    for label, seconds, loss, kl in rows:
        closed = f"{(pruned - loss) / (pruned - teacher):.0%}" if seconds is not None else ""
        ratio = f"{loss / forward_kl:.2f}×" if seconds is not None else ""
        wall = f"{seconds:.0f} s" if seconds is not None else ""
        lines.append(f"| {label} | {loss:.3f} | {math.exp(loss):,.1f} | {closed} | {ratio} | {kl:.3f} | {wall} |")
    lines += ["", "*Gap closed*: the share of the dev-loss gap between the pruned model and the teacher that "
              "training removed. *KL(teacher ‖ model)*: nats per token on the same dev tokens, how far the "
              "model's next-token distribution is from the teacher's.", ""]
    old = args.out.read_text() if args.out.is_file() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # the hand-written reading of the results stays
    args.out.write_text("\n".join(lines) + "\n" + notes)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"tokens": args.tokens, "seq_len": args.seq_len, "lr": args.lr, "val_seqs": args.val_seqs,
         "rows": [{"training": label, "val_loss": loss, "kl_from_teacher": kl, "wall_s": seconds}
                  for label, seconds, loss, kl in rows]},
        indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
