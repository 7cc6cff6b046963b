"""A hostile user's probes (issue 26), one parametrized case each: the command, the exit code, the one line it
must print, and every file that existed before left untouched (names, sizes and times). The probes cover all
commands: nothing in a run folder can run code, nothing a user owns is deleted, a silent mistake is refused
(or warned about where a user may mean it), and no bad input gives a traceback. docs/reliability.md lists them."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import build_tiny_data, cli_error, run_cli, save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--seq-len", "32", "--micro-batch", "2", "--global-batch-tokens", "128", "--eval-seqs", "2",
         "--eval-every", "0", "--save-every", "1"]
PAYLOAD = "pwned-by-a-checkpoint"  # the file a crafted pickle would create


class Payload:
    """What a crafted pickle carries: a call that creates a file when unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny teacher and student, token data, a finished two-step run (its step-2 and student removed: ready to
    resume) and a directory of a user's own files."""
    tmp = tmp_path_factory.mktemp("probes")
    teacher = save_tiny(tmp / "teacher", seed=0)
    student = save_tiny(tmp / "student", seed=1, num_hidden_layers=2, hidden_size=48, num_attention_heads=4)
    data = build_tiny_data(tmp, teacher)
    run = tmp / "run"
    run_cli("distill", "--teacher", teacher, "--student", student, "--data", data, "--tokens", 256, "--out", run,
            *SMALL)
    shutil.rmtree(run / "student")
    shutil.rmtree(run / "checkpoints" / "step-2")
    mine = tmp / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    return dict(tmp=tmp, teacher=teacher, student=student, data=data, run=run, mine=mine)


@dataclass
class Probe:
    """One bad input: `setup(w)` prepares it in the case's own folder and returns the command line."""

    name: str
    setup: Callable[[dict], list]
    line: str  # a part of the one error line
    code: int = 1
    created: tuple[str, ...] = ()  # what must not exist afterwards (names under the case's folder)


def distill(w, *extra, out=None):
    return ["distill", "--teacher", w["teacher"], "--student", w["student"], "--data", w["data"], "--tokens", 256,
            "--out", out or w["run"], *SMALL, *extra]


def own_run(w) -> Path:
    """The case's own copy of the resumable run (a probe may damage it)."""
    shutil.copytree(w["run"], w["case"] / "run")
    return w["case"] / "run"


def checkpoint(w) -> Path:
    return own_run(w) / "checkpoints" / "step-1"


def crafted_metadata(w):
    (checkpoint(w) / ".metadata").write_bytes(pickle.dumps(Payload(w["case"] / PAYLOAD)))
    return distill(w, "--resume", out=w["case"] / "run")


def truncated(name: str):
    def setup(w):
        f = checkpoint(w) / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        return distill(w, "--resume", out=w["case"] / "run")
    return setup


def bad_record(w):
    (own_run(w) / "record.json").write_text('{"distill": ')
    return distill(w, "--resume", "--lr", "0.5", out=w["case"] / "run")


def rebuilt_data(w):
    run = own_run(w)
    data = w["case"] / "data"
    shutil.copytree(w["data"], data)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "seed": 7}))  # rebuilt in place, with another split
    record = json.loads((run / "record.json").read_text())
    record["distill"]["settings"]["data"] = str(data.resolve())  # only the data's content differs
    (run / "record.json").write_text(json.dumps(record))
    return ["distill", "--teacher", w["teacher"], "--student", w["student"], "--data", data, "--tokens", 256,
            "--out", run, *SMALL, "--resume"]


def config_with(w, **fields):
    model = w["case"] / "model"
    shutil.copytree(w["teacher"], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **fields}))
    return model


def small_vocab(w):
    """A model with fewer embeddings than the data's token ids (same tokenizer)."""
    return save_tiny(w["case"] / "small-vocab", vocab_size=64)


def jsonl_number(w):
    (w["case"] / "docs.jsonl").write_text("".join(json.dumps({"text": i}) + "\n" for i in range(40)))
    return ["data", "--source", w["case"] / "docs.jsonl", "--tokenizer", w["teacher"], "--out", w["case"] / "d"]


def other_scores(w):
    other = save_tiny(w["case"] / "other", seed=5)
    run_cli("score", "--model", other, "--data", w["data"], "--out", w["case"] / "scores", "--calib-seqs", 2,
            "--seq-len", 32, "--criteria", "activation")
    return ["search", "--params", "0.5", "--model", w["teacher"], "--scores", w["case"] / "scores", "--data",
            w["data"], "--out", w["case"] / "s", "--distill-top", 0]


def in_cwd(w, *argv):
    os.chdir(w["case"])
    return list(argv)


def no_weights(w):
    model = w["case"] / "model"
    shutil.copytree(w["teacher"], model)
    (model / "model.safetensors").unlink()
    return ["export", "--model", model, "--out", w["case"] / "m.gguf"]


def truncated_weights(w):
    model = w["case"] / "model"
    shutil.copytree(w["teacher"], model)
    f = model / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    return ["eval", "--model", model, "--data", w["data"], "--seq-len", 32, "--tokens", 64, "--no-speed", "--no-ood"]


def old_layout(w):
    """A data directory as an older minitron made it: train/val splits, no test split, no document offsets."""
    data = w["case"] / "old-data"
    shutil.copytree(w["data"], data)
    meta = json.loads((data / "meta.json").read_text())
    meta["splits"] = {"train": meta["splits"]["train"], "val": meta["splits"]["dev"]}
    (data / "meta.json").write_text(json.dumps(meta))
    (data / "dev.bin").rename(data / "val.bin")
    for f in [*data.glob("*.docs.bin"), data / "test.bin"]:
        f.unlink()
    return ["eval", "--model", w["teacher"], "--data", data, "--seq-len", 32, "--no-speed"]


def existing(name: str):
    def setup(w):
        (w["case"] / name).write_text("earlier replies")
        return ["generate", "--model", w["teacher"], "--input", w["case"] / "in.jsonl", "--output", w["case"] / name]
    return setup


PRUNE = ["--target", "intermediate_size=64", "--prune.criterion", "magnitude"]
BAD_UTF8 = "caf\udce9"  # what Python makes of the byte 0xe9 in a command-line argument

PROBES = [
    # ---- security: nothing a run folder holds can run code
    Probe("resume-crafted-metadata", crafted_metadata, "unsafe .metadata (UnpicklingError: it names posix.system"),
    Probe("resume-truncated-metadata", truncated(".metadata"), "unreadable or unsafe .metadata"),
    Probe("resume-truncated-shard", truncated("__0_0.distcp"), "checkpoints/step-1 is unreadable ("),
    # ---- user data: --overwrite replaces only what minitron wrote
    Probe("prune-overwrite-user-dir", lambda w: ["prune", "--model", w["teacher"], *PRUNE, "--data", w["data"],
                                                 "--out", w["mine"], "--overwrite"], "was not written by minitron"),
    Probe("data-overwrite-user-dir", lambda w: ["data", "--source", w["tmp"] / "data-text", "--tokenizer",
                                                w["teacher"], "--out", w["mine"], "--overwrite"],
          "was not written by minitron"),
    Probe("score-overwrite-user-dir", lambda w: ["score", "--model", w["teacher"], "--data", w["data"], "--out",
                                                 w["mine"], "--overwrite"], "was not written by minitron"),
    Probe("distill-overwrite-user-dir", lambda w: distill(w, "--overwrite", out=w["mine"]),
          "was not written by minitron"),
    Probe("distill-resume-user-dir", lambda w: distill(w, "--resume", out=w["mine"]), "was not written by minitron"),
    Probe("compress-overwrite-user-dir", lambda w: ["compress", "--teacher", w["teacher"], "--target",
                                                    "intermediate_size=64", "--data", w["data"], "--out", w["mine"],
                                                    "--overwrite"], "was not written by minitron"),
    Probe("search-overwrite-user-dir", lambda w: ["search", "--params", "0.5", "--model", w["teacher"], "--data",
                                                  w["data"], "--out", w["mine"], "--overwrite"],
          "was not written by minitron"),
    Probe("prune-overwrite-cwd", lambda w: in_cwd(w, "prune", "--model", w["teacher"], *PRUNE, "--out",
                                                  w["case"], "--overwrite"), "is the current directory"),
    Probe("data-out-dot", lambda w: in_cwd(w, "data", "--source", w["tmp"] / "data-text", "--tokenizer",
                                           w["teacher"], "--out", ".", "--overwrite"), "is the current directory"),
    Probe("prune-overwrite-a-file", lambda w: (w["case"] / "f").write_text("mine") and [
        "prune", "--model", w["teacher"], *PRUNE, "--out", w["case"] / "f", "--overwrite"], "is a file"),
    Probe("export-onto-a-dir", lambda w: ["export", "--model", w["teacher"], "--out", w["mine"], "--overwrite"],
          "is a directory"),
    Probe("generate-output-exists", existing("out.jsonl"), "already exists; pass --overwrite"),
    # ---- silently wrong before: refused now
    Probe("export-no-weights", no_weights, "has no model.safetensors"),
    Probe("data-jsonl-number", jsonl_number, "docs.jsonl:1: 'text' is int, not text", created=("d",)),
    Probe("resume-rebuilt-data", rebuilt_data, "its data changed since the run started"),
    Probe("resume-corrupt-record", bad_record, "record.json is damaged (JSONDecodeError)"),
    Probe("distill-batch-below-a-micro-batch", lambda w: distill(w, out=w["case"] / "r") + [
        "--global-batch-tokens", 50], "--global-batch-tokens (one micro-batch, --micro-batch x --seq-len, is 64 "
        "tokens) must be a whole number, at least 64, not 50", created=("r",)),
    Probe("distill-resume-and-overwrite", lambda w: distill(w, "--resume", "--overwrite"), "not both"),
    Probe("prune-target-twice", lambda w: ["prune", "--model", w["teacher"], "--target",
                                           "hidden_size=32,hidden_size=48", "--dry-run"], "given twice"),
    Probe("generate-negative-temperature", lambda w: ["generate", "--model", w["teacher"], "--prompt", "hi",
                                                      "--temperature", -1], "--temperature must be 0"),
    Probe("generate-top-p-2", lambda w: ["generate", "--model", w["teacher"], "--prompt", "hi", "--top-p", 2],
          "--top-p must be above 0 and at most 1"),
    Probe("eval-measures-nothing", lambda w: ["eval", "--model", w["teacher"], "--no-loss", "--no-speed"],
          "nothing to measure"),
    Probe("eval-old-train-val-data", old_layout, "it was made by an older minitron, with train/val splits and no "
                                                 "test split); rebuild the directory with `minitron data`"),
    Probe("data-fractions-leave-no-train", lambda w: ["data", "--source", w["tmp"] / "data-text", "--tokenizer",
                                                      w["teacher"], "--out", w["case"] / "d", "--dev-fraction", 0.5,
                                                      "--test-fraction", 0.5],
          "--dev-fraction 0.5 and --test-fraction 0.5 leave no documents to train on", created=("d",)),
    # ---- tracebacks before: one line now
    Probe("config-string-size", lambda w: ["prune", "--model", config_with(w, hidden_size="64"), "--target",
                                           "intermediate_size=64", "--dry-run"], "expected int, got str"),
    Probe("config-null-heads", lambda w: ["prune", "--model", config_with(w, num_attention_heads=None),
                                          "--target", "intermediate_size=64", "--dry-run"], "num_attention_heads"),
    Probe("config-negative-size", lambda w: ["prune", "--model", config_with(w, hidden_size=-64), "--target",
                                             "intermediate_size=64", "--dry-run"],
          "hidden_size must be a positive whole number, not -64"),
    Probe("yaml-not-utf8", lambda w: (w["case"] / "c.yaml").write_bytes(b"model: \xe9t\xe9\n") and [
        "prune", "--config", w["case"] / "c.yaml", "--dry-run"], "is not UTF-8 text (byte 0xe9 at offset 7)"),
    Probe("eval-token-ids-past-the-vocabulary", lambda w: ["eval", "--model", small_vocab(w), "--data", w["data"],
                                                           "--seq-len", 32, "--tokens", 64, "--no-speed"],
          "has embeddings for ids 0-63 only"),
    Probe("score-token-ids-past-the-vocabulary", lambda w: ["score", "--model", small_vocab(w), "--data", w["data"],
                                                            "--out", w["case"] / "s", "--seq-len", 32],
          "has embeddings for ids 0-63 only", created=("s",)),
    Probe("distill-token-ids-past-the-vocabulary", lambda w: ["distill", "--student", small_vocab(w), "--data",
                                                              w["data"], "--tokens", 256, "--out", w["case"] / "r",
                                                              *SMALL], "has embeddings for ids 0-63 only",
          created=("r",)),
    Probe("generate-prompt-not-utf8", lambda w: ["generate", "--model", w["teacher"], "--prompt", BAD_UTF8],
          "--prompt is not UTF-8 text"),
    Probe("generate-system-not-utf8", lambda w: ["generate", "--model", w["teacher"], "--prompt", "hi", "--system",
                                                 BAD_UTF8], "--system is not UTF-8 text"),
    Probe("generate-no-new-tokens", lambda w: ["generate", "--model", w["teacher"], "--prompt", "hi",
                                               "--max-new-tokens", 0], "--max-new-tokens must be a positive"),
    Probe("eval-negative-new-tokens", lambda w: ["eval", "--model", w["teacher"], "--no-loss", "--new-tokens", -1],
          "--new-tokens must be a positive"),
    Probe("eval-batch-size-0", lambda w: ["eval", "--model", w["teacher"], "--data", w["data"], "--batch-size", 0],
          "--batch-size must be a positive"),
    Probe("eval-tokens-0", lambda w: ["eval", "--model", w["teacher"], "--data", w["data"], "--tokens", 0],
          "--tokens must be a positive whole number, not 0"),
    Probe("compress-eval-tokens-0", lambda w: ["compress", "--teacher", w["teacher"], "--target",
                                               "intermediate_size=64", "--data", w["data"], "--out", w["case"] / "r",
                                               "--eval.tokens", 0, "--eval.tasks", "[]"],
          "--eval.tokens must be a positive whole number, not 0", created=("r",)),
    Probe("truncated-safetensors-named", truncated_weights, "model.safetensors"),
    # ---- unclear before: clear now
    Probe("compress-params-1.5", lambda w: ["compress", "--teacher", w["teacher"], "--params", 1.5, "--data",
                                            w["data"], "--out", w["case"] / "r", "--distill.tokens", 1024],
          "a parameter count is a whole number", created=("r",)),
    Probe("compress-no-shape", lambda w: ["compress", "--teacher", w["teacher"], "--params", 1000, "--data",
                                          w["data"], "--out", w["case"] / "r", "--distill.tokens", 1024],
          "no shape has 1,000 parameters",
          created=("r",)),
    Probe("search-other-models-scores", other_scores, "were computed on another model", created=("s", "s-search")),
    Probe("data-dev-fraction-1.5", lambda w: ["data", "--source", w["tmp"] / "data-text", "--tokenizer",
                                              w["teacher"], "--out", w["case"] / "d", "--dev-fraction", 1.5],
          "--dev-fraction must be a share of the documents strictly between 0 and 1, not 1.5"),
    Probe("data-max-tokens-negative", lambda w: ["data", "--source", w["tmp"] / "data-text", "--tokenizer",
                                                 w["teacher"], "--out", w["case"] / "d", "--max-tokens", -5],
          "--max-tokens must be a positive whole number, not -5"),
    Probe("missing-local-gguf", lambda w: ["prune", "--model", "models/missing.gguf", "--target",
                                           "intermediate_size=64", "--dry-run"], "GGUF file models/missing.gguf"),
]
if not torch.cuda.is_available():  # on a machine with a GPU, --device cuda is right
    PROBES.append(Probe("device-cuda-without-a-gpu", lambda w: ["prune", "--model", w["teacher"], *PRUNE, "--out",
                                                                w["case"] / "p", "--device", "cuda"],
                        "sees no CUDA GPU"))


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, base, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = {**base, "case": tmp_path / "case"}
    w["case"].mkdir()
    (w["case"] / "in.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    argv = probe.setup(w)
    before = snapshot(base["tmp"], w["case"])
    line = cli_error(capsys, *argv)
    assert probe.line in line, line
    assert snapshot(base["tmp"], w["case"]) == before  # nothing that existed was changed or removed
    assert not any((w["case"] / name).exists() for name in probe.created)
    assert not (w["case"] / PAYLOAD).exists()
    assert not [p.name for p in w["case"].iterdir() if p.name.startswith(".")]  # no temporary, lock or .old left


def test_checkpoint_values_are_plain_data_only(tmp_path):
    """A checkpoint's non-tensor items are read as plain data: a crafted one is refused, nothing runs."""
    from minitron.distill.safe_dcp import SafePlanner

    buf = io.BytesIO()
    torch.save({"lr": Payload(tmp_path / PAYLOAD)}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        SafePlanner().load_bytes(None, buf)
    assert not (tmp_path / PAYLOAD).exists()


def test_what_a_user_may_mean_is_warned_about(base, tmp_path, capsys):
    """More tokens than the data holds, a batch rounded to whole micro-batches and replies longer than the
    context run, with a warning each."""
    argv = distill(base, out=tmp_path / "r") + ["--tokens", 40_000, "--micro-batch", 8, "--global-batch-tokens", 1000,
                                                "--save-every", 0]
    run_cli(*argv)
    err = capsys.readouterr().err
    assert "--global-batch-tokens 1,000 is rounded to 1,024 (4 micro-batches of 8 x 32 tokens)" in err
    assert "passes over the" in err and "training tokens" in err
    run_cli("generate", "--model", base["teacher"], "--prompt", "hi", "--max-new-tokens", 100_000_000)
    assert "is past the model's context of 256 tokens; replies stop after" in capsys.readouterr().err


def test_a_directory_of_text_files_needs_no_glob(base, tmp_path):
    """`data --source DIR` reads every .txt, .md, .rst and .jsonl file under it."""
    from minitron.data import TokenData

    corpus = tmp_path / "corpus"
    shutil.copytree(base["tmp"] / "data-text", corpus)
    (corpus / "sub").mkdir()
    (corpus / "sub" / "notes.md").write_text("a markdown document " * 40)
    (corpus / "image.png").write_bytes(b"\x89PNG not text")
    run_cli("data", "--source", corpus, "--tokenizer", base["teacher"], "--out", tmp_path / "d", "--dev-fraction",
            0.25, "--test-fraction", 0.25)
    assert sum(TokenData.open(tmp_path / "d").meta["splits"][s]["documents"] for s in ("train", "dev", "test")) == 41


def test_errors_start_on_a_fresh_line(base, tmp_path, capsys, monkeypatch):
    """An error after a progress bar's unfinished line starts a line of its own."""
    import minitron.export as export

    def fails(*args, **kwargs):
        sys.stderr.write("writing 3/7 tensors 43%|████")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "add_tokenizer", fails)
    err = cli_error(capsys, "export", "--model", base["teacher"], "--out", tmp_path / "m.gguf")
    assert "no space left on device" in err


def test_chat_input_that_is_not_utf8_is_one_line(base, capsys, monkeypatch):
    """A line typed (or piped) into `minitron chat` that is not UTF-8: one line, exit 1, whatever the locale makes
    of it (a decoding error, or lone surrogates)."""
    for stdin in (io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8"),
                  io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8", errors="surrogateescape")):
        monkeypatch.setattr(sys, "stdin", stdin)
        assert "is not UTF-8 text" in cli_error(capsys, "chat", "--model", base["teacher"])
