"""The command line: every command's flags come from its function or config dataclass (jsonargparse), the
argparse-style forms of the README keep working, --print-config round-trips, errors are one line."""
import dataclasses
from pathlib import Path

import pytest

import minitron
from conftest import cli_error

from minitron.cli import COMMANDS, main, parse, parse_mapping
from minitron.distill import TrainConfig
from minitron.errors import MinitronError, refuse_marked, whole_number
from minitron.eval import EvalConfig


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
    assert "--global_batch_tokens" in out and "tokens per optimiser step, all processes together" in out
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--prune.head_score" in out and "activation score of attention heads" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"minitron {minitron.__version__}"


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("argv,message", [
    (["prune", "--no-such-flag"], "minitron prune: error: unrecognized arguments: --no-such-flag"),
    (["prune", "--prune.seq-len", "abc"], 'minitron prune: error: Parser key "prune.seq_len": Expected a <class \'int\'>'),
    (["prune", "--prune.criterion", "best"], 'minitron prune: error: Parser key "prune.criterion": Expected a'),
    (["distill", "--loss", "l2"], 'minitron distill: error: Parser key "loss":'),
    (["search", "--params", "0.5", "--distill.out", "o"], "minitron: error: search sets distill.out itself"),
    (["search", "--params", "0.5", "--distill.dry-run", "true"], "minitron: error: search sets distill.dry_run itself"),
    (["frobnicate"], "minitron: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == (1 if "itself" in message else 2)
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
                   "--prune.drop-layers", "16-25", "3", "--dry-run", "--no-stream", "--out", "p"])
    assert kw["target"] == {"hidden_size": 384, "intermediate_size": 1024, "num_attention_heads": 6}
    assert kw["prune"].drop_layers == [*range(16, 26), 3] and kw["dry_run"] is True and kw["stream"] is False
    assert kw["out"] == Path("p")
    _, kw = parse(["data", "--source", "a", "b.jsonl", "--chat", "--dev-fraction", "0.1"])
    assert kw["source"] == ["a", "b.jsonl"] and kw["chat"] is True and kw["dev_fraction"] == 0.1
    assert kw["test_fraction"] is None and "val_fraction" not in kw  # None: 0.02, or a corpus part's own
    _, kw = parse(["data", "--dev-fraction", "0.1", "--test-fraction", "0.05"])
    assert (kw["dev_fraction"], kw["test_fraction"]) == (0.1, 0.05)
    fn, kw = parse(["eval", "--tokens", "512", "--no-ood", "--split", "dev", "--teacher", "t"])
    assert fn.__name__ == "evaluate" and kw["cfg"] == EvalConfig(tokens=512, ood=False, split="dev", teacher="t")
    _, kw = parse(["eval"])
    assert kw["cfg"] == EvalConfig() and (kw["cfg"].tokens, kw["cfg"].ood, kw["cfg"].tasks) == (65536, True, None)
    # compress's eval section: the same settings, spelt --eval.NAME; its default runs the bundled tasks on 100 documents
    _, kw = parse(["compress", "--target", "hidden_size=384", "--eval.tokens", "512", "--no-eval.ood",
                   "--eval.tasks", "[]"])
    assert kw["eval"] == EvalConfig(tokens=512, ood=False, tasks=[], limit=100) and "val_seqs" not in kw
    _, kw = parse(["compress", "--target", "hidden_size=384", "--eval.tasks", "mc_piqa", "kjv"])
    assert kw["eval"] == EvalConfig(tasks=["mc_piqa", "kjv"], limit=100)
    _, kw = parse(["compress", "--target", "hidden_size=384"])
    assert kw["eval"] == EvalConfig(tasks=["mc_arc_easy", "mc_hellaswag", "mc_piqa"], limit=100)
    _, kw = parse(["score", "--layer-loss", "--block-sizes", "2", "4", "--criteria", "activation", "wanda"])
    assert kw["block_sizes"] == [2, 4] and kw["criteria"] == ["activation", "wanda"] and kw["layer_loss"]
    fn, kw = parse(["distill", "--student", "s", "--out", "o", "--layer-pairs", "3:6", "7:14", "--resume",
                    "--lr", "3e-4"])
    assert fn.__name__ == "distill"
    assert kw["cfg"] == TrainConfig(student="s", out=Path("o"), layer_pairs=["3:6", "7:14"], resume=True, lr=3e-4)
    # jsonargparse's own spellings work too
    _, kw = parse(["prune", "--target", "{hidden_size: 384}", "--dry_run", "false", "--stream", "true",
                   "--prune.drop_layers", "[1, 2]"])
    assert kw["target"] == {"hidden_size": 384} and kw["dry_run"] is False and kw["stream"] is True
    assert kw["prune"].drop_layers == [1, 2]


def test_parse_mapping():
    assert parse_mapping("hidden_size=4096, intermediate_size=11520") == {"hidden_size": 4096,
                                                                          "intermediate_size": 11520}
    with pytest.raises(MinitronError, match="expected NAME=VALUE"):
        parse_mapping("hidden_size")


@pytest.mark.parametrize("argv", [
    ["prune", "--model", "m", "--target", "hidden_size=384,intermediate_size=1024", "--prune.drop-layers", "3-4",
     "--dry-run", "--prune.seq-len", "64", "--prune.head-score", "attn"],
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
    section = {"compress": "distill", "prune": "prune"}.get(argv[0])  # the nested config that holds the seed
    _, kw = parse([argv[0], "--config", str(yaml), f"--{section}.seed" if section else "--seed", "7"])
    config = kw.get(section) or kw.get("cfg")  # compress's distill section, prune's, distill's TrainConfig
    assert (config.seed if config is not None else kw["seed"]) == 7


def test_nested_compress_settings(tmp_path):
    (tmp_path / "c.yaml").write_text("target: {hidden_size: 384}\ndistill:\n  lr: 0.0003\n  layer_pairs: ['3:6']\n")
    _, kw = parse(["compress", "--config", str(tmp_path / "c.yaml"), "--distill.tokens", "5000"])
    assert kw["target"] == {"hidden_size": 384}
    assert kw["distill"] == TrainConfig(lr=3e-4, layer_pairs=["3:6"], tokens=5000)


def test_yaml_unknown_key_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("student: s\nlearning_rate: 1\n")
    assert "learning_rate" in cli_error(capsys, "distill", "--config", tmp_path / "bad.yaml")


def test_a_runs_own_train_config_runs_it_again(tmp_path):
    """train_config.json, the resolved settings a run wrote, is a config `distill --config` takes as it is."""
    import json

    cfg = TrainConfig(student="s", out=tmp_path / "run", teacher="t", tokens=4096, lr=3e-4, global_batch_tokens=1024,
                      loss="ce_kd", min_lr=3e-5)
    (tmp_path / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), default=str))
    _, kw = parse(["distill", "--config", str(tmp_path / "train_config.json")])
    assert kw["cfg"] == cfg
    _, kw = parse(["distill", "--config", str(tmp_path / "train_config.json"), "--out", "other"])
    assert kw["cfg"] == dataclasses.replace(cfg, out=Path("other"))


def test_the_shared_refusals():
    """whole_number takes whole numbers from 1 (not True, 1.0 or "2"), or from its `low`, and names what it checks
    in one wording (the distill, prune, compress and eval flags alike); refuse_marked
    refuses a marked field that differs from its default (a default_factory's too), and lets unmarked ones pass."""
    assert whole_number(3, "--n") == 3
    for bad in (0, -1, True, 1.0, "2", None):
        with pytest.raises(MinitronError, match=f"^--n must be a positive whole number, not {bad!r}$"):
            whole_number(bad, "--n")
    assert whole_number(0, "--n", 0) == 0 and whole_number(2, "--n", 2) == 2
    with pytest.raises(MinitronError, match="^--n must be a whole number, 0 or more, not -1$"):
        whole_number(-1, "--n", 0)
    with pytest.raises(MinitronError, match="^--n must be a whole number, at least 2, not 1$"):
        whole_number(1, "--n", 2)

    @dataclasses.dataclass
    class Section:
        free: int = 1
        kept: list = dataclasses.field(default_factory=list, metadata={"mine": True})

    refuse_marked(Section(free=5), "mine", "cmd", "sec", "why")
    with pytest.raises(MinitronError, match=r"^cmd sets sec.kept itself; leave it out of the sec section \(why\)$"):
        refuse_marked(Section(kept=[1]), "mine", "cmd", "sec", "why")
