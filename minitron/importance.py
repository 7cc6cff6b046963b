"""Importance of hidden channels, attention heads, MLP neurons and layers.

Activation importance (the Minitron papers): forward hooks record, per calibration batch (B, S, D),
an aggregate over the sequence (mean of |x|, L2 or variance) and accumulate it over the batch in fp32
(L2, mean or variance across sequences). One pass fills every (sequence, batch) combination.
Peer criteria for comparison: random, weight magnitude, first-order Taylor, structured Wanda.
Layers: Block Influence (1 - cos(input, output)) and the LM-loss increase when a layer, or a
contiguous block of k layers, is removed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import (Arch, arch_of, count_params, decoder_layers, embedding, final_norm, head_dim,
                           layer_norms, mlp_inputs, residual_readers, residual_writers)
from minitron.errors import MinitronError
from minitron.eval import cross_entropy_sum
from minitron.io import atomic_dir, write_json

AGGREGATIONS = ("mean", "l2", "var")
WIDTH_CRITERIA = ("activation", "wanda", "magnitude", "taylor", "random")
Criterion = Literal["activation", "wanda", "magnitude", "taylor", "random"]
Agg = Literal["mean", "l2", "var"]
ComputeDtype = Literal["float32", "bfloat16"]


def seq_reduce(x: torch.Tensor, how: str) -> torch.Tensor:
    """(B, S, D) -> (B, D): mean of |x|, L2 norm or variance over the sequence, in fp32."""
    x = x.float()
    if how == "mean":
        return x.abs().mean(1)
    if how == "l2":
        return x.norm(dim=1)
    return x.var(1, unbiased=False)


class Stat:
    """fp32 running sums over samples of per-sample vectors: enough for batch L2, mean and variance."""

    def __init__(self, *shape: int, device=None):
        self.sum = torch.zeros(*shape, device=device)
        self.sq = torch.zeros(*shape, device=device)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:  # x: (B, *shape)
        self.sum += x.sum(0)
        self.sq += x.pow(2).sum(0)
        self.n += x.shape[0]

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
        L, D, H, Fn = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size
        self.hidden = {s: Stat(D, device=dev) for s in AGGREGATIONS}
        self.heads = {s: [Stat(H, device=dev) for _ in range(L)] for s in AGGREGATIONS}
        self.mlp = {s: [Stat(Fn, device=dev) for _ in range(L)] for s in AGGREGATIONS}
        # squared input norms of the linears that consume each unit (structured Wanda)
        self.sq = {"attn_in": torch.zeros(L, D, device=dev), "mlp_in": torch.zeros(L, D, device=dev),
                   "head_in": torch.zeros(D, device=dev), "o_in": torch.zeros(L, H * head_dim(cfg), device=dev)}
        self.bi_sum, self.bi_count = torch.zeros(L, device=dev), 0

    def _add(self, stats: dict, x: torch.Tensor, layer: int | None = None) -> None:
        for s in AGGREGATIONS:
            (stats[s] if layer is None else stats[s][layer]).add(seq_reduce(x, s))

    def add_input_sq(self, key: str, x: torch.Tensor, layer: int | None = None) -> None:
        """Add the squared channel norms of a consumer's input `x` (B, S, D) to the Wanda statistic `key`."""
        sq = x.detach().float().pow(2).sum((0, 1))
        if layer is None:
            self.sq[key] += sq
        else:
            self.sq[key][layer] += sq

    def _sq(self, key: str, layer: int | None = None):
        return lambda module, args: self.add_input_sq(key, args[0], layer)

    def _heads(self, layer: int):
        def hook(module, args):
            x = args[0].detach()
            self._add(self.heads, x.unflatten(-1, (-1, head_dim(self.model.config))).float().norm(dim=-1), layer)
            self.sq["o_in"][layer] += x.float().pow(2).sum((0, 1))
        return hook

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
        for norm in [final_norm(self.model)] + [n for l in decoder_layers(self.model) for n in layer_norms(l, self.arch)]:
            reg(norm.register_forward_hook(lambda m, a, out: self._add(self.hidden, out.detach())))
        for i, layer in enumerate(decoder_layers(self.model)):
            reg(layer.self_attn.o_proj.register_forward_pre_hook(self._heads(i)))
            reg(layer.mlp.down_proj.register_forward_pre_hook(lambda m, a, i=i: self._add(self.mlp, a[0].detach(), i)))
            reg(layer.self_attn.q_proj.register_forward_pre_hook(self._sq("attn_in", i)))
            reg(mlp_inputs(layer, self.arch)[-1].register_forward_pre_hook(self._sq("mlp_in", i)))
            reg(layer.register_forward_hook(self._block_influence(i), with_kwargs=True))
        reg(self.model.get_output_embeddings().register_forward_pre_hook(self._sq("head_in")))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def scores(self) -> dict[str, torch.Tensor]:
        out = {}
        for s in AGGREGATIONS:
            for b in AGGREGATIONS:
                out[f"activation/{s}-{b}/hidden"] = self.hidden[s].reduce(b)
                out[f"activation/{s}-{b}/heads"] = torch.stack([st.reduce(b) for st in self.heads[s]])
                out[f"activation/{s}-{b}/mlp"] = torch.stack([st.reduce(b) for st in self.mlp[s]])
        out["layers/block_influence"] = (self.bi_sum / max(self.bi_count, 1)).cpu()
        return out


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


def _row_sum(lin: nn.Linear, elem: Elem) -> torch.Tensor:
    r = elem(lin.weight).sum(1)
    return r + elem(lin.bias) if lin.bias is not None else r


def unit_scores(hidden: torch.Tensor, heads: list[torch.Tensor], mlp: list[torch.Tensor]) -> dict:
    return {"hidden": hidden.detach().float().cpu(), "heads": torch.stack(heads).detach().float().cpu(),
            "mlp": torch.stack(mlp).detach().float().cpu()}


def coupled_layer(layer: nn.Module, arch: Arch, dim: int, elem: Elem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoder layer's part of `coupled_scores`: (hidden-channel sum, head scores, neuron scores)."""
    attn = layer.self_attn
    hidden = sum(column_sum(l.weight, elem) for l in residual_readers(layer, arch)) + \
        sum(_row_sum(l, elem) for l in residual_writers(layer)) + sum(norm_sum(n, elem) for n in layer_norms(layer, arch))
    heads = (_row_sum(attn.q_proj, elem) + column_sum(attn.o_proj.weight, elem)).view(-1, dim).sum(1)
    mlp = sum(_row_sum(l, elem) for l in mlp_inputs(layer, arch)) + column_sum(layer.mlp.down_proj.weight, elem)
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
    """One decoder layer's part of `wanda_scores` (layer `i`'s input norms in `sq`): (hidden, heads, mlp)."""
    attn = layer.self_attn
    qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
    hidden = sum(column_sum(l.weight, abs32) for l in qkv) * sq["attn_in"][i].sqrt() + \
        sum(column_sum(l.weight, abs32) for l in mlp_inputs(layer, arch)) * sq["mlp_in"][i].sqrt()
    heads = (column_sum(attn.o_proj.weight, abs32) * sq["o_in"][i].sqrt()).view(-1, dim).sum(1)
    return hidden, heads, column_sum(layer.mlp.down_proj.weight, abs32)  # mlp: times the input norm (`finish_wanda`)


def wanda_head(weight: torch.Tensor, head_in_sq: torch.Tensor, rows_per_chunk: int | None = None) -> torch.Tensor:
    """lm_head's part of the hidden-channel Wanda scores."""
    return column_sum(weight, abs32, rows_per_chunk) * head_in_sq.sqrt()


def wanda_scores(model: nn.Module, arch: Arch, sq: dict[str, torch.Tensor]) -> dict:
    """Structured Wanda: sum over a unit's consumer weights of |W| times the L2 norm of its input channel."""
    hidden = wanda_head(model.get_output_embeddings().weight, sq["head_in"])
    heads, mlp = [], []
    for i, layer in enumerate(decoder_layers(model)):
        h, hd, m = wanda_layer(layer, arch, head_dim(model.config), sq, i)
        hidden = hidden + h
        heads.append(hd)
        mlp.append(m)
    return unit_scores(hidden, heads, mlp)


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


# ---------------------------------------------------------------------------------------------- layers

def logits_from_hidden(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Final norm, lm_head and (Gemma) soft-capping applied to a last-layer output."""
    logits = model.get_output_embeddings()(final_norm(model)(h))
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def removal_loss_sum(model: nn.Module, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM loss (`eval.cross_entropy_sum`) of a last-layer output `h` of windows ids[:, :-1], for `labels`
    ids[:, 1:]: the intact model's `eval.lm_loss_sum` when `h` went through every layer."""
    return cross_entropy_sum(logits_from_hidden(model, h), labels)


def call_layer(layer: nn.Module, h: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = layer(h, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def layer_inputs(model: nn.Module, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple]]:
    """Inputs of every decoder layer plus the last layer's output, and each layer's other call arguments
    (masks, rotary embeddings): enough to re-run any suffix of the network without the prefix."""
    states, calls = [], []

    def capture(module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])
        calls.append((args[1:], {k: v for k, v in kwargs.items() if k != "hidden_states"}))

    layers = decoder_layers(model)
    handles = [l.register_forward_pre_hook(capture, with_kwargs=True) for l in layers]
    handles.append(layers[-1].register_forward_hook(
        lambda m, a, out: states.append(out[0] if isinstance(out, tuple) else out)))
    try:
        model.model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return states, calls


@torch.no_grad()
def block_removal_losses(model: nn.Module, batches: list[torch.Tensor], k: int) -> tuple[torch.Tensor, float]:
    """LM loss with layers [s, s+k) removed, for every start s; and the intact model's loss.

    The prefix is shared by all windows, so each removal only re-runs the layers after the block."""
    device, L = next(model.parameters()).device, model.config.num_hidden_layers
    layers = decoder_layers(model)
    losses, base, n = torch.zeros(L - k + 1), 0.0, 0.0
    for ids in tqdm(batches, desc=f"layer loss k={k}", leave=False):
        ids = ids.to(device)
        states, calls = layer_inputs(model, ids[:, :-1])
        total, count = removal_loss_sum(model, states[-1], ids[:, 1:])
        base, n = base + total.item(), n + count.item()
        for s in range(L - k + 1):
            h = states[s]
            for j in range(s + k, L):
                h = call_layer(layers[j], h, *calls[j])
            losses[s] += removal_loss_sum(model, h, ids[:, 1:])[0].item()
    return losses / n, base / n


# ---------------------------------------------------------------------------------------------- scores

@dataclass
class Scores:
    """Importance of every unit under every criterion computed; reusable for any later target."""

    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    def width(self, criterion: str = "activation", seq_agg: str = "mean", batch_agg: str = "l2") -> dict:
        prefix = f"activation/{seq_agg}-{batch_agg}" if criterion == "activation" else criterion
        if f"{prefix}/mlp" not in self.tensors:
            raise MinitronError(f"the scores have no {prefix!r} importance (have: {', '.join(self.criteria())}); "
                                f"run `minitron score --criteria {criterion}`")
        return {k: self.tensors[f"{prefix}/{k}"] for k in ("hidden", "heads", "mlp")}

    def criteria(self) -> list[str]:
        return sorted({k.split("/")[0] for k in self.tensors if not k.startswith("layers/")})

    def layer(self, key: str) -> torch.Tensor:
        if f"layers/{key}" not in self.tensors:
            have = [k.removeprefix("layers/") for k in self.tensors if k.startswith("layers/")]
            raise MinitronError(f"the scores have no layer importance {key!r} (have: {', '.join(have)}); "
                                "run `minitron score --layer-loss --block-sizes K`")
        return self.tensors[f"layers/{key}"]

    def save(self, out: Path, overwrite: bool = False) -> Path:
        with atomic_dir(out, overwrite) as tmp:
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, tmp / "scores.safetensors")
            write_json(tmp / "scores.json", self.meta)
        return Path(out)

    @classmethod
    def load(cls, path: Path | str) -> "Scores":
        path = Path(path)
        try:
            return cls(load_file(path / "scores.safetensors"), json.loads((path / "scores.json").read_text()))
        except FileNotFoundError:
            raise MinitronError(f"{path} holds no importance scores (scores.safetensors + scores.json); "
                                "make them with `minitron score --out DIR`") from None
        except Exception as e:
            raise MinitronError(f"the scores in {path} are corrupt: {str(e).splitlines()[0][:120]}") from None


@torch.no_grad()
def activation_scores(model: nn.Module, arch: Arch, batches: list[torch.Tensor]) -> tuple[dict, dict]:
    """One forward pass over the calibration batches: activation scores and Wanda input norms."""
    device = next(model.parameters()).device
    with ActivationRecorder(model, arch) as rec:
        bar = tqdm(batches, desc="scoring", unit="batch", leave=False)
        start, seen = time.time(), 0
        for ids in bar:
            model(input_ids=ids.to(device), use_cache=False)
            seen += ids.numel()
            bar.set_postfix(tok_s=f"{seen / (time.time() - start):.0f}")
    return rec.scores(), rec.sq


def check_criteria(criteria: list[str]) -> None:
    unknown = sorted(set(criteria) - set(WIDTH_CRITERIA))
    if unknown:
        raise MinitronError(f"unknown criteria {', '.join(unknown)}; choose from {', '.join(WIDTH_CRITERIA)}")


def named(prefix: str, scores: dict) -> dict[str, torch.Tensor]:
    """{"hidden": t, ...} -> {"prefix/hidden": t, ...}"""
    return {f"{prefix}/{k}": v for k, v in scores.items()}


def loss_key(k: int) -> str:
    """Name of the layer-removal losses for blocks of k layers."""
    return "layers/loss" if k == 1 else f"layers/block_loss_k{k}"


def activation_tensors(criteria: list[str], act: dict) -> dict[str, torch.Tensor]:
    """The activation scores kept (Block Influence always: it comes free with the pass)."""
    return act if "activation" in criteria else {"layers/block_influence": act["layers/block_influence"]}


def random_tensors(config, seed: int) -> dict[str, torch.Tensor]:
    r = random_scores(config, seed)
    return {"layers/random": r.pop("layers"), **named("random", r)}


def model_meta(model: nn.Module, criteria: list[str]) -> dict:
    """What a Scores record says about the scored model (works on a meta-device skeleton too)."""
    return dict(criteria=sorted(criteria), params=count_params(model),
                sizes={k: getattr(model.config, k) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                                             "num_key_value_heads", "num_hidden_layers")})


def compute_scores(model: nn.Module, batches: list[torch.Tensor], criteria: list[str],
                   layer_loss_batches: list[torch.Tensor] | None = None, block_sizes: list[int] = (),
                   seed: int = 0) -> Scores:
    """Every requested criterion's scores for one model and one calibration set."""
    arch = arch_of(model.config)
    check_criteria(criteria)
    tensors, meta = {}, {"timings_s": {}}
    t = time.time()
    act, sq = activation_scores(model, arch, batches)
    meta["timings_s"]["activation"] = round(time.time() - t, 2)
    tensors.update(activation_tensors(criteria, act))
    if "wanda" in criteria:
        tensors.update(named("wanda", finish_wanda(wanda_scores(model, arch, sq), act)))
    if "magnitude" in criteria:
        tensors.update(named("magnitude", coupled_scores(model, arch, magnitude)))
    if "taylor" in criteria:
        t = time.time()
        tensors.update(named("taylor", taylor_scores(model, arch, batches)))
        meta["timings_s"]["taylor"] = round(time.time() - t, 2)
    if "random" in criteria:
        tensors.update(random_tensors(model.config, seed))
    if layer_loss_batches:
        t = time.time()
        for k in sorted({1, *block_sizes}):
            losses, base = block_removal_losses(model, layer_loss_batches, k)
            tensors[loss_key(k)] = losses - base
            meta["base_loss"] = base
        meta["timings_s"]["layer_loss"] = round(time.time() - t, 2)
    meta.update(model_meta(model, criteria))
    return Scores(tensors, meta)


DEFAULT_CRITERIA = ["activation", "wanda", "magnitude", "random"]


def calibration(model_spec: str, tokenizer, data: Path | None, num_seqs: int, seq_len: int, batch_size: int,
                seed: int = 1234) -> list[torch.Tensor]:
    """Calibration batches from a data directory, or from the default corpus in the model's tokenizer."""
    from minitron.data import TokenData, calibration_batches, default_data

    tokens = TokenData.open(data if data is not None else default_data(model_spec))
    tokens.check_tokenizer(tokenizer)
    return calibration_batches(tokens, num_seqs, seq_len, batch_size, seed)


def score(model: str = "default", data: Path | None = None, out: Path | None = None,
          criteria: list[str] | None = None, calib_seqs: int = 64, seq_len: int = 256, batch_size: int = 8,
          layer_loss: bool = False, layer_loss_seqs: int = 8, block_sizes: list[int] | None = None,
          stream: bool | None = None, device: str = "auto", dtype: ComputeDtype = "float32", seed: int = 1234,
          overwrite: bool = False) -> Scores:
    """Score the importance of every hidden channel, head, MLP neuron and layer from activations.

    Args:
        model: teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        data: token data directory from `minitron data` (default: the default corpus)
        out: directory to save the scores (scores.safetensors + scores.json)
        criteria: width criteria to compute: activation, wanda, magnitude, taylor, random
        calib_seqs: number of calibration sequences
        seq_len: tokens per calibration sequence
        batch_size: sequences per forward pass
        layer_loss: also measure the LM-loss increase of removing each layer (and blocks of --block-sizes)
        layer_loss_seqs: calibration sequences used for the layer-removal losses
        block_sizes: contiguous block lengths k to score for depth pruning (with --layer-loss)
        stream: read the checkpoint one layer at a time (default: only when the model does not fit in
            memory); all criteria but taylor
        device: auto, cpu or cuda
        dtype: what the forward passes compute in: float32, or bfloat16 (half the memory, several times
            faster on GPUs and on CPUs with bf16 units; statistics are accumulated in fp32 either way)
        seed: seed of the calibration sample and of the random criterion
        overwrite: replace an existing --out directory
    """
    from minitron.io import refuse_existing
    from minitron.load import load_config, load_model, load_tokenizer, pick_device, resolve_model
    from minitron.stream import check_streamable, choose_stream, stream_scores

    if out is not None:
        refuse_existing(Path(out), overwrite)
    criteria = criteria or DEFAULT_CRITERIA
    if calib_seqs < 1 or seq_len < 2 or batch_size < 1:
        raise MinitronError("--calib-seqs, --batch-size must be at least 1 and --seq-len at least 2")
    path, L = resolve_model(model), load_config(model).num_hidden_layers
    bad = [k for k in block_sizes or [] if not 1 <= k < L]
    if bad:
        raise MinitronError(f"block sizes {bad} are impossible for a model of {L} layers (need 1 <= k < {L})")
    compute = getattr(torch, dtype)
    streamed = choose_stream(path, stream, compute)
    (check_streamable if streamed else check_criteria)(criteria)
    tokenizer = load_tokenizer(model)
    batches = calibration(model, tokenizer, data, calib_seqs, seq_len, batch_size, seed)
    loss_batches = calibration(model, tokenizer, data, layer_loss_seqs, seq_len, batch_size, seed + 1) if layer_loss else None
    if streamed:
        result = stream_scores(path, batches, criteria, loss_batches, block_sizes or [], seed, pick_device(device),
                               compute)
    else:
        result = compute_scores(load_model(model, pick_device(device), compute), batches, criteria, loss_batches,
                                block_sizes or [], seed)
    result.meta.update(teacher=str(model), compute_dtype=dtype,
                       calibration={"data": str(data or "default corpus"), "num_seqs": calib_seqs,
                                    "seq_len": seq_len, "seed": seed})
    if out is not None:
        result.save(Path(out), overwrite)
        print(f"wrote importance scores to {out}")
    return result
