"""Importance of hidden channels, attention heads, MLP neurons and layers.

Activation importance (the Minitron papers) from forward hooks, peer criteria for comparison (random,
weight magnitude, first-order Taylor, structured Wanda), and for layers Block Influence (1 - cos(input,
output)) and the LM-loss increase when a layer, or a contiguous block of k layers, is removed.

Modules, top-down: `stats` (hooks -> fp32 statistics) and `weights` (weight criteria) feed `walk` (the one
driver over the layers, resident or streamed), which fills a `scores.Scores` record; `command` is
`minitron score`.
"""
from minitron.importance.command import calibration, score
from minitron.importance.scores import (DEFAULT_CRITERIA, HEAD_SCORE, HIDDEN_SCORE, WIDTH_CRITERIA, Agg, Criterion,
                                        HeadScore, HiddenScore, Scores)
from minitron.importance.stats import AGGREGATIONS, seq_reduce
from minitron.importance.walk import compute_scores
from minitron.importance.weights import coupled_scores, random_scores

__all__ = ["AGGREGATIONS", "DEFAULT_CRITERIA", "HEAD_SCORE", "HIDDEN_SCORE", "WIDTH_CRITERIA", "Agg", "Criterion",
           "HeadScore", "HiddenScore", "Scores", "calibration", "compute_scores", "coupled_scores", "random_scores", "score", "seq_reduce"]
