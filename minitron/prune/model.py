"""`minitron.prune(model, scores, target)`: a model pruned in memory, nothing written (the package is callable:
`minitron.callable`). The same plan and slicing as `minitron prune`: `make_plan` then `apply_plan`."""
from __future__ import annotations

import copy

from minitron.arch import count_params
from minitron.errors import MinitronError
from minitron.importance import Scores
from minitron.importance.model import is_spec
from minitron.load import load_model
from minitron.prune.config import PruneConfig
from minitron.prune.plan import apply_plan, check_target, make_plan, params_of, target_config


def prune_model(model, scores, target=None, config=None, *, inplace: bool = False):
    """`model` pruned to `target` by `scores` (a `Scores` from `minitron.score`, or a directory `minitron score`
    saved) -> the pruned `PreTrainedModel`, in memory; nothing is written.

    `target`: any of hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, num_hidden_layers (the
    rest stay the teacher's; a mixture of experts: num_experts, and its family's name for each expert's neurons,
    `arch.prunable_sizes`), or a `PruneConfig` in its place when --prune.drop-layers says which layers go; `config`:
    how units are ranked (`PruneConfig`, default the papers'). A copy is pruned unless `inplace` (then `model` itself
    is sliced, as gpt-fast's tp.py does, and returned). `model` may also be a path, a Hub id or 'default'."""
    if isinstance(target, PruneConfig):
        if config is not None:
            raise MinitronError("give the PruneConfig once: as the target (with drop_layers) or as config")
        target, config = None, target
    if is_spec(model):
        model, inplace = load_model(model), True
    config = (config or PruneConfig()).validate(model.config)
    if is_spec(scores):
        scores = Scores.load(scores)
    if not isinstance(scores, Scores):
        raise MinitronError(f"scores must be minitron.score(...)'s result or a directory it was saved to, not "
                            f"{type(scores).__name__}")
    scores.check_model(model.config, scores.meta.get("fingerprint"), "the scores given")
    sizes = check_target(model.config, target or {}, config.drop_layers)
    expected = params_of(target_config(model.config, sizes, config.drop_layers))
    plan = make_plan(scores, model.config, sizes, config)  # before any copy: a refusal costs nothing
    student = model if inplace else copy.deepcopy(model)
    apply_plan(student, plan)
    got = count_params(student)
    if got != expected:
        raise RuntimeError(f"internal error: the pruned model has {got:,} parameters, expected {expected:,}")
    return student
