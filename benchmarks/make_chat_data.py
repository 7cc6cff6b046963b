"""Make a small chat set for chat-aware distillation: prompts built from the Python documentation,
answered greedily by the teacher (default: SmolLM2-135M-Instruct) with its own chat template.

Prompts are "Summarise this paragraph", "What does `name` do in Python?" and "Explain HEADING" requests
from the reStructuredText sources; documents are split into training and held-out sets by a hash of
their path, so held-out prompts come from documents no training conversation saw.

    python benchmarks/make_chat_data.py --out runs/chat/train.jsonl --heldout runs/chat/heldout.jsonl \
        [--num 400] [--num-heldout 60] [--model default] [--max-new-tokens 192] [--batch-size 16]

Writes {"messages": [user, assistant]} records (replies that ran out of tokens are dropped) and
{"prompt": ...} records for the held-out set. Generated data is not for committing.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

from minitron.data import DOCS_SOURCES, split_of

UNDERLINE = re.compile(r"^([=\-~^*#+])\1{2,}\s*$")
DIRECTIVE = re.compile(r"^\.\. (?:function|method|class|exception)::\s*([A-Za-z_][\w.]*)", re.M)
MODULE = re.compile(r"^\.\. (?:module|currentmodule)::\s*([\w.]+)", re.M)
ROLE = re.compile(r":[\w:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")


def clean_inline(text: str) -> str:
    """reStructuredText roles and literals as plain Markdown-ish text."""
    text = ROLE.sub(r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def paragraphs(text: str) -> list[str]:
    """Plain prose paragraphs (no directives, code, lists or headings) of a readable length."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").splitlines()
        if not lines or any(l.startswith((" ", "\t", "..", ":", "*", "-", "|", "+", ">>>")) for l in lines):
            continue
        if any(UNDERLINE.match(l) for l in lines):
            continue
        para = clean_inline(" ".join(l.strip() for l in lines))
        if 200 <= len(para) <= 700 and para.endswith(".") and len(para.split()) >= 30:
            out.append(para)
    return out


def headings(text: str) -> list[str]:
    lines = text.splitlines()
    return [clean_inline(lines[i - 1].strip()) for i in range(1, len(lines))
            if UNDERLINE.match(lines[i]) and 8 <= len(lines[i - 1].strip()) <= 60
            and len(lines[i].strip()) >= len(lines[i - 1].strip()) and not lines[i - 1].startswith((" ", ".."))]


def prompts_of(text: str, rng: random.Random) -> list[str]:
    """Every candidate prompt of one document, shuffled."""
    module = MODULE.search(text)
    names = sorted({n if "." in n or not module else f"{module.group(1)}.{n}" for n in DIRECTIVE.findall(text)})
    candidates = [f"Summarise this paragraph in one or two sentences:\n\n{p}" for p in paragraphs(text)]
    candidates += [f"What does `{n}` do in Python? Answer in two or three sentences." for n in names]
    candidates += [f"Explain \"{h}\" in Python in a few sentences." for h in headings(text)]
    rng.shuffle(candidates)
    return candidates


def collect(sources: list[Path], num: int, num_heldout: int, per_doc: int, seed: int,
            heldout_fraction: float) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts), at most `per_doc` from any one document."""
    files = sorted((str(f.relative_to(s)), f) for s in sources for f in s.glob("**/*.rst.txt"))
    rng = random.Random(seed)
    rng.shuffle(files)
    train, heldout = [], []
    for doc_id, f in files:
        bucket, want = (heldout, num_heldout) if split_of(doc_id, heldout_fraction, 0, seed) == "dev" else (train, num)
        if len(bucket) < want:
            bucket += prompts_of(f.read_text(encoding="utf-8", errors="replace"), rng)[:per_doc][:want - len(bucket)]
        if len(train) >= num and len(heldout) >= num_heldout:
            break
    return train, heldout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="training conversations (JSONL)")
    p.add_argument("--heldout", type=Path, required=True, help="held-out prompts (JSONL)")
    p.add_argument("--num", type=int, default=400)
    p.add_argument("--num-heldout", type=int, default=60)
    p.add_argument("--per-doc", type=int, default=3, help="most prompts taken from one document")
    p.add_argument("--heldout-fraction", type=float, default=0.15, help="share of documents held out")
    p.add_argument("--source", type=Path, nargs="+", default=[Path(DOCS_SOURCES[0])])
    p.add_argument("--model", default="default")
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from minitron.chat.cli import load_chat_model
    from minitron.chat.generate import Sampling, complete_many
    from minitron.chat.templates import encode

    train, heldout = collect(args.source, args.num, args.num_heldout, args.per_doc, args.seed,
                             args.heldout_fraction)
    print(f"{len(train)} training prompts, {len(heldout)} held-out prompts", flush=True)
    model, tok, fmt = load_chat_model(args.model, "auto", "auto")
    messages = [[{"role": "user", "content": q}] for q in train]
    start = time.time()
    replies = complete_many(model, tok, fmt, [encode(tok, fmt, m) for m in messages],
                            Sampling(args.max_new_tokens), args.batch_size)
    kept = [{"messages": m + [{"role": "assistant", "content": r.text.strip()}]}
            for m, r in zip(messages, replies) if r.stopped and r.text.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(k, ensure_ascii=False) + "\n" for k in kept))
    args.heldout.parent.mkdir(parents=True, exist_ok=True)
    args.heldout.write_text("".join(json.dumps({"prompt": q}, ensure_ascii=False) + "\n" for q in heldout))
    tokens = sum(len(r.token_ids) for r in replies)
    print(json.dumps({"prompts": len(train), "kept": len(kept), "teacher_stopped_share": len(kept) / max(1, len(train)),
                      "generated_tokens": tokens, "seconds": round(time.time() - start, 1),
                      "heldout_prompts": len(heldout)}))


if __name__ == "__main__":
    main()
