"""Evaluation: validation LM loss and perplexity on held-out tokens, and greedy generation speed.

    minitron eval --model runs/distill/student --data DATA --out runs/distill/eval.json
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F


@torch.no_grad()
def lm_loss(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (nats/token) over windows of token ids, each (B, T): T-1 predictions."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for ids in batches:
        ids = ids.to(device)
        logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")
        total += loss.item()
        count += ids[:, 1:].numel()
    return total / count


@torch.no_grad()
def lm_loss_sum(model: torch.nn.Module, input_ids: torch.Tensor,
                loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy (fp32) of (B, T+1) token windows and the number of labels counted.

    The model predicts the T labels ids[:, 1:]; loss_mask (B, T) is aligned with them (None: every label
    counts). The forward runs under bf16 autocast on CUDA; it calls `model(input_ids=ids[:, :-1])`, so it works
    for a plain HF model and for an FSDP2-sharded one (every rank must call it). Both results are 0-dim tensors
    on the model's device."""
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    with _autocast(device):
        logits = model(input_ids=ids[:, :-1]).logits
    per = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    keep = torch.ones_like(per) if loss_mask is None else loss_mask.to(device).flatten().float()
    return (per * keep).sum(), keep.sum()


@torch.no_grad()
def masked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], batch_size: int = 4) -> tuple[float, int]:
    """Summed next-token cross-entropy over the label tokens a `loss_mask` keeps (all when there is none),
    and how many tokens that was; `batch` is a `TokenData` window dict."""
    device = next(model.parameters()).device
    ids_all, mask_all = batch["input_ids"], batch.get("loss_mask")
    total, count = 0.0, 0
    for i in range(0, len(ids_all), batch_size):
        ids = ids_all[i:i + batch_size].to(device)
        with _autocast(device):
            logits = model(input_ids=ids[:, :-1]).logits
        per = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        keep = torch.ones_like(per) if mask_all is None else mask_all[i:i + batch_size].to(device).flatten().float()
        total += (per * keep).sum().item()
        count += int(keep.sum().item())
    return total, count


def _autocast(device: torch.device):
    return (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
            else contextlib.nullcontext())


@torch.no_grad()
def generation_speed(model: torch.nn.Module, tokenizer, prompt: str = "The history of computing",
                     new_tokens: int = 64, batch_size: int = 1, repeats: int = 1) -> float:
    """Tokens per second of greedy generation (new tokens of all sequences / wall time), after a
    short warm-up; EOS is suppressed so every run generates exactly `new_tokens` tokens."""
    device = next(model.parameters()).device
    inputs = tokenizer([prompt] * batch_size, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(do_sample=False, pad_token_id=pad)
    with _autocast(device):
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, **kwargs)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        _sync(device)
    generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch_size * repeats
    return generated / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model: str = "default", data: str | None = None, seq_len: int = 512, num_seqs: int = 32,
             batch_size: int = 4, speed: bool = True, new_tokens: int = 64, device: str = "auto",
             out: Path | None = None) -> dict:
    """Validation LM loss and perplexity on held-out tokens (the same windows for every model), and the
    speed of greedy generation.

    Args:
        model: model to evaluate ('default', a Hugging Face directory or a .gguf)
        data: token data directory from `minitron data` (default: the default corpus)
        seq_len: tokens per validation window
        num_seqs: validation windows (fewer if the split is smaller; always the first ones)
        batch_size: windows per forward pass
        speed: also measure greedy generation speed (tokens/s)
        new_tokens: tokens generated for the speed measurement
        device: auto, cpu or cuda
        out: write the metrics to this JSON file
    """
    from minitron.arch import count_params
    from minitron.data import TokenData, default_data
    from minitron.errors import MinitronError
    from minitron.load import load_model, load_tokenizer, pick_device

    tokenizer = load_tokenizer(model)
    tokens = TokenData.open(data if data is not None else default_data(model))
    tokens.check_tokenizer(tokenizer)
    n = min(num_seqs, (tokens.num_tokens("val") - 1) // max(1, seq_len))
    if n < 1 or seq_len < 1:
        raise MinitronError(f"data in {tokens.path} has {tokens.num_tokens('val'):,} validation tokens, too few for "
                            f"one window of {seq_len + 1}; lower --seq-len or add data")
    lm = load_model(model, pick_device(device))
    total, count = masked_lm_loss(lm, tokens.fixed("val", n, seq_len), batch_size)
    loss = total / max(1, count)
    metrics = {"model": str(model), "data": str(tokens.path), "params": count_params(lm), "val_loss": loss,
               "perplexity": math.exp(min(loss, 700.0)), "val_tokens": count, "seq_len": seq_len, "num_seqs": n}
    if speed:
        metrics["generation_tokens_per_s"] = generation_speed(lm, tokenizer, new_tokens=new_tokens)
    print(json.dumps(metrics, indent=2))
    if out is not None:
        _write_atomic(Path(out), metrics)
    return metrics


def _write_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
