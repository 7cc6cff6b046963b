"""Criteria read off the weights (magnitude), weights and gradients (first-order Taylor) or weights and
activation norms (structured Wanda), summed over every weight coupled to a unit; and the random baseline."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import (DENSE_SIZE, Arch, DeltaRows, HeadDims, MambaRows, Rows, arch_of, attention_gate,
                           attention_inputs, attention_of, attention_out, attention_rows, conv_of, decoder_layers,
                           delta_of, dense_layers, embeddings, final_norm, head_dims, is_sparse, layer_norms, mamba_of,
                           mixer_inputs, mlp_down, mlp_inputs, mlp_of, moe_block, moe_weights, neuron_rows, num_experts,
                           residual_readers, residual_writers, shared_down, shared_expert_of, shared_inputs,
                           shared_rows, shared_width, tied)
from minitron.numerics import cross_entropy_sum

CHUNK_ROWS = 8192  # rows at a time when summing over embedding-sized matrices


Elem = Callable[[torch.Tensor], torch.Tensor]


def column_sum(w: torch.Tensor, elem: Elem, rows_per_chunk: int | None = None) -> torch.Tensor:
    """`elem(w).sum(0)`; with `rows_per_chunk`, that many rows at a time, so that a huge embedding matrix
    needs no second full-size temporary (`elem` must then be elementwise)."""
    if rows_per_chunk is None or w.shape[0] <= rows_per_chunk:
        return elem(w).sum(0)
    return sum(elem(w[i:i + rows_per_chunk]).sum(0) for i in range(0, w.shape[0], rows_per_chunk))


def norm_sum(norm: nn.Module, elem: Elem) -> torch.Tensor | float:
    """A norm's weights (and bias) per channel; 0 for one without (OLMo 1's LayerNorms)."""
    if getattr(norm, "weight", None) is None:
        return 0.0
    s = elem(norm.weight)
    return s + elem(norm.bias) if getattr(norm, "bias", None) is not None else s


def _row_sum(lin: nn.Linear | Rows, elem: Elem) -> torch.Tensor:
    """Each row's sum of `elem` over its weight and bias: of a whole linear, or of a block of its rows (`elem` sees
    the whole parameter: Taylor's needs its gradient)."""
    rows = lin if isinstance(lin, Rows) else Rows(lin)
    r = rows.of(elem(rows.linear.weight)).sum(1)
    return r + rows.of(elem(rows.linear.bias)) if rows.linear.bias is not None else r


def unit_shapes(config) -> dict[str, tuple[int, ...]]:
    """Each unit kind's scores' shape in one layer: "heads", "mlp" (of a mixture of experts (experts, neurons)), a
    mixture of experts' "experts" and shared expert's neurons ("shared"), a hybrid's Mamba-2 heads ("mamba") and head
    channels ("mamba_dim"), Gated DeltaNet value heads ("delta") or short convolutions' channels ("conv"), a mixture of
    experts' dense layers' neurons ("dense")."""
    arch = arch_of(config)
    experts = (num_experts(config),) if arch.moe else ()
    shapes = {"heads": (config.num_attention_heads,), "mlp": (*experts, getattr(config, arch.mlp_size))}
    if arch.moe:
        shapes["experts"] = experts
    if arch.shared_expert:
        shapes["shared"] = (shared_width(config),)
    if arch.mixer == "mamba":
        shapes.update(mamba=(getattr(config, arch.mamba_names.heads),),
                      mamba_dim=(getattr(config, arch.mamba_names.head_dim),))
    if arch.mixer == "delta":
        shapes["delta"] = (config.linear_num_value_heads,)
    if arch.mixer == "conv":
        shapes["conv"] = (config.hidden_size,)
    if dense_layers(config):
        shapes["dense"] = (getattr(config, DENSE_SIZE),)
    return shapes


def unit_scores(hidden: torch.Tensor, layers: list[dict[str, torch.Tensor]], config) -> dict:
    """The hidden-channel scores and each layer's unit scores (`unit_shapes`) stacked over the layers; 0 for a unit
    a layer does not have (a hybrid's attention heads in its Mamba-2 layers)."""
    out = {"hidden": hidden.detach().float().cpu()}
    for unit, shape in unit_shapes(config).items():
        out[unit] = torch.stack([per_layer[unit].detach().float().cpu() if unit in per_layer else torch.zeros(shape)
                                 for per_layer in layers])
    return out


def coupled_moe(layer: nn.Module, arch: Arch, elem: Elem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A mixture of experts' part of `coupled_layer`: (hidden-channel sum over the router's and experts' columns
    and rows, each expert's neuron sums (E, n): gate and up rows and down columns, each expert's sum: all its
    weights and its router row)."""
    w = moe_weights(moe_block(layer, arch), arch)
    router = elem(w.router.weight)  # (E, D)
    gate_up = w.gate_up_of(elem(getattr(w.experts, w.inputs)))  # (E, 2n, D); ungated: (E, n, D)
    down = w.down_of(elem(w.experts.down_proj))  # (E, D, n)
    n = down.shape[-1]
    neurons = gate_up.unflatten(1, (-1, n)).sum((1, 3)) + down.sum(1)  # gate's and up's rows, or up's
    hidden, experts = router.sum(0), router.sum(1)
    if not w.latent:  # (behind a latent, the experts' rows and columns are latent channels: the projections into and
        # out of it are residual readers and writers, `coupled_layer`)
        hidden = hidden + gate_up.sum((0, 1)) + down.sum((0, 2))
    if w.oss:  # biases: gate's and up's (in turn) with their neurons, down's with the hidden channels, the router's
        pairs, out = elem(w.experts.gate_up_proj_bias), elem(w.experts.down_proj_bias)
        neurons = neurons + pairs[:, 0::2] + pairs[:, 1::2]
        hidden, experts = hidden + out.sum(0), experts + out.sum(1) + elem(w.router.bias)
    return hidden, neurons, experts + neurons.sum(1)


def conv_sum(conv: nn.Conv1d, elem: Elem) -> torch.Tensor:
    """Each channel's sum of `elem` over a depthwise convolution's filter and bias."""
    return elem(conv.weight).sum((1, 2)) + (elem(conv.bias) if conv.bias is not None else 0)


def coupled_mamba(mamba: nn.Module, elem: Elem) -> dict[str, torch.Tensor]:
    """A Mamba-2 mixer's part of `coupled_layer`: each head's sum over its z, x and dt rows of in_proj, its conv1d
    channels, dt_bias, A_log, D, gated-norm weights and out_proj columns ("mamba"), and each head channel's over the
    same channel of every head ("mamba_dim")."""
    rows, inner = MambaRows.of(mamba), mamba.num_heads * mamba.head_dim
    proj, conv = _row_sum(mamba.in_proj, elem), conv_sum(mamba.conv1d, elem)
    channels = (proj[:inner] + proj[inner:2 * inner] + conv[:inner] + elem(mamba.norm.weight) +
                column_sum(mamba.out_proj.weight, elem)).view(rows.heads, rows.head_dim)
    per_head = proj[2 * inner + rows.bc:] + elem(mamba.dt_bias) + elem(mamba.A_log) + elem(mamba.D)
    return {"mamba": channels.sum(1) + per_head, "mamba_dim": channels.sum(0)}


def coupled_delta(delta: nn.Module, elem: Elem) -> torch.Tensor:
    """A Gated DeltaNet's part of `coupled_layer`: each value head's sum over its in_proj_qkv and in_proj_z rows, its
    in_proj_b and in_proj_a rows, conv1d channels, dt_bias, A_log and out_proj columns, plus an equal share of its key
    head's (query and key rows, conv1d channels)."""
    rows = DeltaRows.of(delta)
    Hv, keys = delta.num_v_heads, rows.k_heads * rows.dk
    qkv, z, b, a = delta_row_sums(delta, rows, elem)
    channel = qkv + conv_sum(delta.conv1d, elem)
    per_key = (channel[:keys] + channel[keys:2 * keys]).view(rows.k_heads, -1).sum(1)
    per_value = (channel[2 * keys:] + z + column_sum(delta.out_proj.weight, elem))
    return per_value.view(Hv, -1).sum(1) + b + a + elem(delta.dt_bias) + elem(delta.A_log) + \
        (per_key / (Hv // rows.k_heads)).repeat_interleave(Hv // rows.k_heads)


def delta_row_sums(delta: nn.Module, rows: DeltaRows, elem: Elem) -> tuple[torch.Tensor, ...]:
    """A Gated DeltaNet's row sums (`_row_sum`) of in_proj_qkv, in_proj_z, in_proj_b and in_proj_a, or where they are
    fused (Qwen3-Next's `DeltaRows.fused`), of the same rows of in_proj_qkvz and in_proj_ba."""
    sums = [_row_sum(getattr(delta, name), elem) for name in rows.inputs]
    if not rows.fused:
        return tuple(sums)
    (qkvz, ba), (qkvz_order, ba_order) = sums, rows.fused_order()
    return *qkvz[qkvz_order].split([rows.qkv_rows, rows.v_heads * rows.dv]), *ba[ba_order].chunk(2)


def coupled_conv(conv: nn.Module, elem: Elem) -> torch.Tensor:
    """A short convolution's part of `coupled_layer`: each channel's sum over its B, C and x rows of in_proj, its
    filter and its out_proj column."""
    rows = _row_sum(conv.in_proj, elem).view(3, -1).sum(0)
    return rows + conv_sum(conv.conv, elem) + column_sum(conv.out_proj.weight, elem)


def coupled_layer(layer: nn.Module, arch: Arch, dims: HeadDims, elem: Elem) -> tuple[torch.Tensor, dict]:
    """One decoder layer's part of `coupled_scores`: (hidden-channel sum, {"heads", "mlp", "experts", "mamba",
    "mamba_dim", "delta", "conv"} scores of the parts it has)."""
    attn, mlp, mamba, delta = attention_of(layer), mlp_of(layer), mamba_of(layer), delta_of(layer)
    hidden = sum(column_sum(l.weight, elem) for l in residual_readers(layer, arch)) + \
        sum(_row_sum(l, elem) for l in residual_writers(layer, arch)) + \
        sum(norm_sum(n, elem) for n in layer_norms(layer, arch))
    units = {}
    if attn is not None:
        query = attention_rows(layer, arch)[0]
        units["heads"] = _row_sum(query, elem).view(-1, dims.query).sum(1) + \
            column_sum(attention_out(attn).weight, elem).view(-1, dims.out).sum(1)
        if (gate := attention_gate(attn)) is not None:
            units["heads"] = units["heads"] + _row_sum(gate, elem).view(-1, dims.out).sum(1)
    if mamba is not None:
        units.update(coupled_mamba(mamba, elem))
    if (conv := conv_of(layer)) is not None:
        units["conv"] = coupled_conv(conv, elem)
    if delta is not None:
        units["delta"] = coupled_delta(delta, elem)
    if shared_expert_of(layer, arch) is not None:
        units["shared"] = sum(_row_sum(rows, elem) for rows in shared_rows(layer, arch)) + \
            column_sum(shared_down(layer, arch).weight, elem)
    if is_sparse(layer, arch):
        moe_hidden, units["mlp"], units["experts"] = coupled_moe(layer, arch, elem)
        return hidden + moe_hidden, units
    if mlp is not None:  # (a mixture of experts' dense layer: "dense")
        units["dense" if arch.moe else "mlp"] = sum(_row_sum(r, elem) for r in neuron_rows(layer, arch)) + \
            column_sum(mlp_down(mlp, arch).weight, elem)
    return hidden, units


def coupled_scores(model: nn.Module, arch: Arch, elem: Elem) -> dict:
    """Sum `elem(param)` over every weight coupled to each unit (Torch-Pruning's dependency groups).

    Hidden channels: embedding columns (learned positions' too: OPT's), norms, columns of residual readers, rows of
    residual writers, final norm, lm_head columns. Heads: q rows and o columns. MLP neurons: gate/up rows, down
    columns. Experts: all their weights and their router row.
    """
    hidden = sum(column_sum(emb.weight, elem) for emb in embeddings(model)) + norm_sum(final_norm(model), elem)
    if not tied(model.config):
        hidden = hidden + column_sum(model.get_output_embeddings().weight, elem)
    layers = []
    for layer in decoder_layers(model):
        h, units = coupled_layer(layer, arch, head_dims(model.config), elem)
        hidden = hidden + h
        layers.append(units)
    return unit_scores(hidden, layers, model.config)


def wanda_layer(layer: nn.Module, arch: Arch, dims: HeadDims, sq: dict[str, torch.Tensor],
                i: int) -> tuple[torch.Tensor, dict]:
    """One decoder layer's part of the structured Wanda scores (a unit's consumer weights |W| times the L2 norm of its
    input channel; layer `i`'s input norms in `sq`): (hidden, {"heads", "mlp", "mamba", "mamba_dim", "delta", "conv"} of
    the parts it has). A mixture of experts' MLP readers are its router and every expert's gate and up rows (behind a
    latent, the projection into it)."""
    attn, mlp, mamba, delta, units = attention_of(layer), mlp_of(layer), mamba_of(layer), delta_of(layer), {}
    if is_sparse(layer, arch):
        w = moe_weights(moe_block(layer, arch), arch)
        experts_read = column_sum(w.latent[0].weight, abs32) if w.latent else abs32(w.gate_up).sum((0, 1))
        mlp_read = column_sum(w.router.weight, abs32) + experts_read + \
            sum(column_sum(l.weight, abs32) for l in shared_inputs(layer, arch))
        units["mlp"] = abs32(w.down).sum(1)  # (E, n)
        if shared_expert_of(layer, arch) is not None:  # its down columns, times the input norm (`finish_wanda`)
            units["shared"] = column_sum(shared_down(layer, arch).weight, abs32)
    else:
        mlp_read = sum(column_sum(l.weight, abs32) for l in mlp_inputs(layer, arch))
        if mlp is not None:  # times the input norm (`finish_wanda`); a mixture of experts' dense layer: "dense"
            units["dense" if arch.moe else "mlp"] = column_sum(mlp_down(mlp, arch).weight, abs32)
    hidden = sum(column_sum(l.weight, abs32) for l in attention_inputs(layer, arch)) * sq["attn_in"][i].sqrt() + \
        mlp_read * sq["mlp_in"][i].sqrt()
    if attn is not None:
        columns = column_sum(attention_out(attn).weight, abs32) * sq["o_in"][i].sqrt()
        units["heads"] = columns.view(-1, dims.out).sum(1)
    hidden = hidden + sum(column_sum(l.weight, abs32) for l in mixer_inputs(layer)) * sq["mixer_in"][i].sqrt()
    if mamba is not None:
        channels = (column_sum(mamba.out_proj.weight, abs32) * sq["mamba_o_in"][i].sqrt()).view(mamba.num_heads, -1)
        units.update(mamba=channels.sum(1), mamba_dim=channels.sum(0))
    if delta is not None:
        columns = column_sum(delta.out_proj.weight, abs32) * sq["delta_o_in"][i].sqrt()
        units["delta"] = columns.view(delta.num_v_heads, -1).sum(1)
    if (conv := conv_of(layer)) is not None:
        units["conv"] = column_sum(conv.out_proj.weight, abs32) * sq["conv_o_in"][i].sqrt()
    return hidden, units


def wanda_head(weight: torch.Tensor, head_in_sq: torch.Tensor, rows_per_chunk: int | None = None) -> torch.Tensor:
    """lm_head's part of the hidden-channel Wanda scores."""
    return column_sum(weight, abs32, rows_per_chunk) * head_in_sq.sqrt()


def finish_wanda(w: dict, act: dict) -> dict:
    """Complete the neuron scores (down_proj |W| column sums) with the L2 over all tokens of its input; an expert's
    score is the sum of its neurons'."""
    mlp = w["mlp"] * act["activation/l2-l2/mlp"]
    own = {unit: w[unit] * act[f"activation/l2-l2/{unit}"] for unit in ("shared", "dense") if unit in w}
    return {**w, "mlp": mlp, **({"experts": mlp.sum(-1)} if mlp.dim() == 3 else {}), **own}


def magnitude(p: torch.Tensor) -> torch.Tensor:
    return p.detach().float().pow(2)


def abs32(p: torch.Tensor) -> torch.Tensor:
    """|p| in fp32, so that sums over bf16 weights are not rounded to bf16."""
    return p.detach().float().abs()


def random_scores(config, seed: int) -> dict:
    """Uniform random scores of every unit and layer (the baseline criterion)."""
    g, L, shapes = torch.Generator().manual_seed(seed), config.num_hidden_layers, unit_shapes(config)
    out = {"hidden": torch.rand(config.hidden_size, generator=g),
           "heads": torch.rand(L, *shapes.pop("heads"), generator=g),
           "mlp": torch.rand(L, *shapes.pop("mlp"), generator=g),
           "layers": torch.rand(L, generator=g)}
    return {**out, **{unit: torch.rand(L, *shape, generator=g) for unit, shape in shapes.items()}}


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
        self.model, self.arch, self.dims = model, arch_of(model.config), head_dims(model.config)
        self.kinds = [c for c in ("magnitude", "wanda") if c in criteria]
        self.hidden = dict.fromkeys(self.kinds, 0)
        self.layers = {c: [] for c in self.kinds}  # each layer's {"heads", "mlp", ...} scores

    def _add(self, kind: str, hidden: torch.Tensor, units: dict | None = None) -> None:
        self.hidden[kind] = self.hidden[kind] + hidden
        if units is not None:
            self.layers[kind].append(units)

    def embedding(self, emb: nn.Embedding) -> None:
        if "magnitude" in self.kinds:
            self._add("magnitude", column_sum(emb.weight, magnitude, CHUNK_ROWS))

    def layer(self, layer: nn.Module, i: int, sq: dict[str, torch.Tensor]) -> None:
        if "magnitude" in self.kinds:
            self._add("magnitude", *coupled_layer(layer, self.arch, self.dims, magnitude))
        if "wanda" in self.kinds:
            self._add("wanda", *wanda_layer(layer, self.arch, self.dims, sq, i))

    def ends(self, norm: nn.Module, head: nn.Linear, sq: dict[str, torch.Tensor]) -> None:
        """The final norm and lm_head (lm_head counts once for magnitude when tied to the embeddings)."""
        if "magnitude" in self.kinds:
            self._add("magnitude", norm_sum(norm, magnitude))
            if not tied(self.model.config):
                self._add("magnitude", column_sum(head.weight, magnitude, CHUNK_ROWS))
        if "wanda" in self.kinds:
            self._add("wanda", wanda_head(head.weight, sq["head_in"], CHUNK_ROWS))

    def tensors(self, act: dict) -> dict[str, torch.Tensor]:
        out = {}
        for kind in self.kinds:
            scores = unit_scores(self.hidden[kind], self.layers[kind], self.model.config)
            scores = finish_wanda(scores, act) if kind == "wanda" else scores
            out.update({f"{kind}/{unit}": t for unit, t in scores.items()})
        return out
