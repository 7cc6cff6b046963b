"""The one exception type that the command line turns into a single clear line, that line for an optional
package that is not installed (`require`), and the refusals that several front doors share (`whole_number`,
`real_number`, `refuse_marked`)."""
import math
from dataclasses import fields
from typing import Callable


class MinitronError(Exception):
    """Bad input or an impossible request: the message names the problem and what to do."""


class Interrupted(MinitronError):
    """A run stopped by a signal (SIGINT, SIGTERM) after saving what it needs to resume; the command exits with
    128 + the signal's number, as a shell reports a process that a signal stopped."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def whole_number(value, what: str, low: int = 1):
    """`value` if it is a whole number of at least `low` (not a bool: a YAML config can hold anything), else the one
    line naming `what` (a flag or a file's field)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        rule = {0: "a whole number, 0 or more", 1: "a positive whole number"}.get(low,
                                                                                  f"a whole number, at least {low}")
        raise MinitronError(f"{what} must be {rule}, not {value!r}")
    return value


def real_number(value, what: str, ok: Callable[[float], bool] = lambda v: True, rule: str = "a number"):
    """`value` if it is a finite number (int or float, not a bool) for which `ok` holds, else the one line naming
    `what` and the `rule` it breaks."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise MinitronError(f"{what} must be {rule}, not {value!r}")
    return value


def refuse_marked(cfg, marker: str, command: str, section: str, hint: str) -> None:
    """Refuse a section of a config (`cfg`, a dataclass whose fields all have defaults) that sets a field marked
    `marker` where it is declared: `command` decides those fields itself, and one set in its `section` would be
    silently overridden. `hint` says what the section is for."""
    default = type(cfg)()
    for f in fields(cfg):
        if f.metadata.get(marker) and getattr(cfg, f.name) != getattr(default, f.name):
            raise MinitronError(f"{command} sets {section}.{f.name} itself; leave it out of the {section} section "
                                f"({hint})")


EXTRAS = {  # an optional package (its import name): the extra of minitron that installs it, and what needs it
    "matplotlib": ("plots", "the report's and the search's plots"),
    "gguf": ("gguf", "GGUF export and .gguf teachers"),
    "datasets": ("datasets", "a saved Hugging Face dataset as --source"),
    "peft": ("lora", "LoRA (--lora-rank)"),
    "mistral_common": ("mistral", "the Mistral (Tekken) chat format"),
    "lm_eval": ("tasks", "benchmark tasks (--tasks)"),
    "tensorboard": ("tensorboard", "--report-to tensorboard"),
    "wandb": ("wandb", "--report-to wandb"),
    "rdata": ("corpus", "the prose corpus (R data)"),
}


def missing_extra(error: ImportError) -> MinitronError | None:
    """The one-line error for an optional package that is not installed, naming the extra that installs it; None
    for any other import error."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in EXTRAS:
        return None
    extra, what = EXTRAS[name]
    return MinitronError(f"{what} needs {name}, which is not installed: pip install 'minitron[{extra}]' (`make` "
                         "installs every extra)")


def require(module: str):
    """Import an optional package, or raise `missing_extra`'s one line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise (missing_extra(e) or e) from None


def pyplot():
    """matplotlib's pyplot, drawing to files only (the Agg backend); an optional package (`require`)."""
    require("matplotlib").use("Agg")
    return require("matplotlib.pyplot")
