"""Targets, dry-run parameter arithmetic, choosing the units to keep from scores (a `Plan`), and applying a
plan to a model in memory (the per-layer part also to one layer at a time, for the streamed writer)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from minitron.arch import (ATTENTION, DENSE_SIZE, MLP, MOE, Arch, HeadDims, arch_of, as_linears, count_params,
                           dense_layers, expert_groups, head_dim, head_dim_derived, heads_own_kv, least_experts,
                           per_layer_lists, pin_head_dim, prunable_sizes, set_kv_heads, shared_width,
                           tied_mamba_heads, width_sizes)
from minitron.errors import MinitronError
from minitron.importance import Scores
from minitron.prune.config import PruneConfig
from minitron.prune.slicing import drop_layers as drop_layer_modules
from minitron.prune.slicing import (prune_conv, prune_delta, prune_experts, prune_heads, prune_hidden, prune_mamba,
                                    prune_neurons, prune_shared, slice_layer_conv, slice_layer_delta,
                                    slice_layer_experts, slice_layer_heads, slice_layer_hidden, slice_layer_mamba,
                                    slice_layer_neurons, slice_layer_shared)


# What a mixture of experts' hidden size and expert width must be multiples of: transformers runs the experts by
# `torch._grouped_mm`, which needs rows of a multiple of 16 bytes (8 bf16 values)
EXPERT_WIDTH_MULTIPLE = 8


def check_target(config, target: dict[str, int], drop: list[int] | None = None) -> dict[str, int]:
    """The student's sizes (teacher's sizes overridden by `target`), or a clear refusal."""
    if not isinstance(target, dict) or not all(isinstance(k, str) and type(v) is int for k, v in target.items()):
        raise MinitronError(f"target must be sizes like hidden_size=384,intermediate_size=1024 (a mapping of "
                            f"names to whole numbers), not {target!r}")
    names = prunable_sizes(config)
    unknown = sorted(set(target) - set(names))
    if unknown:
        raise MinitronError(f"cannot prune {', '.join(unknown)} of this {config.model_type} model; a target may set "
                            f"{', '.join(names)}")
    teacher = {k: getattr(config, k) for k in names}
    for k, v in target.items():
        if not 1 <= v <= teacher[k]:
            raise MinitronError(f"target {k}={v} is impossible: it must be between 1 and the teacher's {teacher[k]}")
    sizes = {**teacher, **target}
    if arch_of(config).attention_is_hidden and "num_attention_heads" not in target:
        attention_follows(config, sizes, target)
    if heads_own_kv(config):
        own_kv_heads(config, sizes, target)
    if sizes == teacher and not drop:  # an unpruned copy written with exit 0 would look like success
        raise MinitronError(f"the target prunes nothing: give --target sizes smaller than the teacher's, e.g. "
                            f"hidden_size={teacher['hidden_size'] // 2}, or --prune.drop-layers")
    if drop:
        if "num_hidden_layers" in target and target["num_hidden_layers"] != teacher["num_hidden_layers"] - len(drop):
            raise MinitronError(f"--prune.drop-layers removes {len(drop)} layers but the target asks for "
                                f"num_hidden_layers={target['num_hidden_layers']}; give one or the other")
        sizes["num_hidden_layers"] = teacher["num_hidden_layers"] - len(drop)
    experts = arch_of(config).experts_size
    if experts in sizes and sizes[experts] < config.num_experts_per_tok:
        raise MinitronError(f"target {experts}={sizes[experts]} is impossible: every token is routed to "
                            f"num_experts_per_tok={config.num_experts_per_tok} experts; keep at least that many")
    odd = [k for k in ("hidden_size", arch_of(config).mlp_size) if arch_of(config).moe and
           sizes[k] % EXPERT_WIDTH_MULTIPLE and sizes[k] != teacher[k]]
    if odd:
        raise MinitronError(f"target {odd[0]}={sizes[odd[0]]} is refused: a mixture of experts' hidden size and "
                            f"expert width must be multiples of {EXPERT_WIDTH_MULTIPLE}, since transformers runs the "
                            f"experts by grouped matrix products, which need rows of a multiple of 16 bytes in bf16")
    if experts in sizes and sizes[experts] != teacher[experts]:
        check_expert_groups(config, sizes[experts], experts)
    if "linear_num_value_heads" in sizes:
        check_groups(sizes, teacher, "linear_num_value_heads", "linear_num_key_heads", "Gated DeltaNet value heads")
    if arch_of(config).mixer == "mamba":
        check_mamba(config, sizes, target)
    check_groups(sizes, teacher, "num_attention_heads", "num_key_value_heads", "query heads")
    return sizes


def attention_follows(config, sizes: dict[str, int], target: dict[str, int]) -> None:
    """Where the attention is hidden_size wide (`Arch.attention_is_hidden`: OLMoE, StableLM, LFM2), a target that sets
    the hidden size and not the heads keeps the teacher's head_dim: hidden_size / head_dim query heads (as many KV heads
    where each head has its own: `own_kv_heads`). A hidden size that is no whole number of heads is left for
    `validate_config` to refuse, naming the widths."""
    dim = head_dim(config)
    if sizes["hidden_size"] % dim == 0:
        sizes["num_attention_heads"] = sizes["hidden_size"] // dim


def check_expert_groups(config, experts: int, name: str) -> None:
    """Refuse a number of experts that is not the same for each group of a router that picks them within groups
    (`expert_groups`), or too few for a group's score and every token's num_experts_per_tok (`least_experts`)."""
    groups = expert_groups(config)
    if groups > 1 and (experts % groups or experts < least_experts(config)):
        raise MinitronError(f"target {name}={experts} is refused: this {config.model_type} model's router picks its "
                            f"experts within the best topk_group={config.topk_group} of n_group={groups} groups, so "
                            f"every group keeps as many; give a multiple of {groups} of at least "
                            f"{least_experts(config)}")


def own_kv_heads(config, sizes: dict[str, int], target: dict[str, int]) -> None:
    """The KV heads of an attention whose every head has its own keys and values (`arch.heads_own_kv`: multi-head
    latent attention's, from the shared latent; GPT-NeoX's; any multi-head attention's) are its query heads: a target
    sets either (or the hidden size they follow, `attention_follows`), or both the same."""
    heads = target.get("num_attention_heads", target.get("num_key_value_heads", sizes["num_attention_heads"]))
    if target.get("num_key_value_heads", heads) != heads:
        kind = " (multi-head latent attention)" if arch_of(config).mla else ""
        raise MinitronError(f"target num_key_value_heads={target['num_key_value_heads']} is not num_attention_heads="
                            f"{heads}: every head of this {config.model_type} model has its own keys and values"
                            f"{kind}; set the heads alone")
    sizes["num_attention_heads"] = sizes["num_key_value_heads"] = heads


def check_mamba(config, sizes: dict[str, int], target: dict[str, int]) -> None:
    """Refuse Mamba-2 heads that are not whole groups (a group's heads share its B and C). Where the mixers are
    mamba_expand x hidden_size wide (Granite 4, `Arch.mamba_expand`), set the heads from the hidden size when the
    target sets neither the heads nor their channels, and refuse heads x channels of another width."""
    arch, model_type = arch_of(config), config.model_type
    names = arch.mamba_names
    if arch.mamba_expand:
        width = config.mamba_expand * sizes["hidden_size"]
        if names.heads not in target and names.head_dim not in target:  # the heads follow the hidden size
            sizes[names.heads] = tied_mamba_heads(config, sizes["hidden_size"]) or sizes[names.heads]
        if sizes[names.heads] * sizes[names.head_dim] != width:
            raise MinitronError(f"this {model_type} model's Mamba-2 mixers are mamba_expand x hidden_size = "
                                f"{config.mamba_expand} x {sizes['hidden_size']} = {width} wide, and {names.heads}="
                                f"{sizes[names.heads]} x {names.head_dim}={sizes[names.head_dim]} = "
                                f"{sizes[names.heads] * sizes[names.head_dim]} is not; set them so that they are (or "
                                "leave them out: the heads follow hidden_size)")
    groups = getattr(config, names.groups)
    if sizes[names.heads] % groups:
        raise MinitronError(f"{names.heads}={sizes[names.heads]} is not a multiple of {names.groups}={groups}: each "
                            "group of Mamba-2 heads shares its B and C, so every group keeps the same number of heads")


def check_groups(sizes: dict[str, int], teacher: dict[str, int], heads: str, groups: str, what: str) -> None:
    """Refuse heads that do not come in equal numbers for each group (query heads for KV heads, Gated DeltaNet value
    heads for key heads), or more for each than the teacher's."""
    h, g = sizes[heads], sizes[groups]
    if h % g:
        raise MinitronError(f"{heads}={h} is not a multiple of {groups}={g}: every group needs the same number of "
                            f"{what}")
    if h // g > teacher[heads] // teacher[groups]:
        raise MinitronError(f"{heads}={h} with {groups}={g} means {h // g} {what} per group, more than the teacher's "
                            f"{teacher[heads] // teacher[groups]}")


def target_config(config, sizes: dict[str, int], drop: list[int] | None = None, validate: bool = True):
    """The student's config: the teacher's with new sizes (any of them; head_dim kept explicit), checked by the
    family's own config checks unless `validate` is False (the search's parameter arithmetic). The one derivation
    of a student's config: prune, the search's parameter counts and its validity check use it."""
    new = copy.deepcopy(config)
    pin_head_dim(new, head_dim(config))
    for k, v in sizes.items():
        setattr(new, k, v)
    for name in arch_of(config).hidden_aliases:  # (OPT's word_embed_proj_dim)
        setattr(new, name, new.hidden_size)
    own = heads_own_kv(config) and "num_key_value_heads" not in sizes  # (its KV heads are its heads: `own_kv_heads`)
    set_kv_heads(new, new.num_attention_heads if own else new.num_key_value_heads)
    if validate and head_dim_derived(config) and new.head_dim != head_dim(config):  # (Falcon's: hidden_size / heads)
        raise_not_hidden(new, head_dim(config))
    layers = sizes.get("num_hidden_layers", config.num_hidden_layers)  # (Nemotron-H derives it from its layer_types)
    kept = [i for i in range(config.num_hidden_layers) if i not in set(drop or [])][:layers]
    for name, values in per_layer_lists(config, kept).items():
        setattr(new, name, values)
    if validate:
        validate_config(new)
    return new


def validate_config(config) -> None:
    """Run the family's own config checks, and minitron's where transformers has none (`Arch.attention_is_hidden`), so
    nothing is written that stock transformers would refuse or fail to load."""
    width, arch = config.num_attention_heads * config.head_dim, arch_of(config)
    if arch.hybrid and ATTENTION not in config.layer_types:
        raise MinitronError(f"the target keeps none of this {config.model_type} model's attention layers, and "
                            "transformers runs none without one; keep one (--prune.drop-layers, or fewer layers "
                            "removed)")
    if config.model_type == "nemotron_h" and config.layer_types[0] in (MLP, MOE):
        raise MinitronError("the target's first layer is an MLP or mixture-of-experts layer, and transformers' "
                            "Nemotron-H reads a generation's length from its first layer's cache, which such a layer "
                            "has none of; keep a Mamba-2 or attention layer first (--prune.drop-layers, or fewer "
                            "layers removed)")
    if arch.attention_is_hidden and width != config.hidden_size:
        raise_not_hidden(config, config.head_dim)
    if not hasattr(config, "validate"):
        return
    try:
        config.validate()
    except Exception as e:  # huggingface_hub wraps the family's ValueError
        cause = e.__cause__ or e
        raise MinitronError(f"the target is not a valid {config.model_type} model for transformers: "
                            f"{str(cause).strip()}") from None


def raise_not_hidden(config, dim: int) -> None:
    """Refuse a target whose heads of `dim` channels are not its hidden size, in a family whose attention is as wide
    (`Arch.attention_is_hidden`)."""
    width = config.num_attention_heads * dim
    raise MinitronError(f"the target is not a valid {config.model_type} model for transformers: it sizes the "
                        f"attention by hidden_size, and num_attention_heads x head_dim = {config.num_attention_heads} "
                        f"x {dim} = {width} is not hidden_size {config.hidden_size}; prune heads and hidden channels "
                        "together")


def stored_dtype(config) -> torch.dtype:
    """The dtype the teacher's weights are stored in (pruned models are written in it, not in fp32)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def params_of(config) -> int:
    """Exact parameter count of a config, built on the meta device (no weights allocated)."""
    from transformers import AutoModelForCausalLM  # lazy: CLI start-up speed (a dry run needs only this)

    with torch.device("meta"):
        return count_params(AutoModelForCausalLM.from_config(config))


@dataclass
class Plan:
    """What survives pruning: kept unit indices (original numbering) and dropped layers."""

    hidden: torch.Tensor | None  # kept hidden channels, or None to keep all
    heads: list[torch.Tensor] | None  # kept query heads per layer, grouped by KV group
    kv: list[torch.Tensor] | None  # kept KV groups per layer
    mlp: list[torch.Tensor] | None  # kept MLP neurons per layer (of a mixture of experts: (experts, kept) per layer)
    drop: list[int]  # removed decoder layers
    experts: list[torch.Tensor] | None = None  # kept experts per layer (a mixture of experts)
    mamba: list[torch.Tensor] | None = None  # kept Mamba-2 heads per layer, grouped by group (a hybrid)
    mamba_dim: list[torch.Tensor] | None = None  # kept channels of every Mamba-2 head per layer (a hybrid)
    delta: list[torch.Tensor] | None = None  # kept Gated DeltaNet value heads per layer, grouped by key head
    delta_k: list[torch.Tensor] | None = None  # kept Gated DeltaNet key heads per layer
    shared: list[torch.Tensor] | None = None  # kept neurons of a mixture of experts' shared expert per layer
    conv: list[torch.Tensor] | None = None  # kept short-convolution channels per layer (LFM2's: as many as hidden)
    dense: list[torch.Tensor] | None = None  # kept neurons per layer of a mixture of experts' dense layers


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores (of each row), in ascending index order (ties broken by position)."""
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
    """The k = num_layers - keep layers `criterion` removes: the best contiguous block, or the k lowest-scoring."""
    k = num_layers - keep
    if k == 0:
        return []
    if criterion == "block":
        start = int(scores.layer("block", k).argmin())
        return list(range(start, start + k))
    return sorted(scores.layer(criterion).topk(k, largest=False).indices.tolist())


def make_plan(scores: Scores, config, sizes: dict[str, int], prune: PruneConfig) -> Plan:
    """What survives pruning `config` to `sizes` (any of them: the rest stay the teacher's) by `prune`'s criteria."""
    sizes = check_target(config, sizes, prune.drop_layers)
    L, arch = config.num_hidden_layers, arch_of(config)
    mlp_size, experts_size = arch.mlp_size, arch.experts_size
    width = prune.width(scores) if any(sizes[k] != getattr(config, k) for k in width_sizes(config)) else None
    hidden = top(width["hidden"], sizes["hidden_size"]) if sizes["hidden_size"] != config.hidden_size else None
    mlp = [top(width["mlp"][l], sizes[mlp_size]) for l in range(L)] \
        if sizes[mlp_size] != getattr(config, mlp_size) else None
    groups = expert_groups(config)  # (as many experts kept in each group, the best of each)
    experts = [select_heads(width["experts"][l], groups, sizes[experts_size], groups)[0] for l in range(L)] \
        if experts_size in sizes and sizes[experts_size] != getattr(config, experts_size) else None
    heads = kv = None
    if (sizes["num_attention_heads"], sizes["num_key_value_heads"]) != (config.num_attention_heads,
                                                                       config.num_key_value_heads):
        chosen = [select_heads(width["heads"][l], config.num_key_value_heads, sizes["num_attention_heads"],
                               sizes["num_key_value_heads"]) for l in range(L)]
        heads, kv = [c[0] for c in chosen], [c[1] for c in chosen]
    drop = prune.drop_layers or layers_to_drop(scores, prune.layer_criterion, L, sizes["num_hidden_layers"])
    shared = [top(width["shared"][l], shared_width(config, sizes)) for l in range(L)] \
        if shared_width(config, sizes) != shared_width(config) else None
    conv = [top(width["conv"][l], sizes["hidden_size"]) for l in range(L)] \
        if arch.mixer == "conv" and hidden is not None else None  # its channels follow the hidden size
    dense = [top(width["dense"][l], sizes[DENSE_SIZE]) for l in range(L)] \
        if dense_layers(config) and sizes[DENSE_SIZE] != getattr(config, DENSE_SIZE) else None
    return Plan(hidden, heads, kv, mlp, sorted(drop), experts, *mamba_plan(width, config, sizes),
                *delta_plan(width, config, sizes), shared, conv, dense)


def mamba_plan(width: dict | None, config, sizes: dict[str, int]) -> tuple[list | None, list | None]:
    """A hybrid's kept Mamba-2 heads (as many from each group: `select_heads` with every group kept) and head channels
    per layer, each None where its size stays the teacher's."""
    if arch_of(config).mixer != "mamba":
        return None, None
    names = arch_of(config).mamba_names
    L, groups, H, d = config.num_hidden_layers, getattr(config, names.groups), sizes[names.heads], sizes[names.head_dim]
    heads = [select_heads(width["mamba"][l], groups, H, groups)[0] for l in range(L)] \
        if H != getattr(config, names.heads) else None
    channels = [top(width["mamba_dim"][l], d) for l in range(L)] if d != getattr(config, names.head_dim) else None
    return heads, channels


def delta_plan(width: dict | None, config, sizes: dict[str, int]) -> tuple[list | None, list | None]:
    """A hybrid's kept Gated DeltaNet value heads (as many for each kept key head, `select_heads`) and key heads per
    layer, None where they stay the teacher's."""
    if arch_of(config).mixer != "delta" or (sizes["linear_num_value_heads"], sizes["linear_num_key_heads"]) == (
            config.linear_num_value_heads, config.linear_num_key_heads):
        return None, None
    chosen = [select_heads(width["delta"][l], config.linear_num_key_heads, sizes["linear_num_value_heads"],
                           sizes["linear_num_key_heads"]) for l in range(config.num_hidden_layers)]
    return [c[0] for c in chosen], [c[1] for c in chosen]


def apply_plan(model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
    """`model` sliced by `plan` in place (GPT-2's Conv1D modules held as linears first: `as_linears`)."""
    arch = arch_of(as_linears(model).config)
    if plan.mlp is not None or plan.dense is not None:
        prune_neurons(model, arch, plan.mlp, plan.dense)
    if plan.experts is not None:  # after the neurons: the plan's neurons are kept per teacher expert
        prune_experts(model, plan.experts)
    if plan.shared is not None:
        prune_shared(model, plan.shared)
    if plan.heads is not None:
        prune_heads(model, arch, plan.heads, plan.kv)
    if plan.mamba is not None or plan.mamba_dim is not None:
        prune_mamba(model, plan.mamba, plan.mamba_dim)
    if plan.delta is not None:
        prune_delta(model, plan.delta, plan.delta_k)
    if plan.conv is not None:
        prune_conv(model, plan.conv)
    if plan.hidden is not None:
        prune_hidden(model, arch, plan.hidden)
    if plan.drop:
        drop_layer_modules(model, plan.drop)
    return model


def apply_layer_plan(layer: torch.nn.Module, arch: Arch, dims: HeadDims, plan: Plan, i: int) -> None:
    """What `apply_plan` does to teacher decoder layer `i` (heads of `dims` rows and columns), on that layer alone."""
    slice_layer_neurons(layer, arch, plan.mlp and plan.mlp[i], plan.dense and plan.dense[i])
    if plan.experts is not None:
        slice_layer_experts(layer, arch, plan.experts[i])
    if plan.shared is not None:
        slice_layer_shared(layer, arch, plan.shared[i])
    if plan.heads is not None:
        slice_layer_heads(layer, arch, dims, plan.heads[i], plan.kv[i])
    if plan.mamba is not None or plan.mamba_dim is not None:
        slice_layer_mamba(layer, plan.mamba and plan.mamba[i], plan.mamba_dim and plan.mamba_dim[i])
    if plan.delta is not None:
        slice_layer_delta(layer, plan.delta[i], plan.delta_k[i])
    if plan.conv is not None:
        slice_layer_conv(layer, plan.conv[i])
    if plan.hidden is not None:
        slice_layer_hidden(layer, arch, plan.hidden)


def describe(config, sizes: dict[str, int], before: int, after: int) -> str:
    lines = [f"  {k}: {getattr(config, k)} -> {sizes[k]}" for k in prunable_sizes(config)
             if sizes[k] != getattr(config, k)]
    lines.append(f"  parameters: {before:,} -> {after:,} ({after / before:.1%})")
    return "\n".join(lines)
