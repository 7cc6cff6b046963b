"""Command line: each subcommand is a typed library function; flags, --help and YAML configs
come from its signature and docstring.

    minitron prune --model default --target hidden_size=384,intermediate_size=1024 --out runs/p
    minitron prune --config prune.yaml          # keys are the function's parameter names
"""
from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin

from minitron.errors import MinitronError

# subcommand -> ("module:function" of the library function it wraps, one-line summary). Only the module
# of the command being run is imported.
COMMANDS = {
    "compress": ("minitron.pipeline:compress", "score, prune, distil, evaluate and report, in one go"),
    "data": ("minitron.data:build_data", "tokenise text into train/validation token shards"),
    "score": ("minitron.importance:score", "importance of hidden channels, heads, MLP neurons and layers"),
    "prune": ("minitron.prune:prune", "prune a model to a target size (or --dry-run the arithmetic)"),
    "distill": ("minitron.distill.config:TrainConfig", "distil a teacher into a student (1 or N processes)"),
    "eval": ("minitron.eval:evaluate", "validation loss, perplexity and generation speed"),
    "chat": ("minitron.chat.cli:chat", "chat with a model in its own format, with tools"),
    "generate": ("minitron.chat.cli:generate", "reply to one prompt or a JSONL batch"),
}


def parse_mapping(text: str) -> dict[str, int]:
    """`hidden_size=4096,intermediate_size=11520` -> {"hidden_size": 4096, ...}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key.strip()} must be a whole number, got {value!r}") from None
    return out


def _strip_optional(tp: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _arg_options(tp: Any) -> dict[str, Any]:
    """argparse keyword arguments for one annotated parameter."""
    tp = _strip_optional(tp)
    origin = get_origin(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        choices = get_args(tp)
        return {"choices": choices, "type": type(choices[0])}
    if origin is dict:
        return {"type": parse_mapping, "metavar": "NAME=VALUE,..."}
    if origin in (list, tuple):
        return {"type": _strip_optional(get_args(tp)[0]), "nargs": "+"}
    if tp in (int, float, str, Path):
        return {"type": tp}
    raise TypeError(f"unsupported parameter type {tp!r}")


def _docstring(fn: Callable) -> tuple[str, dict[str, str]]:
    """Summary and per-argument help from a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    summary, _, rest = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    name = None
    for line in rest.splitlines():
        if line.startswith("    ") and not line.startswith("     ") and ":" in line:
            name, _, text = line.strip().partition(":")
            helps[name] = text.strip()
        elif name and line.strip():
            helps[name] += " " + line.strip()
        elif not line.strip():
            name = None
    return summary.strip(), helps


def add_arguments(p: argparse.ArgumentParser, fn: Callable) -> None:
    """Flags of one command from its function's signature and docstring."""
    summary, helps = _docstring(fn)
    p.description = summary
    p.add_argument("--config", type=Path, help="YAML file of parameter values (flags override it)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    hints = typing.get_type_hints(fn)
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        opts = _arg_options(hints[pname])
        flag = "--" + pname.replace("_", "-")
        default = None if param.default is inspect.Parameter.empty else param.default
        help_text = helps.get(pname, "")
        if param.default is inspect.Parameter.empty:
            help_text += " (required)"
        elif default is not None and opts.get("action") is not argparse.BooleanOptionalAction:
            help_text += f" (default: {default})"
        p.add_argument(flag, dest=pname, default=argparse.SUPPRESS, help=help_text.strip(), **opts)
    p.set_defaults(_fn=fn)


def _load_config(path: Path, fn: Callable) -> dict[str, Any]:
    import yaml
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise MinitronError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise MinitronError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise MinitronError(f"config file {path} must be a mapping of parameter names to values")
    names = set(inspect.signature(fn).parameters)
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise MinitronError(f"config file {path}: unknown parameter(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(names))}")
    return values


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Every command listed; the flags of the one named in `argv` (importing only its module)."""
    parser = Parser(prog="minitron", description="Prune and distil Hugging Face LLMs "
                                     "(the Minitron recipe). `minitron COMMAND --help` for each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (target, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            module, func = target.split(":")
            add_arguments(p, getattr(importlib.import_module(module), func))
    return parser


def run(argv: list[str] | None = None) -> Any:
    """Parse `argv` and call the subcommand's function; errors propagate."""
    argv = sys.argv[1:] if argv is None else argv
    args = vars(build_parser(argv).parse_args(argv))
    fn, config = args.pop("_fn"), args.pop("config")
    args.pop("command"), args.pop("debug")
    kwargs = _load_config(config, fn) if config else {}
    kwargs.update(args)
    missing = [n for n, p in inspect.signature(fn).parameters.items()
               if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise MinitronError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    if fn.__name__ == "TrainConfig":
        from minitron.distill import distill
        return distill(fn(**kwargs))
    return fn(**kwargs)


def quiet_transformers() -> None:
    """minitron shows its own progress; transformers' per-file bars and advice would bury it."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    quiet_transformers()
    try:
        run(argv)
    except MinitronError as e:
        if debug:
            raise
        print(f"minitron: error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if debug:
            raise
        if e.errno == errno.ENOSPC:
            print(f"minitron: error: no space left on device{f' writing {e.filename}' if e.filename else ''}; "
                  "free some disk space and run again (nothing already written was lost)", file=sys.stderr)
        else:
            print(f"minitron: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("minitron: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
