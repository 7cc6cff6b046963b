"""`minitron search`: the best student shape under a parameter budget, found the way the Minitron papers do it:
enumerate every shape (hidden_size, num_attention_heads, intermediate_size, num_hidden_layers; of a mixture of
experts, each expert's neurons and num_experts; of a hybrid, its recurrent layers' heads) within a tolerance of the
budget, score every one zero-shot from importance scores computed once (prune in memory, LM loss on the dev split),
distil the best few for the same short token budget each, rank them again on dev, and prune the winner. A hybrid's
size at a depth depends on which layers go, so its shapes are enumerated once scored (`Space`).

    minitron search --model default --params 0.5 --out runs/searched --work runs/search --distill-top 4

WORK holds scores/ (one scoring pass, reused), one directory per distilled candidate (resumable), search.json
(every candidate: shape, parameters, zero-shot loss, loss after distillation), search.md and search.png.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
import traceback
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import asdict, dataclass, replace
from itertools import product
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from minitron.arch import (Arch, arch_of, dense_layers, expert_groups, head_dim, heads_own_kv, layers_differ,
                           least_experts, num_experts, tied_mamba_heads)
from minitron.data import VAL_SEQS, TokenData, default_data
from minitron.distill import TrainConfig
from minitron.distill.config import recorded, refuse_located
from minitron.distill.loop import distill as run_distill
from minitron.errors import MinitronError, pyplot, real_number, whole_number
from minitron.importance import ComputeDtype, Scores, score
from minitron.io import check_run_dir, mark, refuse_existing, remove, write_json
from minitron.lazy import reuse_freed_memory
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.numerics import lm_loss, native_bf16, windows_in_batches
from minitron.prune import (EXPERT_WIDTH_MULTIPLE, PruneConfig, ScoreNeeds, apply_plan, check_target, given_scores,
                            layers_to_drop, make_plan, params_of, target_config)
from minitron.prune import prune as prune_model
from minitron.record import Record


SEARCH_TOLERANCE = 0.05  # candidates within ±5 percent of the budget
DISTILL_TOP = 4  # candidates distilled briefly before the winner is chosen (search --distill-top, compress --search-top)
DISTILL_TOKENS = 65536  # tokens of each one's short distillation (--distill-tokens, compress --search-tokens)
SHOWN = 30  # rows of search.md
SCREEN_SEQS = 4  # dev windows every candidate is screened on, before the best SCREEN_KEEP are measured on all
SCREEN_KEEP = 24  # (benchmarks/search_speed.py: the same first four as measuring all 243 shapes on every window)
SEARCHED = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")


def mixer_heads(arch: Arch) -> tuple[str, str] | None:
    """The recurrent heads a hybrid's search varies, and the group they come in whole multiples of, by the config's
    names: Mamba-2's heads and their groups, Gated DeltaNet's value heads and its key heads (kept); None for other
    models, and where the Mamba-2 heads follow the hidden size (Granite 4's, `Arch.mamba_expand`)."""
    if arch.mixer == "delta":
        return "linear_num_value_heads", "linear_num_key_heads"
    if arch.mixer == "mamba" and not arch.mamba_expand:
        return arch.mamba_names.heads, arch.mamba_names.groups
    return None


def searched(config) -> tuple[str, ...]:
    """The sizes the search varies, by the config's names: `SEARCHED` with the family's MLP size (Qwen3-MoE's
    moe_intermediate_size), a mixture of experts' number of experts and a hybrid's recurrent heads (`mixer_heads`)."""
    arch = arch_of(config)
    mlp = tuple(arch.mlp_size if a == "intermediate_size" else a for a in SEARCHED)
    mixer = mixer_heads(arch)
    return mlp + ((arch.experts_size,) if arch.moe else ()) + ((mixer[0],) if mixer else ())


@dataclass
class Candidate:
    """One student shape and what the search measured of it."""

    sizes: dict[str, int]  # the `searched` sizes, in order
    params: int  # exact parameter count
    zero_shot_loss: float | None = None  # held-out LM loss pruned, before any training (every dev window)
    screen_loss: float | None = None  # the same on the screening windows (only when candidates were screened)
    distilled_loss: float | None = None  # held-out LM loss after the short distillation
    error: str | None = None  # why its distillation failed (the candidate is then skipped)

    @property
    def name(self) -> str:
        letters = "hafl" + "".join("d" if k == "linear_num_value_heads" else "m" if k.startswith("mamba") else "e"
                                   for k in list(self.sizes)[4:])
        return "-".join(f"{letter}{v}" for letter, v in zip(letters, self.sizes.values()))  # h576-a9-f1536-l30


# ------------------------------------------------------------------------------ the candidates

def budget_of(params: float, teacher_params: int) -> int:
    """--params: a fraction of the teacher's parameters (at most 1) or an absolute count."""
    real_number(params, "--params", lambda v: v > 0,
                "a positive fraction of the teacher (like 0.5) or a parameter count")
    if params > 1 and params != int(params):
        raise MinitronError(f"--params {params}: a fraction of the teacher's parameters is at most 1 (like 0.5), and "
                            f"a parameter count is a whole number (like 60e6)")
    budget = round(params * teacher_params) if params <= 1 else int(params)
    if budget >= teacher_params:
        raise MinitronError(f"--params {params} asks for {budget:,} parameters, not fewer than the teacher's "
                            f"{teacher_params:,}")
    return budget


class ParamCounter:
    """Exact parameter counts of many shapes from a few meta-device builds (`prune.params_of`).

    For a fixed hidden_size a model's parameters are base + the sum of its layers' costs: the embeddings, final norm and
    lm_head do not depend on the layers, and each layer's cost is c + a_heads * heads + experts * (a_expert + a_mlp *
    neurons) + a_shared * neurons + a_mixer * recurrent heads: its attention is affine in its query heads, its MLP in
    its neurons (a mixture of experts': each expert's router row and neurons, and a shared expert's where its width
    follows theirs, GLM-4.5's; a dense MLP is one expert) and a hybrid's recurrent mixer in its heads. A model's layers
    all cost the same; a hybrid's cost by kind (`config.layer_types`), and a mixture of experts' dense layers are a
    kind of their own (`layers_differ`), so its count at a depth depends on which layers go: `drops`
    (depth -> the layers dropped, `layer_drops`) says, and without it only the teacher's depth is counted. A few builds
    of one or two layers per hidden_size give every number. Where the attention is hidden_size wide
    (`Arch.attention_is_hidden`), the heads are hidden_size / head_dim: a_heads is 0; where the Mamba-2 mixers are
    (Granite 4's, `Arch.mamba_expand`), so are their heads (`tied_mamba_heads`), not searched: a_mixer is 0."""

    def __init__(self, config, drops: dict[int, list[int]] | None = None):
        self.config, self.coef, self.built = config, {}, {}
        self.axes, self.arch = searched(config), arch_of(config)
        self.mixer, self.varied, self.dense = mixer_heads(self.arch), layers_differ(config), set(dense_layers(config))
        L = config.num_hidden_layers
        self.kept = {d: Counter(self.kind(i) for i in range(L) if i not in set(drop))
                     for d, drop in {L: [], **(drops or {})}.items()}

    def kind(self, layer: int) -> str:
        """A layer's kind: its `layer_types` entry (a hybrid's), and whether a mixture of experts' layer is dense."""
        kind = self.config.layer_types[layer] if self.arch.hybrid else "layer"
        return f"{kind} (dense)" if layer in self.dense else kind

    def __call__(self, sizes: dict[str, int]) -> int:
        depth = sizes["num_hidden_layers"]
        if self.varied and depth not in self.kept:
            raise MinitronError(f"no layers are chosen for a model of {depth} layers (ParamCounter's drops)")
        kept = self.kept[depth] if self.varied else {"layer": depth}
        base, costs = self.coefficients(sizes["hidden_size"])
        return base + sum(n * self.cost(costs[kind], sizes) for kind, n in kept.items())

    def idle(self, sizes: dict[str, int]) -> bool:
        """Whether `sizes` changes a size that none of its depth's kept layers has (a hybrid that keeps no Mamba-2
        layer, say): the same model as with the teacher's size, which is the one enumerated."""
        if not self.varied:
            return False
        _, costs = self.coefficients(self.config.hidden_size)
        slots = {"num_attention_heads": 1, self.axes[2]: 2, self.arch.experts_size: 3,
                 **({self.mixer[0]: 4} if self.mixer else {})}
        kept = self.kept[sizes["num_hidden_layers"]]
        return any(sizes[axis] != getattr(self.config, axis) and not any(costs[kind][slot] for kind in kept)
                   for axis, slot in slots.items() if axis in sizes)

    def most(self, depth: int) -> int:
        """The most parameters any `depth` of the teacher's layers hold at the teacher's sizes (its costliest
        layers kept): no shape of that depth has more."""
        sizes = {a: getattr(self.config, a) for a in self.axes}
        base, costs = self.coefficients(sizes["hidden_size"])
        per_layer = sorted((self.cost(costs[self.kind(i)], sizes) for i in range(self.config.num_hidden_layers)),
                           reverse=True)
        return base + sum(per_layer[:depth])

    def cost(self, coef: tuple[int, ...], sizes: dict[str, int]) -> int:
        """A layer's parameters from its kind's (c, a_heads, a_mlp, a_expert, a_mixer, a_shared)."""
        c, a_heads, a_mlp, a_expert, a_mixer, a_shared = coef
        experts = sizes[self.arch.experts_size] if self.arch.moe else 1
        mixer = sizes[self.mixer[0]] if self.mixer else 0
        neurons = sizes[self.axes[2]]
        return c + a_heads * sizes["num_attention_heads"] + experts * (a_expert + a_mlp * neurons) + \
            a_shared * neurons + a_mixer * mixer

    def coefficients(self, D: int) -> tuple[int, dict[str, tuple[int, ...]]]:
        """(base, {kind: (c, a_heads, a_mlp, a_expert, a_mixer, a_shared)}) at hidden size D, built once."""
        if D not in self.coef:
            shape = {**{a: getattr(self.config, a) for a in self.axes}, "hidden_size": D}
            if self.arch.attention_is_hidden:  # its heads follow hidden_size: D / head_dim of them, always
                shape["num_attention_heads"] = D // head_dim(self.config)
            if self.arch.mamba_expand:  # its Mamba-2 heads follow hidden_size too (Granite 4)
                shape[self.arch.mamba_names.heads] = tied_mamba_heads(self.config, D) or 1
            if not self.varied:  # its layers cost the same: one layer, and two
                base = 2 * self._build(shape, [0]) - self._build(shape, [0, 1])
            elif self.config.num_hidden_layers > 1:  # layers 0 and 1 each, and together
                base = self._build(shape, [0]) + self._build(shape, [1]) - self._build(shape, [0, 1])
            else:  # one layer, always kept: the base in its cost
                base = 0
            first = {}
            for i in range(self.config.num_hidden_layers):
                first.setdefault(self.kind(i), i)
            self.coef[D] = base, {kind: self._layer(shape, i, base) for kind, i in first.items()}
        return self.coef[D]

    def _layer(self, shape: dict[str, int], i: int, base: int) -> tuple[int, ...]:
        """(c, a_heads, a_mlp, a_expert, a_mixer, a_shared) of teacher layer i's kind: what it adds to `base`, and
        what one more query head, one more neuron in every expert, one more expert, one more recurrent head and one
        more neuron of the shared expert for each expert neuron (where its width follows theirs: GLM-4.5's) add."""
        H0, F0, E0 = shape["num_attention_heads"], shape[self.axes[2]], num_experts(self.config) or 1
        F, E = self.axes[2], self.arch.experts_size
        count = self._build(shape, [i])
        a_heads = 0 if self.arch.attention_is_hidden else self._build(shape, [i], num_attention_heads=H0 + 1) - count
        grown = self._build(shape, [i], **{F: F0 + 1}) - count  # a neuron more in every expert (and the shared one)
        a_expert = self._build(shape, [i], **{E: E0 + 1}) - count if self.arch.moe else 0  # an expert more, F0 wide
        a_mlp, a_shared = grown // E0, 0
        if self.arch.shared_expert and not self.arch.shared_names.size:  # (it follows) an expert more of F0 + 1
            # neurons tells them apart
            a_mlp = self._build(shape, [i], **{E: E0 + 1, F: F0 + 1}) - self._build(shape, [i], **{F: F0 + 1}) - \
                a_expert
            a_shared = grown - E0 * a_mlp
        a_expert -= a_mlp * F0
        a_mixer, M0 = 0, 0
        if self.mixer:
            M0 = shape[self.mixer[0]]
            a_mixer = self._build(shape, [i], **{self.mixer[0]: M0 + 1}) - count
        c = count - base - a_heads * H0 - E0 * (a_expert + a_mlp * F0) - a_shared * F0 - a_mixer * M0
        return c, a_heads, a_mlp, a_expert, a_mixer, a_shared

    def _build(self, shape: dict[str, int], keep: list[int], **change: int) -> int:
        """The parameters of `shape` with only the teacher's layers `keep` (two for a dense model: the first two),
        not checked (not every build is valid)."""
        key = (tuple(shape.items()), tuple(keep), tuple(change.items()))
        if key not in self.built:
            drop = [j for j in range(self.config.num_hidden_layers) if j not in keep]
            sizes = {**shape, "num_hidden_layers": len(keep), **change}
            self.built[key] = params_of(target_config(self.config, sizes, drop, validate=False))
        return self.built[key]


def axis_values(config, axis: str, step: int, floor: int) -> list[int]:
    """The sizes an axis may take: multiples of `step` from `floor` up to the teacher's size (included)."""
    top = getattr(config, axis)
    values = {v for v in range(step, top + 1, step) if v >= floor} | ({top} if top >= floor else set())
    return sorted(values)


def default_steps(config) -> dict[str, int]:
    """Hidden and MLP sizes in multiples of 64, query heads in whole KV groups (the same number per group; where the
    attention is hidden_size wide and every head has its own keys and values, Pythia's or Phi-2's, in eighths of the
    teacher's, since the hidden size follows them), layers, a mixture of experts' experts in eighths of the teacher's,
    a hybrid's recurrent heads in about eighths of the teacher's, whole groups (the same number per group)."""
    arch, mixer = arch_of(config), {}
    if names := mixer_heads(arch):
        heads, groups = (getattr(config, name) for name in names)
        mixer = {names[0]: max(1, heads // 8 // groups) * groups}
    heads = config.num_key_value_heads
    if arch.attention_is_hidden and heads_own_kv(config):
        heads = max(1, heads // 8)
    return {"hidden_size": 64, arch.mlp_size: 64, "num_attention_heads": heads,
            **({arch.experts_size: max(1, num_experts(config) // 8)} if arch.moe else {}), "num_hidden_layers": 1,
            **mixer}


def check_axes(config, steps: dict[str, int] | None, floors: dict[str, int] | None) -> dict[str, int]:
    """Every searched size's step (`default_steps`, overridden by `steps`), or a refusal of bad --steps / --floors."""
    steps, axes, arch = {**default_steps(config), **(steps or {})}, searched(config), arch_of(config)
    for name, d in (("steps", steps), ("floors", floors or {})):
        bad = sorted(set(d) - set(axes))
        if bad or any(type(v) is not int or v < 1 for v in d.values()):
            raise MinitronError(f"--{name} takes positive whole numbers for {', '.join(axes)}, got {d}")
    mixer = mixer_heads(arch)
    grouped = [] if heads_own_kv(config) else [("num_attention_heads", "num_key_value_heads")]  # (KV heads that
    for heads, group in [*grouped, *([mixer] if mixer else [])]:  # follow the heads: a group each)
        if steps[heads] % getattr(config, group):
            raise MinitronError(f"the step of {heads} must be a multiple of {group}={getattr(config, group)} (the "
                                f"same number of heads in every group)")
    if arch.moe and steps[arch.experts_size] % expert_groups(config):
        raise MinitronError(f"the step of {arch.experts_size} must be a multiple of n_group={expert_groups(config)} "
                            "(its router picks experts within groups, and every group keeps as many)")
    odd = [a for a in ("hidden_size", arch.mlp_size) if arch.moe and steps[a] % EXPERT_WIDTH_MULTIPLE]
    if odd:  # (the sizes `check_target` takes for a mixture of experts)
        raise MinitronError(f"the step of {odd[0]} must be a multiple of {EXPERT_WIDTH_MULTIPLE} for a mixture of "
                            f"experts: transformers runs its experts by grouped matrix products, which need rows of a "
                            f"multiple of 16 bytes")
    return steps


def hybrid_depths(config, budget: int, tolerance: float, steps: dict[str, int] | None = None,
                  floors: dict[str, int] | None = None) -> list[int]:
    """The depths a hybrid's shapes within the budget may have: the layer axis's values at which its costliest layers
    at the teacher's sizes reach the budget's lower end (which layers go, and so the count, is known once scored)."""
    step = check_axes(config, steps, floors)["num_hidden_layers"]
    values = axis_values(config, "num_hidden_layers", step, (floors or {}).get("num_hidden_layers", 1))
    count = ParamCounter(config)
    return [d for d in values if count.most(d) >= budget * (1 - tolerance)]


def layer_drops(config, scores: Scores, prune: PruneConfig, depths: list[int]) -> dict[int, list[int]]:
    """The layers a hybrid's pruning drops at each depth (`layers_to_drop` by --prune.layer-criterion, as prune
    chooses them), for the depths whose layers transformers runs (`validate_config`: an attention layer kept, say)."""
    L, drops = config.num_hidden_layers, {}
    for depth in depths:
        drop = layers_to_drop(scores, prune.layer_criterion, L, depth)
        try:
            target_config(config, {"num_hidden_layers": depth}, drop)
        except MinitronError:
            continue
        drops[depth] = drop
    return drops


def enumerate_shapes(config, budget: int, tolerance: float, steps: dict[str, int] | None = None,
                     floors: dict[str, int] | None = None, drops: dict[int, list[int]] | None = None
                     ) -> list[Candidate]:
    """Every shape but the teacher's within ±tolerance of `budget` parameters that stock transformers accepts,
    with its exact parameter count, in order of shape. A hybrid's depths are those whose dropped layers `drops`
    gives (`layer_drops`; without it: the teacher's depth only)."""
    steps, floors, axes, arch = check_axes(config, steps, floors), floors or {}, searched(config), arch_of(config)
    lowest = {arch.experts_size: least_experts(config)} if arch.moe else {}
    values = [axis_values(config, a, steps[a], max(floors.get(a, 1), lowest.get(a, 1))) for a in axes]
    count, teacher = ParamCounter(config, drops), tuple(getattr(config, a) for a in axes)
    if layers_differ(config):
        depth = axes.index("num_hidden_layers")
        values[depth] = [d for d in values[depth] if d in count.kept]
    lo, hi = budget * (1 - tolerance), budget * (1 + tolerance)
    out = []
    for D, H in product(*values[:2]):
        if not valid_width(config, D, H):
            continue
        shapes = []
        for others in product(*values[3:]):  # the MLP's sizes within the budget solved for, the count affine in them
            for F in mlp_within(count, dict(zip(axes, (D, H, 0, *others))), values[2], lo, hi):
                sizes = dict(zip(axes, (D, H, F, *others)))
                if not count.idle(sizes) and (D, H, F, *others) != teacher:
                    shapes.append(Candidate(sizes, count(sizes)))
        out += sorted(shapes, key=lambda c: tuple(c.sizes.values()))  # in order of shape
    return out


def mlp_within(count: ParamCounter, sizes: dict[str, int], values: list[int], lo: float, hi: float) -> list[int]:
    """The MLP sizes among `values` (sorted) at which `sizes` (the MLP's at 0) count within [lo, hi]: the count is
    base + slope x neurons, so the bounds are solved for (one value either side, checked exactly, for the division's
    rounding) rather than every value counted."""
    base = count(sizes)
    slope = count({**sizes, count.axes[2]: 1}) - base
    if slope <= 0:  # no kept layer has an MLP: the count does not depend on it
        return [v for v in values if lo <= base <= hi]
    first = max(0, bisect_left(values, (lo - base) / slope) - 1)
    return [v for v in values[first:bisect_right(values, (hi - base) / slope) + 1] if lo <= base + slope * v <= hi]


class Space:
    """The shapes a search ranks: those within ±tolerance of the budget of --params, each size a multiple of its
    step from its floor up (`enumerate_shapes`), at most max_candidates of them spread over the rest (`spread`).

    A hybrid's count at a depth depends on which of its layers go, which its scores say: `depths` are those it may
    have within the budget (None for other models), and its shapes are enumerated once scored (`layer_drops`)."""

    def __init__(self, config, params: float, tolerance: float, steps: dict[str, int] | None = None,
                 floors: dict[str, int] | None = None, max_candidates: int | None = None):
        self.config, self.tolerance, self.steps, self.floors = config, tolerance, steps, floors
        self.max_candidates, self.budget = max_candidates, budget_of(params, params_of(config))
        self.depths = hybrid_depths(config, self.budget, tolerance, steps, floors) if layers_differ(config) else None

    def every(self, drops: dict[int, list[int]] | None = None, refuse: bool = True) -> list[Candidate]:
        """Every shape within the budget; refused in one line when none is (unless `refuse` is False)."""
        candidates = enumerate_shapes(self.config, self.budget, self.tolerance, self.steps, self.floors, drops)
        if not candidates and refuse:
            raise MinitronError(f"no shape has {self.budget:,} parameters ±{self.tolerance:.0%} with these steps and "
                                "floors; raise --tolerance or --params, or use smaller --steps")
        return candidates

    def shapes(self, drops: dict[int, list[int]] | None = None, refuse: bool = True, dry_run: bool = False
               ) -> list[Candidate]:
        """The shapes scored zero-shot (all, or --max-candidates spread over them), announced."""
        candidates = self.every(drops, refuse)
        chosen = candidates if self.max_candidates is None else spread(candidates, self.max_candidates, self.config)
        print(f"search: {len(candidates)} shapes within ±{self.tolerance:.0%} of {self.budget:,} parameters; "
              f"{len(chosen)} {'to be ' if dry_run else ''}scored zero-shot", flush=True)
        return chosen

    def dry_run(self, model: str, scores: Path | None, prune: PruneConfig) -> dict:
        """--dry-run: the shapes to be scored, with their parameters; nothing written. A hybrid's with fewer layers
        come from --scores (which layers go): without them, those of its full depth, said so."""
        drops, L = None, self.config.num_hidden_layers
        if self.depths and scores is not None:
            given = holding(given_scores(scores, self.config, model), needs_of(self.config, self.depths, prune), scores)
            drops = layer_drops(self.config, given, prune, self.depths)
        partial = drops is None and self.depths is not None and self.depths != [L]
        if partial:
            print(f"search: this model's layers differ in kind, so its size at fewer layers depends on which go, "
                  f"which its scores say: the shapes below keep all {L} layers; give --scores to list those with "
                  f"{min(self.depths)} to {L - 1} too", flush=True)
        chosen = self.shapes(drops, refuse=not partial, dry_run=True)
        teacher = params_of(self.config)
        print("\n".join(f"  {c.name}: {c.params:,} parameters ({c.params / teacher:.1%})" for c in chosen))
        return {"budget": self.budget, "shapes": [{"sizes": c.sizes, "params": c.params} for c in chosen]}


def valid_width(config, hidden: int, heads: int) -> bool:
    """Whether the family's own config checks accept this hidden size with this many heads (and the Mamba-2 heads that
    follow the hidden size, where they do: `tied_mamba_heads`)."""
    sizes = {"hidden_size": hidden, "num_attention_heads": heads}
    if (arch := arch_of(config)).mamba_expand:
        tied = tied_mamba_heads(config, hidden)
        if tied is None or tied % getattr(config, arch.mamba_names.groups):
            return False
        sizes[arch.mamba_names.heads] = tied
    try:
        target_config(config, sizes)
    except MinitronError:
        return False
    return True


def spread(candidates: list[Candidate], k: int, config) -> list[Candidate]:
    """At most k candidates spread over the shape space: farthest-point sampling on the sizes relative to the
    teacher's, starting from the candidate nearest the middle."""
    if len(candidates) <= k:
        return candidates
    x = torch.tensor([[c.sizes[a] / getattr(config, a) for a in searched(config)] for c in candidates])
    chosen = [int((x - x.mean(0)).norm(dim=1).argmin())]
    dist = (x - x[chosen[0]]).norm(dim=1)
    while len(chosen) < k:
        chosen.append(int(dist.argmax()))
        dist = torch.minimum(dist, (x - x[chosen[-1]]).norm(dim=1))
    return [candidates[i] for i in sorted(chosen)]


# ------------------------------------------------------------------------------ scoring the candidates

def needs_of(config, depths: set[int] | list[int], prune: PruneConfig) -> ScoreNeeds:
    """What pruning to the candidates' depths reads, together (`PruneConfig.needs` of each; the width criterion is
    the same for every shape)."""
    needs = ScoreNeeds((prune.criterion,))
    for depth in sorted(depths):
        needs |= prune.needs(config, {"num_hidden_layers": depth})
    return needs


def cached_scores(model: str, scores: Path | None, work: Path, data: Path | None, needs: ScoreNeeds,
                  prune: PruneConfig, dtype: ComputeDtype, device: str) -> tuple[Scores, Path]:
    """The given --scores (refused if they lack what the candidates need), or WORK/scores, made once."""
    path = Path(scores) if scores is not None else work / "scores"
    if scores is None and not (path / "scores.json").is_file():
        shutil.rmtree(path, ignore_errors=True)  # left by an interrupted scoring
        score(model, data=data, out=path, criteria=list(needs.criteria), calib_seqs=prune.calib_seqs,
              seq_len=prune.seq_len, layer_loss=needs.layer_loss, block_sizes=list(needs.block_sizes),
              dtype=dtype, device=device, seed=prune.seed)
    return holding(Scores.load(path), needs, path), path


def holding(saved: Scores, needs: ScoreNeeds, path: Path) -> Scores:
    """`saved`, refused if it lacks a layer score the candidates need."""
    missing = [k for k in needs.keys if k not in saved.tensors]
    if missing:
        raise MinitronError(f"the scores in {path} lack {', '.join(missing)}, which these candidates need; score "
                            f"with `--block-sizes {' '.join(map(str, needs.removal))}`, or leave out --scores and "
                            "let search score")
    return saved


def zero_shot(teacher, scores: Scores, candidates: list[Candidate], val: list, prune: PruneConfig,
              screen: list | None = None, keep: int = SCREEN_KEEP, clock: Clock | None = None,
              save=lambda: None) -> None:
    """Each candidate's dev loss pruned in memory from the cached scores, before any training. The scores (and
    their layer losses) are computed once for all; a candidate costs one slicing and one pass over the windows.

    With `screen` (fewer dev windows) and more than `keep` candidates, every candidate is first measured on the
    screen and only the best `keep` on all of `val`: a two-stage ranking that saves most of its cost, since the
    losses are far apart (benchmarks/search_speed.py checks that the first shapes stay the same). `save` is called
    every 16 candidates, so an interrupted search keeps what it measured; `clock` times the parts (planning,
    slicing, the loss)."""
    clock = clock or Clock()
    if next(teacher.parameters()).device.type == "cpu":  # each batch's logits would be mapped afresh
        reuse_freed_memory()
    finalists = candidates
    if screen is not None and len(candidates) > keep:
        measure(teacher, scores, candidates, screen, "screen_loss", prune, clock, save)
        finalists = sorted(candidates, key=lambda c: c.screen_loss)[:keep]
    measure(teacher, scores, finalists, val, "zero_shot_loss", prune, clock, save)
    best = sorted(finalists, key=lambda c: c.zero_shot_loss)[:5]
    print("  best zero-shot: " + ", ".join(f"{c.name} {c.zero_shot_loss:.3f}" for c in best), flush=True)


def measure(teacher, scores: Scores, candidates: list[Candidate], batches: list, field: str, prune: PruneConfig,
            clock: Clock, save) -> None:
    """Set `field` (screen_loss or zero_shot_loss) of each candidate that lacks it: the LM loss over `batches` of
    the teacher pruned in memory to its shape."""
    config, todo = teacher.config, [c for c in candidates if getattr(c, field) is None]
    desc = "screening" if field == "screen_loss" else "zero-shot"
    bar = tqdm(todo, desc=desc, unit="shape", dynamic_ncols=True, disable=not todo)
    for i, c in enumerate(bar):
        with clock.part(f"{desc}.plan"):
            plan = make_plan(scores, config, check_target(config, c.sizes), prune)
        with clock.part(f"{desc}.slice"):
            student = apply_plan(copy.deepcopy(teacher), plan)
        with clock.part(f"{desc}.loss"):
            setattr(c, field, lm_loss(student, batches))
        bar.set_postfix(best=f"{min(getattr(x, field) for x in candidates if getattr(x, field) is not None):.3f}")
        if i % 16 == 15:
            save()


def zero_shot_order(c: Candidate) -> tuple:
    """Sort key of the zero-shot ranking: measured on every dev window first, by that loss; then screened out, by
    the screening loss; unmeasured last."""
    return (c.zero_shot_loss is None, c.zero_shot_loss if c.zero_shot_loss is not None else
            (c.screen_loss if c.screen_loss is not None else math.inf))


def distil_candidate(c: Candidate, model: str, work: Path, scores_dir: Path, train: TrainConfig, val: list,
                     prune: PruneConfig, device: str) -> None:
    """Prune one candidate, distil it on the shared token budget (resuming its own run directory), measure it.

    A failure of any kind is recorded in the candidate (and its traceback in its directory) and skipped."""
    run = work / "candidates" / c.name
    done = run / "result.json"
    if done.is_file():
        c.distilled_loss = json.loads(done.read_text())["distilled_loss"]
        return
    try:
        if not (run / "pruned" / "config.json").is_file():
            prune_model(model, target=c.sizes, out=run / "pruned", prune=prune, scores=scores_dir, device=device,
                        overwrite=True)
        result = run_distill(replace(train, student=str(run / "pruned"), out=run / "distill", teacher=model,
                                     device=device, resume=True))
        c.distilled_loss = lm_loss(load_model(result.student, pick_device(device)), val)
        write_json(done, {"distilled_loss": c.distilled_loss, "steps": result.steps, "tokens": result.tokens})
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one candidate failing must not lose the others: reported, then skipped
        c.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        run.mkdir(parents=True, exist_ok=True)
        (run / "error.txt").write_text(traceback.format_exc())
        print(f"  {c.name}: failed ({c.error}); skipped", flush=True)


def ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Distilled candidates by loss after distillation, then the rest in zero-shot order, failed ones last."""
    return sorted(candidates, key=lambda c: (c.error is not None, c.distilled_loss is None, c.distilled_loss or 0.0,
                                             zero_shot_order(c)))


# ------------------------------------------------------------------------------ the command

def search(params: float, model: str = "default", out: Path | None = None, work: Path | None = None,
           tolerance: float = SEARCH_TOLERANCE, steps: dict[str, int] | None = None,
           floors: dict[str, int] | None = None, max_candidates: int | None = None, distill_top: int = DISTILL_TOP,
           distill_tokens: int = DISTILL_TOKENS, scores: Path | None = None, data: Path | None = None,
           val_seqs: int = VAL_SEQS, screen_seqs: int = SCREEN_SEQS, screen_keep: int = SCREEN_KEEP,
           prune: PruneConfig = PruneConfig(), distill: TrainConfig = TrainConfig(eval_every=0),
           dtype: Literal["auto"] | ComputeDtype = "auto", device: str = "auto", overwrite: bool = False,
           dry_run: bool = False) -> dict:
    """Search the student shape under a parameter budget and prune the teacher to the winner.

    Args:
        params: parameter budget: a fraction of the teacher's (e.g. 0.5) or an absolute count (e.g. 60e6)
        model: teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        out: output directory for the winner, pruned (a Hugging Face checkpoint, with search.json)
        work: the search's work directory (default: OUT-search): scores, candidate runs, search.json/.md/.png;
            an interrupted search resumes from it
        tolerance: candidates within ±tolerance of the budget (0.05: ±5 percent)
        steps: step of each searched size, e.g. hidden_size=64,intermediate_size=64,num_attention_heads=3,
            num_hidden_layers=1 (default: 64, 64, the KV groups, 1; the heads in eighths where the hidden size
            follows them and each head has its own keys and values, Pythia's, Phi-2's; Qwen3-MoE's MLP size is
            moe_intermediate_size; a mixture of experts' num_experts in eighths of the teacher's, down to
            num_experts_per_tok; a hybrid's mamba_num_heads or linear_num_value_heads in about eighths, whole groups)
        floors: smallest value of each searched size, e.g. num_hidden_layers=16,hidden_size=256
        max_candidates: score only this many shapes zero-shot, spread over those found (default: every one)
        distill_top: distil the best K by zero-shot loss and rank them again (0: rank zero-shot only)
        distill_tokens: training tokens of each candidate's short distillation (the same for every one)
        scores: importance scores from `minitron score` (default: scored once into WORK/scores)
        data: token data directory (default: the default corpus)
        val_seqs: dev sequences the zero-shot ranking measures on (of --prune.seq-len tokens)
        screen_seqs: with more than --screen-keep candidates, every candidate is first screened on this many dev
            sequences and only the best --screen-keep are measured on all --val-seqs (0: no screening)
        screen_keep: candidates measured on every --val-seqs sequence after the screening (at least --distill-top)
        prune: how each candidate is pruned, and the calibration text (`--prune.head-score attn`, a `prune:` section)
        distill: settings of the short distillations (`--distill.lr`); tokens is --distill-tokens, and search
            sets where the models, data and runs are itself
        dtype: what the scoring and the zero-shot losses compute in: float32, bfloat16 (about twice as fast on
            GPUs and on CPUs with bf16 units, the same first shapes: docs/performance.md; the winner is pruned from
            the same scores), or auto: bfloat16 on a GPU or a CPU with native bf16, float32 elsewhere
        device: auto, cpu or cuda
        overwrite: replace --out, and start the work directory again
        dry_run: list the shapes within the budget (those scored, with --max-candidates) with their parameters and
            stop (needs just the teacher's config.json; nothing written; a hybrid's with fewer layers: from --scores)
    """
    refuse_located(distill, "search")
    real_number(tolerance, "--tolerance", lambda v: 0 < v < 1, "between 0 and 1 (0.05: ±5 percent of the budget)")
    if max_candidates is not None:  # None: every shape
        whole_number(max_candidates, "--max-candidates")
    for flag, value, low in (("--distill-top", distill_top, 0), ("--distill-tokens", distill_tokens, 1),
                             ("--val-seqs", val_seqs, 1), ("--screen-seqs", screen_seqs, 0)):
        whole_number(value, flag, low)
    whole_number(screen_keep, "--screen-keep (at least 1 and at least --distill-top)", max(distill_top, 1))
    config = load_config(model)
    prune.validate(config)
    if prune.drop_layers:
        raise MinitronError("search chooses each candidate's layers by --prune.layer-criterion; leave out "
                            "--prune.drop-layers")
    check_seq_len(config, prune.seq_len, model)
    if dtype == "auto":
        dtype = "bfloat16" if native_bf16(pick_device(device)) else "float32"
    space = Space(config, params, tolerance, steps, floors, max_candidates)
    if dry_run:
        return space.dry_run(model, scores, prune)
    if out is None:
        raise MinitronError("--out is required (the winner is pruned into it), or use --dry-run")
    out = Path(out)
    work = Path(work) if work is not None else out.with_name(out.name + "-search")
    refuse_existing(out, overwrite)
    chosen = space.shapes() if not space.depths else None  # a hybrid's: once scored
    tokens = TokenData.open(data if data is not None else default_data(model))
    tokens.check_model(load_tokenizer(model), config.vocab_size, model)
    if scores is not None:  # another model's scores are refused before any work, as prune does
        given_scores(scores, config, model)
    train = replace(distill, tokens=distill_tokens, data=str(tokens.path))
    replace(train, student=str(model), out=work, teacher=str(model)).validate("distill.")
    settings = {"model": str(model), "budget": space.budget, "tolerance": tolerance, "steps": steps, "floors": floors,
                "max_candidates": max_candidates, "scores": str(scores), "val_seqs": val_seqs,
                "screen_seqs": screen_seqs, "screen_keep": screen_keep, "dtype": dtype,
                "prune": asdict(prune), "distill": recorded(replace(train, teacher=str(model)), work)}
    open_work(work, settings, overwrite)
    val = windows_in_batches(tokens.spread("dev", val_seqs, prune.seq_len).batch, 4)  # selection: the dev split
    screen = windows_in_batches(tokens.spread("dev", screen_seqs, prune.seq_len).batch, 4) \
        if 0 < screen_seqs < val_seqs else None
    clock = Clock()  # the seconds of each part, this run (search.json)
    depths = space.depths or {c.sizes["num_hidden_layers"] for c in chosen}
    saved, scores_dir = cached_scores(model, scores, work, data, needs_of(config, depths, prune), prune, dtype,
                                      device)
    clock.lap("scores")
    if scores is None:  # scored by the search (this run or the one it resumes): the scoring's own parts
        clock.parts.update({f"scores.{k}": v for k, v in saved.meta.get("timings_s", {}).items()})
    if space.depths:  # which layers go at each depth is now known
        chosen = space.shapes(layer_drops(config, saved, prune, space.depths))
    restore(work, chosen)
    zero_shot(load_model(model, pick_device(device), getattr(torch, dtype)), saved, chosen, val, prune, screen,
              screen_keep, clock, save=lambda: write_results(work, settings, chosen, clock.seconds, plot=False))
    clock.lap("zero_shot")
    write_results(work, settings, chosen, clock.seconds)
    top = sorted(chosen, key=zero_shot_order)[:distill_top]
    started = time.time()
    for i, c in enumerate(top, 1):
        print(f"distilling {c.name} on {distill_tokens:,} tokens (candidate {i} of {len(top)})", flush=True)
        distil_candidate(c, model, work, scores_dir, train, val, prune, device)
        clock.lap(f"distill {c.name}")
        write_results(work, settings, chosen, clock.seconds)
        if i < len(top):  # the overall ETA: the candidates cost about the same
            left = (time.time() - started) / i * (len(top) - i)
            print(f"search: {i} of {len(top)} candidates distilled; about {left / 60:.0f} min left", flush=True)
    winner = next((c for c in ranked(chosen) if c.error is None), None)
    if winner is None:
        raise MinitronError(f"every candidate's distillation failed (see {work}/candidates/*/error.txt)")
    print(f"winner: {winner.name} ({winner.params:,} parameters)", flush=True)
    prune_model(model, target=winner.sizes, out=out, prune=prune, scores=scores_dir, device=device,
                overwrite=overwrite)
    shutil.copy(work / "search.json", out / "search.json")
    print(f"wrote {out}: the winner, {winner.name}, pruned ({winner.params:,} parameters); every shape's losses in "
          f"{work / 'search.json'}", flush=True)
    return {"winner": asdict(winner), "target": winner.sizes, "params": winner.params, "work": str(work),
            "scores": str(scores_dir)}


def open_work(work: Path, settings: dict, overwrite: bool) -> None:
    """The work directory, new, or an interrupted search's with the same settings (its record); other settings are
    refused."""
    check_run_dir(work, resume=not overwrite, overwrite=overwrite)  # a search resumes its work by itself
    if overwrite and work.exists():
        remove(work)
    work.mkdir(parents=True, exist_ok=True)
    mark(work)
    record = Record(work)
    record.check("search", settings)  # other settings are refused
    record.save("search", settings)


def restore(work: Path, candidates: list[Candidate]) -> None:
    """Take the measurements an interrupted search made of these candidates (its search.json)."""
    results = work / "search.json"
    known = {json.dumps(c["sizes"], sort_keys=True): c for c in
             (json.loads(results.read_text())["candidates"] if results.is_file() else [])}
    for c in candidates:
        row = known.get(json.dumps(c.sizes, sort_keys=True), {})
        c.zero_shot_loss, c.screen_loss = row.get("zero_shot_loss"), row.get("screen_loss")


# ------------------------------------------------------------------------------ results

class Clock:
    """Wall seconds of the stages of a run, each from the end of the one before (`lap`), and of the parts of a
    stage, summed over its repeats (`part`: 'zero_shot.loss')."""

    def __init__(self):
        self.laps, self.parts, self.last = {}, {}, time.time()

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps[name], self.last = now - self.last, now

    @contextlib.contextmanager
    def part(self, name: str):
        start = time.time()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.time() - start

    @property
    def seconds(self) -> dict[str, float]:
        return {name: round(s, 1) for name, s in {**self.laps, **self.parts}.items()}


def write_results(work: Path, settings: dict, candidates: list[Candidate], seconds: dict | None = None,
                  plot: bool = True) -> None:
    """search.json (every candidate), search.md (the first SHOWN by final rank) and search.png (rank before vs
    after distillation)."""
    order = ranked(candidates)
    zero = {c.name: i + 1 for i, c in enumerate(sorted(candidates, key=zero_shot_order))}
    rows = [{**asdict(c), "name": c.name, "rank": i + 1, "zero_shot_rank": zero[c.name]} for i, c in enumerate(order)]
    write_json(work / "search.json", {"settings": settings, "seconds": seconds or {}, "candidates": rows})
    lines = [f"# Shape search: {settings['budget']:,} parameters ±{settings['tolerance']:.0%}", "",
             f"{len(rows)} shapes scored. Zero-shot: pruned from the teacher's importance scores, LM loss on "
             f"{settings['val_seqs']} sequences spread over the dev split"
             + (f" (screening: every shape on {settings['screen_seqs']}, the best {settings['screen_keep']} on all)"
                if any(r["screen_loss"] is not None for r in rows) else "") + ". Distilled: the same loss after "
             f"{settings['distill']['tokens']:,} tokens of distillation."
             + (f" The first {SHOWN} by rank; search.json has every one." if len(rows) > SHOWN else ""), "",
             f"| rank | zero-shot rank | {' | '.join(rows[0]['sizes'])} | "
             "parameters | screening loss | zero-shot loss | distilled loss |",
             "|---" * (len(rows[0]["sizes"]) + 6) + "|"]
    for r in rows[:SHOWN]:
        shape = " | ".join(str(v) for v in r["sizes"].values())
        after = f"{r['distilled_loss']:.3f}" if r["distilled_loss"] is not None else (
            f"failed: {r['error']}" if r["error"] else "")
        zs, sc = (f"{r[k]:.3f}" if r[k] is not None else "" for k in ("zero_shot_loss", "screen_loss"))
        lines.append(f"| {r['rank']} | {r['zero_shot_rank']} | {shape} | {r['params']:,} | {sc} | {zs} | {after} |")
    (work / "search.md").write_text("\n".join(lines) + "\n")
    if plot:
        plot_ranks(rows, work / "search.png")


def plot_ranks(rows: list[dict], path: Path) -> None:
    """Rank by zero-shot loss against rank after distillation, for the distilled candidates."""
    done = [r for r in rows if r["distilled_loss"] is not None]
    if not done:
        return
    after = {r["name"]: i + 1 for i, r in enumerate(sorted(done, key=lambda r: r["distilled_loss"]))}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([1, len(rows)], [1, len(rows)], color="0.8", lw=1)
    for r in done:
        ax.scatter(r["zero_shot_rank"], after[r["name"]])
        ax.annotate(r["name"], (r["zero_shot_rank"], after[r["name"]]), fontsize=7)
    ax.set_xlabel("rank by zero-shot loss")
    ax.set_ylabel("rank after distillation")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
