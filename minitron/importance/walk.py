"""The one scoring driver: walk the decoder layers one at a time, every calibration batch through each layer
in turn, recording activations, summing weight scores and carrying the layer-removal windows along.

The model is a `Resident` one (every layer already in memory) or a `LazyModel` (a checkpoint larger than
memory, each layer materialised for its turn and released after): the same code either way. The walk
embeds every batch, captures each layer's call arguments (masks, rotary embeddings) from the model's own
forward with the layers stubbed out, then runs all batches through layer 0, 1, ... in turn.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import LogitHead, arch_of, decoder, decoder_layers, embeddings, final_norm
from minitron.numerics import cross_entropy_sum
from minitron.importance.scores import (Scores, activation_tensors, check_criteria, check_streamable, loss_key,
                                        model_meta, named, random_tensors)
from minitron.importance.stats import ActivationRecorder
from minitron.importance.weights import WeightScores, taylor_scores
from minitron.lazy import LazyModel, Resident, reuse_freed_memory


def logits_from_hidden(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Final norm, lm_head and the family's logit scaling or soft-capping (`LogitHead`) applied to a last-layer
    output."""
    return LogitHead.of(model.config)(model.get_output_embeddings()(final_norm(model)(h)))


def removal_loss_sum(model: nn.Module, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM loss (`numerics.cross_entropy_sum`) of a last-layer output `h` of windows ids[:, :-1], for `labels`
    ids[:, 1:]: the intact model's `numerics.lm_loss_sum` when `h` went through every layer."""
    return cross_entropy_sum(logits_from_hidden(model, h), labels)


def call_layer(layer: nn.Module, h: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = layer(h, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


class _Captured(Exception):
    """Stops the model's forward once the last layer's arguments are known."""


@dataclass
class Flow:
    """One calibration batch on its way through the network, layer by layer."""

    ids: torch.Tensor
    h: torch.Tensor  # the input of the next layer
    calls: list[tuple[tuple, dict]]  # every layer's other call arguments (masks, rotary embeddings, ...)
    labels: torch.Tensor | None = None  # next tokens of `ids`, for the LM loss

    def through(self, layer: nn.Module, i: int, h: torch.Tensor | None = None) -> torch.Tensor:
        return call_layer(layer, self.h if h is None else h, *self.calls[i])


@torch.no_grad()
def capture(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor | None = None) -> Flow:
    """Embed `ids` and record each decoder layer's call arguments from the model's own forward, with the
    layers stubbed out (only the embeddings need weights)."""
    layers, calls, first = decoder_layers(model), [], []
    pair = arch_of(model.config).layer_returns_tuple  # (Falcon's layers return their attention weights too)

    def stub(i: int) -> Callable:
        def forward(hidden_states, *args, **kwargs):
            if i == 0:
                first.append(hidden_states)
            calls.append((args, kwargs))
            if i == len(layers) - 1:
                raise _Captured
            return (hidden_states, None) if pair else hidden_states
        return forward

    for i, layer in enumerate(layers):
        layer.forward = stub(i)
    try:
        decoder(model)(input_ids=ids, use_cache=False)
    except _Captured:
        pass
    finally:
        for layer in layers:
            del layer.forward
    return Flow(ids, first[0], calls, labels)


class RemovalLosses:
    """LM loss with each block [s, s+k) of layers removed, computed alongside the layer-by-layer walk.

    Window (k, s) starts from the input of layer s and then goes through layers s+k, s+k+1, ...; every window
    shares the walk's prefix, so removing a block only re-runs the layers after it."""

    def __init__(self, flows: list[Flow], num_layers: int, ks: list[int]):
        self.flows, self.seconds = flows, 0.0  # the wall seconds spent on the windows (the walk's timings_s)
        self.windows: dict[tuple[int, int], list[torch.Tensor] | None] = {
            (k, s): None for k in ks for s in range(num_layers - k + 1)}

    def step(self, layer: nn.Module, i: int) -> None:
        start = time.time()
        for (k, s), states in self.windows.items():
            if s == i:
                self.windows[k, s] = [f.h for f in self.flows]
            elif states is not None and s + k <= i:
                self.windows[k, s] = [f.through(layer, i, h) for f, h in zip(self.flows, states)]
        for f in self.flows:
            f.h = f.through(layer, i)
        self.seconds += time.time() - start

    def finish(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], float]:
        """Loss increases per window (keys as `compute_scores` names them) and the intact model's loss."""
        def loss(h: torch.Tensor, f: Flow) -> float:
            return removal_loss_sum(model, h, f.labels)[0].item()

        start, n = time.time(), sum(f.labels.numel() for f in self.flows)
        base = sum(loss(f.h, f) for f in self.flows) / n
        out = {}
        for k in sorted({k for k, _ in self.windows}):
            starts = [s for kk, s in self.windows if kk == k]
            losses = torch.zeros(len(starts))
            for b, f in enumerate(self.flows):
                for s in starts:
                    losses[s] += loss(self.windows[k, s][b], f)
            out[loss_key(k)] = losses / n - base
        self.seconds += time.time() - start
        return out, base


def _layer_pass(source: LazyModel | Resident, flows: list[Flow], rec: ActivationRecorder, weights: WeightScores,
                losses: RemovalLosses | None) -> None:
    """Every decoder layer in turn: load it (if streamed), run every batch through it (recording), score its
    weights, carry the removal windows along."""
    layers, tokens = decoder_layers(source.model), sum(f.ids.numel() for f in flows)
    start = time.time()
    bar = tqdm(range(len(layers)), desc="scoring", unit="layer", leave=False)
    for i in bar:
        layer = layers[i]
        with source.loaded(layer):
            with rec:
                for f in flows:
                    f.h = f.through(layer, i)
            if losses is not None:
                losses.step(layer, i)
            weights.layer(layer, i, rec.sq)
        bar.set_postfix(tok_s=f"{tokens * (i + 1) / (time.time() - start):.0f}")


def _final_pass(source: LazyModel | Resident, flows: list[Flow], rec: ActivationRecorder, weights: WeightScores,
                losses: RemovalLosses | None) -> tuple[dict[str, torch.Tensor], float | None]:
    """The final norm (hidden-channel statistics, lm_head input norms), lm_head's weights and the losses."""
    model = source.model
    norm, head = final_norm(model), model.get_output_embeddings()
    need_head = bool(weights.kinds) or losses is not None
    with source.loaded(norm, *([head] if need_head else [])):
        with rec:
            for f in flows:
                rec.add_input_sq("head_in", norm(f.h))
        if need_head:
            weights.ends(norm, head, rec.sq)
        return losses.finish(model) if losses is not None else ({}, None)


@torch.no_grad()
def compute_scores(model: nn.Module | LazyModel, batches: list[torch.Tensor], criteria: list[str],
                   layer_loss_batches: list[torch.Tensor] | None = None, block_sizes: list[int] = (),
                   seed: int = 0) -> Scores:
    """Every requested criterion's scores for one model (in memory, or a `LazyModel` streamed from its
    checkpoint) and one calibration set; layer-removal losses for blocks of each of `block_sizes` layers (1: each
    layer alone; none given: 1) on `layer_loss_batches` (token windows: the model sees ids[:, :-1] and predicts
    ids[:, 1:]). Each block length costs a pass over the layers after each block, so only those asked are computed."""
    streamed = isinstance(model, LazyModel)
    (check_streamable if streamed else check_criteria)(criteria)
    source = model if streamed else Resident(model)
    net, device, start = source.model, source.device, time.time()
    if not streamed and torch.device(device).type == "cpu":  # removal windows' logits: not mapped afresh each time
        reuse_freed_memory()
    meta = {"streamed": streamed, **model_meta(net, criteria)}  # before materialising unties tied weights
    weights = WeightScores(net, criteria)
    with source.loaded(*embeddings(net)):  # (OPT's learned positions too)
        flows = [capture(net, ids.to(device)) for ids in batches]
        loss_flows = [capture(net, ids[:, :-1].to(device), ids[:, 1:].to(device)) for ids in layer_loss_batches or []]
        for emb in embeddings(net):
            weights.embedding(emb)
    losses = RemovalLosses(loss_flows, net.config.num_hidden_layers, sorted(set(block_sizes) or {1})) \
        if loss_flows else None
    rec = ActivationRecorder(net, arch_of(net.config), device=device)
    _layer_pass(source, flows, rec, weights, losses)
    loss_tensors, base = _final_pass(source, flows, rec, weights, losses)
    act = rec.scores()
    tensors = {**activation_tensors(criteria, act, bool(flows)), **weights.tensors(act), **loss_tensors}
    if "random" in criteria:
        tensors.update(random_tensors(net.config, seed))
    meta["timings_s"] = {"walk": round(time.time() - start, 2)}
    if losses is not None:  # of the walk, the part that carried the removal windows
        meta["timings_s"]["removal_losses"] = round(losses.seconds, 2)
    if "taylor" in criteria:  # gradients through the whole model: only in memory (check_streamable refuses it)
        start = time.time()
        tensors.update(named("taylor", taylor_scores(net, arch_of(net.config), batches)))
        meta["timings_s"]["taylor"] = round(time.time() - start, 2)
    if base is not None:
        meta["base_loss"] = base
    return Scores(tensors, meta)
