"""`compress` takes the whole recipe (pruning criterion, aggregation, depth, the distillation loss) from flags or
YAML, and its report names what ran, read from the files the stages wrote."""
import json
from dataclasses import asdict

import pytest
import yaml

from minitron.cli import parse
from minitron.prune import PruneConfig
from minitron.report import distill_words, pruning_words

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compress_runs_the_recipe_of_its_yaml(tiny_dir, tiny_data, tmp_path):
    recipe = {"teacher": str(tiny_dir), "data": str(tiny_data), "out": str(tmp_path / "run"),
              "target": {"intermediate_size": 64, "num_hidden_layers": 2},
              "prune": {"criterion": "wanda", "seq_agg": "l2", "layer_criterion": "block", "calib_seqs": 4,
                        "seq_len": 32},
              "val_seqs": 2, "prompt": "hi",
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
    report = (run / "report.md").read_text()
    assert "width by wanda importance" in report and "forward KL" not in report
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
