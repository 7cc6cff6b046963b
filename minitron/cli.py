"""Command line: every command is a typed library function (or takes one config dataclass); jsonargparse turns
its signature into flags, --help (from the docstring, or the dataclass's field docstrings), YAML configs and
--print-config. Nested configs work: `compress --distill.lr 3e-4`, or a `distill:` section in the YAML.

    minitron prune --model default --target hidden_size=384,intermediate_size=1024 --out runs/p
    minitron prune --config prune.yaml            # keys are the function's parameter names
    minitron prune ... --print-config > p.yaml    # a complete YAML that runs the same job
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from minitron import __version__
from minitron.errors import Interrupted, MinitronError, missing_extra
from minitron.signals import Terminated, interrupts, starting
from minitron.io import SafetensorError, disk_problem

# command -> ("module:function" it runs, one-line summary). Only the module of the command being run is imported,
# so `minitron --help` starts fast and torch is imported only when a command runs.
COMMANDS = {
    "compress": ("minitron.pipeline:compress", "score, prune, distil, evaluate and report, in one go"),
    "data": ("minitron.data:build_data", "tokenise text into train/validation token shards"),
    "score": ("minitron.importance:score", "importance of hidden channels, heads, MLP neurons and layers"),
    "prune": ("minitron.prune:prune", "prune a model to a target size (or --dry-run the arithmetic)"),
    "search": ("minitron.search:search", "search the best student shape under a parameter budget"),
    "distill": ("minitron.distill:distill", "distil a teacher into a student (1 or N processes)"),
    "correct": ("minitron.correct:correct", "fine-tune a teacher briefly on the distillation data (teacher correction)"),
    "eval": ("minitron.eval:evaluate", "validation loss, perplexity and generation speed"),
    "chat": ("minitron.chat.cli:chat", "chat with a model in its own format, with tools"),
    "generate": ("minitron.chat.cli:generate", "reply to one prompt or a JSONL batch"),
    "export": ("minitron.export:export", "write a model as a GGUF file (llama.cpp, Ollama, LM Studio)"),
}
set_parsing_settings(docstring_parse_attribute_docstrings=True)  # TrainConfig's field docstrings are its help


def load_command(name: str) -> Callable:
    module, func = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), func)


def config_class(fn: Callable) -> type | None:
    """The dataclass of a command that takes one config object (`distill(cfg: TrainConfig)`)."""
    params = list(inspect.signature(fn).parameters)
    cls = typing.get_type_hints(fn).get(params[0]) if len(params) == 1 else None
    return cls if dataclasses.is_dataclass(cls) else None


def command_parser(name: str, fn: Callable) -> ArgumentParser:
    """Flags of one command from its function's signature (or its config dataclass's fields): jsonargparse's
    public API only. Flags are the parameter names, as in YAML (`--seq_len`, `--distill.lr`); `spelling` lets a
    user type them with dashes too."""
    cls = config_class(fn)
    doc = inspect.getdoc(cls or fn) or ""
    p = ArgumentParser(prog=f"minitron {name}", description=doc.split("\n\nArgs:")[0], exit_on_error=False,
                       print_config="--print-config", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="--debug shows the full traceback of an error. Flags may be spelt with dashes "
                              "(--seq-len for --seq_len). Booleans: --flag, --no-flag or --flag true|false. Lists: "
                              "space-separated items or [a, b]. Mappings: NAME=VALUE,... or {name: value}. Nested "
                              "settings: --section.name, or a section in the YAML.")
    p.add_argument("--config", action=ActionConfigFile, help="YAML file of parameter values (later flags override it)")
    if cls is not None:
        p.add_class_arguments(cls, as_group=False)
    else:
        p.add_function_arguments(fn, as_group=False)
    return p


def hints(fn: Callable) -> dict[str, Any]:
    """Every flag of a command (dotted for nested config dataclasses) and its type hint, from the function's own
    signature: what `spelling` needs to know of the flags, without asking the parser."""
    cls = config_class(fn)
    out: dict[str, Any] = {}

    def walk(prefix: str, types: dict[str, Any]) -> None:
        for name, hint in types.items():
            if dataclasses.is_dataclass(hint):
                walk(f"{prefix}{name}.", typing.get_type_hints(hint))
            out[prefix + name] = hint

    walk("", typing.get_type_hints(cls) if cls is not None else
         {k: v for k, v in typing.get_type_hints(fn).items() if k != "return"})
    return out


def parse_mapping(text: str) -> dict[str, int]:
    """`hidden_size=4096,intermediate_size=11520` -> {"hidden_size": 4096, ...}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise MinitronError(f"expected NAME=VALUE, got {item!r}")
        if key.strip() in out:
            raise MinitronError(f"{key.strip()} is given twice in {text!r}; give each size once")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise MinitronError(f"{key.strip()} must be a whole number, got {value!r}") from None
    return out


def _kind(hint) -> str | None:
    """bool, list or dict: the types whose command-line forms jsonargparse spells differently."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if optional else [hint]
    if args == [bool]:
        return "bool"
    origin = typing.get_origin(args[0]) if len(args) == 1 else None
    return {list: "list", dict: "dict"}.get(origin)


def _items(text: str, hint) -> list:
    """One space-separated list item as list elements: a number where the list holds numbers, and for whole
    numbers also ranges and commas (`16-23,3` -> 16, ..., 23, 3, as in --prune.drop-layers)."""
    elem = next((typing.get_args(a)[0] for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is list), str)
    if elem is int and re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
        out = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            if hi and int(hi) < int(lo):
                raise MinitronError(f"{part!r} is backwards; write {hi}-{lo}")
            out += range(int(lo), int(hi or lo) + 1)
        return out
    try:
        return [elem(text) if elem in (int, float) else text]
    except ValueError:
        return [text]  # jsonargparse names the bad value


def spelling(args: list[str], known: dict[str, Any]) -> list[str]:
    """The command line in jsonargparse's spelling: flags with dashes as their parameter names (`--seq-len` ->
    `--seq_len`), a bare `--flag` / `--no-flag` for booleans, space-separated lists (`--source a b`,
    `--layer-pairs 3:6 7:14`) and NAME=VALUE mappings (`--target hidden_size=384,intermediate_size=1024`).
    Everything else passes through unchanged."""
    out, i = [], 0
    while i < len(args):
        arg, i = args[i], i + 1
        flag, eq, value = arg.partition("=")
        name = flag[2:].replace("-", "_") if flag.startswith("--") else None
        negated = name[3:] if name and name.startswith("no_") and name not in known else None
        if name not in known and negated not in known:
            out.append(arg)
            continue
        kind, hint = _kind(known[negated or name]), known[negated or name]
        flag = f"--{negated or name}"
        given = not eq and i < len(args) and not args[i].startswith("--")
        if eq:
            out.append(f"{flag}={value}")
        elif negated is not None and kind == "bool":
            out.append(f"{flag}=false")
        elif kind == "bool" and not given:
            out.append(f"{flag}=true")
        elif kind == "list" and given and not args[i].lstrip().startswith("["):
            items = []
            while i < len(args) and not args[i].startswith("--"):
                items += _items(args[i], hint)
                i += 1
            out += [flag, json.dumps(items)]
        elif kind == "dict" and given and not args[i].strip():  # `--target ""`: an empty mapping, refused later
            out += [flag, "{}"]
            i += 1
        elif kind == "dict" and given and "=" in args[i] and not args[i].lstrip().startswith("{"):
            out += [flag, json.dumps(parse_mapping(args[i]))]
            i += 1
        else:
            out.append(flag)
    return out


def top_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="minitron", exit_on_error=False, description="Prune and distil Hugging Face "
                            "LLMs (the Minitron recipe). `minitron COMMAND --help` for each command.")
    parser.add_argument("--version", action="version", version=f"minitron {__version__}")
    sub = parser.add_subcommands(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub.add_subcommand(name, ArgumentParser(prog=f"minitron {name}"), help=summary)
    return parser


def parse(argv: list[str]) -> tuple[Callable, dict[str, Any]]:
    """The function a command line runs and its keyword arguments (config dataclasses built)."""
    if not argv or argv[0] not in COMMANDS:
        top_parser().parse_args(argv)  # --help, --version, or a usage error
        raise argparse.ArgumentError(None, "expected a command")
    fn = load_command(argv[0])
    parser = command_parser(argv[0], fn)
    args = [a for a in argv[1:] if a != "--debug"]  # read by `main`, kept out of the printed config
    check_config_files(args)
    values = parser.instantiate(parser.parse_args(spelling(args, {**hints(fn), "help": None}))).as_dict()
    values.pop("config", None), values.pop("__path__", None)
    cls = config_class(fn)
    if cls is not None:
        return fn, {next(iter(inspect.signature(fn).parameters)): cls(**values)}
    return fn, values


def check_config_files(args: list[str]) -> None:
    """Each --config FILE that exists must be UTF-8 text (jsonargparse would fail with a traceback); a missing one
    is left to jsonargparse, which names it."""
    files = [v for flag, v in zip(args, args[1:]) if flag == "--config"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for name in files:
        try:
            raw = Path(name).read_bytes()
        except OSError:
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MinitronError(f"--config {name} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start:,}); "
                                "save it as UTF-8") from None


def run(argv: list[str] | None = None) -> Any:
    """Parse `argv` and call the command's function; errors propagate."""
    fn, kwargs = parse(sys.argv[1:] if argv is None else argv)
    return fn(**kwargs)


def one_line(message: str) -> str:
    """jsonargparse's usage error (several lines for a bad value) on one line."""
    return " ".join(message.split())


def quiet_transformers() -> None:
    """minitron shows its own progress; transformers' per-file bars and advice would bury it."""
    from transformers.utils import logging  # only when a command runs (start-up speed of --help)

    logging.disable_progress_bar()
    logging.set_verbosity_error()


class LineTracker:
    """sys.stderr, remembering whether the last thing written ended its line: a progress bar leaves the cursor
    after its text, and an error must not be glued to it."""

    def __init__(self, stream):
        self.stream, self.at_line_start = stream, True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self.stream.write(text)

    def fresh_line(self) -> None:
        if not self.at_line_start:
            self.write("\n")

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    stderr = sys.stderr
    sys.stderr = LineTracker(stderr)
    try:
        with interrupts():
            code = _run_reporting(argv)
    finally:
        sys.stderr = stderr
    if code:
        sys.exit(code)


def _run_reporting(argv: list[str]) -> int:
    """Run the command line; an error is one line on stderr, on a line of its own, and an exit code."""
    debug = "--debug" in argv
    prog = f"minitron {argv[0]}" if argv and argv[0] in COMMANDS else "minitron"
    try:
        with starting():  # the command's module and torch load here: a signal exits at once
            fn, kwargs = parse(argv)
            quiet_transformers()
        fn(**kwargs)
        return 0
    except argparse.ArgumentError as e:
        if debug:
            raise
        return _error(f"{prog}: error: {one_line(e.message)} (see {prog} --help)", 2)
    except Interrupted as e:  # stopped by a signal, after saving its state
        return _error(f"minitron: {e}", e.exit_code)
    except MinitronError as e:
        if debug:
            raise
        return _error(f"minitron: error: {e}", 1)
    except ImportError as e:  # an optional package a command needs (`pip install 'minitron[EXTRA]'`)
        if debug or missing_extra(e) is None:
            raise
        return _error(f"minitron: error: {missing_extra(e)}", 1)
    except (OSError, SafetensorError) as e:  # outside an atomic output (which says more itself)
        if debug:
            raise
        problem, name = disk_problem(e), getattr(e, "filename", None)
        if problem:
            return _error(f"minitron: error: {problem}{f' writing {name}' if name else ''}; free some disk space and "
                          "run again (nothing already written was lost)", 1)
        return _error(f"minitron: error: {e}", 1)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        return _error(f"minitron: {'terminated' if terminated else 'interrupted'}; nothing half-written was left",
                      143 if terminated else 130)


def _error(line: str, code: int) -> int:
    getattr(sys.stderr, "fresh_line", lambda: None)()  # another stream may have been swapped in meanwhile
    print(line, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    main()
