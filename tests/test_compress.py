"""`minitron compress` end to end: a tiny random model, the real default teacher, and bad input at the front door."""
import json
import shutil
from collections import namedtuple

import pytest

import minitron
from conftest import cli_error
from minitron.cli import main
from minitron.distill import TrainConfig, distill

TINY = dict(target={"hidden_size": 48, "intermediate_size": 48, "num_attention_heads": 4}, tokens=1024,
            calib_seqs=4, seq_len=32, micro_batch=4, global_batch_tokens=256, val_seqs=4, lr=3e-3,
            prompt="hello")


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
    # a finished run is refused unless resumed; resuming keeps every stage's output
    with pytest.raises(SystemExit):
        main(["compress", "--teacher", str(tiny_dir), "--data", str(tiny_data), "--out", str(run), "--tokens", "1024",
              "--target", "intermediate_size=48"])
    assert "already exists; pass --resume" in capsys.readouterr().err
    mtime = (run / "pruned" / "model.safetensors").stat().st_mtime_ns
    again = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, **TINY)
    assert (run / "pruned" / "model.safetensors").stat().st_mtime_ns == mtime
    assert again["distilled"]["val_loss"] == pytest.approx(saved["distilled"]["val_loss"])


@pytest.mark.slow
def test_compress_real_default_teacher(tmp_path):
    """The real SmolLM2-135M-Instruct teacher on the default corpus, with a tiny token budget."""
    run = tmp_path / "real"
    metrics = minitron.compress(out=run, tokens=3072, calib_seqs=4, seq_len=128, micro_batch=4,
                                global_batch_tokens=1024, val_seqs=4)
    saved = check_run(run, metrics)
    assert saved["teacher"]["params"] == 134_515_008
    assert 0.45 < saved["pruned"]["params"] / saved["teacher"]["params"] < 0.55
    assert saved["distilled"]["val_loss"] < saved["pruned"]["val_loss"]
    assert saved["teacher"]["val_loss"] < saved["distilled"]["val_loss"]


def test_front_door_bad_input(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    base = ["--teacher", tiny_dir, "--data", tiny_data, "--seq-len", 32]
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "a", "--target", "hidden_size=4096")
    base += ["--target", "intermediate_size=48"]
    assert "between 1 and the teacher's 64" in err and not (tmp_path / "a").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "b", "--tokens", 10**9)
    assert "fewer than the 1,000,000,000 requested" in err and not (tmp_path / "b").exists()
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "c", "--tokens", 1024)
    assert "no disk space" in err and not (tmp_path / "c").exists()
    existing = tmp_path / "d"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    err = cli_error(capsys, "compress", *base, "--out", existing)
    assert "already exists" in err and (existing / "notes.txt").read_text() == "keep me"
