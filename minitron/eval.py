"""Evaluation: validation LM loss and perplexity on held-out tokens, greedy generation speed, and benchmark tasks
through lm-evaluation-harness (minitron/tasks).

    minitron eval --model runs/distill/student --data DATA --out runs/distill/eval.json
    minitron eval --model runs/distill/student --tasks bb_social_iqa,kjv --limit 100 --no-loss --no-speed
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitron.arch import count_params
from minitron.data import TokenData, default_data
from minitron.errors import MinitronError
from minitron.io import refuse_existing_file, write_json
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.tasks import check_tasks, run_tasks


def cross_entropy_sum(logits: Tensor, labels: Tensor, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy of `logits` (B, T, V) against `labels` (B, T), computed in fp32 and summed
    over the labels `loss_mask` (B, T) keeps (None: all); and how many labels that was (fp32)."""
    per = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none")
    if loss_mask is None:
        return per.sum(), torch.tensor(float(per.numel()), device=per.device)
    keep = loss_mask.flatten().to(per.device, torch.float32)
    return (per * keep).sum(), keep.sum()


@torch.no_grad()
def lm_loss_sum(model: nn.Module, input_ids: Tensor, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The LM loss everyone uses (eval, importance, the trainer's validation, compress).

    `input_ids` (B, T+1) are token windows: the model sees ids[:, :-1] and predicts the T labels ids[:, 1:];
    `loss_mask` (B, T) is aligned with the labels (None: every label counts). Returns the summed next-token
    cross-entropy (fp32) and the number of counted labels, 0-dim tensors on the model's device. The forward
    runs under bf16 autocast on CUDA; it is a plain `model(input_ids=...)` call, so an FSDP2-sharded model
    works too (every rank must call it)."""
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    with autocast(device):
        logits = model(input_ids=ids[:, :-1]).logits
    return cross_entropy_sum(logits, ids[:, 1:], None if loss_mask is None else loss_mask.to(device))


def lm_loss(model: nn.Module, batches: Iterable[Tensor | dict[str, Tensor]]) -> float:
    """Mean next-token cross-entropy (nats per counted label) over batches of token windows (B, T+1), or of
    `TokenData` window dicts (`input_ids` and, for chat data, `loss_mask`)."""
    total, count = lm_loss_totals(model, batches)
    return total / max(count, 1)


def lm_loss_totals(model: nn.Module, batches: Iterable[Tensor | dict[str, Tensor]]) -> tuple[float, int]:
    """`lm_loss_sum` added up over batches: (summed loss, counted labels)."""
    total, count = 0.0, 0.0
    for batch in batches:
        ids, mask = (batch["input_ids"], batch.get("loss_mask")) if isinstance(batch, dict) else (batch, None)
        loss, n = lm_loss_sum(model, ids, mask)
        total, count = total + loss.item(), count + n.item()
    return total, int(count)


def windows_in_batches(windows: dict[str, Tensor], batch_size: int) -> list[dict[str, Tensor]]:
    """A `TokenData` window dict cut into dicts of `batch_size` windows."""
    n = len(windows["input_ids"])
    return [{k: v[i:i + batch_size] for k, v in windows.items()} for i in range(0, n, batch_size)]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast (matmuls in bf16, weights and reductions in fp32) or plain fp32. By default bf16 on CUDA and
    fp32 on the CPU, where only CPUs with native bf16 (AVX512-BF16, AMX) gain from it (`TrainConfig.precision`)."""
    bf16 = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def generation_speed(model: torch.nn.Module, tokenizer, prompt: str = "The history of computing",
                     new_tokens: int = 64, batch_size: int = 1, repeats: int = 1) -> float:
    """Tokens per second of greedy generation (new tokens of all sequences / wall time), after a
    short warm-up; EOS is suppressed so every run generates exactly `new_tokens` tokens."""
    device = next(model.parameters()).device
    inputs = tokenizer([prompt] * batch_size, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(do_sample=False, pad_token_id=pad)
    with autocast(device):
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
             batch_size: int = 4, speed: bool = True, new_tokens: int = 64, tasks: list[str] | None = None,
             limit: int | None = None, loss: bool = True, device: str = "auto", out: Path | None = None,
             overwrite: bool = False) -> dict:
    """Validation LM loss and perplexity on held-out tokens (the same windows for every model), the speed of
    greedy generation, and standard benchmark tasks through lm-evaluation-harness.

    Args:
        model: model to evaluate ('default', a Hugging Face directory, a Hub id or a .gguf)
        data: token data directory from `minitron data` (default: the default corpus)
        seq_len: tokens per validation window
        num_seqs: validation windows (fewer if the split is smaller; always the first ones)
        batch_size: windows per forward pass (and requests per batch of the tasks)
        speed: also measure greedy generation speed (tokens/s)
        new_tokens: tokens generated for the speed measurement
        tasks: benchmark tasks, zero-shot (comma-separated): bb_social_iqa, bb_strategyqa,
            bb_date_understanding, bb_general_knowledge (BIG-bench, multiple choice, accuracy) and kjv (perplexity on
            the King James Bible); their data comes from `make tasks`
        limit: the first N documents of each task (default: all)
        loss: measure the validation loss on --data (--no-loss: only the tasks and/or the speed)
        device: auto, cpu or cuda
        out: write the metrics to this JSON file
        overwrite: replace an existing --out file
    """
    if out is not None:
        refuse_existing_file(Path(out), overwrite)
    for name, value in (("batch_size", batch_size), ("num_seqs", num_seqs), ("new_tokens", new_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MinitronError(f"--{name.replace('_', '-')} must be a positive whole number, not {value!r}")
    if not (loss or speed or tasks):
        raise MinitronError("nothing to measure: --no-loss and --no-speed leave only --tasks, and none was given")
    names = check_tasks(tasks, limit) if tasks is not None else []
    tokenizer = load_tokenizer(model)
    windows = validation_windows(model, tokenizer, data, seq_len, num_seqs) if loss else None
    lm = load_model(model, pick_device(device))
    metrics = {"model": str(model), "params": count_params(lm)}
    if windows is not None:
        metrics.update(loss_metrics(lm, windows, batch_size))
    if speed:
        metrics["generation_tokens_per_s"] = generation_speed(lm, tokenizer, new_tokens=new_tokens)
    if names:
        metrics["tasks"] = run_tasks(lm, tokenizer, names, limit, batch_size)
        metrics["tasks_limit"] = limit
    print(json.dumps(metrics, indent=2))
    if out is not None:
        write_json(Path(out), metrics)
    return metrics


def validation_windows(model: str, tokenizer, data: str | None, seq_len: int, num_seqs: int) -> dict:
    """The first `num_seqs` validation windows of `seq_len` + 1 tokens of the data (checked against the model)."""
    tokens = TokenData.open(data if data is not None else default_data(model))
    config = load_config(model)
    tokens.check_model(tokenizer, config.vocab_size, model)
    check_seq_len(config, seq_len, model)
    n = min(num_seqs, (tokens.num_tokens("val") - 1) // max(1, seq_len))
    if n < 1 or seq_len < 1:
        raise MinitronError(f"data in {tokens.path} has {tokens.num_tokens('val'):,} validation tokens, too few for "
                            f"one window of {seq_len + 1}; lower --seq-len or add data")
    return {"data": str(tokens.path), "seq_len": seq_len, "windows": tokens.fixed("val", n, seq_len)}


def loss_metrics(model: nn.Module, windows: dict, batch_size: int) -> dict:
    """Validation loss and perplexity of `model` on `validation_windows`."""
    total, count = lm_loss_totals(model, windows_in_batches(windows["windows"], batch_size))
    loss = total / max(1, count)
    return {"data": windows["data"], "val_loss": loss, "perplexity": math.exp(min(loss, 700.0)), "val_tokens": count,
            "seq_len": windows["seq_len"], "num_seqs": len(windows["windows"]["input_ids"])}
