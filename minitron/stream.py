"""Score and prune checkpoints larger than memory, one decoder layer at a time.

The model is a skeleton whose parameters live on the meta device (buffers such as rotary frequencies
are real); `LazyModel` materialises one module at a time from the safetensors files and releases it
after use. Scoring embeds every calibration sequence, captures each layer's call arguments (masks,
rotary embeddings) from the model's own forward with the layers stubbed out, then runs all sequences
through layer 0, 1, ... in turn, with the same `ActivationRecorder` hooks and per-layer weight scores
as the in-memory path. Pruning slices each module with the same per-layer ops as the in-memory path and
writes it straight into the output shards. Peak memory is about one layer plus the embeddings.
"""
from __future__ import annotations

import ctypes
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import arch_of, decoder_layers, embedding, final_norm, head_dim
from minitron.errors import MinitronError
from minitron.importance import (ActivationRecorder, Scores, activation_tensors, call_layer, check_criteria,
                                 column_sum, coupled_layer, finish_wanda, loss_key, magnitude,
                                 model_meta, named, norm_sum, random_tensors, unit_scores,
                                 removal_loss_sum, wanda_head, wanda_layer)
from minitron.shards import Checkpoint, SafetensorsWriter, TensorSpec

MEMORY_MARGIN = 1.25  # stream unless the fp32 weights fit in available memory this many times over
CHUNK_ROWS = 8192  # rows at a time when summing over embedding-sized matrices
STREAMABLE = ("activation", "wanda", "magnitude", "random")


# ---------------------------------------------------------------------------------- when to stream

def memory_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def choose_stream(path: Path, stream: bool | None, dtype: torch.dtype = torch.float32) -> bool:
    """`stream` if given; else stream when the weights in `dtype` do not fit in available memory (saying so).

    Unless told not to stream, the checkpoint is checked here against its config, before any work: every
    shard there and whole, the index true to the shards, every tensor the model needs present, shapes right."""
    if stream is False:
        return False
    lazy = LazyModel.open(path)
    if stream:
        return True
    need, have = lazy.ckpt.numel() * dtype.itemsize, memory_available()
    if have is None or need * MEMORY_MARGIN <= have:
        return False
    name = str(dtype).removeprefix("torch.")
    print(f"streaming {path.name} one layer at a time: its weights need {need / 2**30:.1f} GiB in {name} but "
          f"{have / 2**30:.1f} GiB of memory is available (--no-stream to load it whole)", flush=True)
    return True


def check_streamable(criteria: list[str]) -> None:
    check_criteria(criteria)
    if "taylor" in criteria:
        raise MinitronError("the taylor criterion needs gradients from a backward pass through the whole model, "
                            "which streaming one layer at a time cannot do; choose activation, wanda, magnitude "
                            "or random (or --no-stream on a machine where the model fits)")


# ----------------------------------------------------------------------------------- the lazy model

def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; nothing elsewhere). Without it, glibc
    keeps fragments of every layer's temporaries: resident memory grew by about one batch of hidden
    states per layer (1.5 GiB over Mistral-NeMo 12B's 40 layers)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass

def skeleton(config, device: torch.device | str = "cpu") -> nn.Module:
    """The model in eval mode with every parameter on the meta device and its buffers real on `device`."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None:
                module._buffers[name] = buf.to(device)
    return model.eval()


def tied_sources(model: nn.Module, stored: set[str]) -> dict[str, str]:
    """For every state-dict entry, the stored tensor that holds it (tied weights are stored once)."""
    groups: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), []).append(name)
    out = {}
    for names in groups.values():
        out.update(dict.fromkeys(names, next((n for n in names if n in stored), names[0])))
    return out


class LazyModel:
    """A skeleton over a checkpoint: `loaded(module)` materialises modules from the files, then releases them."""

    def __init__(self, ckpt: Checkpoint, model: nn.Module, device: torch.device | str, dtype: torch.dtype | None):
        self.ckpt, self.model, self.device, self.dtype = ckpt, model, device, dtype
        self.sources = tied_sources(model, set(ckpt.specs))
        self.prefix = {id(m): f"{n}." if n else "" for n, m in model.named_modules()}
        ckpt.require(list(dict.fromkeys(self.sources.values())))
        self._check_shapes()

    @classmethod
    def open(cls, path: Path | str, device: torch.device | str = "cpu",
             dtype: torch.dtype | None = torch.float32) -> "LazyModel":
        """`dtype`: what modules are materialised as (None: as stored)."""
        from minitron.load import load_config

        return cls(Checkpoint.open(path), skeleton(load_config(path), device), device, dtype)

    def _check_shapes(self) -> None:
        for name, t in self.model.state_dict(keep_vars=True).items():
            stored = self.ckpt.specs[self.sources[name]].shape
            if stored != tuple(t.shape):
                raise MinitronError(f"{self.ckpt.files[self.sources[name]]}: {self.sources[name]} has shape "
                                    f"{list(stored)} but config.json implies {list(t.shape)}")

    def stored_spec(self, name: str) -> TensorSpec:
        return self.ckpt.specs[self.sources[name]]

    def materialise(self, module: nn.Module) -> None:
        keys = [self.prefix[id(module)] + k for k in module.state_dict(keep_vars=True)]
        tensors = self.ckpt.read([self.sources[k] for k in keys], self.dtype, self.device)
        start = len(self.prefix[id(module)])
        module.load_state_dict({k[start:]: tensors[self.sources[k]] for k in keys}, assign=True)

    @staticmethod
    def release(module: nn.Module) -> None:
        """Put the module's parameters back on the meta device (their memory is freed)."""
        for m in module.modules():
            for name, p in m._parameters.items():
                if p is not None:
                    m._parameters[name] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
        trim_heap()

    @contextmanager
    def loaded(self, *modules: nn.Module) -> Iterator[None]:
        try:
            for m in modules:
                self.materialise(m)
            yield
        finally:
            for m in modules:
                self.release(m)


# ---------------------------------------------------------------------------------------- scoring

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

    def stub(i: int) -> Callable:
        def forward(hidden_states, *args, **kwargs):
            if i == 0:
                first.append(hidden_states)
            calls.append((args, kwargs))
            if i == len(layers) - 1:
                raise _Captured
            return hidden_states
        return forward

    for i, layer in enumerate(layers):
        layer.forward = stub(i)
    try:
        model.model(input_ids=ids, use_cache=False)
    except _Captured:
        pass
    finally:
        for layer in layers:
            del layer.forward
    return Flow(ids, first[0], calls, labels)


class RemovalLosses:
    """LM loss with each block [s, s+k) of layers removed, computed alongside a layer-by-layer pass.

    Window (k, s) starts from the input of layer s and then goes through layers s+k, s+k+1, ...: the same
    arithmetic as `importance.block_removal_losses`, with the layers in the outer loop."""

    def __init__(self, flows: list[Flow], num_layers: int, ks: list[int]):
        self.flows = flows
        self.windows: dict[tuple[int, int], list[torch.Tensor] | None] = {
            (k, s): None for k in ks for s in range(num_layers - k + 1)}

    def step(self, layer: nn.Module, i: int) -> None:
        for (k, s), states in self.windows.items():
            if s == i:
                self.windows[k, s] = [f.h for f in self.flows]
            elif states is not None and s + k <= i:
                self.windows[k, s] = [f.through(layer, i, h) for f, h in zip(self.flows, states)]
        for f in self.flows:
            f.h = f.through(layer, i)

    def finish(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], float]:
        """Loss increases per window (keys as `compute_scores` names them) and the intact model's loss."""
        def loss(h: torch.Tensor, f: Flow) -> float:
            return removal_loss_sum(model, h, f.labels)[0].item()

        n = sum(f.labels.numel() for f in self.flows)
        base = sum(loss(f.h, f) for f in self.flows) / n
        out = {}
        for k in sorted({k for k, _ in self.windows}):
            starts = [s for kk, s in self.windows if kk == k]
            losses = torch.zeros(len(starts))
            for b, f in enumerate(self.flows):
                for s in starts:
                    losses[s] += loss(self.windows[k, s][b], f)
            out[loss_key(k)] = losses / n - base
        return out, base


class WeightScores:
    """Magnitude and Wanda scores, summed part by part as the modules stream past."""

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
            out.update(named(kind, finish_wanda(scores, act) if kind == "wanda" else scores))
        return out


def _layer_pass(lazy: LazyModel, flows: list[Flow], rec: ActivationRecorder, weights: WeightScores,
                losses: RemovalLosses | None) -> None:
    """Every decoder layer in turn: materialise, run every batch through it (recording), score its weights."""
    layers, tokens = decoder_layers(lazy.model), sum(f.ids.numel() for f in flows)
    start = time.time()
    bar = tqdm(range(len(layers)), desc="scoring (streamed)", unit="layer", leave=False)
    for i in bar:
        layer = layers[i]
        with lazy.loaded(layer):
            with rec:
                for f in flows:
                    f.h = f.through(layer, i)
            if losses is not None:
                losses.step(layer, i)
            weights.layer(layer, i, rec.sq)
        bar.set_postfix(tok_s=f"{tokens * (i + 1) / (time.time() - start):.0f}")


def _final_pass(lazy: LazyModel, flows: list[Flow], rec: ActivationRecorder, weights: WeightScores,
                losses: RemovalLosses | None) -> tuple[dict[str, torch.Tensor], float | None]:
    """The final norm (hidden-channel statistics, lm_head input norms), lm_head's weights and the losses."""
    model = lazy.model
    norm, head = final_norm(model), model.get_output_embeddings()
    need_head = bool(weights.kinds) or losses is not None
    with lazy.loaded(norm, *([head] if need_head else [])):
        with rec:
            for f in flows:
                rec.add_input_sq("head_in", norm(f.h))
        if need_head:
            weights.ends(norm, head, rec.sq)
        return losses.finish(model) if losses is not None else ({}, None)


@torch.no_grad()
def stream_scores(path: Path | str, batches: list[torch.Tensor], criteria: list[str],
                  layer_loss_batches: list[torch.Tensor] | None = None, block_sizes: list[int] = (),
                  seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Scores:
    """`importance.compute_scores` for a checkpoint read one layer at a time (computed in `dtype` on `device`)."""
    check_streamable(criteria)
    t = time.time()
    lazy = LazyModel.open(path, device, dtype)
    model = lazy.model
    meta = {"streamed": True, **model_meta(model, criteria)}  # before materialising unties tied weights
    weights = WeightScores(model, criteria)
    with lazy.loaded(embedding(model)):
        flows = [capture(model, ids.to(device)) for ids in batches]
        loss_flows = [capture(model, ids[:, :-1].to(device), ids[:, 1:].to(device)) for ids in layer_loss_batches or []]
        weights.embedding(embedding(model))
    losses = RemovalLosses(loss_flows, model.config.num_hidden_layers, sorted({1, *block_sizes})) \
        if loss_flows else None
    rec = ActivationRecorder(model, arch_of(model.config), device=device)
    _layer_pass(lazy, flows, rec, weights, losses)
    loss_tensors, base = _final_pass(lazy, flows, rec, weights, losses)
    act = rec.scores()
    tensors = {**activation_tensors(criteria, act), **weights.tensors(act), **loss_tensors}
    if "random" in criteria:
        tensors.update(random_tensors(model.config, seed))
    meta["timings_s"] = {"streamed": round(time.time() - t, 2)}
    if base is not None:
        meta["base_loss"] = base
    return Scores(tensors, meta)


# ---------------------------------------------------------------------------------------- pruning

def _teacher_name(name: str, kept: list[int]) -> str:
    """The teacher's name of a student tensor: decoder layers are renumbered after dropping some."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    return f"model.layers.{kept[int(m[1])]}.{m[2]}" if m else name


def student_specs(lazy: LazyModel, new_config, kept: list[int]) -> dict[str, TensorSpec]:
    """Names and shapes of the student's stored tensors (tied ones once), in the teacher's stored dtypes."""
    student = skeleton(new_config, "meta")
    stored, seen = {}, set()
    for name, t in student.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            stored[name] = t
            seen.add(id(t))
    return {n: TensorSpec(lazy.stored_spec(_teacher_name(n, kept)).dtype, tuple(t.shape)) for n, t in stored.items()}


def _parts(lazy: LazyModel, plan, kept: list[int], tied: bool) -> list[tuple[nn.Module, str, Callable]]:
    """(teacher module, student name prefix, slicing op) for each piece of the student, in order: the same
    per-module ops that `prune.apply_plan` runs on a model in memory."""
    from minitron.prune import apply_layer_plan
    from minitron.slicing import slice_embedding, slice_linear, slice_norm

    model, arch = lazy.model, arch_of(lazy.model.config)
    dim, keep = head_dim(model.config), plan.hidden
    layers = decoder_layers(model)

    def unless_full_width(op: Callable) -> Callable:
        return (lambda m: None) if keep is None else op

    parts = [(embedding(model), "model.embed_tokens.", unless_full_width(lambda m: slice_embedding(m, arch, keep)))]
    parts += [(layers[i], f"model.layers.{n}.", lambda m, i=i: apply_layer_plan(m, arch, dim, plan, i))
              for n, i in enumerate(kept)]
    parts.append((final_norm(model), "model.norm.", unless_full_width(lambda m: slice_norm(m, keep))))
    if not tied:
        parts.append((model.get_output_embeddings(), "lm_head.", unless_full_width(lambda m: slice_linear(m, 1, keep))))
    return parts


@torch.no_grad()
def write_pruned(path: Path | str, plan, new_config, out: Path, max_shard_bytes: int = 5 * 2**30) -> int:
    """Slice the checkpoint at `path` by `plan` (a `prune.Plan`) module by module, in its stored dtypes,
    into safetensors shards + index and config.json in `out`; returns the number of parameters written."""
    lazy = LazyModel.open(path, "cpu", dtype=None)
    kept = [i for i in range(lazy.model.config.num_hidden_layers) if i not in set(plan.drop)]
    specs = student_specs(lazy, new_config, kept)
    writer = SafetensorsWriter(out, specs, max_shard_bytes)
    try:
        parts = _parts(lazy, plan, kept, new_config.tie_word_embeddings)
        for module, prefix, cut in tqdm(parts, desc="writing (streamed)", unit="part", leave=False):
            with lazy.loaded(module):
                cut(module)
                for name, t in module.state_dict().items():
                    writer.write(prefix + name, t)
        written = writer.close()
    finally:
        writer.abort()
    new_config.dtype = specs["model.embed_tokens.weight"].dtype
    new_config.save_pretrained(out)
    return written
