"""`minitron compress` end to end: a tiny random model, the real default teacher, and bad input at the front door."""
import json
import shutil
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest

import minitron
from conftest import cli_error
from minitron.cli import main, parse
from minitron import pipeline
from minitron.distill import TrainConfig, distill
from minitron.data import TokenData
from minitron.errors import MinitronError
from minitron.numerics import lm_loss
from minitron.load import load_model
from minitron.prune import PruneConfig

REPO = Path(__file__).resolve().parents[1]
TINY = dict(target={"hidden_size": 48, "intermediate_size": 48, "num_attention_heads": 4},
            prune=PruneConfig(calib_seqs=4, seq_len=32), val_seqs=4, prompt="hello",
            distill=TrainConfig(tokens=1024, seq_len=32, micro_batch=4, global_batch_tokens=256, lr=3e-3))


def check_run(run, metrics):
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["tokens"] == metrics["tokens"] > 0
    for name in ("teacher", "pruned", "distilled"):
        assert {"params", "val_loss", "ppl", "gen_tokens_per_s", "sample"} <= saved[name].keys()
    assert saved["pruned"]["params"] == saved["distilled"]["params"] < saved["teacher"]["params"]
    assert (run / "loss.png").stat().st_size > 0 and (run / "importance.png").stat().st_size > 0
    report = (run / "report.md").read_text()
    assert "| distilled |" in report and "loss.png" in report
    assert (run / "student" / "config.json").is_file()
    return saved


@pytest.fixture
def trained_tiny(tiny_dir, tiny_data, tmp_path, one_thread):
    """A tiny teacher that has learnt something (plain training), so distilling from it means something."""
    result = distill(TrainConfig(student=str(tiny_dir), out=tmp_path / "teacher-run", tokens=15360, data=str(tiny_data),
                                 loss="ce", lr=3e-3, seq_len=32, micro_batch=4, global_batch_tokens=256, eval_every=0,
                                 save_every=1000, device="cpu"))
    return result.student


def test_compress_tiny_model_and_resume(trained_tiny, tiny_data, tmp_path, capsys):
    tiny_dir, run = trained_tiny, tmp_path / "run"
    metrics = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, **TINY)
    saved = check_run(run, metrics)
    assert saved["distilled"]["val_loss"] < saved["pruned"]["val_loss"]
    stages = json.loads((run / "record.json").read_text())
    assert list(stages) == ["data", "score", "prune", "distill", "evaluate"]
    assert stages["distill"]["settings"]["lr"] == 3e-3 and stages["distill"]["outputs"]["tokens"] == 1024
    assert set(saved["timings_s"]) == {"score", "prune", "distill", "evaluate"}
    # a finished run is refused unless resumed; resuming keeps every recorded stage's output
    with pytest.raises(SystemExit):
        main(["compress", "--teacher", str(tiny_dir), "--data", str(tiny_data), "--out", str(run),
              "--target", "intermediate_size=48"])
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    mtime = {p: (run / p).stat().st_mtime_ns for p in ("pruned/model.safetensors", "metrics.json", "record.json")}
    again = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, **TINY)
    assert {p: (run / p).stat().st_mtime_ns for p in mtime} == mtime and again == saved
    # a recorded stage is not redone with other settings
    changed = {**TINY, "distill": replace(TINY["distill"], lr=1e-3)}
    with pytest.raises(MinitronError, match="its distill ran with lr = 0.003, now 0.001"):
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, **changed)
    with pytest.raises(MinitronError, match="its prune ran with target"):
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True,
                          **{**TINY, "target": {"intermediate_size": 32}})
    # resumed with --tasks, a finished run gains the benchmark stage and its table in the report, nothing else redone
    minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, tasks=["bb_general_knowledge,kjv"],
                      tasks_limit=2, **TINY)
    assert {p: (run / p).stat().st_mtime_ns for p in mtime if p != "record.json"} == \
        {p: t for p, t in mtime.items() if p != "record.json"}
    assert list(json.loads((run / "record.json").read_text()))[-1] == "tasks"
    results = json.loads((run / "tasks.json").read_text())["results"]
    ppl = {name: results[name]["kjv"]["word_perplexity"] for name in ("teacher", "pruned", "distilled")}
    assert len(set(ppl.values())) == 3 and all(results[n]["bb_general_knowledge"]["samples"] == 2 for n in ppl)
    report = (run / "report.md").read_text()
    assert "## Benchmarks" in report and "| bb_general_knowledge | 2 | acc |" in report
    assert f"| kjv | 2 | word_perplexity | – | {ppl['teacher']:.2f} | {ppl['pruned']:.2f} |" in report
    card = (run / "student" / "README.md").read_text()
    assert "kjv: word_perplexity, zero-shot, 2 documents" in card and "validation loss" in card


def test_compress_scores_and_evaluates_at_its_own_seq_len(trained_tiny, tiny_data, tmp_path):
    """--prune.seq-len sets the calibration and held-out length apart from the training length
    (--distill.seq-len): the three models' losses are measured on windows of --prune.seq-len tokens, and a resume
    with another is refused."""
    run = tmp_path / "run"
    metrics = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run,
                                **{**TINY, "prune": replace(TINY["prune"], seq_len=16)})
    stages = json.loads((run / "record.json").read_text())
    assert stages["score"]["settings"]["seq_len"] == 16 and stages["distill"]["settings"]["seq_len"] == 32
    val = TokenData.open(tiny_data).fixed("val", TINY["val_seqs"], 16)["input_ids"]
    assert val.shape == (TINY["val_seqs"], 17)
    for name, model in (("teacher", trained_tiny), ("distilled", run / "student")):
        assert metrics[name]["val_loss"] == pytest.approx(lm_loss(load_model(model), val.split(4)), rel=1e-4)
    with pytest.raises(MinitronError, match="its score ran with seq_len = 16, now 32"):
        minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, resume=True, **TINY)


def test_interrupted_compress_resumes_from_the_record(trained_tiny, tiny_data, tmp_path, monkeypatch, capsys,
                                                    die_after_checkpoint):
    """Killed inside distillation (after its step-2 checkpoint): the resumed run redoes neither scoring nor
    pruning, continues distillation from the checkpoint, and ends where an unbroken run ends."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    settings = {**TINY, "distill": replace(TINY["distill"], save_every=2)}
    restore = die_after_checkpoint
    with pytest.raises(KeyboardInterrupt):
        minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, **settings)
    assert list(json.loads((run / "record.json").read_text())) == ["data", "score", "prune"]
    assert (run / "distill" / "checkpoints" / "step-2").is_dir() and not (run / "student").exists()

    restore()
    for stage in ("score", "prune_model"):  # the functions the score and prune stages call
        monkeypatch.setattr(pipeline, stage, lambda *a, **k: pytest.fail("a recorded stage ran again"))
    capsys.readouterr()
    metrics = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, resume=True, **settings)
    out = capsys.readouterr().out
    assert "[score] done before" in out and "[prune] done before" in out and "resuming" in out
    assert list(json.loads((run / "record.json").read_text())) == ["data", "score", "prune", "distill", "evaluate"]
    monkeypatch.undo()
    unbroken = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=reference, **settings)
    assert metrics["distilled"]["val_loss"] == pytest.approx(unbroken["distilled"]["val_loss"], rel=1e-5)


def test_demo_config_is_the_demo():
    """configs/demo.yaml (what `make demo` runs) holds the demo's settings."""
    fn, kw = parse(["compress", "--config", str(REPO / "configs" / "demo.yaml")])
    assert fn is minitron.compress
    assert kw["teacher"] == "default" and kw["out"] == Path("runs/smollm2-135m-half")
    assert kw["target"] == {"intermediate_size": 384, "num_hidden_layers": 25}  # the search's winner
    assert kw["prune"] == PruneConfig(calib_seqs=32, seq_len=256) and kw["val_seqs"] == 32
    assert kw["prompt"] == "What is a Python list? Answer in one sentence."
    assert kw["distill"] == TrainConfig(tokens=204_800, seq_len=256, micro_batch=4, global_batch_tokens=1024, lr=1e-3,
                                        min_lr=1e-4, loss="ce_kd", precision="bf16", eval_every=40, eval_seqs=16,
                                        save_every=40)


@pytest.mark.slow
def test_compress_real_default_teacher(tmp_path):
    """The real SmolLM2-135M-Instruct teacher on the default corpus: the demo's config, with a tiny token budget."""
    run = tmp_path / "real"
    fn, kw = parse(["compress", "--config", str(REPO / "configs" / "demo.yaml"), "--out", str(run),
                    "--prune.calib-seqs", "4",
                    "--val-seqs", "4", "--distill.tokens", "3072", "--distill.seq-len", "128",
                    "--distill.global-batch-tokens", "1024", "--distill.eval-seqs", "4",
                    "--distill.precision", "auto"])  # bf16 only where the CPU has it (7x slower elsewhere)
    metrics = fn(**kw)
    saved = check_run(run, metrics)
    assert saved["teacher"]["params"] == 134_515_008
    assert 0.45 < saved["pruned"]["params"] / saved["teacher"]["params"] < 0.55
    assert saved["distilled"]["val_loss"] < saved["pruned"]["val_loss"]
    assert saved["teacher"]["val_loss"] < saved["distilled"]["val_loss"]


def test_front_door_bad_input(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    base = ["--teacher", tiny_dir, "--data", tiny_data, "--distill.seq-len", 32]
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "a", "--target", "hidden_size=4096")
    base += ["--target", "intermediate_size=48"]
    assert "between 1 and the teacher's 64" in err and not (tmp_path / "a").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "b", "--distill.tokens", 10**9)
    assert "fewer than the 1,000,000,000 requested" in err and not (tmp_path / "b").exists()
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "c", "--distill.tokens", 1024,
                    "--distill.global-batch-tokens", 256)
    assert "no disk space" in err and not (tmp_path / "c").exists()
    err = cli_error(capsys, "compress", *base[:-2], "--out", tmp_path / "f", "--target", "hidden_size=64")
    assert "prunes nothing" in err and not (tmp_path / "f").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "g", "--tasks", "kjv,nope")
    assert "unknown task 'nope'" in err and not (tmp_path / "g").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "e", "--distill.seq-len", 300)
    assert "max_position_embeddings (256)" in err and not (tmp_path / "e").exists()
    for bad in (300, 0):  # the calibration and evaluation length, checked like the training length
        err = cli_error(capsys, "compress", *base, "--out", tmp_path / "h", "--prune.seq-len", bad)
        assert ("max_position_embeddings (256)" if bad else "--prune.seq-len must be a whole number") in err
        assert not (tmp_path / "h").exists()
    existing = tmp_path / "d"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    err = cli_error(capsys, "compress", *base, "--out", existing)
    assert "was not written by minitron" in err and (existing / "notes.txt").read_text() == "keep me"
