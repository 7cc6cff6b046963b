"""Pruning: targets and plans (`plan`), in-place slicing of a model's modules (`slicing`), the streamed
writer for checkpoints larger than memory (`write`), and the `minitron prune` command (`command`)."""
from minitron.prune.command import needed_scores, prune
from minitron.prune.plan import (LayerCriterion, Plan, apply_layer_plan, apply_plan, check_target, make_plan,
                                 params_of, parse_layers, select_heads, target_config)
from minitron.prune.write import write_pruned

__all__ = ["LayerCriterion", "Plan", "apply_layer_plan", "apply_plan", "check_target", "make_plan", "needed_scores",
           "params_of", "parse_layers", "prune", "select_heads", "target_config", "write_pruned"]
