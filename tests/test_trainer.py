"""The training loop: outputs, the loss it optimises, conventional training, exact resume after SIGKILL,
and bad input through the command line (a full disk and signals: test_reliability.py)."""
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_data, cli_error, save_tiny, tiny_config, tiny_tokenizer, write_corpus
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from transformers import AutoModelForCausalLM

from minitron.card import card_name
from minitron.cli import main
from minitron.data import SPLITS, TokenData, build_data
from minitron.distill import TrainConfig
from minitron.distill.config import DEFAULT_KD_LOSS
from minitron.distill.losses import ForwardKL, make_logit_loss
from minitron.lazy import reuse_freed_memory
from minitron.errors import MinitronError
from minitron.eval import EvalConfig, evaluate
from minitron.numerics import lm_loss

REPO = Path(__file__).resolve().parents[1]
# fp32: these tests hold the trainer's sums to fp32 references (bf16, the CPU default where it is native, has its own)
SMALL = ["--seq-len", "32", "--micro-batch", "2", "--global-batch-tokens", "128", "--eval-seqs", "4", "--precision",
         "fp32"]
STUDENT = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher, a narrower and shallower student, and token data with a loss mask."""
    tmp = tmp_path_factory.mktemp("world")
    teacher = save_tiny(tmp / "teacher", seed=0)
    student = save_tiny(tmp / "student", seed=1, **STUDENT)
    data = build_tiny_data(tmp, teacher)
    masked = tmp / "masked"
    shutil.copytree(data, masked)
    for split in SPLITS:  # chat-style data: train on two tokens of every three
        n = TokenData.open(data).num_tokens(split)
        (np.arange(n) % 3 != 0).astype(np.uint8).tofile(masked / f"{split}.mask.bin")
    return dict(teacher=str(teacher), student=str(student), data=str(data), masked=str(masked), tmp=tmp)


def distill_args(w, out, tokens, *extra, data="data"):
    return ["distill", "--teacher", w["teacher"], "--student", w["student"], "--data", w[data],
            "--tokens", str(tokens), "--out", str(out), *SMALL, *extra]


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def run_cli_error(argv, capsys) -> str:
    return cli_error(capsys, *argv)


def test_distill_outputs_and_masked_kd_loss(world, tmp_path):
    out = tmp_path / "run"
    main(distill_args(world, out, 6 * 128, "--eval-every", "2", "--save-every", "2", "--lr", "1e-3",
                      data="masked"))
    # layout: a stock-loadable student, the newest two checkpoints, one metrics line per step, the config
    student = AutoModelForCausalLM.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 2 and (out / "student" / "tokenizer.json").is_file()
    card = (out / "student" / "README.md").read_text()  # the model card: named after teacher and size, no temporary
    name = card_name(out / "student")
    assert "-minitron-" in name and "distilled" in card and f"\n{name} is a" in card and ".tmp" not in card
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert all({"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(m) for m in metrics)
    assert [m["step"] for m in metrics if "val_loss" in m] == [2, 4, 6]
    assert metrics[-1]["tokens"] == 6 * 128 and metrics[-1]["loss"] < metrics[0]["loss"]
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["loss"] == DEFAULT_KD_LOSS  # the default with a teacher, recorded by name
    ran = json.loads((out / "record.json").read_text())["distill"]
    assert ran["settings"]["loss"] == DEFAULT_KD_LOSS and ran["outputs"]["plan"]["n_micro"] == 2
    assert ran["outputs"]["plan"]["steps"] == ran["outputs"]["steps"] == 6

    # step 1's loss is the default loss with a teacher, averaged over the masked tokens of its two micro-batches
    data = TokenData.open(world["masked"])
    batches = [data.sample("train", 2, 32, seed=0, step=1, micro=m) for m in range(2)]
    ids = torch.cat([b["input_ids"] for b in batches])
    mask = torch.cat([b["loss_mask"] for b in batches])
    with torch.no_grad():
        t_logits = AutoModelForCausalLM.from_pretrained(world["teacher"])(ids[:, :-1]).logits
        s_logits = AutoModelForCausalLM.from_pretrained(world["student"])(ids[:, :-1]).logits
    want = make_logit_loss(DEFAULT_KD_LOSS)(s_logits, t_logits, ids[:, 1:], mask=mask).item()
    assert metrics[0]["loss"] == pytest.approx(want, rel=1e-5)

    # the trainer validates on windows spread over the dev split: the loss `minitron eval --split dev` measures on
    # the same windows
    dev = data.spread("dev", 4, 32).batch
    assert metrics[-1]["val_loss"] == pytest.approx(
        lm_loss(AutoModelForCausalLM.from_pretrained(out / "student"), [dev]), rel=1e-5)
    ev = evaluate(EvalConfig(model=str(out / "student"), data=world["masked"], split="dev", seq_len=32, tokens=4 * 32,
                             speed=False, ood=False))
    assert ev["dev"]["windows"] == 4 and ev["dev"]["tokens"] == int(dev["loss_mask"].sum())
    # (that eval's loss on masked windows equals this one: tests/test_eval.py, test_eval_on_masked_data_*)


def test_default_batch_and_learning_rate_follow_the_budget_and_the_width(world, tmp_path):
    """Unset, the batch leaves at least 64 steps (a power of two, one micro-batch to 16,384 tokens) and the peak
    learning rate is 1e-3 x 576 / hidden size, at most 1e-3; a run records them as numbers; set, they stay."""
    assert TrainConfig(tokens=65536).batch_tokens() == 1024  # 64 steps of 4 x 256
    assert TrainConfig(tokens=65536, seq_len=512).batch_tokens() == 2048  # one micro-batch of 4 x 512: 32 steps
    assert TrainConfig(tokens=204800).batch_tokens() == 2048
    assert TrainConfig(tokens=1_000_000).batch_tokens() == 8192
    assert TrainConfig(tokens=10**9).batch_tokens() == 16384
    assert TrainConfig(tokens=10**9, global_batch_tokens=4096).batch_tokens() == 4096
    wide, narrow = TrainConfig().resolved(4096), TrainConfig().resolved(384)
    assert (wide.lr, wide.min_lr) == (1.41e-4, pytest.approx(1.41e-5))  # three significant digits
    assert (narrow.lr, narrow.min_lr) == (1e-3, 1e-4)
    assert TrainConfig(lr=3e-4).resolved(576).min_lr == pytest.approx(3e-5)
    with pytest.raises(MinitronError, match="above the learning rate"):
        TrainConfig(min_lr=1e-2).resolved(576)
    out = tmp_path / "run"
    main(["distill", "--teacher", world["teacher"], "--student", world["student"], "--data", world["data"],
          "--tokens", str(64 * 64), "--out", str(out), "--seq-len", "32", "--micro-batch", "2", "--eval-seqs", "4",
          "--eval-every", "0", "--save-every", "0"])
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["global_batch_tokens"] == 64
    assert json.loads((out / "record.json").read_text())["distill"]["outputs"]["plan"]["steps"] == 64
    assert (saved["lr"], saved["min_lr"]) == (1e-3, 1e-4)  # hidden 48: capped at 1e-3


def test_conventional_training_from_random_init(world, tmp_path):
    out = tmp_path / "ce"
    main(["distill", "--student", world["student"], "--data", world["data"], "--tokens", str(30 * 128),
          "--out", str(out), "--init", "random", "--lr", "3e-3", "--eval-every", "0", "--save-every", "0",
          "--warmup-steps", "2", *SMALL])
    metrics = read_metrics(out)
    assert json.loads((out / "train_config.json").read_text())["loss"] == "ce"
    assert metrics[0]["loss"] == pytest.approx(np.log(256), abs=0.3)  # random init predicts ~uniformly
    assert np.mean([m["loss"] for m in metrics[-3:]]) < metrics[0]["loss"] - 1.0
    assert metrics[0]["lr"] == pytest.approx(1.5e-3)  # warm-up
    assert metrics[-1]["lr"] == pytest.approx(3e-4, rel=0.05)  # cosine decay to the default floor, lr / 10
    assert "val_loss" in metrics[-1] and sorted(os.listdir(out / "checkpoints")) == ["step-30"]


def _weights(path):
    return load_file(Path(path) / "model.safetensors")


def checkpoint_tensors(path: Path, tmp: Path) -> dict:
    """The whole model and optimiser state of a sharded checkpoint, flattened ("model.student...", "optim...")."""
    dcp_to_torch_save(path, tmp / "whole.pt")
    state = torch.load(tmp / "whole.pt", weights_only=False)
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat.update({f"optim.{fqn}.{k}": v for fqn, s in state["optim"]["state"].items() for k, v in s.items()})
    return flat


def test_resume_after_sigkill_is_exact(world, tmp_path):
    steps = 16
    extra = ["--save-every", "2", "--eval-every", "0", "--hidden-loss", "cosine", "--layer-pairs", "1:3",
             "--loss", "ce_kd", "--lr", "1e-3"]
    reference = tmp_path / "reference"
    main(distill_args(world, reference, steps * 128, *extra))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "minitron", *distill_args(world, out, steps * 128, *extra)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "student").exists(), "the run finished before it could be killed"
    done = len(read_metrics(out))
    assert 5 <= done < steps

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    a, b = _weights(out / "student"), _weights(reference / "student")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed student differs from the uninterrupted one"
    want = checkpoint_tensors(reference / "checkpoints" / f"step-{steps}", reference)
    got = checkpoint_tensors(out / "checkpoints" / f"step-{steps}", out)
    assert got.keys() == want.keys() and any(".projections." in k for k in got)  # projections, AdamW state too
    assert [k for k, v in want.items() if not torch.equal(got[k], v)] == []  # bitwise, AdamW's moments included
    got, want = read_metrics(out), read_metrics(reference)
    assert [m["step"] for m in got] == list(range(1, steps + 1))
    assert [m["loss"] for m in got] == [m["loss"] for m in want]


def test_full_disk_keeps_previous_checkpoint(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    argv = distill_args(world, out, 6 * 128, "--save-every", "2", "--eval-every", "0")
    real = FileSystemWriter.write_data

    def write_data(self, plan, planner):  # the shards of step 4 meet a full disk
        if "step-4" in str(self.path):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, plan, planner)

    monkeypatch.setattr(FileSystemWriter, "write_data", write_data)
    err = run_cli_error(argv, capsys)
    assert "no space left on device while saving checkpoint step-4" in err and "step-2 is intact" in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]  # no half-written step-4 left behind
    monkeypatch.setattr(FileSystemWriter, "write_data", real)
    main(argv + ["--resume"])
    assert [m["step"] for m in read_metrics(out)] == list(range(1, 7)) and (out / "student").is_dir()


def test_resume_refuses_other_batches(world, tmp_path, capsys):
    """A resume on a number of processes that would change a step's micro-batches is refused in one line (faked
    here by editing the checkpoint's count)."""
    out = tmp_path / "run"
    argv = distill_args(world, out, 2 * 128, "--save-every", "1", "--eval-every", "0")
    main(argv)
    shutil.rmtree(out / "student")
    state_file = out / "checkpoints" / "step-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["n_micro"] == 2 and state["world_size"] == 1
    state_file.write_text(json.dumps({**state, "n_micro": 3, "world_size": 3}))
    for dry_run in (["--dry-run"], []):  # the dry run refuses it as the resume does
        err = run_cli_error(argv + ["--resume", *dry_run], capsys)
        assert "its steps had 3 micro-batches, here a step would have 2" in err and "on 3 process(es)" in err
    state_file.write_text(json.dumps(state))
    main(argv + ["--resume"])
    assert (out / "student").is_dir() and len(read_metrics(out)) == 2


def test_dry_run_prints_the_plan_and_writes_nothing(world, tmp_path, capsys, monkeypatch):
    """--dry-run checks the inputs as a run does and prints its plan (the steps, batch and learning rate the run
    resolves, the models' parameters, where a resume starts) without loading a model or writing a file; a resume
    with other settings is refused there as the run itself refuses it."""
    import minitron.distill.loop as loop

    out = tmp_path / "run"
    argv = distill_args(world, out, 4 * 128, "--save-every", "2", "--eval-every", "0")
    build_models = loop.build_models
    monkeypatch.setattr(loop, "build_models", lambda *a, **k: pytest.fail("the dry run loaded a model"))
    main(argv + ["--dry-run"])
    printed = capsys.readouterr().out
    student = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(world["student"]).parameters())
    assert printed.startswith(f"--dry-run: the plan for {out} (nothing written)\n")
    assert f"student {world['student']}: {student:,} parameters, from its weights" in printed
    assert "4 steps of 128 tokens (2 micro-batches of 2 x 32 on 1 process(es)), 512 tokens in all; lr 0.001 to " \
           "0.0001" in printed and "logit forward KL(teacher‖student), in fp32" in printed
    assert "speed: activation checkpointing on, loss chunks of 512 tokens, layers not compiled" in printed  # the CPU's
    assert printed.rstrip().endswith("starts at step 0") and not out.exists()
    monkeypatch.setattr(loop, "build_models", build_models)
    main(argv)  # the run itself: checkpoints at steps 2 and 4
    plan = loop.distill(TrainConfig(teacher=world["teacher"], student=world["student"], data=world["data"], out=out,
                                    tokens=4 * 128, seq_len=32, micro_batch=2, global_batch_tokens=128, eval_seqs=4,
                                    precision="fp32", save_every=2, eval_every=0, resume=True, dry_run=True))
    assert plan["start"] == 4 and plan["plan"]["steps"] == 4 and plan["config"]["lr"] == 1e-3
    assert f"resumes from step 4 ({out / 'checkpoints' / 'step-4'})" in capsys.readouterr().out
    written = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    err = run_cli_error(argv + ["--resume", "--lr", "5e-4", "--dry-run"], capsys)
    assert "its distill ran with lr = 0.001, now 0.0005" in err
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == written  # nothing touched


def _other_tokenizer_data(world):
    other = world["tmp"] / "other-model"
    if not other.exists():
        save_tiny(other)
        tok = tiny_tokenizer()
        tok.add_tokens(["<extra>"])
        tok.save_pretrained(other)
        build_tiny_data(world["tmp"], other, name="other-data")
    return str(world["tmp"] / "other-data")


def _tiny_data_dir(world):
    d = world["tmp"] / "few-tokens"
    if not d.exists():  # six documents of four words: doc005 is dev, doc000 and doc003 test, three train
        build_data(source=[str(write_corpus(world["tmp"] / "few-tokens-text", docs=6, words=4))], out=d,
                   tokenizer=world["teacher"], glob="*.txt", dev_fraction=0.3, test_fraction=0.3)
    return str(d)


BAD = {
    "vocabulary": (lambda w: ["--teacher", str(save_tiny(w["tmp"] / "v200", vocab_size=200))],
                   "different vocabularies"),
    "tokenizer": (lambda w: ["--data", _other_tokenizer_data(w)], "made with another tokenizer"),
    "empty data": (lambda w: ["--data", str(Path(w["tmp"]).joinpath("empty").resolve())],
                   "not a minitron data directory"),
    "tiny data": (lambda w: ["--data", _tiny_data_dir(w), "--seq-len", "200", "--global-batch-tokens", "400"],
                  "one sequence of 201"),
    "budget": (lambda w: ["--tokens", "100"], "less than one optimiser step"),
    "student": (lambda w: ["--student", str(w["tmp"])], "no config.json"),
    "no teacher": (lambda w: ["--teacher", str(w["tmp"] / "missing")], "does not exist"),
    "kd without teacher": (lambda w: ["--loss", "jsd", "--init", "random"], None),
    "layer pair": (lambda w: ["--hidden-loss", "mse", "--layer-pairs", "5:1"], "out of range"),
    "temperature 0": (lambda w: ["--temperature", "0"], "--temperature must be"),
    "top-k 0": (lambda w: ["--loss", "topk_kl", "--top-k", "0"], "--top-k must be"),
    "jsd beta 2": (lambda w: ["--loss", "jsd", "--jsd-beta", "2"], "--jsd-beta must be"),
    "lr nan": (lambda w: ["--lr", "nan"], 'Parser key "lr"'),
    "lr -1": (lambda w: ["--lr", "-1"], "--lr must be"),
    "min lr above lr": (lambda w: ["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr must be"),
    "weight decay inf": (lambda w: ["--weight-decay", "inf"], 'Parser key "weight_decay"'),
    "grad clip -1": (lambda w: ["--grad-clip", "-1"], "--grad-clip must be"),
    "warmup -1": (lambda w: ["--warmup-steps", "-1"], "--warmup-steps must be"),
    "keep 0": (lambda w: ["--keep-checkpoints", "0"], "--keep-checkpoints must be"),
    "ce weight 2": (lambda w: ["--loss", "ce_kd", "--ce-weight", "2"], "--ce-weight must be"),
    "seq len above the model's": (lambda w: ["--seq-len", "300", "--micro-batch", "1", "--global-batch-tokens", "300"],
                                  "max_position_embeddings"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line(world, tmp_path, capsys, case):
    make, message = BAD[case]
    (Path(world["tmp"]) / "empty").mkdir(exist_ok=True)
    out = tmp_path / "out"
    argv = distill_args(world, out, 4 * 128) + make(world)
    if case == "kd without teacher":
        argv = [a for i, a in enumerate(argv) if a != "--teacher" and argv[i - 1] != "--teacher"]
        message = "needs a --teacher"
    err = run_cli_error(argv, capsys)
    assert message in err
    assert not out.exists()  # nothing written


def test_bad_values_in_a_library_call_or_yaml(world, tmp_path):
    """Values the CLI's types would catch, given to `distill` directly (or typed wrongly in YAML)."""
    from minitron.distill import TrainConfig, distill

    base = dict(student=world["student"], teacher=world["teacher"], data=world["data"], out=tmp_path / "out")
    for bad, message in [({"lr": float("nan")}, "--lr must be a positive number"),
                         ({"lr": "3e-4"}, "--lr must be a positive number, not '3e-4'"),
                         ({"tokens": 1.5}, "--tokens must be a positive whole number"),
                         ({"micro_batch": None, "global_batch_tokens": 256}, "--micro-batch must be a positive whole"),
                         ({"seed": None}, "--seed must be a whole number, 0 or more, not None"),
                         ({"warmup_steps": -1}, "--warmup-steps must be a whole number, 0 or more, not -1"),
                         ({"loss": "kl"}, "--loss must be one of"),
                         ({"temperature": float("inf")}, "--temperature must be")]:
        with pytest.raises(MinitronError, match=message):
            distill(TrainConfig(**base, **bad))
        assert not (tmp_path / "out").exists()


def test_bad_lr_leaves_nothing_so_the_corrected_rerun_starts(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert "--lr must be" in run_cli_error(distill_args(world, out, 4 * 128, "--lr", "-1"), capsys)
    assert not out.exists()
    main(distill_args(world, out, 2 * 128))
    assert (out / "student").is_dir()


def test_existing_run_is_not_clobbered(world, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    err = run_cli_error(distill_args(world, out, 4 * 128), capsys)
    assert "was not written by minitron" in err
    err = run_cli_error(distill_args(world, out, 4 * 128, "--overwrite"), capsys)
    assert "was not written by minitron" in err and "act only on minitron's runs" in err
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    main(distill_args(world, out, 128))  # into the empty directory
    assert "already holds a run; pass --resume" in run_cli_error(distill_args(world, out, 128), capsys)


def test_every_family_distils_the_plain_kd_loss(world, tmp_path, family):
    """Step 1 of every family equals forward KL on the models' own logits (embedding scaling, norms, heads)."""
    teacher = save_tiny(tmp_path / "teacher", family=family, seed=0)
    student = save_tiny(tmp_path / "student", family=family, seed=1, tie=True, num_hidden_layers=2)
    out = tmp_path / "run"
    main(["distill", "--teacher", str(teacher), "--student", str(student), "--data", world["data"],
          "--tokens", "128", "--out", str(out), "--chunk-tokens", "48", "--loss", "forward_kl", *SMALL])
    ids = torch.cat([TokenData.open(world["data"]).sample("train", 2, 32, 0, 1, m)["input_ids"] for m in range(2)])
    with torch.no_grad():
        t_logits = AutoModelForCausalLM.from_pretrained(teacher)(ids[:, :-1]).logits
        s_logits = AutoModelForCausalLM.from_pretrained(student)(ids[:, :-1]).logits
    assert read_metrics(out)[0]["loss"] == pytest.approx(ForwardKL()(s_logits, t_logits).item(), rel=1e-5)
    trained = AutoModelForCausalLM.from_pretrained(out / "student")
    assert trained.config.model_type == tiny_config(family).model_type and trained.config.tie_word_embeddings


@pytest.mark.parametrize("command", ["distill", "eval"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--seq-len" in capsys.readouterr().out


def test_compile_and_activation_checkpointing_train_the_same(world, tmp_path):
    """--activation-checkpointing recomputes the same activations (same losses, same weights); --compile runs
    the same model through torch.compile (same losses within fp32 tolerance)."""
    runs = {}
    for name, extra in {"plain": ["--no-activation-checkpointing"], "ckpt": ["--activation-checkpointing"],
                        "compiled": ["--compile", "--no-activation-checkpointing"]}.items():
        main(distill_args(world, tmp_path / name, 3 * 128, "--eval-every", "0", "--lr", "1e-3", *extra))
        runs[name] = read_metrics(tmp_path / name)
    assert [m["loss"] for m in runs["ckpt"]] == pytest.approx([m["loss"] for m in runs["plain"]], rel=1e-6)
    assert [m["loss"] for m in runs["compiled"]] == pytest.approx([m["loss"] for m in runs["plain"]], rel=1e-4)
    a = load_file(tmp_path / "plain" / "student" / "model.safetensors")
    b = load_file(tmp_path / "ckpt" / "student" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_bf16_precision_trains_close_to_fp32(world, tmp_path):
    """--precision bf16 on the CPU: matmuls under bf16 autocast, the teacher held in bf16, the student's weights
    still fp32 and saved in fp32; its losses follow the fp32 run's within bf16 rounding, and they differ from it
    (so autocast really ran)."""
    runs = {}
    for name in ("fp32", "bf16"):
        main(distill_args(world, tmp_path / name, 3 * 128, "--eval-every", "0", "--lr", "1e-3",
                          "--precision", name))
        runs[name] = [m["loss"] for m in read_metrics(tmp_path / name)]
    assert runs["bf16"] == pytest.approx(runs["fp32"], rel=3e-2)
    assert runs["bf16"] != runs["fp32"]
    saved = load_file(tmp_path / "bf16" / "student" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}


def test_speed_defaults_follow_the_device_and_a_run_records_them(world, tmp_path, monkeypatch):
    """precision auto: bf16 on CUDA and on a CPU with native bf16, fp32 on other CPUs; on the CPU activation
    checkpointing and 512-token loss chunks, on CUDA neither; settings given explicitly are kept. A run resolves
    them once, at the front door, and train_config.json holds what ran (never auto)."""
    import minitron.numerics as numerics

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native, precision in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda native=native: native)
        resolved = TrainConfig().on_device(cpu)
        assert (resolved.precision, resolved.activation_checkpointing, resolved.chunk_tokens) == (precision, True, 512)
        assert resolved.bf16 == (precision == "bf16")
    on_gpu = TrainConfig().on_device(cuda)
    assert (on_gpu.precision, on_gpu.activation_checkpointing, on_gpu.chunk_tokens) == ("bf16", False, 1024)
    given = TrainConfig(precision="fp32", activation_checkpointing=False, chunk_tokens=64)
    assert given.on_device(cpu) == given and given.on_device(cuda) == given
    with pytest.raises(ValueError, match="on_device"):
        TrainConfig().bf16
    monkeypatch.undo()
    main(distill_args(world, tmp_path / "run", 128, "--eval-every", "0", "--precision", "auto"))
    ran = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert ran["precision"] == ("bf16" if numerics.cpu_has_native_bf16() else "fp32")
    assert (ran["activation_checkpointing"], ran["chunk_tokens"]) == (True, 512)


def test_cpu_training_reuses_freed_memory():
    """After `reuse_freed_memory` (what distill does on the CPU), a 64 MB block allocated and freed again and again
    reuses the same pages once the heap has grown, instead of faulting them in on every allocation (glibc's default
    maps each such block afresh: 5 x 16,384 faults below)."""
    assert reuse_freed_memory()  # glibc, as on every Linux machine this project supports
    size = 64 << 20
    for _ in range(10):  # the heap grows to hold the block, and settles
        torch.empty(size, dtype=torch.uint8).fill_(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(size, dtype=torch.uint8).fill_(1)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < size // 4096  # default: 5 x 16,384
