"""--report-to: every metrics.jsonl record also reaches TensorBoard (read back from the event files) or W&B."""
import importlib.util
import json
import shutil
import sys
import types

import pytest
from conftest import build_tiny_data, cli_error, run_cli, save_tiny

from minitron.errors import MinitronError
from minitron.tracking import check_report_to

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--seq-len", "32", "--micro-batch", "2", "--global-batch-tokens", "128", "--eval-seqs", "4",
         "--eval-every", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    teacher = save_tiny(tmp / "teacher", seed=0)
    student = save_tiny(tmp / "student", seed=1, num_hidden_layers=2)
    return dict(teacher=teacher, student=student, data=build_tiny_data(tmp, teacher))


def distill_args(w, out, tokens, *extra):
    return ["distill", "--teacher", w["teacher"], "--student", w["student"], "--data", w["data"], "--tokens", tokens,
            "--out", out, *SMALL, *extra]


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def scalars(logdir):
    """{tag: [(step, value)]} of the scalars in a TensorBoard log directory, and the accumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def test_tensorboard_gets_every_metric_and_the_config(world, tmp_path):
    out = tmp_path / "run"
    run_cli(*distill_args(world, out, 512, "--report-to", "tensorboard", "--save-every", 2))
    shutil.rmtree(out / "checkpoints" / "step-4")  # resumed from step 2: steps 3 and 4 are logged again, not twice
    run_cli(*distill_args(world, out, 512, "--report-to", "tensorboard", "--save-every", 2, "--resume"))
    logged, events = scalars(out / "tensorboard")
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens", "val_loss"):
        expected = [(r["step"], r[key]) for r in records if key in r]
        assert [s for s, _ in logged[key]] == [s for s, _ in expected], key  # each step once, after the resume
        assert [v for _, v in logged[key]] == pytest.approx([v for _, v in expected], rel=1e-6), key
    assert len(logged["val_loss"]) == 2
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"report_to": [' in text and '"teacher": "' in text


def test_wandb_gets_every_metric(world, tmp_path, monkeypatch):
    """The W&B calls, recorded by a stand-in for the wandb package (not installed here): one run named after
    --out, the config, every metrics.jsonl record at its step, and finish."""
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else None)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "wb"
    run_cli(*distill_args(world, out, 256, "--report-to", "wandb"))
    (_, init_kwargs), *logs, finish = calls
    assert init_kwargs["name"] == "wb" and init_kwargs["config"]["tokens"] == 256 and finish == ("finish",)
    assert [(step, values["loss"], values.get("val_loss")) for _, step, values in logs] == \
        [(r["step"], pytest.approx(r["loss"]), r.get("val_loss")) for r in read_metrics(out)]


def test_a_tracker_that_cannot_work_is_one_line(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in to W&B
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    err = cli_error(capsys, *distill_args(world, tmp_path / "a", 256, "--report-to", "wandb"))
    assert "--report-to wandb needs a W&B login" in err and not (tmp_path / "a").exists()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(MinitronError, match="needs the wandb package: pip install wandb"):
        check_report_to(["wandb"])
    with pytest.raises(MinitronError, match="--report-to must name tensorboard or wandb, not 'mlflow'"):
        check_report_to(["mlflow"])
    err = cli_error(capsys, "compress", "--teacher", world["teacher"], "--target", "intermediate_size=48",
                    "--out", tmp_path / "c", "--distill.report-to", "wandb")
    assert "needs the wandb package" in err and not (tmp_path / "c").exists()
