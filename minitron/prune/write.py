"""Prune a checkpoint larger than memory: slice each module of the teacher, one at a time, with the same
per-layer ops as a model in memory, and write it straight into the output shards."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import (Arch, arch_of, decoder_layers, embedding, embeddings, final_norm, head_dims, num_experts,
                           stored_as, tied)
from minitron.io import own_config
from minitron.lazy import LazyModel, skeleton
from minitron.prune.plan import Plan, apply_layer_plan
from minitron.prune.slicing import slice_embedding, slice_linear, slice_norm
from minitron.shards import SafetensorsWriter, TensorSpec


def _teacher_name(name: str, kept: list[int], arch: Arch) -> str:
    """The teacher's name of a student tensor: decoder layers are renumbered after dropping some."""
    layers = f"{arch.decoder}.{arch.layers}"
    m = re.fullmatch(rf"{re.escape(layers)}\.(\d+)\.(.+)", name)
    return f"{layers}.{kept[int(m[1])]}.{m[2]}" if m else name


def student_specs(lazy: LazyModel, new_config, kept: list[int]) -> dict[str, TensorSpec]:
    """Names and shapes of the student's stored tensors (tied ones once; a mixture of experts' as checkpoints store
    them, `arch.stored_as`), in the teacher's stored dtypes."""
    student, arch = skeleton(new_config, "meta"), arch_of(new_config)
    specs, seen = {}, set()
    for name, t in student.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        dtype = lazy.stored_spec(_teacher_name(name, kept, arch)).dtype
        layout = stored_as(name, arch, num_experts(new_config))
        shapes = layout.shapes(tuple(t.shape)) if layout else {name: tuple(t.shape)}
        specs.update({n: TensorSpec(dtype, shape) for n, shape in shapes.items()})
    return specs


def _parts(lazy: LazyModel, plan: Plan, kept: list[int], tied: bool) -> list[tuple[nn.Module, str, Callable]]:
    """(teacher module, student name prefix, slicing op) for each piece of the student, in order: the same
    per-module ops that `prune.apply_plan` runs on a model in memory."""
    model, arch = lazy.model, arch_of(lazy.model.config)
    dims, keep = head_dims(model.config), plan.hidden
    layers = decoder_layers(model)

    def unless_full_width(op: Callable) -> Callable:
        return (lambda m: None) if keep is None else op

    parts = [(emb, lazy.prefix[id(emb)], unless_full_width(lambda m: slice_embedding(m, arch, keep)))
             for emb in embeddings(model)]  # (OPT's learned positions too)
    parts += [(layers[i], f"{arch.decoder}.{arch.layers}.{n}.", lambda m, i=i: apply_layer_plan(m, arch, dims, plan, i))
              for n, i in enumerate(kept)]
    parts.append((final_norm(model), lazy.prefix[id(final_norm(model))],
                  unless_full_width(lambda m: slice_norm(m, keep))))
    if not tied:
        parts.append((model.get_output_embeddings(), "lm_head.", unless_full_width(lambda m: slice_linear(m, 1, keep))))
    return parts


@torch.no_grad()
def write_pruned(path: Path | str, plan: Plan, new_config, out: Path, max_shard_bytes: int = 5 * 2**30) -> int:
    """Slice the checkpoint at `path` by `plan` module by module, in its stored dtypes,
    into safetensors shards + index and config.json in `out`; returns the number of parameters written (the
    buffers a checkpoint stores beside them, Apertus's xIELU constants, not counted)."""
    lazy = LazyModel.open(path, "cpu", dtype=None)
    kept = [i for i in range(lazy.model.config.num_hidden_layers) if i not in set(plan.drop)]
    specs = student_specs(lazy, new_config, kept)
    arch, experts, buffers = arch_of(new_config), num_experts(new_config), 0
    with SafetensorsWriter(out, specs, max_shard_bytes) as writer:
        parts = _parts(lazy, plan, kept, tied(new_config))
        for module, prefix, cut in tqdm(parts, desc="writing (streamed)", unit="part", leave=False):
            with lazy.loaded(module):
                cut(module)
                stored_buffers = dict(module.named_buffers())
                for name, t in module.state_dict().items():
                    layout = stored_as(prefix + name, arch, experts)
                    for stored_name, part in (layout.split(t) if layout else {prefix + name: t}).items():
                        writer.write(stored_name, part)
                    buffers += t.numel() if name in stored_buffers else 0
    new_config.dtype = lazy.stored_spec(f"{lazy.prefix[id(embedding(lazy.model))]}weight").dtype
    own_config(new_config).save_pretrained(out)
    return writer.written - buffers
