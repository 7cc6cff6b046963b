"""Model cards for a pruned and a distilled tiny model: the front matter is valid YAML with the right fields, and
every figure in the card is the one in pruning.json, train_config.json and metrics.jsonl."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml
from conftest import build_tiny_data, save_tiny
from transformers import AutoModelForCausalLM

from minitron.card import base_name, card_name, derived_name, hub_id, teacher_license, write_model_card
from minitron.distill import TrainConfig, distill
from minitron.distill.config import DEFAULT_KD_LOSS
from minitron.errors import MinitronError
from minitron.prune import PruneConfig, prune

pytestmark = pytest.mark.usefixtures("one_thread")
TARGET = {"hidden_size": 48, "intermediate_size": 64}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A teacher laid out like a Hub cache snapshot (with its own card), its pruned student, a distillation run."""
    tmp = tmp_path_factory.mktemp("card")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `one_thread` does for each test (it is not active yet for a module fixture)
    teacher = save_tiny(tmp / "hub" / "models--acme--tiny-llama" / "snapshots" / "0123abcd")
    (teacher / "README.md").write_text("---\nlicense: mit\ntags: [tiny]\n---\n# tiny llama\n")
    data = build_tiny_data(tmp, teacher)
    pruned = tmp / "pruned"
    prune(str(teacher), target=TARGET, out=pruned, data=data, prune=PruneConfig(calib_seqs=4, seq_len=32), batch_size=2,
          device="cpu")
    run = tmp / "run"
    distill(TrainConfig(student=str(pruned), out=run, tokens=4 * 128, teacher=str(teacher), data=str(data), seq_len=32,
                        micro_batch=2, global_batch_tokens=128, eval_every=2, eval_seqs=4, save_every=4, device="cpu"))
    torch.set_num_threads(threads)
    return dict(teacher=teacher, pruned=pruned, run=run)


def read_card(path):
    text = path.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match[1]), text[match.end():]


def table(body) -> dict[str, str]:
    return dict(re.findall(r"^\| (.+?) \| (.+?) \|$", body, re.M))


def test_pruned_card(made):
    card = write_model_card(made["pruned"])
    assert card == made["pruned"] / "README.md"
    header, body = read_card(card)
    record = json.loads((made["pruned"] / "pruning.json").read_text())
    params = AutoModelForCausalLM.from_pretrained(made["pruned"]).num_parameters()
    name = f"tiny-llama-minitron-{round(params / 1e3)}K"  # derived from the teacher and the size
    assert header == {"base_model": "acme/tiny-llama", "library_name": "transformers", "license": "mit",
                      "pipeline_tag": "text-generation", "tags": ["minitron", "pruned"], "model_name": name}
    assert body.lstrip().startswith(f"# {name}\n") and card_name(made["pruned"]) == name
    assert record["params_after"] == params
    assert table(body)["parameters"] == f"{params:,}"
    assert f"{record['params_before']:,} → {params:,}" in body
    assert "hidden_size 64 → 48" in body and "intermediate_size 96 → 64" in body and "num_hidden_layers 4" in body
    assert "activation (aggregated by mean over the sequence, l2 over the batch)" in body
    assert "calibration: data=data, num_seqs=4, seq_len=32, seed=1234" in body
    assert "pruned from acme/tiny-llama" in body and "### Distillation" not in body
    assert str(made["teacher"].parent) not in body  # no local paths in a card meant for the Hub
    assert f'AutoModelForCausalLM.from_pretrained("{name}")' in body and f"minitron export --model {name}" in body


def test_distilled_card(made):
    from huggingface_hub import EvalResult

    student = made["run"] / "student"
    results = [EvalResult(task_type="text-generation", dataset_type="minitron-test", dataset_name="the test split",
                          metric_type="loss", metric_value=2.5),
               EvalResult(task_type="text-generation", dataset_type="minitron-test", dataset_name="the test split",
                          metric_type="kl_divergence", metric_value=0.05)]
    card = write_model_card(student, metrics={"held-out perplexity": 123.456}, name="tiny-student",
                            eval_results=results)
    header, body = read_card(card)
    assert header["tags"] == ["minitron", "pruned", "distilled"]
    (index,) = header["model-index"]  # the Hub's evaluation results: one dataset, its two metrics
    assert index["name"] == "tiny-student" and len(index["results"]) == 1
    assert index["results"][0]["dataset"] == {"name": "the test split", "type": "minitron-test"}
    assert index["results"][0]["metrics"] == [{"type": "loss", "value": 2.5}, {"type": "kl_divergence", "value": 0.05}]
    assert header["base_model"] == "acme/tiny-llama" and header["license"] == "mit"
    history = [json.loads(line) for line in (made["run"] / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in history if "val_loss" in r][-1]
    figures = table(body)
    assert figures["validation loss"] == f"{val['val_loss']:.4f} (step {val['step']})"
    assert figures["validation perplexity"] == f"{math.exp(val['val_loss']):.2f}"
    assert figures["final training loss"] == f"{history[-1]['loss']:.4f} (step 4)"
    assert figures["held-out perplexity"] == "123.5"
    assert figures["parameters"] == f"{AutoModelForCausalLM.from_pretrained(student).num_parameters():,}"
    assert f"- loss: {DEFAULT_KD_LOSS}" in body and "- tokens: 512 in 4 steps" in body
    assert "### Pruning" in body and "hidden_size 64 → 48" in body  # read from the pruned student it started from
    assert "pruned and distilled from acme/tiny-llama" in body


def test_card_arguments_and_refusal(made, tmp_path):
    card = write_model_card(made["pruned"], teacher="default", license="other")
    header, body = read_card(card)
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and header["license"] == "other"
    assert "hidden_size 576 → 48" in body  # the sizes of the teacher named (here, wrongly, the default one)
    compress = tmp_path / "compress"  # compress's layout: RUN/student links to RUN/distill/student
    compress.mkdir()
    (compress / "distill").symlink_to(made["run"])
    (compress / "student").symlink_to("distill/student")
    header, _ = read_card(write_model_card(compress / "student"))
    assert header["tags"] == ["minitron", "pruned", "distilled"]
    with pytest.raises(MinitronError, match="has no config.json"):
        write_model_card(tmp_path)
    assert not (tmp_path / "README.md").exists()


def test_default_teacher_identity():
    """'default' is SmolLM2-135M-Instruct, whose licence is read from the GGUF's own metadata."""
    assert hub_id("default") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert teacher_license("default") == "apache-2.0"
    assert hub_id("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B" and hub_id(None) is None


def test_derived_names():
    assert derived_name("default", 67_048_128) == "SmolLM2-135M-Instruct-minitron-67M"
    assert derived_name("nvidia/Mistral-NeMo-12B-Base", 8_414_000_000) == "Mistral-NeMo-12B-Base-minitron-8.4B"
    assert derived_name("runs/x/SmolLM2-135M-Instruct-minitron-67M", 30_000_000) == "SmolLM2-135M-Instruct-minitron-30M"
    assert derived_name("/models/teacher.gguf", 5_000) == "teacher-minitron-5K"
    assert base_name("org/Model-7B-corrected") == "Model-7B"
