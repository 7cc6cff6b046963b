"""Prompts for the teacher to answer (`minitron data --generate`): a user's JSONL file, or the bundled set built
offline from the packaged corpus parts' *train* documents (never a dev or test document, so generated replies do not
leak held-out text): questions about the documentation's pages, about dictionary words, from the conversations, and
about quotations. Each prompt has a stable id, so that replies are cached and resumed by id."""
from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from minitron.data.corpora import part_documents
from minitron.data.sources import split_of
from minitron.errors import MinitronError, whole_number
from minitron.io import read_jsonl


@dataclass(frozen=True)
class Generation:
    """How `minitron data --generate` has the teacher write its conversations."""

    prompts: Path | None = None
    """JSONL of {"prompt"} or {"messages"} records (default: the bundled prompts, docs/data.md)"""
    count: int = 1000
    """prompts answered: the first COUNT of the file, or of the bundled set"""
    max_new_tokens: int = 256
    """longest reply, in tokens"""
    temperature: float = 0.0
    """0: greedy; above 0: sampled (with --generation.seed)"""
    seed: int = 0
    """sampling seed"""
    batch_size: int = 64
    """prompts answered together (padded batches; 64 the fastest measured on a 2-core CPU, the same replies as 16:
    docs/performance.md)"""
    device: str = "auto"
    """where the teacher runs: auto, cpu or cuda"""

    def check(self) -> "Generation":
        for name in ("count", "batch_size"):
            whole_number(getattr(self, name), f"--generation.{name.replace('_', '-')}")
        return self  # the sampling settings are checked with the sampler's own rules (`chat.generate.Sampling`)


UNDERLINE = re.compile(r"^([=\-*~^#\"'`+])\1{3,}\s*$")
ASK = {  # part: question templates, one picked per prompt by a hash of its id
    "docs": ("What is {}? Explain it in a few sentences.", "Give a short overview of {}.",
             "Explain {} to someone new to it, with an example."),
    "wordnet": ("What does the word \"{}\" mean?", "Use \"{}\" in a sentence and explain what it means."),
    "fortunes": ("What does this saying mean? \"{}\"", "Explain the joke or the point of this: \"{}\""),
    "chatterbot": ("{}",),
}


def bundled_prompts(count: int) -> list[dict]:
    """`count` prompts ({"id", "messages"}), taken in turn from each part of ASK (the parts installed by `make
    corpus`), each part's questions spread over its train documents."""
    per_part = {part: list(questions(part)) for part in ASK}
    spread = {part: [qs[round(i * len(qs) / min(len(qs), count))] for i in range(min(len(qs), count))]
              for part, qs in per_part.items() if qs}
    out = [p for group in itertools.zip_longest(*spread.values()) for p in group if p is not None]
    return out[:count]


def questions(part: str):
    """(id, question) of one part's train documents."""
    documents, _, _, held_out = part_documents(part)
    for doc_id, text in documents:
        if split_of(doc_id, held_out, held_out) != "train":
            continue
        for i, subject in enumerate(subjects(part, text)):
            pid = f"{part}:{doc_id}:{i}"
            templates = ASK[part]
            pick = int.from_bytes(hashlib.sha256(pid.encode()).digest()[:4], "little") % len(templates)
            yield {"id": pid, "messages": [{"role": "user", "content": templates[pick].format(subject)}]}


def subjects(part: str, text: str) -> list[str]:
    """What a document's questions are about: a page's title, each headword of a dictionary page, the user's turns
    of a conversation, each short quotation."""
    lines = text.splitlines()
    if part == "docs":  # the first reStructuredText heading
        for above, line in zip(lines, lines[1:]):
            title = above.strip()
            if title and UNDERLINE.match(line) and not UNDERLINE.match(above) and len(title) <= 80:
                return [title.strip("*`")]
        return []
    if part == "wordnet":  # "word, synonym (noun): gloss"
        return [line.split(" (", 1)[0].split(",")[0] for line in lines[:3] if " (" in line]
    if part == "chatterbot":
        return list(dict.fromkeys(line[6:].strip() for line in lines if line.startswith("User: ")))[:2]
    quotes = [" ".join(q.split()) for q in text.split("\n\n")]  # fortunes
    return [q for q in quotes if 20 <= len(q) <= 160][:2]


def user_prompts(path: Path, count: int | None) -> list[dict]:
    """A JSONL file of {"prompt": "..."} or {"messages": [...]} records (optionally with "id" and "system"), as
    {"id", "messages"}; ids default to the line number."""
    out = []
    for line, record in read_jsonl(path):
        if not isinstance(record, dict) or not (isinstance(record.get("prompt"), str) or
                                                isinstance(record.get("messages"), list)):
            raise MinitronError(f"{path}:{line} needs a \"prompt\" string or a \"messages\" list")
        messages = record.get("messages") or (
            ([{"role": "system", "content": record["system"]}] if record.get("system") else []) +
            [{"role": "user", "content": record["prompt"]}])
        if messages[-1].get("role") != "user":
            raise MinitronError(f"{path}:{line}: the last message must be the user's, for the teacher to answer")
        out.append({"id": str(record.get("id", line)), "messages": messages})
    if not out:
        raise MinitronError(f"{path} holds no prompts")
    if len({r["id"] for r in out}) != len(out):
        raise MinitronError(f"{path}: two prompts have the same \"id\"; ids name each reply in the cache")
    return out[:count]
