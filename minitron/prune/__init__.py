"""Pruning: its settings (`config`: PruneConfig), targets and plans (`plan`), in-place slicing of a model's modules
(`slicing`), the streamed writer for checkpoints larger than memory (`write`), the `minitron prune` command
(`command`), and `minitron.prune(model, scores, target)` on a model in memory (`model`; the package is callable)."""
from minitron.callable import make_callable
from minitron.prune.command import given_scores, needed_scores, prune
from minitron.prune.config import PruneConfig, ScoreNeeds, check_layers
from minitron.prune.plan import (EXPERT_WIDTH_MULTIPLE, Plan, apply_layer_plan, apply_plan, check_target,
                                 layers_to_drop, make_plan, params_of, select_heads, target_config)
from minitron.prune.model import prune_model
from minitron.prune.write import write_pruned

__all__ = ["EXPERT_WIDTH_MULTIPLE", "Plan", "PruneConfig", "ScoreNeeds", "apply_layer_plan", "apply_plan",
           "check_layers", "check_target", "layers_to_drop", "make_plan", "needed_scores", "params_of", "prune",
           "prune_model", "select_heads", "target_config", "write_pruned"]

make_callable(__name__, prune_model)  # `minitron.prune(model, scores, target)`: a model pruned in memory
