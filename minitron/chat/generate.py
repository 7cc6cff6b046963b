"""Replies from a chat model through `model.generate`: streamed as they are written (one conversation) or in
batches (many). The sampling, the KV cache and stopping are transformers'.

A reply ends at the format's stop string or one of the model's end-of-sequence tokens; neither is part
of the reply text. `Completion.stopped` says whether it ended that way or ran out of tokens.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from tqdm.auto import tqdm

from minitron.chat.templates import ChatFormat, encode, get_format
from minitron.errors import MinitronError, real_number, whole_number


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> "Sampling":
        """Refuse settings that mean nothing (the flags' names in the message); returns itself."""
        whole_number(self.max_new_tokens, "--max-new-tokens")
        real_number(self.temperature, "--temperature", lambda v: v >= 0, "0 (greedy) or more")
        real_number(self.top_p, "--top-p", lambda v: 0 < v <= 1, "above 0 and at most 1")
        return self


def room(model, prompt_tokens: int, sampling: Sampling) -> Sampling:
    """`sampling` with max_new_tokens cut to what the model's context leaves after the prompt (with a warning);
    a prompt that fills the context is refused."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not context or prompt_tokens + sampling.max_new_tokens <= context:
        return sampling
    left = context - prompt_tokens
    if left < 1:
        raise MinitronError(f"the prompt has {prompt_tokens:,} tokens, the model's whole context "
                            f"(max_position_embeddings {context:,}); shorten it")
    print(f"minitron: warning: --max-new-tokens {sampling.max_new_tokens:,} is past the model's context of "
          f"{context:,} tokens; replies stop after {left:,}", file=sys.stderr, flush=True)
    return replace(sampling, max_new_tokens=left)


@dataclass
class Completion:
    text: str  # the reply, without the stop string/token
    stopped: bool  # ended with a stop string/token (False: hit max_new_tokens or was interrupted)
    token_ids: list[int] = field(default_factory=list)  # generated ids, stop token included


def stop_token_ids(model, tokenizer, fmt: ChatFormat) -> set[int]:
    """End-of-sequence ids of the tokenizer and generation config, and stop strings that are one token."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    vocab = tokenizer.get_vocab()
    ids |= {vocab[s] for s in fmt.stop_strings if s in vocab}
    return ids


BATCH_SIZE = 64  # prompts a padded batch answers together: the fastest measured on a 2-core CPU (docs/performance.md)


def pad_id(tokenizer, stop_ids: set[int]) -> int:
    """The id padding a batch: the tokenizer's pad token, else the lowest stop id (never generated past)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids, default=0)


def generation_config(tokenizer, fmt: ChatFormat, stop_ids: set[int], pad: int,
                      sampling: Sampling):
    """Greedy decoding, or nucleus sampling at `temperature`; stops at the stop tokens, and at stop strings
    longer than one token through transformers' `stop_strings` (which needs `tokenizer=` in `generate`)."""
    from transformers import GenerationConfig  # lazy: CLI start-up speed (pulls in most of transformers)

    sample = sampling.temperature > 0
    vocab = tokenizer.get_vocab()
    return GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=sample, pad_token_id=pad,
                            eos_token_id=sorted(stop_ids) or None,
                            stop_strings=[s for s in fmt.stop_strings if s not in vocab] or None,
                            temperature=sampling.temperature if sample else 1.0,
                            top_p=sampling.top_p if sample else 1.0, top_k=0 if sample else 50)


class StopScanner:
    """Decodes generated ids as they come, finds where the reply stops, and hands out printable text.

    Text that could still be the start of a stop string (or half a UTF-8 character) is held back.
    """

    def __init__(self, tokenizer, stop_strings: tuple[str, ...], stop_ids: set[int]):
        self.tokenizer, self.stop_strings, self.stop_ids = tokenizer, stop_strings, stop_ids
        self.ids: list[int] = []
        self.done, self._shown = False, 0

    def push(self, token_id: int) -> str:
        """Take one generated id; return the newly printable text."""
        self.ids.append(token_id)
        if token_id in self.stop_ids:
            self.done = True
            return self._show(self._cut(self._decode(self.ids[:-1]))[0])
        text, found = self._cut(self._decode(self.ids))
        self.done = found
        return self._show(text if found else self._safe(text))

    def completion(self) -> Completion:
        text = self._cut(self._decode(self.ids[:-1] if self.ids and self.ids[-1] in self.stop_ids
                                      else self.ids))[0]
        return Completion(text, self.done, list(self.ids))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _cut(self, text: str) -> tuple[str, bool]:
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return (text[:min(hits)], True) if hits else (text, False)

    def _safe(self, text: str) -> str:
        text = text.rstrip("\ufffd")
        for s in self.stop_strings:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    text = text[:-k]
                    break
        return text

    def _show(self, text: str) -> str:
        new = text[self._shown:] if len(text) > self._shown else ""
        self._shown = max(self._shown, len(text))
        return new


class ScannerStreamer:
    """A streamer for `model.generate` (transformers' `BaseStreamer` interface: `put`, `end`): each new token
    goes through a `StopScanner`, and the text it lets through goes to `on_text` as it is written.

    transformers' TextStreamer / TextIteratorStreamer print whatever decodes, a stop string's first
    characters included, and the iterator one needs a thread; here the text that may begin a stop string is
    held back, and `generate` runs in the caller's thread (an exception or Ctrl-C simply propagates)."""

    def __init__(self, scanner: StopScanner, on_text: Callable[[str], None] | None):
        self.scanner, self.on_text, self.prompt = scanner, on_text, True

    def put(self, value: torch.Tensor) -> None:
        if self.prompt:  # generate hands over the prompt first
            self.prompt = False
            return
        for token in value.flatten().tolist():
            if not self.scanner.done:
                piece = self.scanner.push(token)
                if piece and self.on_text:
                    self.on_text(piece)

    def end(self) -> None:
        pass


def complete(model, tokenizer, fmt: ChatFormat, messages: list[dict], tools: list[dict] | None = None,
             sampling: Sampling = Sampling(), on_text: Callable[[str], None] | None = None) -> Completion:
    """One reply to `messages`, streamed to `on_text` as it is written."""
    stop_ids = stop_token_ids(model, tokenizer, fmt)
    scanner = StopScanner(tokenizer, fmt.stop_strings, stop_ids)
    pad = pad_id(tokenizer, stop_ids)
    device = next(model.parameters()).device
    ids = torch.tensor([encode(tokenizer, fmt, messages, tools)], device=device)
    sampling = room(model, ids.shape[1], sampling)
    torch.manual_seed(sampling.seed)
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), tokenizer=tokenizer,
                   generation_config=generation_config(tokenizer, fmt, stop_ids, pad, sampling),
                   streamer=ScannerStreamer(scanner, on_text))
    return scanner.completion()


def generate_reply(model, tokenizer, messages: list[dict], template: str | None = None,
                   tools: list[dict] | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
                   top_p: float = 1.0, seed: int = 0) -> str:
    """The model's reply to a conversation, rendered with `template` (None: the model's own chat template,
    else its detected format); surrounding whitespace stripped. Greedy unless `temperature` > 0."""
    fmt = get_format(tokenizer, template or "auto")
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    return complete(model, tokenizer, fmt, messages, tools, sampling).text.strip()


@torch.no_grad()
def complete_batch(model, tokenizer, fmt: ChatFormat, prompts: list[list[int]],
                   sampling: Sampling = Sampling()) -> list[Completion]:
    """Replies to many prompts (token ids) at once with `model.generate` (left padding)."""
    stop_ids = stop_token_ids(model, tokenizer, fmt)
    pad = pad_id(tokenizer, stop_ids)
    width = max(map(len, prompts))
    sampling = room(model, width, sampling)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(sampling.seed)
    device = next(model.parameters()).device
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), tokenizer=tokenizer,
                         generation_config=generation_config(tokenizer, fmt, stop_ids, pad, sampling))
    return [scan_completion(tokenizer, fmt, stop_ids, row[width:].tolist()) for row in out.cpu()]


def scan_completion(tokenizer, fmt: ChatFormat, stop_ids: set[int], new_ids: list[int]) -> Completion:
    """The reply in generated ids: cut at the first stop token or stop string."""
    scanner = StopScanner(tokenizer, fmt.stop_strings, stop_ids)
    for token in new_ids:
        scanner.push(token)
        if scanner.done:
            break
    return scanner.completion()


def complete_many(model, tokenizer, fmt: ChatFormat, prompts: list[list[int]], sampling: Sampling = Sampling(),
                  batch_size: int = BATCH_SIZE, progress: bool = True) -> list[Completion]:
    """Replies to any number of prompts, in batches of similar length; returned in the prompts' order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Completion | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generating", unit=" replies", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, completion in zip(chunk, complete_batch(model, tokenizer, fmt, [prompts[i] for i in chunk], sampling)):
            results[i] = completion
        bar.update(len(chunk))
    bar.close()
    return results
