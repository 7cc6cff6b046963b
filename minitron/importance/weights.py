"""Criteria read off the weights (magnitude), weights and gradients (first-order Taylor) or weights and
activation norms (structured Wanda), summed over every weight coupled to a unit; and the random baseline."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import (Arch, Rows, arch_of, attention_inputs, attention_rows, decoder_layers, embedding,
                           final_norm, head_dim, layer_norms, mlp_inputs, neuron_rows, residual_readers,
                           residual_writers)
from minitron.numerics import cross_entropy_sum

CHUNK_ROWS = 8192  # rows at a time when summing over embedding-sized matrices


Elem = Callable[[torch.Tensor], torch.Tensor]


def column_sum(w: torch.Tensor, elem: Elem, rows_per_chunk: int | None = None) -> torch.Tensor:
    """`elem(w).sum(0)`; with `rows_per_chunk`, that many rows at a time, so that a huge embedding matrix
    needs no second full-size temporary (`elem` must then be elementwise)."""
    if rows_per_chunk is None or w.shape[0] <= rows_per_chunk:
        return elem(w).sum(0)
    return sum(elem(w[i:i + rows_per_chunk]).sum(0) for i in range(0, w.shape[0], rows_per_chunk))


def norm_sum(norm: nn.Module, elem: Elem) -> torch.Tensor:
    s = elem(norm.weight)
    return s + elem(norm.bias) if getattr(norm, "bias", None) is not None else s


def _row_sum(lin: nn.Linear | Rows, elem: Elem) -> torch.Tensor:
    """Each row's sum of `elem` over its weight and bias: of a whole linear, or of a block of its rows (`elem` sees
    the whole parameter: Taylor's needs its gradient)."""
    rows = lin if isinstance(lin, Rows) else Rows(lin)
    r = rows.of(elem(rows.linear.weight)).sum(1)
    return r + rows.of(elem(rows.linear.bias)) if rows.linear.bias is not None else r


def unit_scores(hidden: torch.Tensor, heads: list[torch.Tensor], mlp: list[torch.Tensor]) -> dict:
    return {"hidden": hidden.detach().float().cpu(), "heads": torch.stack(heads).detach().float().cpu(),
            "mlp": torch.stack(mlp).detach().float().cpu()}


def coupled_layer(layer: nn.Module, arch: Arch, dim: int, elem: Elem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoder layer's part of `coupled_scores`: (hidden-channel sum, head scores, neuron scores)."""
    attn = layer.self_attn
    hidden = sum(column_sum(l.weight, elem) for l in residual_readers(layer, arch)) + \
        sum(_row_sum(l, elem) for l in residual_writers(layer)) + sum(norm_sum(n, elem) for n in layer_norms(layer, arch))
    query = attention_rows(layer, arch)[0]
    heads = (_row_sum(query, elem) + column_sum(attn.o_proj.weight, elem)).view(-1, dim).sum(1)
    mlp = sum(_row_sum(r, elem) for r in neuron_rows(layer, arch)) + column_sum(layer.mlp.down_proj.weight, elem)
    return hidden, heads, mlp


def coupled_scores(model: nn.Module, arch: Arch, elem: Elem) -> dict:
    """Sum `elem(param)` over every weight coupled to each unit (Torch-Pruning's dependency groups).

    Hidden channels: embedding columns, norms, columns of residual readers, rows of residual writers,
    final norm, lm_head columns. Heads: q rows and o columns. MLP neurons: gate/up rows, down columns.
    """
    hidden = column_sum(embedding(model).weight, elem) + norm_sum(final_norm(model), elem)
    if not model.config.tie_word_embeddings:
        hidden = hidden + column_sum(model.get_output_embeddings().weight, elem)
    heads, mlp = [], []
    for layer in decoder_layers(model):
        h, hd, m = coupled_layer(layer, arch, head_dim(model.config), elem)
        hidden = hidden + h
        heads.append(hd)
        mlp.append(m)
    return unit_scores(hidden, heads, mlp)


def wanda_layer(layer: nn.Module, arch: Arch, dim: int, sq: dict[str, torch.Tensor],
                i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoder layer's part of the structured Wanda scores (a unit's consumer weights |W| times the L2 norm
    of its input channel; layer `i`'s input norms in `sq`): (hidden, heads, mlp)."""
    attn = layer.self_attn
    hidden = sum(column_sum(l.weight, abs32) for l in attention_inputs(layer, arch)) * sq["attn_in"][i].sqrt() + \
        sum(column_sum(l.weight, abs32) for l in mlp_inputs(layer, arch)) * sq["mlp_in"][i].sqrt()
    heads = (column_sum(attn.o_proj.weight, abs32) * sq["o_in"][i].sqrt()).view(-1, dim).sum(1)
    return hidden, heads, column_sum(layer.mlp.down_proj.weight, abs32)  # mlp: times the input norm (`finish_wanda`)


def wanda_head(weight: torch.Tensor, head_in_sq: torch.Tensor, rows_per_chunk: int | None = None) -> torch.Tensor:
    """lm_head's part of the hidden-channel Wanda scores."""
    return column_sum(weight, abs32, rows_per_chunk) * head_in_sq.sqrt()


def finish_wanda(w: dict, act: dict) -> dict:
    """Complete the neuron scores (down_proj |W| column sums) with the L2 over all tokens of its input."""
    return {**w, "mlp": w["mlp"] * act["activation/l2-l2/mlp"]}


def magnitude(p: torch.Tensor) -> torch.Tensor:
    return p.detach().float().pow(2)


def abs32(p: torch.Tensor) -> torch.Tensor:
    """|p| in fp32, so that sums over bf16 weights are not rounded to bf16."""
    return p.detach().float().abs()


def random_scores(config, seed: int) -> dict:
    """Uniform random scores of every unit and layer (the baseline criterion)."""
    g = torch.Generator().manual_seed(seed)
    L = config.num_hidden_layers
    return {"hidden": torch.rand(config.hidden_size, generator=g),
            "heads": torch.rand(L, config.num_attention_heads, generator=g),
            "mlp": torch.rand(L, config.intermediate_size, generator=g),
            "layers": torch.rand(L, generator=g)}


def taylor_scores(model: nn.Module, arch: Arch, batches: list[torch.Tensor]) -> dict:
    """First-order Taylor (LLM-Pruner): |w * dL/dw| summed over each unit's weights, gradients summed over batches."""
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for ids in tqdm(batches, desc="taylor", leave=False):
            ids = ids.to(device)
            total, count = cross_entropy_sum(model(input_ids=ids[:, :-1]).logits, ids[:, 1:])
            (total / count).backward()
    out = coupled_scores(model, arch, lambda p: (p.detach().float() * p.grad).abs() if p.grad is not None
                         else torch.zeros_like(p, dtype=torch.float32))
    model.zero_grad(set_to_none=True)
    return out


class WeightScores:
    """Magnitude and Wanda scores, summed part by part as the walk passes each module."""

    def __init__(self, model: nn.Module, criteria: list[str]):
        self.model, self.arch, self.dim = model, arch_of(model.config), head_dim(model.config)
        self.kinds = [c for c in ("magnitude", "wanda") if c in criteria]
        self.hidden = dict.fromkeys(self.kinds, 0)
        self.heads = {c: [] for c in self.kinds}
        self.mlp = {c: [] for c in self.kinds}

    def _add(self, kind: str, hidden: torch.Tensor, heads: torch.Tensor | None = None,
             mlp: torch.Tensor | None = None) -> None:
        self.hidden[kind] = self.hidden[kind] + hidden
        if heads is not None:
            self.heads[kind].append(heads)
            self.mlp[kind].append(mlp)

    def embedding(self, emb: nn.Embedding) -> None:
        if "magnitude" in self.kinds:
            self._add("magnitude", column_sum(emb.weight, magnitude, CHUNK_ROWS))

    def layer(self, layer: nn.Module, i: int, sq: dict[str, torch.Tensor]) -> None:
        if "magnitude" in self.kinds:
            self._add("magnitude", *coupled_layer(layer, self.arch, self.dim, magnitude))
        if "wanda" in self.kinds:
            self._add("wanda", *wanda_layer(layer, self.arch, self.dim, sq, i))

    def ends(self, norm: nn.Module, head: nn.Linear, sq: dict[str, torch.Tensor]) -> None:
        """The final norm and lm_head (lm_head counts once for magnitude when tied to the embeddings)."""
        if "magnitude" in self.kinds:
            self._add("magnitude", norm_sum(norm, magnitude))
            if not self.model.config.tie_word_embeddings:
                self._add("magnitude", column_sum(head.weight, magnitude, CHUNK_ROWS))
        if "wanda" in self.kinds:
            self._add("wanda", wanda_head(head.weight, sq["head_in"], CHUNK_ROWS))

    def tensors(self, act: dict) -> dict[str, torch.Tensor]:
        out = {}
        for kind in self.kinds:
            scores = unit_scores(self.hidden[kind], self.heads[kind], self.mlp[kind])
            scores = finish_wanda(scores, act) if kind == "wanda" else scores
            out.update({f"{kind}/{unit}": t for unit, t in scores.items()})
        return out
