"""Activation statistics: forward hooks that reduce each activation (B, S, D) over the sequence (mean of |x|, L2 or
variance) and accumulate it over the batch in fp32 (L2, mean or variance across sequences), for hidden channels (each
norm's output, per norm), attention heads (o_proj's input per head, and each head's output after o_proj) and MLP neurons
(down_proj's input; of a mixture of experts, each expert's, each expert's routed contribution: `moe_activations`, its
shared expert's and its dense layers' MLP's), a hybrid's Mamba-2 heads and head channels (out_proj's input: each head's
norm, and each channel's norm over the heads), Gated DeltaNet value heads (out_proj's input: each head's norm) and short
convolutions' channels (out_proj's input); plus Block Influence and the input norms structured Wanda needs. One pass
fills every combination.

Hidden channels, as the papers and NVIDIA's implementation define them: each decoder layer's input and
post-attention norm aggregated on its own, then the per-norm scores summed (the final norm left out). The
older form, every norm's samples (the final norm's too) pooled into one statistic, stays as `hidden_pooled`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minitron.arch import (DENSE_SIZE, Arch, MoEWeights, attention_inputs, attention_of, attention_out, conv_of,
                           decoder_layers, delta_of, dense_layers, final_norm, head_dims, is_sparse, layer_norms,
                           mamba_of, mixer_inputs, mlp_down, mlp_inputs, mlp_of, moe_block, moe_weights, num_experts,
                           shared_down, shared_expert_of, shared_width)

AGGREGATIONS = ("mean", "l2", "var")


def seq_stats(x: torch.Tensor) -> torch.Tensor:
    """(B, S, D) -> (len(AGGREGATIONS), B, D): every sequence aggregation at once, from three reductions of one
    fp32 copy of x (what a forward hook does on every batch: few passes over the activation matter more than few
    FLOPs; plain sums over the sequence are faster than `linalg.vector_norm` on the CPU). The variance
    is E[x^2] - E[x]^2: exact to fp32 rounding of E[x^2], which only matters for a channel whose mean dwarfs its
    spread."""
    x, n = x.float(), x.shape[1]
    sq = x.square().sum(1)
    var = (sq / n - (x.sum(1) / n).square()).clamp_min(0)
    return torch.stack([x.abs().sum(1) / n, sq.sqrt(), var])


def projected_head_norms(per_head: torch.Tensor, o_weight: torch.Tensor) -> torch.Tensor:
    """(B, S, H, d) attention outputs per head -> (B, S, H): the L2 norm of each head's output projected
    through its own o_proj columns, ||W_o[:, head] x_head||, from the head's d x d Gram matrix (no (B, S, H, D)
    temporary)."""
    H, d = per_head.shape[-2:]
    w = o_weight.detach().float().view(-1, H, d)  # (D, H, d)
    gram = torch.einsum("ohd,ohe->hde", w, w)
    sq = (torch.einsum("bshd,hde->bshe", per_head, gram) * per_head).sum(-1)
    return sq.clamp_min(0).sqrt()


def moe_activations(w: MoEWeights, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A mixture-of-experts block's activations (its weights `w`) for its input x (B, S, D), recomputed expert by expert
    as its router routes them: (`seq_stats` of every expert's neurons (A, B, E, n), each expert's contribution to each
    token (B, S, E)). A neuron's activation (down_proj's input) and an expert's contribution (its routing weight times
    the norm of its output) count as 0 for a token not routed to it, so that the statistics are those of the dense (B,
    S, E, n) and (B, S, E) tensors without building the first."""
    B, S, D = x.shape
    flat = x.detach().reshape(-1, D)
    _, weights, chosen = w.route(flat)
    E, n = w.experts.down_proj.shape[0], w.neurons
    seq = torch.arange(B, device=x.device).repeat_interleave(S)
    sums = torch.zeros(3, B, E, n, device=x.device)  # per sequence: sum |a|, sum a^2, sum a
    contribution = torch.zeros(B * S, E, device=x.device)
    for e in chosen.unique().tolist():
        token, slot = torch.where(chosen == e)
        a, out = w.expert(e, flat[token])
        out = out * weights[token, slot, None].float()
        contribution[token, e] = torch.linalg.vector_norm(out, dim=-1)
        for i, t in enumerate((a.abs(), a.square(), a)):
            sums[i, :, e].index_add_(0, seq[token], t)
    var = (sums[1] / S - (sums[2] / S).square()).clamp_min(0)
    return torch.stack([sums[0] / S, sums[1].sqrt(), var]), contribution.view(B, S, E)


class Stat:
    """fp32 running sums over samples of per-sample vectors, one row per sequence aggregation: enough for
    batch L2, mean and variance."""

    def __init__(self, *shape: int, device=None):
        self.sum = torch.zeros(len(AGGREGATIONS), *shape, device=device)
        self.sq = torch.zeros(len(AGGREGATIONS), *shape, device=device)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:  # x: (len(AGGREGATIONS), B, *shape) from `seq_stats`
        self.sum += x.sum(1)
        self.sq += x.pow(2).sum(1)
        self.n += x.shape[1]

    @classmethod
    def pooled(cls, stats: list["Stat"]) -> "Stat":
        """One statistic over the samples of all of `stats` together."""
        out = cls.__new__(cls)
        out.sum, out.sq = sum(s.sum for s in stats), sum(s.sq for s in stats)
        out.n = sum(s.n for s in stats)
        return out

    def reduce(self, how: str) -> torch.Tensor:
        if how == "l2":
            return self.sq.sqrt().cpu()
        mean = self.sum / max(self.n, 1)
        return (mean if how == "mean" else (self.sq / max(self.n, 1) - mean.pow(2)).clamp_min(0)).cpu()


class ActivationRecorder:
    """Forward hooks that accumulate activation statistics for every unit kind.

    The statistics live on `device` (default: the model's); hooks are added on entering the context and
    removed on leaving it, and the statistics survive, so a layer-streamed pass can enter it once per layer.
    """

    def __init__(self, model: nn.Module, arch: Arch, device: torch.device | str | None = None):
        self.model, self.arch, self.handles = model, arch, []
        cfg, dev = model.config, device or next(model.parameters()).device
        L, D, H, Fn = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, getattr(cfg, arch.mlp_size)
        E = (num_experts(cfg),) if arch.moe else ()  # a mixture of experts: each expert's neurons
        # hidden channels, per norm: {norm name: one Stat per layer}, and the final norm (only pooled uses it)
        self.norms = {name: [Stat(D, device=dev) for _ in range(L)] for name in arch.norms}
        self.final = Stat(D, device=dev)
        self.heads = [Stat(H, device=dev) for _ in range(L)]  # attention output per head, before o_proj
        self.heads_o = [Stat(H, device=dev) for _ in range(L)]  # each head's contribution after o_proj
        self.mlp = [Stat(*E, Fn, device=dev) for _ in range(L)]
        self.experts = [Stat(*E, device=dev) for _ in range(L)] if arch.moe else []  # each one's contribution
        Fd = getattr(cfg, DENSE_SIZE) if dense_layers(cfg) else 0  # neurons of a mixture of experts' dense layers
        self.dense = [Stat(Fd, device=dev) for _ in range(L)]
        shared = shared_width(cfg)
        self.shared = [Stat(shared, device=dev) for _ in range(L)]  # a shared expert's neurons (down_proj's input)
        # a hybrid's recurrent heads: Mamba-2's heads and head channels, Gated DeltaNet's value heads (0 in its other
        # layers, as attention heads and neurons are where it has none)
        Hm, dm = (getattr(cfg, arch.mamba_names.heads), getattr(cfg, arch.mamba_names.head_dim)) \
            if arch.mixer == "mamba" else (0, 0)
        Hv, dv = (cfg.linear_num_value_heads, cfg.linear_value_head_dim) if arch.mixer == "delta" else (0, 0)
        self.mamba, self.mamba_dim = [Stat(Hm, device=dev) for _ in range(L)], [Stat(dm, device=dev) for _ in range(L)]
        self.delta = [Stat(Hv, device=dev) for _ in range(L)]
        C = D if arch.mixer == "conv" else 0  # a short convolution's channels (LFM2's: hidden_size of them)
        self.conv = [Stat(C, device=dev) for _ in range(L)]
        # squared input norms of the linears that consume each unit (structured Wanda)
        self.sq = {"attn_in": torch.zeros(L, D, device=dev), "mlp_in": torch.zeros(L, D, device=dev),
                   "head_in": torch.zeros(D, device=dev), "o_in": torch.zeros(L, H * head_dims(cfg).out, device=dev),
                   "mixer_in": torch.zeros(L, D, device=dev), "mamba_o_in": torch.zeros(L, Hm * dm, device=dev),
                   "delta_o_in": torch.zeros(L, Hv * dv, device=dev),
                   "conv_o_in": torch.zeros(L, C, device=dev)}
        self.bi_sum, self.bi_count = torch.zeros(L, device=dev), 0
        self._last: tuple = (None, None)  # the activation last recorded and its `seq_stats`

    def _batched(self, x: torch.Tensor) -> torch.Tensor:
        """`x` as (B, S, ...): a layer that runs its MLP on its tokens flattened (OPT's: (B x S, D)) as the batch of
        the layer's input."""
        return x if x.dim() > 2 else x.view(*self._seq_shape, -1)

    def _add(self, stats: Stat | list[Stat], x: torch.Tensor, layer: int | None = None) -> None:
        st = seq_stats(self._batched(x.detach()))
        self._last = (x, st)  # a linear that reads this very tensor next (q_proj, the MLP, lm_head) reuses it
        (stats if layer is None else stats[layer]).add(st)

    def add_input_sq(self, key: str, x: torch.Tensor, layer: int | None = None) -> None:
        """Add the squared channel norms of a consumer's input `x` (B, S, D) to the Wanda statistic `key`: from
        the sequence L2 norms already taken when `x` is the norm output just recorded, else from x itself."""
        last, st = self._last
        sq = st[1].square().sum(0) if x is last else self._batched(x.detach()).float().pow(2).sum((0, 1))
        if layer is None:
            self.sq[key] += sq
        else:
            self.sq[key][layer] += sq

    def _sq(self, key: str, layer: int | None = None):
        return lambda module, args: self.add_input_sq(key, args[0], layer)

    def _heads(self, layer: int):
        dim = head_dims(self.model.config).out  # (once, not at every batch)

        def hook(module, args):
            per_head = args[0].detach().unflatten(-1, (-1, dim)).float()  # (B, S, H, d)
            self._add(self.heads, torch.linalg.vecdot(per_head, per_head).sqrt(), layer)  # each head's norm
            self._add(self.heads_o, projected_head_norms(per_head, module.weight), layer)
            self.sq["o_in"][layer] += per_head.square().sum((0, 1)).flatten()
        return hook

    def _mamba(self, layer: int, head_dim: int):
        def hook(module, args):
            per_head = args[0].detach().unflatten(-1, (-1, head_dim)).float()  # (B, S, H, d)
            self._add(self.mamba, torch.linalg.vector_norm(per_head, dim=-1), layer)
            self._add(self.mamba_dim, torch.linalg.vector_norm(per_head, dim=-2), layer)
            self.sq["mamba_o_in"][layer] += per_head.square().sum((0, 1)).flatten()
        return hook

    def _delta(self, layer: int):
        def hook(module, args):
            per_head = args[0].detach().unflatten(-1, (-1, self.model.config.linear_value_head_dim)).float()
            self._add(self.delta, torch.linalg.vector_norm(per_head, dim=-1), layer)
            self.sq["delta_o_in"][layer] += per_head.square().sum((0, 1)).flatten()
        return hook

    def _conv(self, layer: int):
        def hook(module, args):
            self._add(self.conv, args[0], layer)
            self.sq["conv_o_in"][layer] += args[0].detach().float().square().sum((0, 1))
        return hook

    def _shared(self, layer: int):
        def hook(module, args):  # the block runs its shared expert on its tokens flattened: (B x S, neurons)
            self._add(self.shared, args[0].view(*self._moe_shape, -1), layer)
        return hook

    def _moe(self, layer: int):
        def hook(module, args):
            self._moe_shape = args[0].shape[:2]  # (B, S), for its shared expert's
            self.add_input_sq("mlp_in", args[0], layer)
            neurons, contribution = moe_activations(moe_weights(module, self.arch), args[0])
            self.mlp[layer].add(neurons)
            self._add(self.experts, contribution, layer)
        return hook

    def _layer_input(self, module, args, kwargs) -> None:
        """Each layer's (B, S) (`_batched`)."""
        self._seq_shape = (args[0] if args else kwargs["hidden_states"]).shape[:2]

    def _norm(self, name: str, layer: int):
        return lambda module, args, out: self._add(self.norms[name], out, layer)

    def _block_influence(self, layer: int):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            self.bi_sum[layer] += (1 - F.cosine_similarity(x.float(), y.float(), dim=-1)).sum()
            if layer == 0:
                self.bi_count += x.shape[0] * x.shape[1]
        return hook

    def __enter__(self) -> "ActivationRecorder":
        reg = self.handles.append
        reg(final_norm(self.model).register_forward_hook(lambda m, a, out: self._add(self.final, out)))
        for i, layer in enumerate(decoder_layers(self.model)):
            reg(layer.register_forward_pre_hook(self._layer_input, with_kwargs=True))
            for name, norm in zip(self.arch.norms, layer_norms(layer, self.arch)):
                reg(norm.register_forward_hook(self._norm(name, i)))
            attn, mlp, mamba, delta = attention_of(layer), mlp_of(layer), mamba_of(layer), delta_of(layer)
            if attn is not None:
                reg(attention_out(attn).register_forward_pre_hook(self._heads(i)))
                reg(attention_inputs(layer, self.arch)[0].register_forward_pre_hook(self._sq("attn_in", i)))
            if is_sparse(layer, self.arch):
                reg(moe_block(layer, self.arch).register_forward_pre_hook(self._moe(i)))
            elif mlp is not None:  # (a mixture of experts' dense layer: its own statistic)
                stats = self.dense if self.arch.moe else self.mlp
                reg(mlp_down(mlp, self.arch).register_forward_pre_hook(lambda m, a, i=i: self._add(stats, a[0], i)))
                reg(mlp_inputs(layer, self.arch)[-1].register_forward_pre_hook(self._sq("mlp_in", i)))
            if shared_expert_of(layer, self.arch) is not None:
                reg(shared_down(layer, self.arch).register_forward_pre_hook(self._shared(i)))
            if mamba is not None:
                reg(mamba.out_proj.register_forward_pre_hook(self._mamba(i, mamba.head_dim)))
            if delta is not None:
                reg(delta.out_proj.register_forward_pre_hook(self._delta(i)))
            if (conv := conv_of(layer)) is not None:
                reg(conv.out_proj.register_forward_pre_hook(self._conv(i)))
            if mixer_inputs(layer):
                reg(mixer_inputs(layer)[0].register_forward_pre_hook(self._sq("mixer_in", i)))
            reg(layer.register_forward_hook(self._block_influence(i), with_kwargs=True))
        reg(self.model.get_output_embeddings().register_forward_pre_hook(self._sq("head_in")))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self._last = [], (None, None)

    def scores(self) -> dict[str, torch.Tensor]:
        out = {}
        summed = [st for name in self.arch.hidden_norms for st in self.norms[name]]
        pooled = Stat.pooled([self.final] + [st for stats in self.norms.values() for st in stats])
        for b in AGGREGATIONS:
            units = {"hidden": sum(st.reduce(b) for st in summed), "hidden_pooled": pooled.reduce(b),
                     "heads": torch.stack([st.reduce(b) for st in self.heads], 1),  # (A, L, H)
                     "heads_oproj": torch.stack([st.reduce(b) for st in self.heads_o], 1),
                     "mlp": torch.stack([st.reduce(b) for st in self.mlp], 1)}
            if self.experts:
                units["experts"] = torch.stack([st.reduce(b) for st in self.experts], 1)  # (A, L, E)
            if self.arch.shared_expert:
                units["shared"] = torch.stack([st.reduce(b) for st in self.shared], 1)  # (A, L, shared neurons)
            if dense_layers(self.model.config):
                units["dense"] = torch.stack([st.reduce(b) for st in self.dense], 1)  # (A, L, dense layers' neurons)
            if self.arch.mixer == "mamba":
                units["mamba"] = torch.stack([st.reduce(b) for st in self.mamba], 1)  # (A, L, Hm)
                units["mamba_dim"] = torch.stack([st.reduce(b) for st in self.mamba_dim], 1)  # (A, L, dm)
            if self.arch.mixer == "delta":
                units["delta"] = torch.stack([st.reduce(b) for st in self.delta], 1)  # (A, L, Hv)
            if self.arch.mixer == "conv":
                units["conv"] = torch.stack([st.reduce(b) for st in self.conv], 1)  # (A, L, D)
            for i, s in enumerate(AGGREGATIONS):
                for unit, t in units.items():
                    out[f"activation/{s}-{b}/{unit}"] = t[i].clone()  # own storage: safetensors refuses shared
        out["layers/block_influence"] = (self.bi_sum / max(self.bi_count, 1)).cpu()
        return out
