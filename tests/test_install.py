"""The install: hard dependencies are the few every command needs; every other package is an extra, and a command
that needs a missing one says which extra in one line. Checked in a fresh interpreter that cannot import any
optional package (nor accelerate)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from minitron.errors import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
HARD = {"torch", "transformers", "safetensors", "huggingface_hub", "jsonargparse", "numpy", "tqdm", "pyyaml", "jinja2"}

BLOCK = '''
import importlib.abc, importlib.util, sys
BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):  # an import of a blocked package fails as a missing one does
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
_find = importlib.util.find_spec  # and availability checks (transformers') see it missing
importlib.util.find_spec = lambda name, package=None: None if name.split(".")[0] in BLOCKED else _find(name, package)
from minitron.cli import main
for argv in sys.argv[2:]:
    try:
        main(argv.split("|"))
    except SystemExit as e:
        print("exit", e.code, flush=True)
'''


def name_of(requirement: str) -> str:
    return requirement.split("[")[0].split(">")[0].split("=")[0].strip().lower().replace("-", "_")


def test_hard_dependencies_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {name_of(r) for r in project["dependencies"]} == HARD
    extras = project["optional-dependencies"]
    for module, (extra, _) in EXTRAS.items():
        assert extra in extras and f"minitron[" in extras["all"][0] and extra in extras["all"][0], (module, extra)
    assert "accelerate" not in str(project)
    assert "'.[all,dev]'" in (ROOT / "Makefile").read_text()  # `make` installs every extra


def test_commands_run_without_extras_and_name_the_missing_one(tmp_path, tiny_dir, tiny_data):
    out = tmp_path / "pruned"
    commands = [f"prune|--model|{tiny_dir}|--data|{tiny_data}|--target|intermediate_size=48|--out|{out}|"
                "--prune.calib-seqs|4|--prune.seq-len|32",
                f"export|--model|{out}|--out|{tmp_path / 'm.gguf'}",
                f"distill|--student|{out}|--data|{tiny_data}|--out|{tmp_path / 'run'}|--tokens|256|--seq-len|32|"
                "--micro-batch|2|--global-batch-tokens|64|--lora-rank|4|--device|cpu"]
    blocked = ",".join([*EXTRAS, "accelerate"])
    done = subprocess.run([sys.executable, "-c", BLOCK, blocked, *commands], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert (out / "model.safetensors").is_file(), done.stderr[-2000:]  # prune needs no extra
    assert done.stdout.count("exit 1") == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("minitron: error:")]
    assert len(errors) == 2
    assert "needs gguf, which is not installed: pip install 'minitron[gguf]'" in errors[0]
    assert "needs peft, which is not installed: pip install 'minitron[lora]'" in errors[1]
    assert not (tmp_path / "m.gguf").exists()
