"""The teacher's own text for sequence-level distillation: its replies to many prompts, in its own chat format,
written in batches and appended to a JSONL file batch by batch, so that an interrupted run continues where it
stopped and a finished one is reused. Each line is a conversation `minitron data --chat` reads: the prompt's
messages and the teacher's reply as the assistant's turn."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from minitron.chat.generate import Sampling, complete_batch
from minitron.chat.templates import ChatFormat, encode, get_format
from minitron.data.prompts import Generation
from minitron.io import read_jsonl
from minitron.load import cache_dir, load_model, load_tokenizer, pick_device, resolve_model
from minitron.shards import Checkpoint


def teacher_replies(model: str, prompts: list[dict], generation: Generation, template: str = "auto") -> Path:
    """The teacher's replies to `prompts`, cached under the minitron cache by teacher, prompts, format and sampling
    (a rerun reuses them; an interrupted one continues); the JSONL file, with a .json record of the throughput."""
    sampling = Sampling(generation.max_new_tokens, generation.temperature, 1.0, generation.seed).check()
    tokenizer = load_tokenizer(model)
    fmt = get_format(tokenizer, template)
    key = hashlib.sha256(json.dumps({"teacher": Checkpoint.open(resolve_model(model)).fingerprint(),
                                     "prompts": prompts, "format": fmt.name, "sampling": asdict(sampling)},
                                    sort_keys=True).encode())
    path = cache_dir() / "replies" / f"{Path(str(model)).name}-{key.hexdigest()[:16]}.jsonl"
    if len(answered(path)) < len(prompts):
        lm = load_model(model, pick_device(generation.device))
        print(f"the teacher answers {len(prompts):,} prompts (cached in {path})", flush=True)
        made = write_replies(lm, tokenizer, fmt, prompts, path, sampling, generation.batch_size)
        log = path.with_suffix(".json")
        runs = json.loads(log.read_text())["runs"] if log.is_file() else []
        log.write_text(json.dumps({"runs": runs + [{**made, "device": str(pick_device(generation.device)),
                                                    "batch_size": generation.batch_size}]}, indent=1) + "\n")
    return path


def answered(path: Path) -> set[str]:
    """Ids already answered in `path`; a last line cut short by an interruption is dropped from the file."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:  # the batch being written when the run stopped: written again
            f.truncate(data.rfind(b"\n") + 1)
    return {record["id"] for _, record in read_jsonl(path)}


def write_replies(model, tokenizer, fmt: ChatFormat, prompts: list[dict], path: Path, sampling: Sampling,
                  batch_size: int) -> dict:
    """Answer every prompt ({"id", "messages"}) not yet in `path`, `batch_size` at a time (prompts of similar length
    together), appending {"id", "messages" + the reply, "stopped"} after each batch. Returns what this call did: the
    replies and tokens written, the seconds and the generated tokens per second."""
    done = answered(path)
    todo = sorted((p for p in prompts if p["id"] not in done), key=lambda p: len(p["messages"][-1]["content"]))
    tokens, start = 0, time.time()
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="teacher replies", unit=" replies",
               dynamic_ncols=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        ids = [encode(tokenizer, fmt, p["messages"], None) for p in chunk]
        completions = complete_batch(model, tokenizer, fmt, ids, sampling)
        lines = [json.dumps({"id": p["id"], "messages": p["messages"] + [{"role": "assistant",
                                                                          "content": c.text.strip()}],
                             "stopped": c.stopped}, ensure_ascii=False) + "\n" for p, c in zip(chunk, completions)]
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
        tokens += sum(len(c.token_ids) for c in completions)
        bar.update(len(chunk))
        bar.set_postfix(tok_s=f"{tokens / (time.time() - start):.0f}", refresh=False)
    bar.close()
    seconds = time.time() - start
    return {"replies": len(todo), "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1) if todo else None}
