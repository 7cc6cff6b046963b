"""The `Scores` record (every unit's importance under every criterion computed, saved as safetensors + JSON,
reusable for any later target) and the names its tensors go by."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from minitron.arch import DENSE_SIZE, arch_of, count_params, num_experts, prunable_sizes, shared_width
from minitron.errors import MinitronError
from minitron.importance.weights import random_scores
from minitron.io import atomic_dir, write_json

WIDTH_CRITERIA = ("activation", "wanda", "magnitude", "taylor", "random")
DEFAULT_CRITERIA = ["activation", "wanda", "magnitude", "random"]
WEIGHT_CRITERIA = ("magnitude", "random")  # the width criteria that read the weights alone (no calibration text)
Criterion = Literal["activation", "wanda", "magnitude", "taylor", "random"]
Agg = Literal["mean", "l2", "var"]
# hidden-channel activation score -> tensor name: per-norm scores summed over each layer's input and
# post-attention norms (the papers'), or every norm's samples pooled into one statistic (final norm included)
HIDDEN_SCORES = {"norms": "hidden", "pooled": "hidden_pooled"}
HiddenScore = Literal["norms", "pooled"]
# head activation score -> tensor name: the head's attention output before o_proj (the papers'), or its
# output projected through its o_proj columns
HEAD_SCORES = {"attn": "heads", "o_proj": "heads_oproj"}
HeadScore = Literal["attn", "o_proj"]
# a layer criterion -> the layer tensor it ranks by (for block: of blocks of k layers, `layer_key`)
LayerCriterion = Literal["block", "loss", "bi", "random"]
LAYER_SCORES = {"loss": "layers/loss", "bi": "layers/block_influence", "random": "layers/random"}


@dataclass
class Scores:
    """Importance of every unit under every criterion computed; reusable for any later target."""

    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    def width(self, criterion: str, seq_agg: str, batch_agg: str, hidden_score: str, head_score: str) -> dict:
        """{"hidden", "heads", "mlp"} scores of one criterion (and "experts" and "shared", of a mixture of experts and
        its shared expert's neurons; "mamba" and "mamba_dim", of a hybrid's Mamba-2 heads and head channels; "delta",
        of its Gated DeltaNet value heads; "conv", of its short convolutions' channels; "dense", of a mixture of
        experts' dense layers' neurons); for
        activation also the aggregations and the choice of hidden-channel score (`HIDDEN_SCORES`) and head score
        (`HEAD_SCORES`)."""
        prefix = f"activation/{seq_agg}-{batch_agg}" if criterion == "activation" else criterion
        names = {"hidden": "hidden", "heads": "heads", "mlp": "mlp"}
        names.update({unit: unit for unit in ("experts", "shared", "mamba", "mamba_dim", "delta", "conv", "dense")
                      if f"{prefix}/{unit}" in self.tensors})
        if criterion == "activation":
            names.update(hidden=HIDDEN_SCORES[hidden_score], heads=HEAD_SCORES[head_score])
        missing = [f"{prefix}/{n}" for n in names.values() if f"{prefix}/{n}" not in self.tensors]
        if missing:
            raise MinitronError(f"the scores have no {missing[0]!r} importance (have: {', '.join(self.criteria())}); "
                                f"run `minitron score --criteria {criterion}`")
        return {k: self.tensors[f"{prefix}/{n}"] for k, n in names.items()}

    def criteria(self) -> list[str]:
        return sorted({k.split("/")[0] for k in self.tensors if not k.startswith("layers/")})

    def layer(self, criterion: str, k: int = 1) -> torch.Tensor:
        """The layer scores `criterion` ranks by (`layer_key`): per layer, or for block per start of k layers."""
        key = layer_key(criterion, k)
        if key not in self.tensors:
            have = [k.removeprefix("layers/") for k in self.tensors if k.startswith("layers/")]
            how = {"block": f"--block-sizes {k}", "loss": "--layer-loss", "random": "--criteria random"}
            run = f"`minitron score {how[criterion]}`" if criterion in how else \
                "`minitron score` with calibration text (--data, or --criteria activation)"  # (Block Influence's)
            raise MinitronError(f"the scores have no layer importance {key.removeprefix('layers/')!r} (have: "
                                f"{', '.join(have) or 'none'}); run {run}")
        return self.tensors[key]

    def check_model(self, config, fingerprint: str, where: Path | str) -> None:
        """Refuse scores computed on another model: other sizes (recorded, or the tensors' lengths) or, when
        recorded, another weight fingerprint (`Checkpoint.fingerprint`)."""
        sizes = {k: getattr(config, k) for k in prunable_sizes(config)}
        recorded = self.meta.get("sizes") or {}
        differ = [k for k in sizes if k in recorded and recorded[k] != sizes[k]]
        if differ:
            raise MinitronError(f"the scores in {where} are for a model with "
                                f"{', '.join(f'{k}={recorded[k]}' for k in differ)}, but this one has "
                                f"{', '.join(f'{k}={sizes[k]}' for k in differ)}; score this model")
        names = arch_of(config).mamba_names
        lengths = {"hidden": sizes["hidden_size"], "hidden_pooled": sizes["hidden_size"],
                   "mlp": sizes[arch_of(config).mlp_size], "experts": num_experts(config),
                   "mamba": sizes.get(names.heads), "mamba_dim": sizes.get(names.head_dim),
                   "delta": sizes.get("linear_num_value_heads"), "shared": shared_width(config, sizes),
                   "conv": sizes["hidden_size"], "dense": sizes.get(DENSE_SIZE)}
        for name, t in self.tensors.items():
            part = name.rsplit("/", 1)[-1]
            if (part in lengths and t.shape[-1] != lengths[part]) or (
                    name.startswith("layers/") and t.shape[0] > sizes["num_hidden_layers"]):
                raise MinitronError(f"the scores in {where} do not fit this model ({name} has shape "
                                    f"{tuple(t.shape)}); score this model")
        if self.meta.get("fingerprint") not in (None, fingerprint):
            raise MinitronError(f"the scores in {where} were computed on another model ({self.meta.get('teacher')}, "
                                f"weights fingerprint {self.meta['fingerprint']}, this model's is {fingerprint}) "
                                "with the same sizes; score this model")

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


def check_criteria(criteria: list[str]) -> None:
    unknown = sorted(set(criteria) - set(WIDTH_CRITERIA))
    if unknown:
        raise MinitronError(f"unknown criteria {', '.join(unknown)}; choose from {', '.join(WIDTH_CRITERIA)}")


def named(prefix: str, scores: dict) -> dict[str, torch.Tensor]:
    """{"hidden": t, ...} -> {"prefix/hidden": t, ...}"""
    return {f"{prefix}/{k}": v for k, v in scores.items()}


def reads_text(criteria, removal, data, layer_keys=()) -> bool:
    """Whether scoring reads calibration text: data is given, or the scores asked do not read the weights alone (the
    width criteria of the weights, magnitude and random; no removal losses; of the layer scores a pruning reads,
    `layer_keys`, the random ones only)."""
    of_text = [key for key in layer_keys if key != LAYER_SCORES["random"]]
    return data is not None or not (set(criteria) <= set(WEIGHT_CRITERIA) and not removal and not of_text)


def removal_sizes(layer_loss: bool, block_sizes) -> list[int]:
    """The block lengths whose removal losses are measured: 1 (each layer alone) with `layer_loss`, and each of
    `block_sizes`."""
    return sorted({*([1] if layer_loss else []), *(block_sizes or [])})


def loss_key(k: int) -> str:
    """Name of the layer-removal losses for blocks of k layers."""
    return "layers/loss" if k == 1 else f"layers/block_loss_k{k}"


def layer_key(criterion: str, k: int = 1) -> str:
    """The tensor a layer criterion ranks by when k layers go: the removal losses of blocks of k for block, else
    the criterion's per-layer scores."""
    return loss_key(k) if criterion == "block" else LAYER_SCORES[criterion]


def activation_tensors(criteria: list[str], act: dict, text: bool) -> dict[str, torch.Tensor]:
    """The activation scores kept: Block Influence wherever calibration text went through (it comes free with the
    pass; of no text it would be zeros), all of them where the activation criterion is asked."""
    if "activation" in criteria:
        return act
    return {"layers/block_influence": act["layers/block_influence"]} if text else {}


def random_tensors(config, seed: int) -> dict[str, torch.Tensor]:
    r = random_scores(config, seed)
    return {"layers/random": r.pop("layers"), **named("random", r)}


def model_meta(model: nn.Module, criteria: list[str]) -> dict:
    """What a Scores record says about the scored model (works on a meta-device skeleton too)."""
    return dict(criteria=sorted(criteria), params=count_params(model),
                sizes={k: getattr(model.config, k) for k in prunable_sizes(model.config)})


def check_streamable(criteria: list[str]) -> None:
    check_criteria(criteria)
    if "taylor" in criteria:
        raise MinitronError("the taylor criterion needs gradients from a backward pass through the whole model, "
                            "which streaming one layer at a time cannot do; choose activation, wanda, magnitude "
                            "or random (or --no-stream on a machine where the model fits)")
