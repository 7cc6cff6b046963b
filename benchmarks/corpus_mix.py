"""Does mixing prose into the default corpus keep the in-domain loss and help general text? The real default teacher
(SmolLM2-135M-Instruct) pruned once to the demo's target (calibrated on the documentation, as before the mix), then
the same student distilled for the same number of tokens on (a) the documentation only (`docs` corpus) and (b) the
`mix` corpus (documentation then Jane Austen's novels). Every model is evaluated on 32 x 256 tokens of the
dev split of the documentation and of the prose (windows spread evenly over each whole split; the benchmark chooses
the default corpus, so it measures on dev, not on the test split the reports use).

    python benchmarks/corpus_mix.py [--tokens 65536] [--work runs/bench/corpus_mix] [--out docs/corpus_mix.md]
    python benchmarks/corpus_mix.py --dry   # a tiny random teacher and generated text, in seconds (the test's)

A row whose student is already in --work (same corpus, recipe and budget) is evaluated again without retraining.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minitron.data import TokenData, build_data, default_data
from minitron.distill import TrainConfig, distill
from minitron.numerics import lm_loss
from minitron.load import load_model, load_tokenizer
from minitron.prune import PruneConfig, prune

TARGET = dict(intermediate_size=768, num_hidden_layers=18)  # the demo's (configs/demo.yaml)
RECIPE = dict(seq_len=256, micro_batch=4, global_batch_tokens=1024, lr=1e-3, min_lr=1e-4, loss="forward_kl",
              precision="bf16")  # the demo's recipe (benchmarks/recipe.py's b1k)
ROWS = {"docs": "documentation only (`docs`)", "mix": "documentation + prose (`mix`)"}
CORPUS = {"docs": "docs", "mix": "mix", "prose": "prose"}  # row or split -> corpus name
DRY_TARGET = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
DRY_RECIPE = dict(RECIPE, seq_len=32, micro_batch=2, global_batch_tokens=128, precision="fp32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=65536, help="training tokens per row")
    p.add_argument("--val-seqs", type=int, default=32)
    p.add_argument("--work", type=Path, default=Path("runs/bench/corpus_mix"), help="pruned student and runs")
    p.add_argument("--out", type=Path, default=None, help="report (default: docs/corpus_mix.md; --dry: in --work)")
    p.add_argument("--dry", action="store_true", help="a tiny random teacher and generated text (for the tests)")
    args = p.parse_args()
    args.out = args.out or (args.work / "corpus_mix.md" if args.dry else Path("docs/corpus_mix.md"))
    torch.manual_seed(0)
    if args.dry:
        torch.set_num_threads(1)  # tiny models crawl on two threads of a busy machine
    teacher, target, recipe, data = dry_setup(args.work) if args.dry else ("default", TARGET, RECIPE, real_data())
    seq_len = recipe["seq_len"]
    val = {split: TokenData.open(data[split]).spread("dev", args.val_seqs, seq_len).batch["input_ids"].split(4)
           for split in ("docs", "prose")}
    pruned = args.work / "pruned"
    if not (pruned / "config.json").is_file():  # calibrated on the documentation, as the demo was before the mix
        prune(model=teacher, target=target, out=pruned, data=data["docs"], device="cpu", overwrite=True,
              prune=PruneConfig(calib_seqs=8 if args.dry else 32, seq_len=seq_len))
    results = {"teacher": evaluate(teacher, val), "pruned": evaluate(pruned, val)}
    for name in ROWS:
        results[name] = {**train(args, name, teacher, recipe, pruned, data[name]),
                         **evaluate(args.work / name / "student", val)}
        print(f"{name:>5}  docs dev {results[name]['docs']:.3f}  prose dev {results[name]['prose']:.3f}  "
              f"({results[name]['wall_s']:.0f} s)", flush=True)
        write_report(args, results, recipe)  # after every row: a long run reports what it has


def real_data() -> dict[str, Path]:
    return {name: default_data("default", corpus=corpus) for name, corpus in CORPUS.items()}


def dry_setup(work: Path) -> tuple[str, dict, dict, dict[str, Path]]:
    """A tiny random Llama with the default tokenizer, and two generated corpora of different vocabularies."""
    teacher = work / "tiny-teacher"
    tok = load_tokenizer("default")
    if not (teacher / "config.json").is_file():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(teacher)
        tok.save_pretrained(teacher)
    words = {"docs": "the function returns a list of values when the module imports the kernel driver".split(),
             "prose": "she walked to the garden where her sister waited with a letter from town".split()}
    data = {}
    for name, vocab in words.items():
        text = work / f"{name}-text"
        text.mkdir(parents=True, exist_ok=True)
        rng = random.Random(name)
        for d in range(40):
            (text / f"{d:02d}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(150)) + "\n")
    for name, parts in (("docs", ["docs"]), ("prose", ["prose"]), ("mix", ["docs", "prose"])):
        out = work / f"{name}-data"
        if not (out / "meta.json").is_file():
            build_data(source=[str(work / f"{p}-text") for p in parts], out=out, tokenizer=str(teacher),
                       glob="*.txt", dev_fraction=0.2, test_fraction=0.2, overwrite=True)
        data[name] = out
    return str(teacher), DRY_TARGET, DRY_RECIPE, data


def evaluate(spec, val: dict) -> dict:
    model = load_model(spec, device="cpu")
    return {split: lm_loss(model, batches) for split, batches in val.items()}


def train(args, name: str, teacher: str, recipe: dict, pruned: Path, data: Path) -> dict:
    """Distil one row's student (or reuse the one already there)."""
    run = args.work / name
    record = run / "bench.json"
    if record.is_file() and (run / "student").is_dir():
        saved = json.loads(record.read_text())
        if (saved["recipe"], saved["tokens"], saved["data"]) == (recipe, args.tokens, data.name):
            return saved
    start = time.time()
    result = distill(TrainConfig(student=str(pruned), out=run, tokens=args.tokens, teacher=teacher, data=str(data),
                                 eval_every=0, save_every=10**9, device="cpu", overwrite=True, **recipe))
    saved = {"recipe": recipe, "tokens": args.tokens, "data": data.name, "wall_s": round(time.time() - start, 1),
             "train_loss": result.loss}
    record.write_text(json.dumps(saved) + "\n")
    return saved


def write_report(args, results: dict, recipe: dict) -> None:
    seqs = f"{args.val_seqs} × {recipe['seq_len']}"
    lines = ["# Mixing prose into the default corpus", "",
             f"SmolLM2-135M-Instruct pruned to the demo's target (hidden 576 kept, MLP 768, 18 layers) by activation "
             f"importance calibrated on the documentation, then distilled for {args.tokens:,} tokens (1,024-token "
             f"batches, lr 1e-3 → 1e-4, forward KL, bf16 autocast) on each corpus. Measured on {seqs} tokens of the dev "
             "split of the documentation and of the prose (Jane Austen's novels), in windows spread evenly over each "
             "whole split. "
             f"{'Dry run: a tiny random teacher on generated text. ' if args.dry else ''}"
             "One run on this machine's CPUs.", "",
             f"Reproduce: `.venv/bin/python benchmarks/corpus_mix.py --tokens {args.tokens}`", "",
             "| model | distilled on | docs dev loss | docs ppl | prose dev loss | prose ppl |", "|---|---|---|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| {name} | {ROWS.get(name, '—')} | {row['docs']:.3f} | {math.exp(row['docs']):,.1f} | "
                     f"{row['prose']:.3f} | {math.exp(row['prose']):,.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"tokens": args.tokens, "rows": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
