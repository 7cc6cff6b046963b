"""Packages that are also the function they are named after: `minitron.prune(model, scores, target)` prunes a model
in memory while `minitron.prune.PruneConfig` stays the package's; likewise `minitron.distill(...)` (docs/api.md)."""
from __future__ import annotations

import sys
import types
from typing import Callable


class CallableModule(types.ModuleType):
    """A module whose calls go to its `__call_target__`."""

    __call_target__: Callable

    def __call__(self, *args, **kwargs):
        return self.__call_target__(*args, **kwargs)


def make_callable(module_name: str, target: Callable) -> None:
    """Calls of the (already imported) module `module_name` run `target`, whose docstring becomes the help."""
    module = sys.modules[module_name]
    module.__class__ = CallableModule
    module.__call_target__ = target
