"""The numerics every stage shares: the LM loss (summed next-token cross-entropy, in fp32) over token windows, bf16
autocast, and whether this CPU computes bf16 natively. Below the data layer: scoring, training, evaluation and the
search all measure a model with the same function."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def label_weights(batch: dict[str, Tensor]) -> Tensor:
    """1 for every label that counts (the loss mask of chat data), per label token: (B, T)."""
    mask = batch.get("loss_mask")
    return torch.ones(batch["input_ids"][:, 1:].shape) if mask is None else mask.float()


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


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 is the faster precision on `device`: a GPU, or a CPU with native bf16 (what `auto` picks)."""
    return device.type != "cpu" or cpu_has_native_bf16()


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast (matmuls in bf16, weights and reductions in fp32) or plain fp32. By default bf16 on CUDA and
    fp32 on the CPU, where only CPUs with native bf16 (AVX512-BF16, AMX) gain from it (`TrainConfig.precision`)."""
    bf16 = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
