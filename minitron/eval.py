"""Evaluation: validation LM loss and perplexity on held-out tokens, greedy generation speed, and benchmark tasks
through lm-evaluation-harness (minitron/tasks).

    minitron eval --model runs/distill/student --data DATA --out runs/distill/eval.json
    minitron eval --model runs/distill/student --tasks bb_social_iqa,kjv --limit 100 --no-loss --no-speed
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from minitron.arch import count_params
from minitron.data import SEQ_LEN, VAL_SEQS, TokenData, default_data
from minitron.errors import MinitronError
from minitron.io import refuse_existing_file, write_json
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.numerics import autocast, lm_loss_totals, windows_in_batches
from minitron.tasks import check_tasks, run_tasks


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


def evaluate(model: str = "default", data: str | None = None, seq_len: int = SEQ_LEN, num_seqs: int = VAL_SEQS,
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
