"""Pure in-place slicing of a Hugging Face model: each op slices the modules and updates the config
together (the shape of gpt-fast's tensor-parallel `tp.py`). Indices are kept units, in original order.

The per-module ops (`slice_layer_mlp`, `slice_layer_heads`, `slice_layer_hidden`, `slice_embedding`) are
what both paths run: the whole-model ops below call them for every layer of a model in memory, and
`minitron.prune.write` calls them on one layer at a time of a checkpoint too large to load.
"""
from __future__ import annotations

import torch
from torch import nn

from minitron.arch import (DENSE_SIZE, Arch, DeltaRows, HeadDims, MambaRows, Rows, arch_of, attention_gate,
                           attention_of, attention_out, attention_rows, conv_of, decoder, decoder_layers, delta_of,
                           embedding, embeddings, final_norm, head_dim, head_dims, head_rows, is_sparse, layer_norms,
                           mamba_of, mlp_down, mlp_of, moe_block, moe_weights, neuron_rows, per_layer_lists,
                           pin_head_dim, residual_readers, residual_writers, set_kv_heads, shared_down,
                           shared_expert_of, shared_rows, tied)


def _param(t: torch.Tensor, trained: bool = True) -> nn.Parameter:
    return nn.Parameter(t.contiguous(), requires_grad=trained)


def slice_param(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    """Keep entries `index` along `dim` of the parameter (or buffer: LFM2-MoE's expert_bias) `name` of `module` (a
    router's or the experts' weights)."""
    t = getattr(module, name)
    kept = t.index_select(dim, index.to(t.device))
    setattr(module, name, _param(kept, t.requires_grad) if isinstance(t, nn.Parameter) else kept.contiguous())


def gather_param(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    """Keep, of each expert (dim 0) of a 3D parameter, its own entries `index[e]` along `dim`."""
    t = getattr(module, name)
    shape = list(t.shape)
    shape[dim] = index.shape[1]
    index = index.to(t.device).view(index.shape[0], *(-1 if d == dim else 1 for d in range(1, t.dim())))
    setattr(module, name, _param(t.gather(dim, index.expand(shape))))


def slice_linear(linear: nn.Linear, dim: int, index: torch.Tensor) -> None:
    """Keep output rows (dim=0) or input columns (dim=1) `index` of a linear layer."""
    index = index.to(linear.weight.device)
    linear.weight = _param(linear.weight.index_select(dim, index))
    if dim == 0:
        linear.out_features = len(index)
        if linear.bias is not None:
            linear.bias = _param(linear.bias.index_select(0, index))
    else:
        linear.in_features = len(index)


def slice_conv(conv: nn.Conv1d, index: torch.Tensor) -> None:
    """Keep channels `index` of a depthwise convolution (each channel its own filter: Mamba-2's, Gated DeltaNet's,
    LFM2's)."""
    for name in ("weight", "bias"):
        if getattr(conv, name) is not None:
            slice_param(conv, name, 0, index)
    conv.in_channels = conv.out_channels = conv.groups = len(index)


def slice_norm(norm: nn.Module, index: torch.Tensor) -> None:
    """Keep channels `index` of an RMSNorm/LayerNorm (weight, bias and declared shape; OLMo 1's LayerNorms have only
    the shape)."""
    if getattr(norm, "weight", None) is not None:
        index = index.to(norm.weight.device)
        norm.weight = _param(norm.weight.index_select(0, index))
    if getattr(norm, "bias", None) is not None:
        norm.bias = _param(norm.bias.index_select(0, index))
    if isinstance(getattr(norm, "normalized_shape", None), tuple):  # (a LayerNorm's; OLMo 1's)
        norm.normalized_shape = (len(index),)


def keep_rows(parts: list[tuple[Rows, torch.Tensor]]) -> None:
    """Keep rows `index` (counted within its block) of each block of rows, in one slice per linear: a fused
    projection's blocks (Phi-3's q, k and v; GPT-NeoX's, head by head) shrink together and stay in order."""
    per_linear: dict[nn.Linear, list[torch.Tensor]] = {}
    for rows, index in parts:
        per_linear.setdefault(rows.linear, []).append(rows.rows(index))
    for linear, indices in per_linear.items():
        slice_linear(linear, 0, torch.cat(indices).sort().values)


# ------------------------------------------------------------------------------------- one module at a time

def slice_layer_mlp(layer: nn.Module, arch: Arch, keep: torch.Tensor) -> None:
    """Keep MLP neurons `keep` of one decoder layer; of a mixture of experts, `keep[e]` of each expert e (a hybrid's
    layer without an MLP: nothing)."""
    if is_sparse(layer, arch):
        w = moe_weights(moe_block(layer, arch), arch)
        n = w.neurons
        index = {"one": keep, "halves": torch.cat([keep, n + keep], 1),  # gate's, then up's
                 "pairs": torch.stack([2 * keep, 2 * keep + 1], -1).flatten(1)}  # gate's and up's in turn
        for p in w.params:
            if p.neurons is not None:
                gather_param(getattr(w, p.module), p.name, p.neurons, index[p.gated])
        for name in ("intermediate_dim", "intermediate_size"):  # (GPT-OSS's name)
            if hasattr(w.experts, name):
                setattr(w.experts, name, keep.shape[1])
        return
    mlp = mlp_of(layer)
    if mlp is None:
        return
    keep_rows([(rows, keep) for rows in neuron_rows(layer, arch)])
    slice_linear(mlp_down(mlp, arch), 1, keep)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def slice_layer_neurons(layer: nn.Module, arch: Arch, mlp: torch.Tensor | None, dense: torch.Tensor | None) -> None:
    """Keep the MLP neurons a plan keeps in one decoder layer: `mlp` (each expert's, in a mixture of experts' sparse
    layer), or `dense` in a mixture of experts' dense layer (None: all)."""
    keep = dense if arch.moe and not is_sparse(layer, arch) else mlp
    if keep is not None:
        slice_layer_mlp(layer, arch, keep)


def slice_layer_heads(layer: nn.Module, arch: Arch, dims: HeadDims, keep_q: torch.Tensor,
                      keep_kv: torch.Tensor) -> None:
    """Keep query heads `keep_q` and KV groups `keep_kv` (heads of `dims` rows and columns) of one decoder layer (a
    hybrid's layer without attention: nothing)."""
    attn = attention_of(layer)
    if attn is None:
        return
    query, kv = attention_rows(layer, arch)
    keep_rows([(query, head_rows(keep_q, dims.query)), *((rows, head_rows(keep_kv, dims.kv)) for rows in kv)])
    slice_linear(attention_out(attn), 1, head_rows(keep_q, dims.out))
    if (gate := attention_gate(attn)) is not None:  # (a row for each channel of a head's output: AFMoE's)
        slice_linear(gate, 0, head_rows(keep_q, dims.out))
    dim = dims.out
    if hasattr(attn, "sinks"):  # a learned sink logit a query head (GPT-OSS)
        slice_param(attn, "sinks", 0, keep_q)
    for norm, keep in ((getattr(attn, "q_norm", None), keep_q), (getattr(attn, "k_norm", None), keep_kv)):
        if norm is None:
            continue
        if norm.weight.dim() == 2:  # a row of weights per head (Cohere's q/k LayerNorms)
            norm.weight = _param(norm.weight.index_select(0, keep.to(norm.weight.device)))
        elif norm.weight.numel() > dim:  # one weight per channel of the whole projection (OLMo 2's q/k RMSNorms)
            slice_norm(norm, head_rows(keep, dim))
    sizes = {"num_heads": len(keep_q), "num_key_value_heads": len(keep_kv), "num_kv_heads": len(keep_kv),  # (Falcon's)
             "num_key_value_groups": len(keep_q) // len(keep_kv),
             "split_size": len(keep_q) * dim, "embed_dim": len(keep_q) * dim}  # (GPT-2's, GPTBigCode's q width)
    for name, value in sizes.items():
        if hasattr(attn, name):
            setattr(attn, name, value)


def slice_layer_hidden(layer: nn.Module, arch: Arch, keep: torch.Tensor) -> None:
    """Keep hidden channels `keep` in one decoder layer's norms and residual readers and writers."""
    for norm in layer_norms(layer, arch):
        slice_norm(norm, keep)
    for linear in residual_readers(layer, arch):
        slice_linear(linear, 1, keep)
    for linear in residual_writers(layer, arch):
        slice_linear(linear, 0, keep)
    for part in (attention_of(layer), mlp_of(layer), mamba_of(layer), delta_of(layer)):
        if hasattr(part, "hidden_size"):
            part.hidden_size = len(keep)
    if is_sparse(layer, arch):
        block = moe_block(layer, arch)
        w = moe_weights(block, arch)
        for p in w.params:
            if p.hidden is not None:
                slice_param(getattr(w, p.module), p.name, p.hidden, keep)
        for module in (block, w.router, w.experts):  # the width each keeps for reshaping (Granite-MoE's input_size)
            for name in ("hidden_dim", "input_size"):
                if hasattr(module, name):
                    setattr(module, name, len(keep))


def slice_layer_mamba(layer: nn.Module, heads: torch.Tensor | None, channels: torch.Tensor | None) -> None:
    """Keep Mamba-2 heads `heads` (the same number from each group, listed group by group) and channels `channels` of
    each head (None: all) of one hybrid decoder layer (a layer of another kind: nothing). B and C, which a group's
    heads share, stay whole."""
    mamba = mamba_of(layer)
    if mamba is None:
        return
    rows = MambaRows.of(mamba)
    heads = torch.arange(rows.heads) if heads is None else heads.cpu()
    channels = torch.arange(rows.head_dim) if channels is None else channels.cpu()
    inner, conv = rows.channels(heads, channels), rows.conv(heads, channels)
    slice_linear(mamba.in_proj, 0, rows.in_proj(heads, channels))
    slice_conv(mamba.conv1d, conv)
    for name in ("dt_bias", "A_log", "D"):
        slice_param(mamba, name, 0, heads)
    slice_norm(mamba.norm, inner)
    slice_linear(mamba.out_proj, 1, inner)
    mamba.num_heads, mamba.head_dim, mamba.intermediate_size, mamba.conv_dim = len(heads), len(channels), len(inner), \
        len(conv)
    mamba.norm.group_size = len(inner) // mamba.n_groups


def slice_layer_delta(layer: nn.Module, v_heads: torch.Tensor, k_heads: torch.Tensor) -> None:
    """Keep Gated DeltaNet value heads `v_heads` (the same number for each kept key head, listed key head by key head)
    and key heads `k_heads` of one hybrid decoder layer (a layer of another kind: nothing)."""
    delta = delta_of(layer)
    if delta is None:
        return
    rows, v_heads, k_heads = DeltaRows.of(delta), v_heads.cpu(), k_heads.cpu()
    qkv, values = rows.qkv(v_heads, k_heads), rows.values(v_heads)
    for name, kept in rows.kept_inputs(v_heads, k_heads):
        slice_linear(getattr(delta, name), 0, kept)
    slice_conv(delta.conv1d, qkv)
    for name in ("dt_bias", "A_log"):
        slice_param(delta, name, 0, v_heads)
    slice_linear(delta.out_proj, 1, values)
    delta.num_v_heads, delta.num_k_heads = len(v_heads), len(k_heads)
    delta.key_dim, delta.value_dim, delta.conv_dim = len(k_heads) * rows.dk, len(values), len(qkv)


def slice_layer_conv(layer: nn.Module, keep: torch.Tensor) -> None:
    """Keep channels `keep` of one hybrid decoder layer's short convolution: their B, C and x rows of in_proj, their
    filters and their out_proj columns (a layer of another kind: nothing)."""
    conv = conv_of(layer)
    if conv is None:
        return
    keep, width = keep.cpu(), conv.out_proj.in_features
    slice_linear(conv.in_proj, 0, torch.cat([keep, width + keep, 2 * width + keep]))
    slice_conv(conv.conv, keep)
    slice_linear(conv.out_proj, 1, keep)


def slice_layer_shared(layer: nn.Module, arch: Arch, keep: torch.Tensor) -> None:
    """Keep neurons `keep` of one mixture-of-experts layer's shared expert (gate and up rows, down columns; a dense
    layer: nothing)."""
    if shared_expert_of(layer, arch) is None:
        return
    keep_rows([(rows, keep) for rows in shared_rows(layer, arch)])
    slice_linear(shared_down(layer, arch), 1, keep)
    shared_expert_of(layer, arch).intermediate_size = len(keep)


def slice_layer_experts(layer: nn.Module, arch: Arch, keep: torch.Tensor) -> None:
    """Keep experts `keep` of one mixture-of-experts layer: their router rows and their weights (a dense layer:
    nothing)."""
    if not is_sparse(layer, arch):
        return
    w = moe_weights(moe_block(layer, arch), arch)
    for p in w.params:
        slice_param(getattr(w, p.module), p.name, p.experts, keep)
    w.router.num_experts = w.experts.num_experts = len(keep)


def slice_embedding(emb: nn.Embedding, arch: Arch, keep: torch.Tensor) -> None:
    """Keep hidden channels `keep` of the token embeddings (and Gemma's sqrt(hidden_size) scale)."""
    emb.weight = _param(emb.weight.index_select(1, keep.to(emb.weight.device)))
    emb.embedding_dim = len(keep)
    if arch.scaled_embedding:  # Gemma multiplies by sqrt(hidden_size); keep it equal to what a reload computes
        emb.scalar_embed_scale = len(keep) ** 0.5
        emb.embed_scale.fill_(len(keep) ** 0.5)


# ------------------------------------------------------------------------------------------- whole model

def prune_neurons(model: nn.Module, arch: Arch, mlp: list[torch.Tensor] | None,
                  dense: list[torch.Tensor] | None) -> None:
    """Keep neurons `mlp[l]` of each layer's MLP (each expert's, in a mixture of experts' sparse layers) and `dense[l]`
    in a mixture of experts' dense layers (same counts in every layer; None: all)."""
    for i, layer in enumerate(decoder_layers(model)):
        slice_layer_neurons(layer, arch, mlp and mlp[i], dense and dense[i])
    if mlp:
        setattr(model.config, arch.mlp_size, mlp[0].shape[-1])
    if dense:
        setattr(model.config, DENSE_SIZE, len(dense[0]))


def prune_experts(model: nn.Module, keep: list[torch.Tensor]) -> None:
    """Keep experts `keep[l]` (same count in every layer) of each mixture-of-experts layer."""
    arch = arch_of(model.config)
    for layer, idx in zip(decoder_layers(model), keep):
        slice_layer_experts(layer, arch, idx)
    setattr(model.config, arch.experts_size, len(keep[0]))


def prune_mamba(model: nn.Module, heads: list[torch.Tensor] | None, channels: list[torch.Tensor] | None) -> None:
    """Keep Mamba-2 heads `heads[l]` and head channels `channels[l]` (same counts in every layer; None: all) of each
    of a hybrid's Mamba-2 layers."""
    for i, layer in enumerate(decoder_layers(model)):
        slice_layer_mamba(layer, heads[i] if heads else None, channels[i] if channels else None)
    names = arch_of(model.config).mamba_names
    if heads:
        setattr(model.config, names.heads, len(heads[0]))
    if channels:
        setattr(model.config, names.head_dim, len(channels[0]))


def prune_delta(model: nn.Module, v_heads: list[torch.Tensor], k_heads: list[torch.Tensor]) -> None:
    """Keep Gated DeltaNet value heads `v_heads[l]` and key heads `k_heads[l]` (same counts in every layer) of each of
    a hybrid's Gated DeltaNet layers."""
    for layer, v, k in zip(decoder_layers(model), v_heads, k_heads):
        slice_layer_delta(layer, v, k)
    model.config.linear_num_value_heads, model.config.linear_num_key_heads = len(v_heads[0]), len(k_heads[0])


def prune_conv(model: nn.Module, keep: list[torch.Tensor]) -> None:
    """Keep channels `keep[l]` (as many in every layer as the hidden channels kept: LFM2 sizes them so) of each of a
    hybrid's short convolutions."""
    for layer, idx in zip(decoder_layers(model), keep):
        slice_layer_conv(layer, idx)


def prune_shared(model: nn.Module, keep: list[torch.Tensor]) -> None:
    """Keep neurons `keep[l]` (same count in every layer) of each layer's shared expert (where its width follows the
    routed experts', `SharedNames.count`, the config says it by theirs)."""
    arch = arch_of(model.config)
    for layer, idx in zip(decoder_layers(model), keep):
        slice_layer_shared(layer, arch, idx)
    if arch.shared_names.size:
        setattr(model.config, arch.shared_names.size, len(keep[0]))


def prune_heads(model: nn.Module, arch: Arch, keep_q: list[torch.Tensor], keep_kv: list[torch.Tensor]) -> None:
    """Keep query heads `keep_q[l]` and KV groups `keep_kv[l]` of each layer.

    Kept query heads must come in equal numbers from each kept KV group, listed group by group, so
    that query head i still attends with KV group i // (heads per group): the result is a valid GQA model.
    """
    config = model.config
    pin_head_dim(config, head_dim(config))  # decoupled from hidden_size / heads from now on
    for layer, q, kv in zip(decoder_layers(model), keep_q, keep_kv):
        slice_layer_heads(layer, arch, head_dims(config), q, kv)
    config.num_attention_heads = len(keep_q[0])
    set_kv_heads(config, len(keep_kv[0]))


def prune_hidden(model: nn.Module, arch: Arch, keep: torch.Tensor) -> None:
    """Keep hidden (embedding) channels `keep` everywhere the residual stream is read or written."""
    config = model.config
    pin_head_dim(config, head_dim(config))
    for emb in embeddings(model):  # (OPT's learned positions too)
        slice_embedding(emb, arch, keep)
    for layer in decoder_layers(model):
        slice_layer_hidden(layer, arch, keep)
    slice_norm(final_norm(model), keep)
    head = model.get_output_embeddings()
    if tied(config):
        head.weight = embedding(model).weight
    else:
        slice_linear(head, 1, keep)
    head.in_features = len(keep)
    for name in ("hidden_size", *arch.hidden_aliases):
        setattr(config, name, len(keep))


def drop_layers(model: nn.Module, drop: list[int]) -> None:
    """Remove decoder layers `drop` and renumber the rest (KV-cache slots, per-layer config lists: `arch.PER_LAYER`)."""
    config = model.config
    kept = [i for i in range(config.num_hidden_layers) if i not in set(drop)]
    layers = decoder_layers(model)
    setattr(decoder(model), arch_of(config).layers, nn.ModuleList(layers[i] for i in kept))
    for new_idx, layer in enumerate(decoder_layers(model)):
        for part in layer.modules():  # (its attention's, mixer's, DeepSeek V3.2's indexer's cache slots; GPT-Neo's
            for name in ("layer_idx", "layer_id"):  # layer_id)
                if hasattr(part, name):
                    setattr(part, name, new_idx)
    for name, values in per_layer_lists(config, kept).items():
        setattr(config, name, values)
    config.num_hidden_layers = len(kept)
