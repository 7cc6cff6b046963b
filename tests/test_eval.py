"""`minitron eval`: held-out LM loss and perplexity on the same windows for every model, generation speed."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_data, save_tiny, tiny_tokenizer
from transformers import AutoModelForCausalLM

from minitron.cli import main
from minitron.data import TokenData
from minitron.distill import TrainConfig
from minitron.distill.losses import ForwardKL
from minitron.distill.loop import validate
from minitron.distill.parallel import DistillModel, Env
from minitron.eval import evaluate, generation_speed
from minitron.numerics import lm_loss, lm_loss_sum
from minitron.importance import compute_scores
from minitron.load import load_model
from minitron.pipeline import measure

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    a = save_tiny(tmp / "a", seed=0)
    b = save_tiny(tmp / "b", family="qwen3", seed=3, num_hidden_layers=2)
    return tmp, a, b, build_tiny_data(tmp, a)


def test_evaluate_matches_a_plain_computation(models):
    tmp, a, b, data = models
    ra = evaluate(str(a), str(data), seq_len=16, num_seqs=6, batch_size=4, speed=False)
    rb = evaluate(str(b), str(data), seq_len=16, num_seqs=6, batch_size=4, speed=False)
    windows = TokenData.open(data).fixed("val", 6, 16)["input_ids"]
    want = lm_loss(AutoModelForCausalLM.from_pretrained(a), [windows[:4], windows[4:]])
    assert ra["val_loss"] == pytest.approx(want, rel=1e-5)
    assert ra["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    assert ra["val_tokens"] == rb["val_tokens"] == 6 * 16  # the same held-out tokens for every model
    assert ra["val_loss"] != rb["val_loss"] and ra["params"] > rb["params"]
    big = evaluate(str(a), str(data), seq_len=128, num_seqs=10**6, batch_size=16, speed=False)
    assert big["num_seqs"] == (TokenData.open(data).num_tokens("val") - 1) // 128  # capped at what the split holds


def test_generation_speed_counts_new_tokens(models, monkeypatch):
    tmp, a, _, _ = models
    model, tok = AutoModelForCausalLM.from_pretrained(a).eval(), tiny_tokenizer()
    lengths = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: lengths.append(out := real(**kw)) or out)
    speed = generation_speed(model, tok, new_tokens=12, batch_size=2)
    assert math.isfinite(speed) and speed > 0
    prompt = len(tok("The history of computing")["input_ids"])
    assert lengths[-1].shape == (2, prompt + 12)  # EOS never stops it early


def test_eval_command_writes_json_and_refuses_other_tokenizer(models, capsys):
    tmp, a, _, data = models
    out = tmp / "metrics" / "a.json"
    main(["eval", "--model", str(a), "--data", str(data), "--seq-len", "16", "--num-seqs", "4",
          "--new-tokens", "4", "--out", str(out)])
    written = json.loads(out.read_text())
    assert {"val_loss", "perplexity", "generation_tokens_per_s", "params"} <= set(written)
    other = save_tiny(tmp / "other")
    other_tok = tiny_tokenizer()
    other_tok.add_tokens(["<extra>"])
    other_tok.save_pretrained(other)
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", str(other), "--data", str(data), "--seq-len", "16"])
    assert exc.value.code == 1
    assert "made with another tokenizer" in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(a), "--data", str(data), "--seq-len", "100000"])
    assert "max_position_embeddings (256)" in capsys.readouterr().err.splitlines()[-1]
    again = evaluate(str(a), str(data), seq_len=16, num_seqs=4, speed=False)
    assert written["val_loss"] == again["val_loss"]  # deterministic: same windows, same number


def test_lm_loss_sum_is_masked_next_token_cross_entropy(models):
    _, a, _, _ = models
    model = AutoModelForCausalLM.from_pretrained(a).eval()
    ids = torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.rand(3, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    logits = model(input_ids=ids[:, :-1]).logits
    per = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(3, 8)
    total, count = lm_loss_sum(model, ids, mask)
    assert total.dim() == count.dim() == 0 and total.dtype == torch.float32 and not total.requires_grad
    assert count.item() == mask.sum().item() and total.item() == pytest.approx(per[mask].sum().item(), rel=1e-5)
    total, count = lm_loss_sum(model, ids)
    assert count.item() == 24 and total.item() == pytest.approx(per.sum().item(), rel=1e-5)


def test_eval_and_importance_report_the_same_lm_loss(models):
    """`minitron eval`, `lm_loss` and the intact-model loss of the layer-removal scores are one computation."""
    tmp, a, _, data = models
    windows = TokenData.open(data).fixed("val", 4, 16)["input_ids"]
    model = load_model(a)
    evaluated = evaluate(str(a), str(data), seq_len=16, num_seqs=4, batch_size=2, speed=False)["val_loss"]
    scored = compute_scores(model, [windows], ["random"], [windows[:2], windows[2:]]).meta["base_loss"]
    assert lm_loss(model, windows.split(2)) == pytest.approx(evaluated, rel=1e-6)
    assert scored == pytest.approx(evaluated, rel=1e-6)


def test_eval_compress_trainer_and_importance_report_the_same_lm_loss(models):
    """The four places that report an LM loss (`minitron eval`, compress's measurements, the trainer's
    validation and importance's intact-model loss) are one computation: the same number on the same windows."""
    tmp, a, _, data = models
    val = TokenData.open(data).fixed("val", 4, 16)
    model = load_model(a)
    evaluated = evaluate(str(a), str(data), seq_len=16, num_seqs=4, batch_size=2, speed=False)["val_loss"]
    compressed = measure(str(a), val, torch.device("cpu"), "hi", speed_tokens=2)["val_loss"]
    student = DistillModel(model, ForwardKL(), None, 1.0, 32, (None, None))
    trained = validate(student, val, TrainConfig(seq_len=16, chunk_tokens=32), Env())
    scored = compute_scores(model, [val["input_ids"]], ["random"], [val["input_ids"]]).meta["base_loss"]
    for other in (compressed, trained, scored):
        assert other == pytest.approx(evaluated, rel=1e-6)
