"""The command line: every command's flags come from its function or config dataclass (jsonargparse), the
argparse-style forms of the README keep working, --print-config round-trips, errors are one line."""
from pathlib import Path

import pytest
from conftest import cli_error

from minitron.cli import COMMANDS, main, parse, parse_mapping
from minitron.distill import TrainConfig
from minitron.errors import MinitronError


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: minitron {name}" in out and "--config" in out and "--print-config" in out


def test_help_comes_from_docstrings_and_field_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--global-batch-tokens" in out and "tokens per optimiser step, all processes together" in out
    assert "--seq_len" not in out  # flags are spelt with dashes


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("argv,message", [
    (["prune", "--no-such-flag"], "minitron prune: error: unrecognized arguments: --no-such-flag"),
    (["prune", "--seq-len", "abc"], "minitron prune: error: --seq-len: expected int"),
    (["prune", "--criterion", "best"], "minitron prune: error: --criterion: expected"),
    (["distill", "--loss", "l2"], "minitron distill: error: --loss: expected"),
    (["frobnicate"], "minitron: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_bad_values_are_one_line(capsys, tmp_path):
    assert "hidden_size must be a whole number" in cli_error(capsys, "prune", "--target", "hidden_size=abc")
    assert "distill needs --out" in cli_error(capsys, "distill", "--student", "s")
    assert "--micro-batch must be a positive whole number" in cli_error(capsys, "distill", "--student", "s", "--out",
                                                                   tmp_path / "o", "--micro-batch", 0)
    assert not (tmp_path / "o").exists()
    with pytest.raises(MinitronError):  # --debug: the traceback instead of the line
        main(["distill", "--student", "s", "--debug"])


def test_argparse_style_forms_of_the_readme():
    _, kw = parse(["prune", "--target", "hidden_size=384,intermediate_size=1024,num_attention_heads=6",
                   "--drop-layers", "16-25", "--dry-run", "--no-stream", "--out", "p"])
    assert kw["target"] == {"hidden_size": 384, "intermediate_size": 1024, "num_attention_heads": 6}
    assert kw["drop_layers"] == "16-25" and kw["dry_run"] is True and kw["stream"] is False
    assert kw["out"] == Path("p")
    _, kw = parse(["data", "--source", "a", "b.jsonl", "--chat", "--val-fraction", "0.1"])
    assert kw["source"] == ["a", "b.jsonl"] and kw["chat"] is True and kw["val_fraction"] == 0.1
    _, kw = parse(["score", "--layer-loss", "--block-sizes", "2", "4", "--criteria", "activation", "wanda"])
    assert kw["block_sizes"] == [2, 4] and kw["criteria"] == ["activation", "wanda"] and kw["layer_loss"]
    fn, kw = parse(["distill", "--student", "s", "--out", "o", "--layer-pairs", "3:6", "7:14", "--resume",
                    "--lr", "3e-4"])
    assert fn.__name__ == "distill"
    assert kw["cfg"] == TrainConfig(student="s", out=Path("o"), layer_pairs=["3:6", "7:14"], resume=True, lr=3e-4)
    # jsonargparse's own spellings work too
    _, kw = parse(["prune", "--target", "{hidden_size: 384}", "--dry-run", "false", "--stream", "true"])
    assert kw["target"] == {"hidden_size": 384} and kw["dry_run"] is False and kw["stream"] is True


def test_parse_mapping():
    assert parse_mapping("hidden_size=4096, intermediate_size=11520") == {"hidden_size": 4096,
                                                                          "intermediate_size": 11520}
    with pytest.raises(MinitronError, match="expected NAME=VALUE"):
        parse_mapping("hidden_size")


@pytest.mark.parametrize("argv", [
    ["prune", "--model", "m", "--target", "hidden_size=384,intermediate_size=1024", "--drop-layers", "3-4",
     "--dry-run", "--seq-len", "64"],
    ["distill", "--student", "s", "--teacher", "t", "--out", "o", "--tokens", "4096", "--layer-pairs", "3:6", "7:14",
     "--hidden-loss", "cosine", "--lr", "3e-4", "--no-resume"],
    ["data", "--source", "a", "b", "--max-tokens", "1000", "--chat"],
    ["compress", "--teacher", "t", "--target", "hidden_size=384,num_attention_heads=6", "--out", "r",
     "--distill.lr", "3e-4", "--distill.layer-pairs", "3:6", "7:14", "--distill.hidden-loss", "mse"],
])
def test_print_config_runs_the_same_job(argv, tmp_path, capsys):
    """--print-config prints a complete YAML; fed back with --config it parses to the same call."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--print-config"])
    assert e.value.code == 0
    yaml = tmp_path / "job.yaml"
    yaml.write_text(capsys.readouterr().out)
    assert parse([argv[0], "--config", str(yaml)]) == parse(argv)
    # flags after --config override it
    seed = "--distill.seed" if argv[0] == "compress" else "--seed"
    _, kw = parse([argv[0], "--config", str(yaml), seed, "7"])
    config = kw.get("distill") or kw.get("cfg")  # compress's distill section, distill's TrainConfig
    assert (config.seed if config is not None else kw["seed"]) == 7


def test_nested_compress_settings(tmp_path):
    (tmp_path / "c.yaml").write_text("target: {hidden_size: 384}\ndistill:\n  lr: 0.0003\n  layer_pairs: ['3:6']\n")
    _, kw = parse(["compress", "--config", str(tmp_path / "c.yaml"), "--distill.tokens", "5000"])
    assert kw["target"] == {"hidden_size": 384}
    assert kw["distill"] == TrainConfig(lr=3e-4, layer_pairs=["3:6"], tokens=5000)


def test_yaml_unknown_key_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("student: s\nlearning_rate: 1\n")
    assert "unknown parameter(s) learning_rate" in cli_error(capsys, "distill", "--config", tmp_path / "bad.yaml")
