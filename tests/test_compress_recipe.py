"""The rest of the recipe in `compress`: teacher correction before scoring (--correct-teacher) and iterative
compression (--stages), on tiny models: end to end, resumable, and refused at the front door when impossible."""
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

import minitron
from conftest import cli_error, tiny_config
from minitron import pipeline
from minitron.arch import arch_of
from minitron.distill import loop
from minitron.errors import MinitronError
from minitron.load import load_config
from minitron.prune import PruneConfig, check_target, prune, target_config
from test_compress import TINY, check_run, trained_tiny  # noqa: F401 (a fixture)


def test_compress_with_teacher_correction(trained_tiny, tiny_data, tmp_path):
    run = tmp_path / "run"
    metrics = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, correct_teacher=1024,
                                correct_lr=3e-3, **TINY)
    saved = check_run(run, metrics)
    stages = json.loads((run / "record.json").read_text())
    assert list(stages) == ["data", "correct", "score", "prune", "distill", "evaluate"]
    assert saved["correction_tokens"] == stages["correct"]["outputs"]["tokens"] == 1024
    # scored, pruned and distilled from the corrected teacher (test_correct shows that correction lowers the loss)
    assert json.loads((run / "pruned" / "pruning.json").read_text())["teacher"].endswith("correct/student")
    train = json.loads((run / "distill" / "train_config.json").read_text())
    assert train["teacher"].endswith("correct/student")
    original, teacher = saved["original_teacher"], saved["teacher"]
    assert abs(teacher["test_loss"] - original["test_loss"]) > 1e-4
    assert original["test_kl"] > 0 and original["ood_kl"] > 0  # KL from the corrected teacher, the one distilled from
    assert original["params"] == teacher["params"]
    report = (run / "report.md").read_text()
    assert "corrected" in report and f"{1024 + 1024:,}" in report
    assert f"| teacher before correction | {original['params']:,} | {original['test_loss']:.3f} ± " \
           f"{original['test_ci95']:.3f} | {original['test_kl']:.3f} ± {original['test_kl_ci95']:.3f} |" in report
    rows = [line.split(" |")[0] for line in report.splitlines() if line.startswith("| ")]
    assert rows[1:6] == ["| teacher", "| teacher before correction", "| pruned (no training)", "| distilled",
                         "| gap closed by distillation"]
    again = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, resume=True, correct_teacher=1024,
                              correct_lr=3e-3, **TINY)
    assert again == saved
    with pytest.raises(MinitronError, match="its data ran with correct_teacher = 1024, now 0"):
        minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, resume=True, **TINY)


def test_compress_passes_the_hidden_and_head_scores_to_prune(tiny_dir, tiny_data, tmp_path, one_thread):
    """--prune.hidden-score and --prune.head-score reach the prune stage (recorded, in pruning.json) and the report
    says so; the heads kept are those `minitron prune` keeps from the same scores with the same settings."""
    run = tmp_path / "run"
    how = replace(TINY["prune"], hidden_score="pooled", head_score="attn")
    minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run,
                      **{**TINY, "prune": how, "distill": replace(TINY["distill"], tokens=256)})
    pruning = json.loads((run / "pruned" / "pruning.json").read_text())
    assert (pruning["prune"]["hidden_score"], pruning["prune"]["head_score"]) == ("pooled", "attn")
    settings = json.loads((run / "record.json").read_text())["prune"]["settings"]["prune"]
    assert settings["hidden_score"] == "pooled" and settings["head_score"] == "attn"
    assert "hidden channels pooled over every norm; heads before o_proj" in (run / "report.md").read_text()
    for name, config in (("direct", how), ("default", TINY["prune"])):
        prune(str(tiny_dir), target=TINY["target"], out=tmp_path / name, prune=config, scores=run / "scores",
              device="cpu")
    weights = {name: load_file(path / "model.safetensors")
               for name, path in (("run", run / "pruned"), ("direct", tmp_path / "direct"),
                                  ("default", tmp_path / "default"))}
    assert all(torch.equal(weights["run"][k], weights["direct"][k]) for k in weights["run"])
    assert not all(torch.equal(weights["run"][k], weights["default"][k]) for k in weights["run"])


def test_two_stages_reach_the_target_and_resume(trained_tiny, tiny_data, tmp_path, monkeypatch, capsys):
    """Killed at the last round's first checkpoint, a resumed 2-stage run redoes nothing of round 1, finishes, and
    its student has exactly the target's shape; round 1 stopped between the teacher and the target."""
    run = tmp_path / "run"
    settings = {**TINY, "distill": replace(TINY["distill"], save_every=1)}
    real_save, saves = loop.save_checkpoint, []

    def save_then_die(out, *args, **kwargs):
        real_save(out, *args, **kwargs)
        saves.append(out)
        if out == run / "distill":  # the second round's distillation
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, stages=2, **settings)
    assert list(json.loads((run / "record.json").read_text())) == ["data", "score-1", "prune-1", "distill-1",
                                                                    "score", "prune"]
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert run / "stage-1" / "distill" in saves  # round 1's distillation finished
    for stage in ("score", "prune_model"):  # the functions the score and prune stages call
        monkeypatch.setattr(pipeline, stage, lambda *a, **k: pytest.fail("a recorded stage ran again"))
    capsys.readouterr()
    metrics = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, stages=2, resume=True, **settings)
    assert "resuming" in capsys.readouterr().out
    stages = json.loads((run / "record.json").read_text())
    assert list(stages) == ["data", "score-1", "prune-1", "distill-1", "score", "prune", "distill", "evaluate"]
    assert stages["distill-1"]["outputs"]["tokens"] + stages["distill"]["outputs"]["tokens"] == metrics["tokens"] == 1024
    teacher, middle, final = (AutoConfig.from_pretrained(p) for p in (trained_tiny, run / "stage-1" / "student",
                                                                       run / "student"))
    shape = {name: [getattr(c, name) for c in (teacher, middle, final)] for name in TINY["target"]}
    assert {name: s[2] for name, s in shape.items()} == TINY["target"]
    assert all(t >= m >= f for t, m, f in shape.values()) and any(t > m > f for t, m, f in shape.values()), shape
    # round 2 started from round 1's student; both distilled from the teacher
    assert json.loads((run / "pruned" / "pruning.json").read_text())["teacher"].endswith("stage-1/student")
    assert json.loads((run / "distill" / "train_config.json").read_text())["teacher"] == str(trained_tiny)
    assert metrics["stages"] == 2 and metrics["distilled"]["test_loss"] < metrics["pruned"]["test_loss"]
    check_run(run, metrics)


@pytest.mark.parametrize("family", ["lfm2", "olmoe", "stablelm", "starcoder2", "phi", "gpt_neox", "gpt2",
                                    "gpt_bigcode", "gptj", "falcon", "falcon_7b", "helium",
                                    "gpt_neo"])
@pytest.mark.parametrize("heads", [True, False])
def test_a_rounds_hidden_size_follows_its_heads_where_the_attention_is_as_wide(family, heads):
    """Where transformers or llama.cpp sizes the attention by hidden_size (`Arch.attention_is_hidden`), every round's
    hidden size is its heads x head_dim, so that every round is a model stock transformers builds (they once were
    interpolated apart: 216 wide with 24 heads of 8 here, 1776 with 24 heads of 64 for LFM2-1.2B); a target that
    leaves the heads out gets those its hidden size holds, in every round."""
    overrides = dict(hidden_size=256, num_attention_heads=32, num_key_value_heads=8)  # LFM2-1.2B's heads, 8 wide
    config = tiny_config(family, **overrides, **({"head_dim": 8} if family == "stablelm" else {}))
    target = {"hidden_size": 192, **({"num_attention_heads": 24} if heads else {}), arch_of(config).mlp_size: 48}
    rounds = pipeline.stage_targets(config, check_target(config, target), target, 2)
    own = {"num_key_value_heads": 24} if arch_of(config).own_kv else {}  # (GPT-NeoX's KV heads are its heads)
    assert rounds[-1] == {**target, "num_attention_heads": 24, **own} and len(rounds) == 2
    for sizes in rounds:
        assert sizes["hidden_size"] == sizes["num_attention_heads"] * 8, sizes
        target_config(config, check_target(config, sizes))  # a valid model: refused otherwise


def test_stage_targets_never_grow_a_size():
    """A round's hidden size, rounded to a multiple of the round's heads, can round up past the round before's (the
    tiny DeepSeek V3 from 8 heads to 3 in three rounds: 48 with 6 heads, then 56 with 4, which the round's student
    cannot be pruned to): each round keeps at most the sizes of the round before, and every round is a valid model,
    its KV heads its query heads."""
    config = tiny_config("deepseek_v3")
    target = {"num_attention_heads": 3, "hidden_size": 48}
    rounds = pipeline.stage_targets(config, check_target(config, target), target, 3)
    assert [r["hidden_size"] for r in rounds] == [48, 48, 48]
    assert [r["num_attention_heads"] for r in rounds] == [6, 4, 3]
    for before, after in zip(rounds, rounds[1:]):
        assert check_target(config, after)["num_key_value_heads"] == after["num_attention_heads"]
        assert all(after[k] <= before[k] for k in after)


def test_stage_targets_and_bad_recipes(tiny_dir, tiny_data, tmp_path, capsys):
    config = load_config(tiny_dir)  # hidden 64, ffn 96, 8 heads in 2 KV groups
    target = {"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4}
    sizes = check_target(config, target)
    assert pipeline.stage_targets(config, sizes, target, 1) == [target]
    assert pipeline.stage_targets(config, sizes, target, 2) == [
        {"hidden_size": 48, "intermediate_size": 64, "num_attention_heads": 6}, target]
    base = ["compress", "--teacher", tiny_dir, "--data", tiny_data, "--distill.seq-len", 32,
            "--distill.global-batch-tokens", 256, "--distill.tokens", 1024]
    err = cli_error(capsys, *base, "--out", tmp_path / "a", "--target", "intermediate_size=88", "--stages", 2)
    assert "nothing to prune" in err and not (tmp_path / "a").exists()  # 96 -> 88 -> 88: a round with nothing to do
    err = cli_error(capsys, *base, "--out", tmp_path / "a", "--target", "num_attention_heads=6", "--stages", 2)
    assert "hidden size (64) is not a multiple of the number of attention heads (6)" in err  # the target as given,
    assert not (tmp_path / "a").exists()  # not a round's shape derived from it
    err = cli_error(capsys, *base, "--out", tmp_path / "b", "--target", "hidden_size=32", "--stages", 3,
                    "--distill.tokens", 512)
    assert "fewer than one optimiser step" in err and not (tmp_path / "b").exists()
    err = cli_error(capsys, *base, "--out", tmp_path / "c", "--target", "hidden_size=32", "--correct-teacher", 10**9)
    assert "--correct-teacher" in err and not (tmp_path / "c").exists()
