"""Two CPU processes on gloo (torchrun + FSDP2): the same losses and weights as one process, and sharded checkpoints
(torch.distributed.checkpoint) that move between 1 and 2 processes."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_data, save_tiny
from safetensors.torch import load_file

from minitron.cli import main

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import sys
from minitron.cli import main
args = sys.argv[1:]
cut = args.index("--then")
main(args[:cut])  # a fresh run, then a resumed one in the same processes (the group is reused)
main(args[cut + 1:])
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # torchrun gives each worker one thread too


def _args(tmp, out, *extra):
    return ["distill", "--teacher", str(tmp / "teacher"), "--student", str(tmp / "student"),
            "--data", str(tmp / "data"), "--out", str(out), "--tokens", str(4 * 256), "--seq-len", "32",
            "--micro-batch", "2", "--global-batch-tokens", "256", "--eval-seqs", "4", "--eval-every", "2",
            "--save-every", "2", "--lr", "1e-3", "--hidden-loss", "cosine", "--layer-pairs", "1:3", *extra]


def _rewind(src: Path, dst: Path) -> Path:
    """A copy of a finished run as if it had been stopped right after its step-2 checkpoint."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "checkpoints" / "step-4")
    shutil.rmtree(dst / "student")
    return dst


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "student" / "model.safetensors"), load_file(b / "student" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=5e-6, msg=k)  # training moves them ~1e-3


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # (GPT-2's weights held transposed: `arch.held_layout`)
def test_two_processes_match_one_and_checkpoints_move(family, tmp_path):
    save_tiny(tmp_path / "teacher", family, seed=0)
    save_tiny(tmp_path / "student", family, seed=1, tie=True, num_hidden_layers=2, hidden_size=48,
              num_attention_heads=4)
    build_tiny_data(tmp_path, tmp_path / "teacher")
    one = tmp_path / "one"
    main(_args(tmp_path, one))
    from_one = _rewind(one, tmp_path / "from-one")

    two = tmp_path / "two"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), *_args(tmp_path, two), "--then", *_args(tmp_path, from_one, "--resume")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    # 2 processes train on the same global batches as 1: same losses, same weights
    m1, m2 = _metrics(one), _metrics(two)
    assert json.loads((two / "record.json").read_text())["distill"]["outputs"]["world_size"] == 2
    assert [m["step"] for m in m2] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm"):
        assert [m[key] for m in m2] == pytest.approx([m[key] for m in m1], rel=1e-4)
    assert [m["val_loss"] for m in m2 if "val_loss" in m] == pytest.approx(
        [m["val_loss"] for m in m1 if "val_loss" in m], rel=1e-4)
    _assert_same_weights(one, two)

    # each process wrote its own shards of the student and its AdamW state (torch.distributed.checkpoint)
    shards = {p.name: p.stat().st_size for p in (two / "checkpoints" / "step-4").glob("*.distcp")}
    assert sorted(shards) == ["__0_0.distcp", "__1_0.distcp"]
    assert max(shards.values()) < 0.6 * sum(shards.values()), shards
    assert [p.name for p in (one / "checkpoints" / "step-4").glob("*.distcp")] == ["__0_0.distcp"]

    # a 1-process checkpoint resumed on 2 processes, and a 2-process checkpoint resumed on 1
    assert [m["loss"] for m in _metrics(from_one)] == pytest.approx([m["loss"] for m in m1], rel=1e-4)
    _assert_same_weights(one, from_one)
    from_two = _rewind(two, tmp_path / "from-two")
    main(_args(tmp_path, from_two, "--resume"))
    _assert_same_weights(two, from_two)
    assert [m["loss"] for m in _metrics(from_two)] == pytest.approx([m["loss"] for m in m2], rel=1e-4)


def test_only_process_zero_reads_weights_and_its_failure_stops_all(tmp_path):
    """Process 0 alone reads the checkpoints (the others get their shards by broadcast): a corrupt teacher is
    reported once, by process 0, and every process exits instead of waiting for it."""
    save_tiny(tmp_path / "teacher", seed=0)
    save_tiny(tmp_path / "student", seed=1, num_hidden_layers=2)
    build_tiny_data(tmp_path, tmp_path / "teacher")
    weights = tmp_path / "teacher" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "minitron", *_args(tmp_path, tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("is truncated or corrupt") == 1, done.stderr[-3000:]
    assert "process 0 could not load" in done.stderr
    assert not (tmp_path / "out").exists()
