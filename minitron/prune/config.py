"""`PruneConfig`: every setting of how a teacher is pruned, its default and its help, in one place: which importance
ranks the units, how activations are aggregated, which layers go, and the calibration text the scores come from.
`prune`, `search` and `compress` take it (`--prune.head-score attn`, or a `prune:` section in YAML), as `compress`
takes `distill: TrainConfig`; the string under each field is its help text."""
from __future__ import annotations

from dataclasses import dataclass

from minitron.errors import MinitronError, whole_number
from minitron.importance import (AGGREGATIONS, CALIB_SEED, CALIB_SEQS, WIDTH_CRITERIA, Agg, Criterion, HeadScore,
                                 HiddenScore, LayerCriterion, layer_key)
from minitron.importance.scores import HEAD_SCORES, HIDDEN_SCORES, LAYER_SCORES, reads_text, removal_sizes
from minitron.data import SEQ_LEN


@dataclass
class PruneConfig:
    """How a teacher is pruned: the importance that ranks its hidden channels, heads, MLP neurons and layers, and the
    calibration text the activations are measured on."""

    criterion: Criterion = "activation"
    """width importance: activation (the papers'), wanda, magnitude, taylor or random"""
    seq_agg: Agg = "mean"
    """activation aggregation over the sequence: mean (of |x|), l2 or var"""
    batch_agg: Agg = "l2"
    """activation aggregation over the batch: l2, mean or var"""
    hidden_score: HiddenScore = "norms"
    """activation score of hidden channels: norms (each layer's input and post-attention norm scored on its own,
    then summed: the papers') or pooled (every norm's samples, the final norm's too, in one statistic);
    docs/criteria_after_kd.md compares them"""
    head_score: HeadScore = "o_proj"
    """activation score of attention heads: o_proj (the head's output projected through its o_proj columns) or attn
    (the head's attention output before o_proj: the papers'); o_proj measured better over five data orders
    (docs/criteria_heads.md)"""
    layer_criterion: LayerCriterion = "block"
    """which layers a smaller num_hidden_layers removes: block (the contiguous block whose removal raises the LM loss
    least), loss (per layer), bi (Block Influence) or random; loss measured better when many layers go (19 of 30,
    docs/criteria_depth.md), a tie with block at the demo's 3 (docs/demo_layers.md)"""
    drop_layers: list[int] | None = None
    """decoder layers to remove instead of choosing them (0-based), e.g. 16-23 or 3 7 9"""
    calib_seqs: int = CALIB_SEQS
    """calibration sequences the importance is measured on"""
    seq_len: int = SEQ_LEN
    """tokens per calibration sequence (search and compress: per held-out sequence too)"""
    seed: int = CALIB_SEED
    """seed of the calibration sample (and of the random criterion)"""

    def validate(self, config=None) -> "PruneConfig":
        """Refuse bad values (a YAML config or a library call can hold anything), and with the teacher's `config`
        layers it does not have; returns itself."""
        for name, choices in (("criterion", WIDTH_CRITERIA), ("seq_agg", AGGREGATIONS), ("batch_agg", AGGREGATIONS),
                              ("hidden_score", tuple(HIDDEN_SCORES)), ("head_score", tuple(HEAD_SCORES)),
                              ("layer_criterion", ("block", *LAYER_SCORES))):
            if getattr(self, name) not in choices:
                raise MinitronError(f"--prune.{dashed(name)} must be one of {', '.join(choices)}, not "
                                    f"{getattr(self, name)!r}")
        for name, low in (("calib_seqs", 1), ("seq_len", 2), ("seed", 0)):
            whole_number(getattr(self, name), f"--prune.{dashed(name)}", low)
        if self.drop_layers is not None:
            check_layers(self.drop_layers, config.num_hidden_layers if config is not None else None)
        return self

    def width(self, scores):
        """The width scores this config ranks by (`Scores.width`)."""
        return scores.width(self.criterion, self.seq_agg, self.batch_agg, self.hidden_score, self.head_score)

    def needs(self, config, sizes: dict[str, int]) -> "ScoreNeeds":
        """The one answer to "which scores does pruning `config` to `sizes` need": the width criterion, and the layer
        scores that choose which layers go when num_hidden_layers shrinks without --prune.drop-layers."""
        k = config.num_hidden_layers - sizes["num_hidden_layers"]
        if self.drop_layers is not None or k == 0:
            return ScoreNeeds((self.criterion,))
        block = self.layer_criterion == "block" and k > 1  # the removal losses of blocks of k only
        return ScoreNeeds((self.criterion,) + (("random",) if self.layer_criterion == "random" else ()),
                          layer_loss=self.layer_criterion in ("block", "loss") and not block,
                          block_sizes=(k,) if block else (), keys=(layer_key(self.layer_criterion, k),))


@dataclass(frozen=True)
class ScoreNeeds:
    """What `minitron score` must compute for a pruning: width criteria, the removal losses of single layers
    (`layer_loss`) and of blocks of `block_sizes` layers, and the layer tensors the plan reads (a given --scores must
    hold them)."""

    criteria: tuple[str, ...]
    layer_loss: bool = False
    block_sizes: tuple[int, ...] = ()
    keys: tuple[str, ...] = ()

    def __or__(self, other: "ScoreNeeds") -> "ScoreNeeds":
        """What both prunings need (the search's candidates, each with its own depth)."""
        return ScoreNeeds(tuple(dict.fromkeys(self.criteria + other.criteria)), self.layer_loss or other.layer_loss,
                          tuple(sorted({*self.block_sizes, *other.block_sizes})), tuple(sorted({*self.keys, *other.keys})))

    @property
    def removal(self) -> list[int]:
        """Every block length whose removal losses are computed (1: single layers)."""
        return removal_sizes(self.layer_loss, self.block_sizes)

    def reads_text(self, data) -> bool:
        """Whether computing these scores reads calibration text: data is given, or they do not read the weights alone
        (width criteria of the weights, magnitude and random, and no layer scores but random ones: no layers go,
        --prune.drop-layers says which, or random scores choose them; `importance.scores.reads_text`)."""
        return reads_text(self.criteria, self.removal, data, self.keys)


def check_layers(layers: list[int], num_layers: int | None) -> list[int]:
    """Explicit layers to remove: whole numbers, each once, of the model's layers, not all of them."""
    if not isinstance(layers, list) or not all(type(i) is int for i in layers):
        raise MinitronError(f"--prune.drop-layers takes layer numbers and ranges like 16-23 or 3 7 9, not {layers!r}")
    if not layers:
        raise MinitronError("--prune.drop-layers names no layers")
    if len(set(layers)) != len(layers):
        raise MinitronError(f"--prune.drop-layers names a layer twice: {layers}")
    if num_layers is not None:
        bad = sorted(i for i in layers if not 0 <= i < num_layers)
        if bad:
            raise MinitronError(f"--prune.drop-layers names layer(s) {bad} but the model has layers 0-{num_layers - 1}")
        if len(layers) >= num_layers:
            raise MinitronError(f"--prune.drop-layers would remove all {num_layers} layers; keep at least one")
    return sorted(layers)


def dashed(name: str) -> str:
    return name.replace("_", "-")

