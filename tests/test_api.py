"""The library API on models in memory (docs/api.md): minitron.score / prune / distill on a tiny random model, the
same result as the commands, partial targets everywhere, one-line refusals, and the documented example run."""
from __future__ import annotations

import re
import runpy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import minitron
from minitron.arch import count_params
from minitron.errors import MinitronError
from minitron.load import load_model
from minitron.prune.plan import params_of, target_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_lists_its_api():
    names = set(dir(minitron))
    assert {"score", "prune", "distill", "compress", "evaluate", "measure", "TrainConfig", "PruneConfig",
            "load_model"} <= names
    for name in minitron.__all__:
        assert getattr(minitron, name) is not None
    assert callable(minitron.prune) and callable(minitron.distill)
    assert minitron.prune.PruneConfig is minitron.PruneConfig  # still the package
    with pytest.raises(AttributeError):
        minitron.nothing_here


@pytest.fixture
def teacher_and_scores(tiny_dir, tiny_data):
    teacher = load_model(tiny_dir)
    scores = minitron.score(teacher, tiny_data, calib_seqs=8, seq_len=32, layer_loss=True, block_sizes=[2])
    return teacher, scores


@pytest.mark.parametrize("target", [{"intermediate_size": 48}, {"num_hidden_layers": 2}, {"num_attention_heads": 4},
                                    {"hidden_size": 32, "num_hidden_layers": 3}])
def test_prune_in_memory_any_partial_target(teacher_and_scores, target):
    teacher, scores = teacher_and_scores
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = minitron.prune(teacher, scores, target)
    assert student is not teacher
    for k, v in target.items():
        assert getattr(student.config, k) == v
    assert count_params(student) == params_of(target_config(teacher.config, {**{k: getattr(teacher.config, k)
                                                                               for k in target}, **target}))
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher is untouched
    ids = torch.randint(0, teacher.config.vocab_size, (2, 16))
    assert torch.isfinite(student(ids).logits).all()


def test_prune_in_memory_equals_the_command(tmp_path, tiny_dir, teacher_and_scores):
    """The same scores and target through `minitron prune --scores` and through minitron.prune: the same weights."""
    teacher, scores = teacher_and_scores
    target = {"intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3}
    scores.save(tmp_path / "scores")
    minitron.prune.prune(model=str(tiny_dir), target=target, out=tmp_path / "pruned", scores=tmp_path / "scores")
    written = load_model(tmp_path / "pruned").state_dict()
    in_memory = minitron.prune(teacher, tmp_path / "scores", target).state_dict()
    assert written.keys() == in_memory.keys()
    assert all(torch.equal(written[k], in_memory[k]) for k in written)


def test_score_on_token_ids_and_inplace(teacher_and_scores):
    teacher, _ = teacher_and_scores
    ids = torch.randint(0, teacher.config.vocab_size, (6, 24))
    scores = minitron.score(teacher, ids, batch_size=3)
    assert scores.meta["calibration"]["num_seqs"] == 6 and scores.tensors["activation/mean-l2/mlp"].shape == (4, 96)
    same = minitron.prune(teacher, scores, {"intermediate_size": 32}, inplace=True)
    assert same is teacher and teacher.config.intermediate_size == 32


def test_api_refusals_are_one_line(teacher_and_scores):
    teacher, scores = teacher_and_scores
    width_only = minitron.score(teacher, torch.randint(0, 256, (2, 16)))  # no layer losses
    cases = [
        (lambda: minitron.prune(teacher, width_only, {"num_hidden_layers": 2}), "layer importance"),
        (lambda: minitron.prune(teacher, scores, {"hidden_size": 999}), "impossible"),
        (lambda: minitron.prune(teacher, scores, {"hidden": 32}), "cannot prune"),
        (lambda: minitron.prune(teacher, {"not": "scores"}, {"hidden_size": 32}), "scores must be"),
        (lambda: minitron.score(teacher, torch.rand(2, 8)), "2-D integer tensor"),
        (lambda: minitron.score(teacher, torch.full((2, 8), 999)), "embeddings for ids"),
        (lambda: minitron.score(teacher, None, block_sizes=[4], layer_loss=True), "block sizes"),
    ]
    for call, words in cases:
        with pytest.raises(MinitronError) as e:
            call()
        assert words in str(e.value) and "\n" not in str(e.value)


def test_distill_models_in_memory(tmp_path, tiny_data, teacher_and_scores, one_thread):
    teacher, scores = teacher_and_scores
    student = minitron.prune(teacher, scores, {"intermediate_size": 48, "num_hidden_layers": 3})
    start = {k: v.clone() for k, v in student.state_dict().items()}
    config = minitron.TrainConfig(out=tmp_path / "run", tokens=512, seq_len=32, micro_batch=4,
                                  global_batch_tokens=128, lr=3e-3, eval_every=0, device="cpu")
    with pytest.raises(MinitronError, match="dry_run plans a run from models on disk"):  # nothing to plan from
        minitron.distill(teacher, student, tiny_data, replace(config, dry_run=True))
    assert not (tmp_path / "run").exists()
    result = minitron.distill(teacher, student, tiny_data, config)
    assert result.steps == 4 and (tmp_path / "run" / "inputs" / "teacher" / "config.json").is_file()
    trained = load_model(result.student).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())  # trained in place
    assert all(torch.equal(trained[k], v) for k, v in student.state_dict().items())  # as the checkpoint says
    with pytest.raises(MinitronError, match="already holds a run"):  # the run given again: --resume or --overwrite
        minitron.distill(teacher, student, tiny_data, config)



def test_the_documented_example_runs(tmp_path, tiny_dir, tiny_data, one_thread):
    """docs/api.md shows examples/notebook.py as it is, and it runs (on a tiny teacher and tiny budgets)."""
    example = (ROOT / "examples" / "notebook.py").read_text()
    shown = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S).group(1)
    assert shown == example
    main = runpy.run_path(str(ROOT / "examples" / "notebook.py"))["main"]
    out = main(teacher=str(tiny_dir), data=str(tiny_data), out=str(tmp_path / "nb"), tokens=512, seq_len=32)
    assert out["distilled"]["kl"] < out["pruned"]["kl"]  # closer to the (random) teacher
    assert Path(out["student"], "config.json").is_file()
