"""minitron: prune and distil Hugging Face LLMs the way NVIDIA made the Minitron models.

The whole recipe is `minitron.compress(...)`. On models in memory (docs/api.md):

    teacher = minitron.load_model("default")
    scores = minitron.score(teacher, data)                       # -> Scores
    student = minitron.prune(teacher, scores, {"intermediate_size": 768})   # -> a pruned copy, nothing written
    minitron.distill(teacher, student, data, minitron.TrainConfig(out="runs/nb", tokens=100_000))

and `minitron.build_data`, `minitron.evaluate`, `minitron.search` as the commands of the same names.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {  # name: the module it lives in (imported on first use, so `import minitron` stays cheap)
    "compress": "minitron.pipeline",
    "score": "minitron.importance.model:score_model",
    "prune": None,  # the package minitron.prune, callable: minitron.prune.model.prune_model
    "distill": None,  # the package minitron.distill, callable: minitron.distill.model.distill_models
    "evaluate": "minitron.eval",
    "measure": "minitron.eval",  # loss (and KL to a teacher) of models in memory on held-out windows
    "TokenData": "minitron.data",
    "default_data": "minitron.data",
    "build_data": "minitron.data",
    "search": "minitron.search",
    "load_model": "minitron.load",
    "load_tokenizer": "minitron.load",
    "Scores": "minitron.importance",
    "PruneConfig": "minitron.prune",
    "TrainConfig": "minitron.distill",
    "EvalConfig": "minitron.eval",
    "DistillResult": "minitron.distill",
    "MinitronError": "minitron.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minitron' has no attribute {name!r}")
    if _EXPORTS[name] is None:
        return importlib.import_module(f"minitron.{name}")
    module, _, attr = _EXPORTS[name].partition(":")
    return getattr(importlib.import_module(module), attr or name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
