"""`minitron eval`: held-out LM loss (with a 95% interval) on windows spread over the test split and on
out-of-domain text, the same windows for every model, KL from a teacher, generation speed."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_data, save_tiny, tiny_tokenizer
from transformers import AutoModelForCausalLM

from minitron.arch import LogitHead
from minitron.cli import main
from minitron.data import SPLITS, TokenData
from minitron.distill import TrainConfig
from minitron.distill.losses import ForwardKL
from minitron.distill.loop import validate
from minitron.distill.parallel import DistillModel, Env
from minitron.errors import MinitronError
from minitron.eval import EvalConfig, evaluate, generation_speed, measure, ood_windows
from minitron.numerics import lm_loss, lm_loss_sum
from minitron.importance import compute_scores
from minitron.load import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    a = save_tiny(tmp / "a", seed=0)
    b = save_tiny(tmp / "b", family="qwen3", seed=3, num_hidden_layers=2)
    return tmp, a, b, build_tiny_data(tmp, a)


def run_eval(model, data, **settings) -> dict:
    """`minitron eval` of `model` on `data`, without the generation speed."""
    return evaluate(EvalConfig(model=str(model), data=str(data), speed=False, **settings))


def per_window_losses(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each window (B, T+1): (B,)."""
    with torch.no_grad():
        logits = model(input_ids=ids[:, :-1]).logits
    return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(1)


def test_evaluate_matches_a_plain_computation(models):
    tmp, a, b, data = models
    ra = run_eval(a, data, seq_len=16, tokens=6 * 16, batch_size=4, ood=False)
    rb = run_eval(b, data, seq_len=16, tokens=6 * 16 - 5, batch_size=4, ood=False)
    tokens = TokenData.open(data)
    test = tokens.spread("test", 6, 16)
    windows = test.batch["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(a).eval()
    want = lm_loss(model, [windows[:4], windows[4:]])
    assert ra["test"]["loss"] == pytest.approx(want, rel=1e-5)
    assert ra["test"]["ppl"] == pytest.approx(math.exp(want), rel=1e-5)
    per = per_window_losses(model, windows)  # the interval is over the windows, the unit of measurement
    assert ra["test"]["ci95"] == pytest.approx(1.96 * per.std().item() / math.sqrt(6), rel=1e-4)
    for key in ("val_loss", "perplexity", "val_tokens", "num_seqs", "ood"):
        assert key not in ra
    info = {k: ra["test"][k] for k in ("split", "tokens", "windows", "seq_len", "documents", "split_documents")}
    assert info == {"split": "test", "tokens": 6 * 16, "windows": 6, "seq_len": 16, "documents": test.documents,
                    "split_documents": tokens.meta["splits"]["test"]["documents"]}
    assert {k: rb["test"][k] for k in info} == info  # the same held-out tokens for every model (ceil(91 / 16) = 6)
    assert ra["test"]["loss"] != rb["test"]["loss"] and ra["params"] > rb["params"]
    big = run_eval(a, data, seq_len=128, tokens=10**8, batch_size=16, ood=False)
    assert big["test"]["windows"] == (tokens.num_tokens("test") - 1) // 128  # capped at what the split holds
    assert big["test"]["documents"] == big["test"]["split_documents"]  # windows over the whole split touch them all
    dev = run_eval(a, data, split="dev", seq_len=16, tokens=64, ood=False)
    assert set(dev) >= {"dev"} and "test" not in dev and dev["dev"]["split"] == "dev"
    assert dev["dev"]["loss"] == pytest.approx(lm_loss(model, [tokens.spread("dev", 4, 16).batch["input_ids"]]),
                                               rel=1e-5)


def test_kl_from_a_teacher_and_the_out_of_domain_text(models):
    """With a teacher: KL(teacher ‖ model) on the same windows (0 for the model itself), the teacher's own loss; the
    out-of-domain text measured like the test split."""
    tmp, a, b, data = models
    same = run_eval(a, data, seq_len=16, tokens=64, teacher=str(a))
    assert same["test"]["kl"] == pytest.approx(0, abs=1e-6) and same["ood"]["kl"] == pytest.approx(0, abs=1e-6)
    assert same["test"]["teacher_loss"] == pytest.approx(same["test"]["loss"], rel=1e-6)
    other = run_eval(a, data, seq_len=16, tokens=64, teacher=str(b))
    assert other["test"]["kl"] > 0.01 and other["ood"]["kl"] > 0.01 and other["test"]["kl_ci95"] > 0
    assert other["test"]["loss"] == pytest.approx(same["test"]["loss"], rel=1e-6)  # the model's own loss, unchanged
    model, teacher = (AutoModelForCausalLM.from_pretrained(m).eval() for m in (a, b))
    windows = TokenData.open(data).spread("test", 4, 16).batch["input_ids"]
    with torch.no_grad():
        logp, logq = (torch.log_softmax(m(input_ids=windows[:, :-1]).logits.float(), -1) for m in (model, teacher))
    kl = (logq.exp() * (logq - logp)).sum(-1).mean()  # KL(teacher ‖ model), per label
    assert other["test"]["kl"] == pytest.approx(kl.item(), rel=1e-4)
    assert other["test"]["teacher_loss"] == pytest.approx(lm_loss(teacher, [windows]), rel=1e-5)
    ood = other["ood"]
    assert ood["split"] == "ood" and ood["tokens"] == 64 and ood["windows"] == 4 and ood["seq_len"] == 16
    text = ood_windows(tiny_tokenizer(), 16, 4)
    assert ood["split_documents"] == 66 and ood["documents"] == text.documents  # the King James Bible: book a doc
    assert ood["documents"] >= 4  # four windows spread over the whole Bible: four different books at least
    text = text.batch["input_ids"]
    assert ood["loss"] == pytest.approx(lm_loss(model, [text]), rel=1e-5)
    assert ood["loss"] != pytest.approx(other["test"]["loss"], rel=1e-3)
    with pytest.raises(MinitronError, match="different tokenizers"):
        other_tok = save_tiny(tmp / "other-tok")
        tok = tiny_tokenizer()
        tok.add_tokens(["<extra>"])
        tok.save_pretrained(other_tok)
        run_eval(a, data, seq_len=16, tokens=64, teacher=str(other_tok), ood=False)


def masked_copy(data, out, mask_of):
    """A copy of a data directory with a loss mask on every split (chat data's layout): `mask_of(n)` -> n flags."""
    import shutil

    import numpy as np

    shutil.copytree(data, out)
    for split in SPLITS:
        np.asarray(mask_of(TokenData.open(data).num_tokens(split)), dtype=np.uint8).tofile(out / f"{split}.mask.bin")
    return out


def test_eval_on_masked_data_is_the_loss_per_counted_label(models):
    """Chat data (a loss mask): eval's loss is nats per counted label over all windows, the number `lm_loss` (and so
    the trainer's validation) gives on the same windows, though windows count different numbers of labels."""
    tmp, a, _, data = models
    masked = masked_copy(data, tmp / "masked-blocks", lambda n: torch.arange(n) // 20 % 3 != 0)  # 40 on, 20 off
    windows = TokenData.open(masked).spread("test", 4, 32).batch
    assert windows["loss_mask"].any(1).all()  # every window counts some labels,
    assert len(set(windows["loss_mask"].sum(1).tolist())) > 1  # but windows count different numbers of them
    measured = run_eval(a, masked, seq_len=32, tokens=128, ood=False)["test"]
    assert measured["tokens"] == int(windows["loss_mask"].sum())
    assert measured["loss"] == pytest.approx(lm_loss(load_model(a), [windows]), rel=1e-5)


def test_eval_on_masked_data_ignores_windows_with_nothing_to_count(models):
    """A window whose labels are all masked out (e.g. only a user's turn) adds nothing to the loss, not a zero."""
    tmp, a, _, data = models
    masked = masked_copy(data, tmp / "masked-half", lambda n: torch.arange(n) >= n // 2)  # the second half only
    windows = TokenData.open(masked).spread("test", 4, 32).batch
    assert windows["loss_mask"][0].sum() == 0 and windows["loss_mask"][-1].all()
    measured = run_eval(a, masked, seq_len=32, tokens=128, ood=False)["test"]
    counted = windows["loss_mask"].any(1)
    assert measured["loss"] == pytest.approx(lm_loss(load_model(a), [windows]), rel=1e-5)
    assert measured["loss"] == pytest.approx(lm_loss(load_model(a), [{k: v[counted] for k, v in windows.items()}]),
                                             rel=1e-5)


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
    main(["eval", "--model", str(a), "--data", str(data), "--seq-len", "16", "--tokens", "64",
          "--new-tokens", "4", "--out", str(out)])
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"  # the last line names what was written
    written = json.loads(out.read_text())
    assert {"model", "params", "test", "ood", "generation_tokens_per_s"} <= set(written)
    assert {"loss", "ci95", "ppl", "tokens", "windows", "documents"} <= set(written["test"]) & set(written["ood"])
    assert written["test"]["tokens"] == 64 and not {"val_loss", "perplexity", "val_tokens"} & set(written)
    main(["eval", "--model", str(a), "--data", str(data), "--seq-len", "16", "--tokens", "64", "--no-ood",
          "--no-speed", "--out", str(tmp / "metrics" / "no-ood.json")])
    assert "ood" not in json.loads((tmp / "metrics" / "no-ood.json").read_text())
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
    again = run_eval(a, data, seq_len=16, tokens=64)
    assert written["test"] == again["test"] and written["ood"] == again["ood"]  # deterministic: same windows


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
    windows = TokenData.open(data).spread("test", 4, 16).batch["input_ids"]
    model = load_model(a)
    evaluated = run_eval(a, data, seq_len=16, tokens=64, batch_size=2, ood=False)["test"]["loss"]
    scored = compute_scores(model, [windows], ["random"], [windows[:2], windows[2:]]).meta["base_loss"]
    assert lm_loss(model, windows.split(2)) == pytest.approx(evaluated, rel=1e-6)
    assert scored == pytest.approx(evaluated, rel=1e-6)


def test_eval_compress_trainer_and_importance_report_the_same_lm_loss(models):
    """The four places that report an LM loss (`minitron eval`, compress's measurements, the trainer's
    validation and importance's intact-model loss) are one computation: the same number on the same windows."""
    tmp, a, _, data = models
    windows = TokenData.open(data).spread("test", 4, 16)
    val = windows.batch
    model = load_model(a)
    evaluated = run_eval(a, data, seq_len=16, tokens=64, batch_size=2, ood=False)["test"]["loss"]
    compressed = measure({"distilled": model}, windows, 4)["distilled"]["loss"]
    student = DistillModel(model, ForwardKL(), None, 1.0, 32, (LogitHead(), LogitHead()))
    trained = validate(student, val, TrainConfig(seq_len=16, chunk_tokens=32), Env())
    scored = compute_scores(model, [val["input_ids"]], ["random"], [val["input_ids"]]).meta["base_loss"]
    for other in (compressed, trained, scored):
        assert other == pytest.approx(evaluated, rel=1e-6)
