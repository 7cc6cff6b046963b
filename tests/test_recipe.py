"""`compress` takes the whole recipe (pruning criterion, aggregation, depth, the distillation loss) from flags or
YAML, and its report names what ran, read from the files the stages wrote."""
import json
from dataclasses import asdict

import pytest
import yaml

from minitron.cli import parse
from minitron.prune import PruneConfig
from minitron.distill.config import distill_words
from minitron.report import pruning_words, write_report

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compress_runs_the_recipe_of_its_yaml(tiny_dir, tiny_data, tmp_path):
    recipe = {"teacher": str(tiny_dir), "data": str(tiny_data), "out": str(tmp_path / "run"),
              "target": {"intermediate_size": 64, "num_hidden_layers": 2},
              "prune": {"criterion": "wanda", "seq_agg": "l2", "layer_criterion": "block", "calib_seqs": 4,
                        "seq_len": 32},
              "eval": {"tokens": 64, "ood": False, "tasks": []}, "prompt": "hi",
              "distill": {"loss": "reverse_kl", "temperature": 2.0, "tokens": 512, "seq_len": 32, "micro_batch": 4,
                          "global_batch_tokens": 256, "eval_seqs": 2}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fn, kwargs = parse(["compress", "--config", str(tmp_path / "recipe.yaml"), "--device", "cpu"])
    fn(**kwargs)
    run = tmp_path / "run"
    pruning = json.loads((run / "pruned" / "pruning.json").read_text())
    how = pruning["prune"]
    assert how["criterion"] == "wanda" and (how["seq_agg"], how["batch_agg"]) == ("l2", "l2")
    assert how["layer_criterion"] == "block" and len(pruning["dropped_layers"]) == 2
    first = pruning["dropped_layers"][0]
    assert pruning["dropped_layers"] == [first, first + 1]  # one contiguous block, chosen by the block losses
    assert json.loads((run / "distill" / "train_config.json").read_text())["loss"] == "reverse_kl"
    stages = json.loads((run / "record.json").read_text())
    assert stages["score"]["settings"]["criteria"] == ["wanda"] and stages["score"]["settings"]["block_sizes"] == [2]
    assert stages["evaluate"]["settings"] == {"eval_tokens": 64, "ood": False, "seq_len": 32, "prompt": "hi"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["held_out"]) == ["test"] and "ood_loss" not in metrics["distilled"]  # ood: false
    assert metrics["held_out"]["test"]["tokens"] == 64 and set(metrics["gap_closed"]) == {"test", "test_kl"}
    report = (run / "report.md").read_text()
    assert "width by wanda importance" in report and "forward KL" not in report
    assert "| model | parameters | test split loss | test split KL | generation tokens/s |" in report
    assert "- test split: 64 tokens in 2 windows of 32" in report and "- out-of-domain:" not in report
    assert f"decoder layers {first}, {first + 1} removed (the contiguous block whose removal" in report
    assert "logit reverse KL(student‖teacher), temperature 2.0" in report


def test_report_words_for_each_recipe():
    base = {"prune": asdict(PruneConfig(layer_criterion="bi")), "dropped_layers": [5]}
    assert pruning_words(base) == ("width by activation importance (mean over the sequence, l2 over the "
                                   "batch); decoder layers 5 removed (the lowest Block Influence)")
    explicit = {**base, "prune": asdict(PruneConfig(criterion="magnitude", drop_layers=[5]))}
    assert pruning_words(explicit).endswith("layers 5 removed (given explicitly)")
    assert pruning_words({**base, "dropped_layers": []}).startswith("width by activation")
    config = {"top_k": 8, "temperature": 1.0, "hidden_loss": "cosine", "layer_pairs": ["1:3"], "hidden_weight": 0.5}
    assert distill_words({"loss": "topk_kl", **config}) == \
        "forward KL on the teacher's top 8 tokens, plus a cosine hidden-state loss at layers 1:3 (weight 0.5)"
    assert distill_words({"loss": "ce", "temperature": 2.0}) == "cross-entropy on the data alone, no teacher"
    assert distill_words({"loss": "forward_kl", "precision": "bf16"}).endswith(", under bf16 autocast")


def hand_made_run(tmp_path, held_out=("test", "ood")):
    """A run directory holding only metrics.json, with round figures: the teacher at 2.0, pruned 3.0, distilled 2.5."""
    losses = {"teacher": 2.0, "pruned": 3.0, "distilled": 2.5}
    kls = {"pruned": 0.8, "distilled": 0.2}
    models = {name: {"params": 1000 if name == "teacher" else 500, "gen_tokens_per_s": 10.0 if name == "teacher"
                     else 20.0, **{f"{w}_{k}": v for w in held_out for k, v in (
                         ("loss", losses[name] + (w == "ood")), ("ci95", 0.05), ("ppl", 1.0)) },
                     **{f"{w}_{k}": v for w in held_out if name in kls for k, v in (("kl", kls[name]),
                                                                                      ("kl_ci95", 0.01))}}
              for name in losses}
    info = {"test": {"split": "test", "tokens": 1024, "windows": 4, "seq_len": 256, "documents": 3,
                     "split_documents": 9},
            "ood": {"split": "ood", "tokens": 1024, "windows": 4, "seq_len": 256, "documents": 4,
                    "split_documents": 66}}
    metrics = {"tokens": 4096, "teacher_spec": "t", "target": {}, "device": "cpu", "stages": 1,
               "correction_tokens": 0, "target_desc": "hidden_size 64→48",
               "held_out": {w: info[w] for w in held_out}, **models,
               "gap_closed": {**{w: 0.5 for w in held_out}, **{f"{w}_kl": 0.75 for w in held_out}}}
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_table_compares_the_three_models(tmp_path):
    report = write_report(hand_made_run(tmp_path)).read_text()
    assert "| model | parameters | test split loss | test split KL | out-of-domain loss | out-of-domain KL | " \
           "generation tokens/s |" in report
    assert "| teacher | 1,000 | 2.000 ± 0.050 | – | 3.000 ± 0.050 | – | 10.0 |" in report
    assert "| pruned (no training) | 500 | 3.000 ± 0.050 | 0.800 ± 0.010 | 4.000 ± 0.050 | 0.800 ± 0.010 | 20.0 |" \
        in report
    assert "| distilled | 500 | 2.500 ± 0.050 | 0.200 ± 0.010 | 3.500 ± 0.050 | 0.200 ± 0.010 | 20.0 |" in report
    assert "| gap closed by distillation | | 50% | 75% | 50% | 75% | |" in report
    assert "- test split: 1,024 tokens in 4 windows of 256 spread over 3 of its 9 documents" in report
    assert "- out-of-domain: 1,024 tokens in 4 windows of 256 spread over 4 of its 66 documents (the King James" \
        in report


def test_report_of_a_run_without_ood_does_not_claim_it(tmp_path):
    report = write_report(hand_made_run(tmp_path, held_out=("test",))).read_text()
    assert "| model | parameters | test split loss | test split KL | generation tokens/s |" in report
    assert "out-of-domain" not in report
