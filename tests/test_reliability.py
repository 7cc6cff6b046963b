"""Bad conditions a user meets for real: a disk that fills while writing, signals during a run, a second
writer, outputs that must not be clobbered, input that is not what it claims. Each gets one line, a non-zero
exit and loses nothing already written (docs/reliability.md lists them all)."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_data, cli_error, run_cli, save_tiny
from safetensors.torch import load_file

from minitron.distill.config import DEFAULT_KD_LOSS
from minitron.io import mark

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--seq-len", "32", "--micro-batch", "2", "--global-batch-tokens", "128", "--eval-seqs", "4",
         "--eval-every", "0"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny teacher, a smaller student and token data."""
    tmp = tmp_path_factory.mktemp("world")
    teacher = save_tiny(tmp / "teacher", seed=0)
    student = save_tiny(tmp / "student", seed=1, num_hidden_layers=2, hidden_size=48, num_attention_heads=4)
    return dict(teacher=teacher, student=student, data=build_tiny_data(tmp, teacher), tmp=tmp)


def distill_args(w, out, steps, *extra):
    return ["distill", "--teacher", w["teacher"], "--student", w["student"], "--data", w["data"], "--tokens",
            steps * 128, "--out", out, *SMALL, *extra]


def leftovers(parent: Path) -> list[str]:
    """Temporary directories, lock files or `.old` copies beside the outputs."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- a disk that fills

@contextmanager
def file_size_limit(nbytes: int):
    """The OS refuses (EFBIG) every write past `nbytes` of a file in this process: real writes through
    safetensors, transformers and plain files fail the way they do on a full disk (SIGXFSZ is ignored, so the
    write fails instead of killing the process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def full_disk_error(capsys, limit: int, *args) -> str:
    with file_size_limit(limit):
        err = cli_error(capsys, *args)
    assert "file too large" in err and ("nothing half-written was left" in err or "free some disk space" in err)
    return err


def test_full_disk_data_score_prune(world, tmp_path, capsys):
    """Every command that writes a directory: one line, nothing half-written, an earlier output untouched."""
    corpus = world["tmp"] / "data-text"
    err = full_disk_error(capsys, 4096, "data", "--source", corpus, "--tokenizer", world["teacher"], "--out",
                          tmp_path / "d", "--glob", "*.txt")
    assert f"writing {tmp_path / 'd'}" in err and not (tmp_path / "d").exists()
    err = full_disk_error(capsys, 1024, "score", "--model", world["teacher"], "--data", world["data"], "--out",
                          tmp_path / "s", "--calib-seqs", 4, "--seq-len", 32, "--criteria", "magnitude")
    assert f"writing {tmp_path / 's'}" in err and not (tmp_path / "s").exists()
    (tmp_path / "p").mkdir()
    mark(tmp_path / "p")  # an earlier output of minitron's, which --overwrite may replace
    (tmp_path / "p" / "earlier.txt").write_text("keep me")
    target = ["--target", "intermediate_size=64", "--prune.criterion", "magnitude", "--overwrite"]
    for how in ("--no-stream", "--stream"):  # save_hf (transformers -> safetensors) and the streamed writer
        err = full_disk_error(capsys, 16384, "prune", "--model", world["teacher"], "--data", world["data"],
                              "--out", tmp_path / "p", how, *target)
        assert f"writing {tmp_path / 'p'}" in err
        assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [".minitron", "earlier.txt"]
    assert leftovers(tmp_path) == []


def test_full_disk_in_distill_keeps_the_previous_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "run"
    argv = distill_args(world, out, 4, "--save-every", "2", "--keep-checkpoints", "2")
    run_cli(*argv)
    want = load_file(out / "student" / "model.safetensors")
    shutil.rmtree(out / "student")
    shutil.rmtree(out / "checkpoints" / "step-4")  # as if killed after step 2's checkpoint
    err = full_disk_error(capsys, 65536, *argv, "--resume")  # the checkpoint of step 4 does not fit
    assert "while saving checkpoint step-4" in err and "step-2 is intact" in err and "--resume" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    run_cli(*argv, "--resume")
    shutil.rmtree(out / "student")  # the final save fails alone
    err = full_disk_error(capsys, 65536, *argv, "--resume")
    assert f"writing {out / 'student'}" in err and "checkpoint of step 4 is intact" in err
    assert sorted(p.name for p in out.iterdir()) == [".minitron", "checkpoints", "metrics.jsonl", "record.json",
                                                    "train_config.json"]
    run_cli(*argv, "--resume")
    got = load_file(out / "student" / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_real_full_file_system(world, tmp_path):
    """ENOSPC from a real 256 KiB tmpfs (mounted in a user namespace): safetensors raises SafetensorError, not
    OSError; the user sees one line, and the earlier output on that file system is untouched."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-Urm", "true"]).returncode != 0:
        pytest.skip("no user namespaces here to mount a small tmpfs (the file-size-limit tests cover the same path)")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = ('mount -t tmpfs -o size=256k tmpfs "$0" && mkdir "$0/p" && echo keep > "$0/p/earlier.txt" && '
              'echo {} > "$0/p/.minitron" && '
              '"$@"; rc=$?; find "$0" | sort; exit $rc')
    cmd = ["unshare", "-Urm", "sh", "-c", script, str(disk), sys.executable, "-m", "minitron", "prune", "--model",
           str(world["teacher"]), "--data", str(world["data"]), "--target", "intermediate_size=64", "--prune.criterion",
           "magnitude", "--out", str(disk / "p"), "--overwrite"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"minitron: error: no space left on device writing "
                                                          f"{disk / 'p'}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.split("\n")[-5:] == [str(disk), str(disk / "p"), str(disk / "p" / ".minitron"),
                                             str(disk / "p" / "earlier.txt"), ""]


# ---------------------------------------------------------------- resume

def test_resume_accepts_the_same_inputs_spelt_differently_and_refuses_other_tokens(world, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(world["tmp"])
    out = tmp_path / "run"
    run = ["distill", "--out", out, "--save-every", "1", *SMALL]
    run_cli(*run, "--teacher", "./teacher", "--student", "student/", "--data", "data", "--tokens", 2 * 128)
    shutil.rmtree(out / "student")
    shutil.rmtree(out / "checkpoints" / "step-2")
    absolute = ["--teacher", world["teacher"], "--student", world["student"], "--data", world["data"]]
    err = cli_error(capsys, *run, *absolute, "--tokens", 4 * 128, "--resume")
    assert "its distill ran with tokens = 256, now 512" in err and "learning-rate schedule decays over --tokens" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]
    run_cli(*run, *absolute, "--tokens", 2 * 128, "--resume")
    assert (out / "student" / "model.safetensors").is_file()
    assert "resuming" in capsys.readouterr().out


def test_resume_is_checked_against_the_record_and_the_runs_own_config_resumes_it(world, tmp_path, capsys):
    """record.json holds what the run learns by (a resume that changes it is refused, naming the setting; how it
    runs may change); train_config.json, the resolved settings, runs the same job again with --config."""
    out = tmp_path / "run"
    run = distill_args(world, out, 2, "--save-every", "1")
    run_cli(*run)
    want = load_file(out / "student" / "model.safetensors")
    shutil.rmtree(out / "student")
    shutil.rmtree(out / "checkpoints" / "step-2")
    settings = json.loads((out / "record.json").read_text())["distill"]["settings"]
    assert settings["loss"] == DEFAULT_KD_LOSS and "eval_every" not in settings  # by name; runtime settings are not recorded
    ran = settings["precision"]  # resolved for this device (auto is never recorded)
    other = "fp32" if ran == "bf16" else "bf16"
    err = cli_error(capsys, *run, "--precision", other, "--resume")
    assert f"its distill ran with precision = {ran}, now {other}" in err
    run_cli("distill", "--config", out / "train_config.json", "--resume", "--eval-every", 1)  # may change on resume
    assert_same_weights(out / "student", want)


# ---------------------------------------------------------------- signals

STEPS = 12


@pytest.fixture(scope="module")
def reference(world):
    """The student of an uninterrupted run, to compare interrupted and resumed runs with."""
    out = world["tmp"] / "reference"
    run_cli(*distill_args(world, out, STEPS, "--lr", "1e-3"))
    return load_file(out / "student" / "model.safetensors")


def assert_same_weights(path, want):
    got = load_file(Path(path) / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def interrupted_line(err: str, signame: str, out: Path) -> int:
    """The step of the one line an interrupted run ends with (no traceback)."""
    assert "Traceback" not in err, err
    last = err.replace("\r", "\n").rstrip().splitlines()[-1]
    prefix = f"minitron: interrupted by {signame} at step "
    assert last.startswith(prefix) and last.endswith("; resume with --resume"), err
    step = int(last[len(prefix):].split(";")[0])
    assert f"checkpoint saved to {out / 'checkpoints' / f'step-{step}'}" in last
    return step


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_is_exact(world, reference, tmp_path):
    """What a scheduler does before killing a job: the step finishes, a checkpoint is saved, exit 143."""
    out = tmp_path / "run"
    argv = distill_args(world, out, STEPS, "--lr", "1e-3")  # --save-every 50: no checkpoint but the signal's
    proc = subprocess.Popen([sys.executable, "-m", "minitron", *map(str, argv)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.nice(5))  # on a busy machine, this test still sees step 2 first
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 143, err
    step = interrupted_line(err, "SIGTERM", out)
    assert 2 <= step < STEPS and not (out / "student").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{step}"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == step
    run_cli(*argv, "--resume")
    assert_same_weights(out / "student", reference)


def test_ctrl_c_during_distill_saves_and_resumes_exactly(world, reference, tmp_path, capsys, monkeypatch):
    import minitron.distill.loop as loop

    real, steps = loop.train_step, []

    def train_step(*args):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 2
        return real(*args)

    monkeypatch.setattr(loop, "train_step", train_step)
    out = tmp_path / "run"
    argv = distill_args(world, out, STEPS, "--lr", "1e-3")
    before = signal.getsignal(signal.SIGINT)  # (Python's; ignored where the suite runs in the background)
    with pytest.raises(SystemExit) as e:
        run_cli(*argv)
    assert e.value.code == 130
    assert interrupted_line(capsys.readouterr().err, "SIGINT", out) == 2
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    monkeypatch.setattr(loop, "train_step", real)
    run_cli(*argv, "--resume")
    assert_same_weights(out / "student", reference)


def test_sigterm_while_writing_leaves_nothing(world, tmp_path, capsys, monkeypatch):
    """Any command: SIGTERM (like Ctrl-C) removes the half-written output and exits in one line."""
    import minitron.data.build as build

    real = build.ShardWriter.add

    def add(self, *args):
        if sum(self.docs.values()) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args)

    monkeypatch.setattr(build.ShardWriter, "add", add)
    with pytest.raises(SystemExit) as e:
        run_cli("data", "--source", world["tmp"] / "data-text", "--tokenizer", world["teacher"], "--out",
                tmp_path / "d", "--glob", "*.txt")
    assert e.value.code == 143
    assert capsys.readouterr().err.rstrip().splitlines()[-1] == "minitron: terminated; nothing half-written was left"
    assert list(tmp_path.iterdir()) == []


def mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_while_starting_is_one_line(world, tmp_path):
    """Ctrl-C in the first second, while the command line loads (jsonargparse), then torch: one
    line. (The signal is sent when the process has mapped the library, so the test does not depend on load.)"""
    cmd = [sys.executable, "-m", "minitron", "prune", "--model", str(world["teacher"]), "--target",
           "intermediate_size=64", "--prune.criterion", "magnitude", "--out", str(tmp_path / "p")]
    for library in ("yaml/_yaml", "libtorch_cpu"):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not mapped(proc.pid, library) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 130 and err.startswith("minitron: interrupted") and len(err.splitlines()) == 1, \
            (library, err)
    assert leftovers(tmp_path) == [] and not (tmp_path / "p").exists()


# ---------------------------------------------------------------- outputs that must not be clobbered, inputs

def test_eval_out_is_not_overwritten_without_overwrite(world, tmp_path, capsys):
    out = tmp_path / "eval.json"
    out.write_text("earlier results")
    args = ["eval", "--model", world["student"], "--data", world["data"], "--seq-len", 32, "--tokens", 64,
            "--no-speed", "--no-ood", "--out", out]
    assert "already exists; pass --overwrite" in cli_error(capsys, *args)
    assert out.read_text() == "earlier results"
    run_cli(*args, "--overwrite")
    assert json.loads(out.read_text())["test"]["tokens"] == 64 and leftovers(tmp_path) == []


def test_overwriting_leaves_no_old_copy(tmp_path):
    """--overwrite of an earlier output replaces it whole (its files gone) and leaves no `.old` copy behind."""
    from minitron.io import atomic_dir

    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "old").write_text("earlier")
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "x").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".minitron", "x"]
    assert leftovers(tmp_path) == []


def test_compress_overwrite_refuses_what_is_not_a_run(world, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    err = cli_error(capsys, "compress", "--teacher", world["teacher"], "--target", "intermediate_size=64",
                    "--data", world["data"], "--out", tmp_path / "mine", "--overwrite")
    assert "was not written by minitron" in err and (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_a_second_writer_of_a_run_is_refused(world, tmp_path, capsys):
    """distill and compress hold a lock on their run directory (taken here as another process would)."""
    from minitron.io import output_lock

    with output_lock(tmp_path / "run"):
        err = cli_error(capsys, *distill_args(world, tmp_path / "run", 2))
        assert "is being written by another process" in err
        err = cli_error(capsys, "compress", "--teacher", world["teacher"], "--target", "intermediate_size=64",
                        "--data", world["data"], "--out", tmp_path / "run", "--distill.tokens", 256,
                        "--distill.seq-len", 32, "--distill.global-batch-tokens", 128)
        assert "is being written by another process" in err
    assert not (tmp_path / "run").exists()


def test_text_that_is_not_utf8_is_refused_naming_the_byte(world, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(world["tmp"] / "data-text", corpus)
    (corpus / "doc999.txt").write_bytes("the café".encode("latin-1") + b" and more text")
    err = cli_error(capsys, "data", "--source", corpus, "--tokenizer", world["teacher"], "--out", tmp_path / "d",
                    "--glob", "*.txt")
    assert f"{corpus / 'doc999.txt'} is not UTF-8 (byte 0xe9 at offset 7)" in err
    assert not (tmp_path / "d").exists() and leftovers(tmp_path) == []


def test_saved_datasets_are_checked_like_the_rest(world, tmp_path, capsys):
    import datasets

    datasets.Dataset.from_dict({"text": ["fine", None]}).save_to_disk(str(tmp_path / "holes"))
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "holes", broken)
    for arrow in broken.glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    args = ["--tokenizer", world["teacher"], "--out", tmp_path / "d"]
    assert "row 1: 'text' is NoneType, not text" in cli_error(capsys, "data", "--source", tmp_path / "holes", *args)
    assert "is not a readable saved Hugging Face dataset" in cli_error(capsys, "data", "--source", broken, *args)
    assert not (tmp_path / "d").exists()
