"""Targets, dry-run parameter arithmetic, choosing units from scores, and the `prune` command."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Literal

import torch

from minitron.arch import PRUNABLE_SIZES, Arch, arch_of, count_params
from minitron.errors import MinitronError
from minitron.importance import Agg, Criterion, Scores, compute_scores
from minitron.slicing import drop_layers as drop_layer_modules
from minitron.slicing import (prune_heads, prune_hidden, prune_mlp, slice_layer_heads, slice_layer_hidden,
                              slice_layer_mlp)

LayerCriterion = Literal["block", "loss", "bi", "random"]


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """'16-31,3' -> [3, 16, 17, ..., 31], checked against the model's layer count."""
    layers: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, _, hi = part.partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise MinitronError(f"--drop-layers {spec!r}: expected layer numbers and ranges like 16-31,3") from None
    bad = sorted(i for i in layers if not 0 <= i < num_layers)
    if bad:
        raise MinitronError(f"--drop-layers names layer(s) {bad} but the model has layers 0-{num_layers - 1}")
    if len(layers) >= num_layers:
        raise MinitronError(f"--drop-layers would remove all {num_layers} layers; keep at least one")
    return sorted(layers)


def check_target(config, target: dict[str, int], drop: list[int] | None = None) -> dict[str, int]:
    """The student's sizes (teacher's sizes overridden by `target`), or a clear refusal."""
    unknown = sorted(set(target) - set(PRUNABLE_SIZES))
    if unknown:
        raise MinitronError(f"cannot prune {', '.join(unknown)}; a target may set {', '.join(PRUNABLE_SIZES)}")
    teacher = {k: getattr(config, k) for k in PRUNABLE_SIZES}
    for k, v in target.items():
        if not 1 <= v <= teacher[k]:
            raise MinitronError(f"target {k}={v} is impossible: it must be between 1 and the teacher's {teacher[k]}")
    sizes = {**teacher, **target}
    if drop:
        if "num_hidden_layers" in target and target["num_hidden_layers"] != teacher["num_hidden_layers"] - len(drop):
            raise MinitronError(f"--drop-layers removes {len(drop)} layers but the target asks for "
                                f"num_hidden_layers={target['num_hidden_layers']}; give one or the other")
        sizes["num_hidden_layers"] = teacher["num_hidden_layers"] - len(drop)
    heads, kv = sizes["num_attention_heads"], sizes["num_key_value_heads"]
    per_group = teacher["num_attention_heads"] // teacher["num_key_value_heads"]
    if heads % kv:
        raise MinitronError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}: grouped-query "
                            f"attention needs the same number of query heads in every KV group")
    if heads // kv > per_group:
        raise MinitronError(f"num_attention_heads={heads} with num_key_value_heads={kv} means {heads // kv} query heads "
                            f"per KV group, more than the teacher's {per_group}")
    return sizes


def target_config(config, sizes: dict[str, int], drop: list[int] | None = None):
    """The student's config: the teacher's with new sizes (head_dim kept explicit)."""
    new = copy.deepcopy(config)
    new.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for k, v in sizes.items():
        setattr(new, k, v)
    if getattr(new, "layer_types", None) is not None:
        kept = [i for i in range(config.num_hidden_layers) if i not in set(drop or [])][: sizes["num_hidden_layers"]]
        new.layer_types = [config.layer_types[i] for i in kept]
    validate_config(new)
    return new


def validate_config(config) -> None:
    """Run the family's own config checks, so nothing is written that stock transformers would refuse."""
    if not hasattr(config, "validate"):
        return
    try:
        config.validate()
    except Exception as e:  # huggingface_hub wraps the family's ValueError
        cause = e.__cause__ or e
        raise MinitronError(f"the target is not a valid {config.model_type} model for transformers: "
                            f"{str(cause).strip()}") from None


def stored_dtype(config) -> torch.dtype:
    """The dtype the teacher's weights are stored in (pruned models are written in it, not in fp32)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def params_of(config) -> int:
    """Exact parameter count of a config, built on the meta device (no weights allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return count_params(AutoModelForCausalLM.from_config(config))


@dataclass
class Plan:
    """What survives pruning: kept unit indices (original numbering) and dropped layers."""

    hidden: torch.Tensor | None  # kept hidden channels, or None to keep all
    heads: list[torch.Tensor] | None  # kept query heads per layer, grouped by KV group
    kv: list[torch.Tensor] | None  # kept KV groups per layer
    mlp: list[torch.Tensor] | None  # kept MLP neurons per layer
    drop: list[int]  # removed decoder layers


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in ascending index order (ties broken by position)."""
    return scores.float().topk(k, sorted=False).indices.sort().values


def select_heads(scores: torch.Tensor, kv_groups: int, heads: int, new_kv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank query heads within each KV group and keep the same number in every kept group.

    KV groups are dropped only when `new_kv` < `kv_groups`: the groups with the lowest summed head scores go."""
    per_group = scores.view(kv_groups, -1)
    groups = top(per_group.sum(1), new_kv)
    q = per_group.shape[1]
    kept = [g * q + top(per_group[g], heads // new_kv) for g in groups.tolist()]
    return torch.cat(kept), groups


def layers_to_drop(scores: Scores, criterion: str, num_layers: int, keep: int) -> list[int]:
    k = num_layers - keep
    if k == 0:
        return []
    if criterion == "block":
        start = int(scores.layer("loss" if k == 1 else f"block_loss_k{k}").argmin())
        return list(range(start, start + k))
    key = {"loss": "loss", "bi": "block_influence", "random": "random"}[criterion]
    return sorted(scores.layer(key).topk(k, largest=False).indices.tolist())


def make_plan(scores: Scores, config, sizes: dict[str, int], drop: list[int] | None, criterion: str = "activation",
              seq_agg: str = "mean", batch_agg: str = "l2", layer_criterion: str = "block") -> Plan:
    L = config.num_hidden_layers
    width = scores.width(criterion, seq_agg, batch_agg) if any(
        sizes[k] != getattr(config, k) for k in PRUNABLE_SIZES[:4]) else None
    hidden = top(width["hidden"], sizes["hidden_size"]) if sizes["hidden_size"] != config.hidden_size else None
    mlp = [top(width["mlp"][l], sizes["intermediate_size"]) for l in range(L)] \
        if sizes["intermediate_size"] != config.intermediate_size else None
    heads = kv = None
    if (sizes["num_attention_heads"], sizes["num_key_value_heads"]) != (config.num_attention_heads,
                                                                       config.num_key_value_heads):
        chosen = [select_heads(width["heads"][l], config.num_key_value_heads, sizes["num_attention_heads"],
                               sizes["num_key_value_heads"]) for l in range(L)]
        heads, kv = [c[0] for c in chosen], [c[1] for c in chosen]
    if drop is None:
        drop = layers_to_drop(scores, layer_criterion, L, sizes["num_hidden_layers"])
    return Plan(hidden, heads, kv, mlp, drop)


def apply_plan(model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
    arch = arch_of(model.config)
    if plan.mlp is not None:
        prune_mlp(model, arch, plan.mlp)
    if plan.heads is not None:
        prune_heads(model, plan.heads, plan.kv)
    if plan.hidden is not None:
        prune_hidden(model, arch, plan.hidden)
    if plan.drop:
        drop_layer_modules(model, plan.drop)
    return model


def apply_layer_plan(layer: torch.nn.Module, arch: Arch, dim: int, plan: Plan, i: int) -> None:
    """What `apply_plan` does to teacher decoder layer `i` (heads of `dim` channels), on that layer alone."""
    if plan.mlp is not None:
        slice_layer_mlp(layer, arch, plan.mlp[i])
    if plan.heads is not None:
        slice_layer_heads(layer, dim, plan.heads[i], plan.kv[i])
    if plan.hidden is not None:
        slice_layer_hidden(layer, arch, plan.hidden)


def describe(config, sizes: dict[str, int], before: int, after: int) -> str:
    lines = [f"  {k}: {getattr(config, k)} -> {sizes[k]}" for k in PRUNABLE_SIZES if sizes[k] != getattr(config, k)]
    lines.append(f"  parameters: {before:,} -> {after:,} ({after / before:.1%})")
    return "\n".join(lines)


def needed_scores(config, tokenizer, model: str, sizes: dict, drop: list[int] | None, criterion: str,
                  layer_criterion: str, data: Path | None, calib_seqs: int, seq_len: int, batch_size: int,
                  seed: int, scorer: Callable[..., Scores]) -> Scores:
    """Compute only the scores this target needs (when no --scores directory is given).

    `scorer(batches, criteria, layer_loss_batches, block_sizes, seed)` is `compute_scores` bound to a model in
    memory, or `stream.stream_scores` bound to a checkpoint."""
    from minitron.importance import calibration

    depth = drop is None and sizes["num_hidden_layers"] < config.num_hidden_layers
    k = config.num_hidden_layers - sizes["num_hidden_layers"]
    needs_loss = depth and layer_criterion in ("block", "loss")
    batches = calibration(model, tokenizer, data, calib_seqs, seq_len, batch_size, seed)
    loss_batches = calibration(model, tokenizer, data, min(8, calib_seqs), seq_len, batch_size, seed + 1) \
        if needs_loss else None
    criteria = [criterion] + (["random"] if depth and layer_criterion == "random" else [])
    return scorer(batches, criteria, loss_batches, [k] if needs_loss and k > 1 else [], seed)


def prune(model: str = "default", target: dict[str, int] | None = None, drop_layers: str | None = None,
          out: Path | None = None, criterion: Criterion = "activation", seq_agg: Agg = "mean",
          batch_agg: Agg = "l2", layer_criterion: LayerCriterion = "block", scores: Path | None = None,
          data: Path | None = None, calib_seqs: int = 64, seq_len: int = 256, batch_size: int = 8,
          dry_run: bool = False, stream: bool | None = None, device: str = "auto", overwrite: bool = False,
          seed: int = 1234) -> dict:
    """Prune a model to a target size and write a Hugging Face checkpoint (with pruning.json).

    Args:
        model: teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        target: sizes to prune to, e.g. hidden_size=4096,intermediate_size=11520 (also num_attention_heads,
            num_key_value_heads, num_hidden_layers)
        drop_layers: explicit layers to remove, e.g. 16-31
        out: output directory for the pruned model
        criterion: width importance: activation (the papers'), wanda, magnitude, taylor or random
        seq_agg: activation aggregation over the sequence: mean (of |x|), l2 or var
        batch_agg: activation aggregation over the batch: l2, mean or var
        layer_criterion: depth: block (best contiguous block by LM loss), loss (per layer), bi (Block
            Influence) or random
        scores: reuse importance scores saved by `minitron score` instead of running the model
        data: token data directory for calibration (default: the default corpus)
        calib_seqs: calibration sequences (when scores are computed here)
        seq_len: tokens per calibration sequence
        batch_size: sequences per forward pass
        dry_run: only print the resulting config and exact parameter count (needs just config.json)
        stream: read, score and write the checkpoint one layer at a time (default: only when the model
            does not fit in memory); keeps the stored dtype (bf16 in, bf16 out)
        device: auto, cpu or cuda
        overwrite: replace an existing --out directory
        seed: seed of the calibration sample
    """
    from minitron.io import atomic_dir, refuse_existing, save_hf, write_json
    from minitron.load import (load_config, load_generation_config, load_model, load_tokenizer, pick_device,
                               resolve_model)
    from minitron.stream import check_streamable, choose_stream, stream_scores, write_pruned

    config = load_config(model)
    drop = parse_layers(drop_layers, config.num_hidden_layers) if drop_layers else None
    sizes = check_target(config, target or {}, drop)
    new_config = target_config(config, sizes, drop)
    before, after = params_of(config), params_of(new_config)
    print(f"pruning {model}:\n{describe(config, sizes, before, after)}")
    if dry_run:
        print(new_config.to_json_string(use_diff=False))
        return {"params_before": before, "params_after": after, "sizes": sizes}
    if out is None:
        raise MinitronError("--out is required (or use --dry-run)")
    out = Path(out)
    refuse_existing(out, overwrite)
    saved = Scores.load(scores) if scores is not None else None
    path = resolve_model(model)
    streamed = choose_stream(path, stream)
    if streamed and saved is None:
        check_streamable([criterion])
    tokenizer = load_tokenizer(model)
    start, dev = time.time(), pick_device(device)
    net = None if streamed else load_model(model, dev)
    if saved is None:
        scorer = partial(stream_scores, path, device=dev) if streamed else partial(compute_scores, net)
        saved = needed_scores(config, tokenizer, model, sizes, drop, criterion, layer_criterion, data, calib_seqs,
                              seq_len, batch_size, seed, scorer)
    plan = make_plan(saved, config, sizes, drop, criterion, seq_agg, batch_agg, layer_criterion)
    if net is not None:
        apply_plan(net, plan)
    record = {"teacher": str(model), "target": sizes, "criterion": criterion,
              "aggregation": {"seq": seq_agg, "batch": batch_agg}, "layer_criterion": layer_criterion,
              "dropped_layers": plan.drop, "calibration": saved.meta.get("calibration") or
              {"data": str(data or "default corpus"), "num_seqs": calib_seqs, "seq_len": seq_len, "seed": seed},
              "scores": str(scores) if scores else None, "params_before": before, "params_after": after,
              "streamed": streamed}
    with atomic_dir(out, overwrite) as tmp:
        if streamed:
            written = write_pruned(path, plan, new_config, tmp)
            tokenizer.save_pretrained(tmp)
            load_generation_config(new_config, model).save_pretrained(tmp)
        else:
            written = count_params(net)
            save_hf(net.to("cpu", stored_dtype(config)), tokenizer, tmp, load_generation_config(net.config, model))
        if written != after:
            raise RuntimeError(f"internal error: pruned model has {written:,} parameters, expected {after:,}")
        record["seconds"] = round(time.time() - start, 1)
        write_json(tmp / "pruning.json", record)
    print(f"wrote {out} ({after:,} parameters)")
    return record
