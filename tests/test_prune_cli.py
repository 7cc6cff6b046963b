"""`minitron score` and `minitron prune` on saved tiny models: outputs, reuse, and bad input."""
import json
import os
import re
import stat
import subprocess
import sys

import pytest

from conftest import cli_error, run_cli, save_tiny
from minitron.card import card_name
from minitron.errors import MinitronError
from minitron.importance import Scores
from minitron.prune import PruneConfig, prune


def stock_load(path) -> int:
    """Parameter count as stock transformers sees it, in a process that never imports minitron."""
    code = ("import sys, transformers; m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
            "print(sum(p.numel() for p in m.parameters())); assert 'minitron' not in sys.modules")
    return int(subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True,
                              text=True).stdout.split()[-1])


def test_score_then_prune_from_saved_scores(tiny_dir, tiny_data, tmp_path, monkeypatch):
    run_cli("score", "--model", tiny_dir, "--data", tiny_data, "--out", tmp_path / "scores", "--calib-seqs", 8,
            "--seq-len", 32, "--layer-loss", "--block-sizes", 2, "--criteria", "activation", "magnitude")
    scores = Scores.load(tmp_path / "scores")
    assert {"layers/loss", "layers/block_loss_k2", "layers/block_influence"} <= scores.tensors.keys()
    assert scores.meta["calibration"]["num_seqs"] == 8

    import minitron.prune.command
    monkeypatch.setattr(minitron.prune.command, "needed_scores", lambda *a, **k: pytest.fail("scores were recomputed"))
    out = tmp_path / "pruned"
    run_cli("prune", "--model", tiny_dir, "--scores", tmp_path / "scores", "--out", out, "--target",
            "hidden_size=48,intermediate_size=64,num_attention_heads=4,num_hidden_layers=2", "--prune.layer-criterion",
            "block", "--name", "Tiny-Half")
    record = json.loads((out / "pruning.json").read_text())
    assert (out / "README.md").read_text().startswith("---\n")  # the model card, written with the model
    assert card_name(out) == "Tiny-Half"  # --name: the card's title (and an exported GGUF's general.name)
    assert record["dropped_layers"] == [int(scores.tensors["layers/block_loss_k2"].argmin()) + i for i in range(2)]
    assert record["target"]["hidden_size"] == 48 and record["prune"]["criterion"] == "activation"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= \
        {p.name for p in out.iterdir()}
    assert stock_load(out) == record["params_after"] < record["params_before"]


def test_scores_of_the_weights_alone_read_no_text(tiny_dir, tmp_path, capsys, monkeypatch):
    """`score --criteria magnitude random` with no --data reads no calibration text (the default corpus is not built
    in the model's tokenizer), and saves no Block Influence (of no text: zeros): a pruning that ranks layers by it
    from these scores is refused in one line, naming what to run; one by the random layer scores is not."""
    import minitron.importance.command

    monkeypatch.setattr(minitron.importance.command, "default_data", lambda *_: pytest.fail("calibration data read"))
    run_cli("score", "--model", tiny_dir, "--out", tmp_path / "s", "--criteria", "magnitude", "random")
    scores = Scores.load(tmp_path / "s")
    assert "layers/block_influence" not in scores.tensors and scores.meta["calibration"] is None
    assert {"magnitude/mlp", "random/mlp", "layers/random"} <= scores.tensors.keys()
    target = ["--target", "num_hidden_layers=3", "--prune.criterion", "magnitude"]
    err = cli_error(capsys, "prune", "--model", tiny_dir, "--scores", tmp_path / "s", "--out", tmp_path / "a",
                    *target, "--prune.layer-criterion", "bi")
    assert "no layer importance 'block_influence' (have: random); run `minitron score` with calibration text" in err
    assert not (tmp_path / "a").exists()
    run_cli("prune", "--model", tiny_dir, "--scores", tmp_path / "s", "--out", tmp_path / "b", *target,
            "--prune.layer-criterion", "random")
    assert json.loads((tmp_path / "b" / "pruning.json").read_text())["calibration"] is None


def test_scores_of_another_model_are_refused(tiny_dir, tiny_data, tmp_path, capsys):
    """Scores carry the scored model's sizes and fingerprint; prune refuses them for any other model."""
    from conftest import save_tiny

    run_cli("score", "--model", tiny_dir, "--data", tiny_data, "--out", tmp_path / "scores", "--calib-seqs", 4,
            "--seq-len", 32, "--criteria", "magnitude")
    target = ["--target", "intermediate_size=48", "--prune.criterion", "magnitude"]
    same_sizes = save_tiny(tmp_path / "same-sizes", seed=7)  # same config, other weights
    err = cli_error(capsys, "prune", "--model", same_sizes, "--scores", tmp_path / "scores", "--out",
                    tmp_path / "a", *target)
    assert "were computed on another model" in err and not (tmp_path / "a").exists()
    wider = save_tiny(tmp_path / "wider", intermediate_size=128)
    err = cli_error(capsys, "prune", "--model", wider, "--scores", tmp_path / "scores", "--out", tmp_path / "b",
                    *target)
    assert "intermediate_size=96" in err and "intermediate_size=128" in err and not (tmp_path / "b").exists()
    bf16 = tmp_path / "bf16"  # the same model stored in another dtype is the same model
    from transformers import AutoModelForCausalLM
    import shutil
    shutil.copytree(tiny_dir, bf16)
    AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="bfloat16").save_pretrained(bf16)
    run_cli("prune", "--model", bf16, "--scores", tmp_path / "scores", "--out", tmp_path / "c", *target)
    assert (tmp_path / "c" / "config.json").is_file()


def test_prune_computes_scores_when_none_given(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "p"
    run_cli("prune", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--prune.calib-seqs", 4,
            "--prune.seq-len", 32, "--target", "intermediate_size=48", "--prune.drop-layers", "1", "--prune.criterion",
            "wanda")
    record = json.loads((out / "pruning.json").read_text())
    assert record["dropped_layers"] == [1] and record["calibration"]["num_seqs"] == 4
    assert stock_load(out) == record["params_after"]


def test_existing_output_is_refused_and_kept(tiny_dir, tiny_data, tmp_path, capsys):
    out = tmp_path / "p"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = cli_error(capsys, "prune", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--target",
                "intermediate_size=48")
    assert "already exists" in err and (out / "keep.txt").read_text() == "mine"
    err = cli_error(capsys, "prune", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--target",
                    "intermediate_size=48", "--overwrite")
    assert "was not written by minitron" in err and (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args,message", [
    (["--prune.drop-layers", "3-1"], "backwards"),
    (["--target", ""], "prunes nothing"),
    ([], "prunes nothing"),
    (["--target", "hidden_size=64"], "prunes nothing"),
])
def test_no_op_prunes_are_refused(tiny_dir, tmp_path, capsys, args, message):
    """An unpruned copy written with exit 0 would look like success."""
    err = cli_error(capsys, "prune", "--model", tiny_dir, "--out", tmp_path / "out", *args)
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["hidden_size=32", {"hidden_size": "32"}, {"hidden_size": 32.5},
                                    {"hidden_size": True}, ["hidden_size"]])
def test_target_of_the_wrong_type_is_one_line(tiny_dir, tmp_path, target):
    """A library call (or a config written by hand) with a string or float target."""
    from minitron.prune import prune

    with pytest.raises(MinitronError, match="target must be sizes like"):
        prune(str(tiny_dir), target=target, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_seq_len_above_the_models_positions(tiny_dir, tiny_data, tmp_path, capsys):
    err = cli_error(capsys, "score", "--model", tiny_dir, "--data", tiny_data, "--out", tmp_path / "s",
                    "--seq-len", 300)
    assert "max_position_embeddings (256)" in err and not (tmp_path / "s").exists()
    err = cli_error(capsys, "eval", "--model", tiny_dir, "--data", tiny_data, "--seq-len", 300)
    assert "max_position_embeddings (256)" in err


@pytest.mark.parametrize("args,message", [
    (["--target", "num_attention_heads=7"], "not a multiple of num_key_value_heads"),
    (["--target", "hidden_size=65"], "between 1 and the teacher's 64"),
    (["--target", "intermediate_size=0"], "between 1 and the teacher's 96"),
    (["--prune.drop-layers", "0-3"], "would remove all 4 layers"),
    (["--prune.drop-layers", "2-9"], "the model has layers 0-3"),
    (["--prune.drop-layers", "1", "1"], "names a layer twice"),
    (["--target", "num_hidden_layers=3", "--prune.drop-layers", "0-1"], "give one or the other"),
    (["--target", "hidden_size=abc"], "must be a whole number"),
    (["--target", "hidden_size=60"], "hidden size (60) is not a multiple of the number of attention heads (8)"),
])
def test_impossible_targets_write_nothing(tiny_dir, tmp_path, capsys, args, message):
    err = cli_error(capsys, "prune", "--model", tiny_dir, "--out", tmp_path / "out", *args)
    assert message in err
    assert not (tmp_path / "out").exists()


def test_bad_models(tmp_path, capsys):
    assert "does not exist" in cli_error(capsys, "prune", "--model", tmp_path / "nope", "--dry-run")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in cli_error(capsys, "prune", "--model", tmp_path / "empty", "--dry-run")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert "cannot read" in cli_error(capsys, "prune", "--model", tmp_path / "bad", "--dry-run")
    (tmp_path / "fake.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    assert "not a readable GGUF model" in cli_error(capsys, "score", "--model", tmp_path / "fake.gguf")
    (tmp_path / "bloom").mkdir()
    (tmp_path / "bloom" / "config.json").write_text(json.dumps({"model_type": "bloom",
                                                                 "architectures": ["BloomForCausalLM"]}))
    assert "'bloom' (BloomForCausalLM) is not supported" in cli_error(capsys, "prune", "--model", tmp_path / "bloom",
                                                                       "--dry-run")


def test_corrupt_weights(tiny_dir, tiny_data, tmp_path, capsys):
    weights = tiny_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = cli_error(capsys, "prune", "--model", tiny_dir, "--data", tiny_data, "--out", tmp_path / "o", "--target",
                "intermediate_size=48")
    assert "corrupt or incomplete" in err and not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(tmp_path):
    from minitron.errors import MinitronError

    with pytest.raises(MinitronError):
        run_cli("prune", "--model", tmp_path / "nope", "--dry-run", "--debug")


def test_yaml_config(tiny_dir, tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(f"model: {tiny_dir}\ntarget: {{intermediate_size: 48}}\ndry_run: true\n")
    run_cli("prune", "--config", tmp_path / "p.yaml")
    assert "intermediate_size: 96 -> 48" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("modle: x\n")
    assert "Option 'modle' is not accepted" in cli_error(capsys, "prune", "--config", tmp_path / "bad.yaml")


@pytest.mark.slow
def test_prune_real_default_teacher(tmp_path, capsys):
    """The real SmolLM2-135M-Instruct (GGUF, dequantised once): dry run and real prune agree, stock load works."""
    target = "hidden_size=384,intermediate_size=1024,num_attention_heads=6"
    run_cli("prune", "--target", target, "--dry-run")
    assert "parameters: 134,515,008 -> " in capsys.readouterr().out
    out = tmp_path / "half"
    run_cli("prune", "--target", target, "--out", out, "--prune.calib-seqs", 2, "--prune.seq-len", 64,
            "--prune.drop-layers", "20-21")
    record = json.loads((out / "pruning.json").read_text())
    assert record["params_before"] == 134_515_008 and record["dropped_layers"] == [20, 21]
    assert stock_load(out) == record["params_after"]
    assert "{% for message in messages %}" in (out / "chat_template.jinja").read_text()


def test_prune_keeps_the_teachers_dtype(tmp_path, tiny_data):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from conftest import save_tiny

    teacher = save_tiny(tmp_path / "bf16")
    AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.bfloat16).save_pretrained(teacher)
    run_cli("prune", "--model", teacher, "--data", tiny_data, "--out", tmp_path / "p", "--prune.calib-seqs", 2,
            "--prune.seq-len", 16, "--target", "intermediate_size=48")
    with safe_open(tmp_path / "p" / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(tiny_dir, tiny_data, tmp_path, mask, file_mode, dir_mode):
    """A server or container running as another user reads what minitron wrote: files and directories get the
    process umask's modes (temporary files are created 0600/0700 and would keep those)."""
    out = tmp_path / "p"
    old = os.umask(mask)
    try:
        run_cli("prune", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--prune.calib-seqs", 4,
                "--prune.seq-len", 32, "--target", "intermediate_size=48")
    finally:
        os.umask(old)
    paths = [out, *out.rglob("*")]
    assert any(p.name == "config.json" for p in paths) and any(p.name == "pruning.json" for p in paths)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == (dir_mode if p.is_dir() else file_mode), p


def test_the_teachers_name_is_not_carried_over(tiny_dir, tiny_data, tmp_path):
    """A GGUF-converted teacher's config names it (`_model_name_or_path`, general.name); the student's does not."""
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**config, "_model_name_or_path": "Some Teacher 8k Ep2"}))
    out = tmp_path / "p"
    run_cli("prune", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--prune.calib-seqs", 4,
            "--prune.seq-len", 32, "--target", "intermediate_size=48")
    assert "Some Teacher" not in (out / "config.json").read_text()


def test_depth_pruning_scores_only_the_block_length_it_removes(tiny_dir, tiny_data, tmp_path):
    """Removing k > 1 layers as a block needs the removal losses of blocks of k only (each length is a pass over the
    layers after every block), single layers only for k = 1 or --prune.layer-criterion loss; --block-sizes alone
    measures those lengths, --layer-loss adds single layers."""
    from minitron.load import load_config
    from minitron.prune import PruneConfig

    config = load_config(str(tiny_dir))
    L = config.num_hidden_layers
    needs = {k: PruneConfig().needs(config, {"num_hidden_layers": L - k}) for k in (1, 2)}
    assert needs[2].removal == [2] and not needs[2].layer_loss and needs[1].removal == [1]
    assert (needs[1] | needs[2]).removal == [1, 2]  # a search over both depths scores both
    assert PruneConfig(layer_criterion="loss").needs(config, {"num_hidden_layers": L - 2}).removal == [1]
    run_cli("prune", "--model", tiny_dir, "--data", tiny_data, "--target", f"num_hidden_layers={L - 2}",
            "--out", tmp_path / "p", "--prune.calib-seqs", 4, "--prune.seq-len", 32)
    run_cli("score", "--model", tiny_dir, "--data", tiny_data, "--out", tmp_path / "s", "--calib-seqs", 4,
            "--seq-len", 32, "--block-sizes", 2, "--criteria", "activation")
    layers = {k for k in Scores.load(tmp_path / "s").tensors if k.startswith("layers/")}
    assert layers == {"layers/block_loss_k2", "layers/block_influence"}


@pytest.mark.parametrize("family,target,problem", [
    ("gemma2", {"num_hidden_layers": 3}, "layer pattern .* is not local and global layers in turn"),
    ("phi3", {"num_attention_heads": 4}, "attention is 4 heads x 8 = 32 wide"),
])
def test_prune_warns_when_export_would_refuse_the_model(tmp_path, tiny_data, capsys, family, target, problem):
    """A target llama.cpp cannot run (Gemma 2's local and global layers no longer in turn, a Phi-3 attention narrower
    than its hidden size) is said at pruning time, before any training goes into it; the model is written all the
    same (export refuses it with the same line), and its card does not offer the export command that an exportable
    shape's card does."""
    save_tiny(tmp_path / "teacher", family, tie=True, head_dim=8)
    prune(str(tmp_path / "teacher"), target=target, out=tmp_path / "pruned", data=tiny_data,
          prune=PruneConfig(calib_seqs=4, seq_len=32))
    warning = capsys.readouterr().err
    assert re.search(f"warning: cannot export .*{problem}", warning), warning
    assert (tmp_path / "pruned" / "model.safetensors").is_file()
    assert "export it to GGUF" not in (tmp_path / "pruned" / "README.md").read_text()  # the card does not offer it
    save_tiny(tmp_path / "exportable", family, tie=True, head_dim=8)
    prune(str(tmp_path / "exportable"), target={"intermediate_size": 48}, out=tmp_path / "narrower", data=tiny_data,
          prune=PruneConfig(calib_seqs=4, seq_len=32))
    assert "export it to GGUF" in (tmp_path / "narrower" / "README.md").read_text()
    save_tiny(tmp_path / "opt", "opt")  # a family export never takes (llama.cpp runs no OPT): no pruning's doing
    capsys.readouterr()
    prune(str(tmp_path / "opt"), target={"ffn_dim": 48}, out=tmp_path / "opt-pruned", data=tiny_data,
          prune=PruneConfig(calib_seqs=4, seq_len=32))
    assert "warning" not in capsys.readouterr().err
    assert "export it to GGUF" not in (tmp_path / "opt-pruned" / "README.md").read_text()
