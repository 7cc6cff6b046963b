"""The teacher cache (--teacher-cache): its top-k form gives topk_kl's loss and gradients, a second run reads it
without loading the teacher and trains exactly as the first, and its key follows what the entries depend on."""
import json

import pytest
import torch
from conftest import build_tiny_data, cli_error, save_tiny
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from minitron.arch import LogitHead
from minitron.cli import main
from minitron.data import TokenData
from minitron.distill.losses import TopKKL, chunked_logit_loss
from minitron.distill.teacher_cache import topk_targets

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--seq-len", "32", "--micro-batch", "2", "--global-batch-tokens", "128", "--eval-seqs", "4"]


@pytest.mark.parametrize("temperature,biased", [(1.0, False), (2.0, False), (2.0, True)])
def test_cached_form_gives_topk_kl_of_the_full_logits(temperature, biased):
    """(`biased`: the teacher's lm_head has a bias, as Phi-2's)"""
    g = torch.Generator().manual_seed(0)
    n, hidden, vocab, k = 40, 16, 300, 8
    t_hidden, t_weight = torch.randn(n, hidden, generator=g), torch.randn(vocab, hidden, generator=g)
    s_hidden = torch.randn(n, hidden, generator=g, requires_grad=True)
    s_weight = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    labels, weights = torch.randint(0, vocab, (n,), generator=g), (torch.rand(n, generator=g) > 0.2).float()
    loss = TopKKL(k, temperature)
    t_bias = 3 * torch.randn(vocab, generator=g) if biased else None

    logprobs, index, rest = topk_targets(t_hidden, t_weight, k, LogitHead(), chunk_tokens=7, bias=t_bias)
    full = t_hidden @ t_weight.t() + (0 if t_bias is None else t_bias)
    assert torch.equal(index, full.topk(k, dim=-1).indices)
    torch.testing.assert_close(logprobs.exp().sum(-1) + rest.exp(), torch.ones(n))  # top-k mass + the rest's = 1

    # per token: from the full logits, and from the cached form in fp32 and as stored (fp16)
    s_logits = s_hidden.detach() @ s_weight.detach().t()
    want = loss.per_token(s_logits, full)
    torch.testing.assert_close(loss.per_token(s_logits, (logprobs, index)), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.per_token(s_logits, (logprobs.half(), index.to(torch.uint16).long())), want,
                               rtol=2e-3, atol=2e-3)

    # the chunked loss and its gradients, with the teacher's hidden states or with its cached top k
    grads = []
    for teacher in ({"teacher_hidden": t_hidden, "teacher_weight": t_weight, "biases": (None, t_bias)},
                    {"teacher_topk": (logprobs, index)}):
        total = chunked_logit_loss(loss, s_hidden, s_weight, labels, weights, chunk_tokens=9, **teacher)
        grads.append((total.detach(), *torch.autograd.grad(total, [s_hidden, s_weight])))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache-world")
    teacher = save_tiny(tmp / "teacher", seed=0)
    student = save_tiny(tmp / "student", seed=1, num_hidden_layers=2, hidden_size=48, num_attention_heads=4)
    return dict(teacher=str(teacher), student=str(student), data=str(build_tiny_data(tmp, teacher)), tmp=tmp)


def _args(w, out, cache, *extra):
    return ["distill", "--teacher", w["teacher"], "--student", w["student"], "--data", w["data"], "--out", str(out),
            "--tokens", str(3 * 128), "--loss", "topk_kl", "--top-k", "8", "--eval-every", "0", "--lr", "1e-3",
            "--teacher-cache", str(cache), *SMALL, *extra]


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_second_run_reads_the_cache_and_trains_the_same(world, tmp_path, capsys):
    cache = tmp_path / "cache"
    main(_args(world, tmp_path / "first", cache))
    assert "the teacher is not loaded" not in capsys.readouterr().out
    (key,) = cache.iterdir()
    entries = sorted(p.name for p in key.glob("*.safetensors"))
    assert entries == [f"step-{s:07d}-{m:04d}.safetensors" for s in (1, 2, 3) for m in (0, 1)]
    meta = json.loads((key / "meta.json").read_text())
    assert meta["k"] == 8 and meta["seq_len"] == 32 and meta["micro_batch"] == 2 and meta["seed"] == 0
    entry = load_file(key / entries[0])
    assert entry["logprobs"].dtype == torch.float16 and entry["index"].dtype == torch.uint16
    assert entry["logprobs"].shape == entry["index"].shape == (2, 32, 8) and entry["rest"].shape == (2, 32)

    # step 1's loss is topk_kl of the models' own full logits (up to the fp16 of the stored log-probabilities)
    data = TokenData.open(world["data"])
    ids = torch.cat([data.sample("train", 2, 32, seed=0, step=1, micro=m)["input_ids"] for m in range(2)])
    with torch.no_grad():
        t_logits = AutoModelForCausalLM.from_pretrained(world["teacher"])(ids[:, :-1]).logits
        s_logits = AutoModelForCausalLM.from_pretrained(world["student"])(ids[:, :-1]).logits
    first = _metrics(tmp_path / "first")
    assert first[0]["loss"] == pytest.approx(TopKKL(8)(s_logits, t_logits).item(), rel=1e-3)

    # the second run reads every entry, never loads the teacher, and trains exactly as the first
    main(_args(world, tmp_path / "second", cache))
    assert "the teacher is not loaded" in capsys.readouterr().out
    assert [m["loss"] for m in _metrics(tmp_path / "second")] == [m["loss"] for m in first]
    a = load_file(tmp_path / "first" / "student" / "model.safetensors")
    b = load_file(tmp_path / "second" / "student" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # another seed is another key (other windows): the teacher runs again
    main(_args(world, tmp_path / "third", cache, "--seed", "1"))
    assert "the teacher is not loaded" not in capsys.readouterr().out and len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("extra, message", [
    (["--loss", "forward_kl"], "use it with --loss topk_kl"),
    (["--hidden-loss", "cosine", "--layer-pairs", "1:3"], "cannot serve --hidden-loss"),
])
def test_cache_needs_topk_kl_and_no_hidden_loss(world, tmp_path, capsys, extra, message):
    assert message in cli_error(capsys, *_args(world, tmp_path / "out", tmp_path / "cache", *extra))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
