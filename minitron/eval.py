"""Evaluation: validation LM loss and perplexity on held-out tokens."""
from __future__ import annotations

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
