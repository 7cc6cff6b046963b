"""Importance of hidden channels, attention heads, MLP neurons and layers.

Activation importance (the Minitron papers) from forward hooks, peer criteria for comparison (random,
weight magnitude, first-order Taylor, structured Wanda), and for layers Block Influence (1 - cos(input,
output)) and the LM-loss increase when a layer, or a contiguous block of k layers, is removed.

Modules, top-down: `stats` (hooks -> fp32 statistics) and `weights` (weight criteria) feed `walk` (the one
driver over the layers, resident or streamed), which fills a `scores.Scores` record; `command` is
`minitron score`, `model` its library form on a model in memory (`minitron.score`).
"""
from minitron.importance.command import CALIB_SEED, CALIB_SEQS, ComputeDtype, calibration, score
from minitron.importance.model import score_model
from minitron.importance.scores import (DEFAULT_CRITERIA, WIDTH_CRITERIA, Agg, Criterion, HeadScore, HiddenScore,
                                        LayerCriterion, Scores, layer_key, loss_key)
from minitron.importance.stats import AGGREGATIONS
from minitron.importance.walk import compute_scores
from minitron.importance.weights import coupled_scores, random_scores

__all__ = ["AGGREGATIONS", "CALIB_SEED", "CALIB_SEQS", "ComputeDtype", "DEFAULT_CRITERIA", "WIDTH_CRITERIA", "Agg", "Criterion", "HeadScore", "HiddenScore",
           "LayerCriterion", "Scores", "calibration", "compute_scores", "coupled_scores", "layer_key", "loss_key",
           "random_scores", "score", "score_model"]
