"""Hub model ids (org/name) resolved through huggingface_hub's cache, offline; pickle checkpoints refused."""
import hashlib
import json
import shutil

import pytest
import torch

from conftest import cli_error, run_cli, save_tiny
from minitron.distill import TrainConfig, distill
from minitron.load import resolve_model

REPO_ID = "tinyorg/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, model_dir, repo_id: str = REPO_ID, commit: str = COMMIT):
    """huggingface_hub's cache layout for `model_dir`'s files: blobs/<sha256>, snapshots/<commit>/<file> as
    links to the blobs, and refs/main naming the commit."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in model_dir.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(f"../../blobs/{blob.name}")
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, tiny_dir, monkeypatch):
    (tiny_dir / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    snapshot = hub_cache(tmp_path / "hub", tiny_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_prune_and_distill_from_a_hub_id_offline(offline_hub, tiny_data, tmp_path, one_thread):
    assert resolve_model(REPO_ID) == offline_hub == resolve_model(f"{REPO_ID}@main")
    pruned = tmp_path / "pruned"
    run_cli("prune", "--model", REPO_ID, "--target", "intermediate_size=48", "--out", pruned, "--data", tiny_data,
            "--prune.calib-seqs", 4, "--prune.seq-len", 32)
    record = json.loads((pruned / "pruning.json").read_text())
    assert record["params_after"] < record["params_before"]
    card = (pruned / "README.md").read_text()
    assert f"base_model: {REPO_ID}" in card and "license: apache-2.0" in card
    result = distill(TrainConfig(teacher=REPO_ID, student=str(pruned), out=tmp_path / "run", data=str(tiny_data),
                                 tokens=512, seq_len=32, micro_batch=4, global_batch_tokens=256, device="cpu"))
    assert result.steps == 2 and result.val_loss < 10
    card = (result.student / "README.md").read_text()
    assert f"base_model: {REPO_ID}" in card and "license: apache-2.0" in card


def test_missing_hub_id_offline_is_one_line(offline_hub, capsys):
    err = cli_error(capsys, "prune", "--model", "nobody/nothing", "--dry-run", "--target", "intermediate_size=48")
    assert "nobody/nothing is not a local path, and not in the Hugging Face cache while HF_HUB_OFFLINE is set" in err
    err = cli_error(capsys, "eval", "--model", "tinyorg/tiny-llama@v2")  # a revision the cache has no ref for
    assert "tinyorg/tiny-llama@v2 is not a local path" in err


def test_pickle_only_checkpoint_is_refused_by_name(tmp_path, tiny_dir, monkeypatch, capsys):
    """Neither a local directory nor a Hub snapshot holding only pytorch_model.bin is loaded (unpickling can run
    code); the dry run, which reads config.json alone, still works."""
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    from safetensors.torch import load_file
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    err = cli_error(capsys, "prune", "--model", pickled, "--target", "intermediate_size=48", "--out", tmp_path / "o")
    assert f"{pickled / 'pytorch_model.bin'} is a pickle checkpoint" in err and not (tmp_path / "o").exists()
    run_cli("prune", "--model", pickled, "--target", "intermediate_size=48", "--dry-run")
    hub_cache(tmp_path / "hub", pickled, "pickleorg/model")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = cli_error(capsys, "prune", "--model", "pickleorg/model", "--target", "intermediate_size=48", "--out",
                    tmp_path / "o")
    assert "pytorch_model.bin is a pickle checkpoint" in err


def test_a_gguf_file_of_a_hub_repository_offline(tmp_path, monkeypatch, capsys):
    """org/name/FILE.gguf: one GGUF file of a Hub repository (those repositories hold several quantisations), taken
    from the Hugging Face cache offline and converted as a local file is (the same conversion: its content keys it);
    the model card names the repository, the file and the licence the file carries. A file the cache lacks is one
    line."""
    from test_export import byte_level_tokenizer, save_model

    from minitron.card import base_name, hub_id, teacher_license
    from minitron.export import export

    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    (tmp_path / "hf" / "README.md").write_text("---\nlicense: mit\n---\n")  # export writes it as general.license
    repo = tmp_path / "repo"
    repo.mkdir()
    local = export(str(tmp_path / "hf"), repo / "tiny-Q8_0.gguf", "q8_0").gguf
    (repo / "tiny-Q8_0.Modelfile").unlink()
    hub_cache(tmp_path / "hub", repo, "tinyorg/tiny-GGUF")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = "tinyorg/tiny-GGUF/tiny-Q8_0.gguf"
    converted = resolve_model(spec)
    assert converted == resolve_model("tinyorg/tiny-GGUF@main/tiny-Q8_0.gguf") == resolve_model(local)
    assert json.loads((converted / "config.json").read_text())["model_type"] == "llama"
    assert (hub_id(spec), base_name(spec)) == ("tinyorg/tiny-GGUF", "tiny-Q8_0")
    assert teacher_license(spec) == teacher_license(str(local)) == "mit"
    err = cli_error(capsys, "prune", "--model", "tinyorg/tiny-GGUF/tiny-Q4_0.gguf", "--dry-run", "--target",
                    "intermediate_size=48")
    assert "GGUF file tinyorg/tiny-GGUF/tiny-Q4_0.gguf is not a local path, and not in the Hugging Face cache" in err
