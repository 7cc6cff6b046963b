"""Distillation losses: definitions, chunked == plain (values and gradients), hidden-state losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from minitron.arch import LogitHead
from minitron.distill import losses as L


def _inputs(n=37, h=16, th=12, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(h=torch.randn(n, h, generator=g, requires_grad=True),
                w=torch.randn(v, h, generator=g, requires_grad=True),
                th=torch.randn(n, th, generator=g), tw=torch.randn(v, th, generator=g),
                y=torch.randint(0, v, (n,), generator=g), mask=torch.rand(n, generator=g) > 0.3)


@pytest.mark.parametrize("name", L.LOGIT_LOSSES)
@pytest.mark.parametrize("head", [LogitHead(), LogitHead(softcap=5.0), LogitHead(scale=4.0)])  # Gemma's, Granite's
def test_chunked_equals_plain_with_gradients(name, head):
    x = _inputs()
    loss = L.make_logit_loss(name, temperature=1.0 if name == "ce" else 2.0, top_k=5, jsd_beta=0.3, ce_weight=0.4)
    plain = loss(L.head_logits(x["h"], x["w"], head), L.head_logits(x["th"], x["tw"], head), x["y"], x["mask"])
    plain.backward()
    want = (x["h"].grad.clone(), x["w"].grad.clone())
    x["h"].grad = x["w"].grad = None
    chunked = L.chunked_logit_loss(loss, x["h"], x["w"], x["y"], x["mask"], x["th"], x["tw"], chunk_tokens=7,
                                   heads=(head, head))
    chunked.backward()
    torch.testing.assert_close(chunked, plain)
    torch.testing.assert_close(x["h"].grad, want[0])
    torch.testing.assert_close(x["w"].grad, want[1])
    assert x["h"].grad[~x["mask"]].abs().max() == 0  # masked tokens get no gradient


@pytest.mark.parametrize("name", ["forward_kl", "ce_kd"])
def test_chunked_with_lm_head_biases_equals_plain(name):
    """Phi-2's lm_head has a bias: the chunked loss adds each side's and the student's gets its gradient."""
    x = _inputs()
    g = torch.Generator().manual_seed(3)
    bias, t_bias = torch.randn(50, generator=g, requires_grad=True), torch.randn(50, generator=g)
    loss = L.make_logit_loss(name, temperature=2.0, ce_weight=0.4)
    plain = loss(F.linear(x["h"], x["w"], bias), F.linear(x["th"], x["tw"], t_bias), x["y"], x["mask"])
    plain.backward()
    want = [t.grad.clone() for t in (x["h"], x["w"], bias)]
    x["h"].grad = x["w"].grad = bias.grad = None
    chunked = L.chunked_logit_loss(loss, x["h"], x["w"], x["y"], x["mask"], x["th"], x["tw"], chunk_tokens=7,
                                   biases=(bias, t_bias))
    chunked.backward()
    torch.testing.assert_close(chunked, plain)
    for got, expected in zip((x["h"].grad, x["w"].grad, bias.grad), want):
        torch.testing.assert_close(got, expected)
    assert bias.grad.abs().max() > 0
    unbiased = L.chunked_logit_loss(loss, x["h"], x["w"], x["y"], x["mask"], x["th"], x["tw"], chunk_tokens=7)
    assert (unbiased - chunked).abs() > 1e-3  # the biases count
    frozen = L.chunked_logit_loss(loss, x["h"], x["w"], x["y"], x["mask"], x["th"], x["tw"], chunk_tokens=7,
                                  biases=(bias.detach(), t_bias))
    torch.testing.assert_close(frozen, chunked)  # a bias that wants no gradient gets none


def test_chunks_never_hold_all_logits(monkeypatch):
    x = _inputs(n=64)
    rows = []
    real = L.head_logits
    monkeypatch.setattr(L, "head_logits", lambda h, *a: rows.append(h.shape[0]) or real(h, *a))
    out = L.chunked_logit_loss(L.ForwardKL(), x["h"], x["w"], x["y"], None, x["th"], x["tw"], chunk_tokens=16)
    out.backward()
    assert max(rows) == 16 and len(rows) == 2 * 4  # student and teacher logits, 4 chunks, no recompute
    no_grad = L.chunked_logit_loss(L.ForwardKL(), x["h"].detach(), x["w"].detach(), x["y"], None, x["th"], x["tw"],
                                   chunk_tokens=16)
    torch.testing.assert_close(no_grad, out.detach())


def test_loss_definitions():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(9, 20, generator=g), torch.randn(9, 20, generator=g)
    ps, pt = s.softmax(-1), t.softmax(-1)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(-1)  # noqa: E731
    torch.testing.assert_close(L.ForwardKL().per_token(s, t, None), kl(pt, ps))
    torch.testing.assert_close(L.ReverseKL().per_token(s, t, None), kl(ps, pt))
    m = 0.5 * (ps + pt)
    torch.testing.assert_close(L.JSD(0.5).per_token(s, t, None), 0.5 * kl(pt, m) + 0.5 * kl(ps, m))
    torch.testing.assert_close(L.JSD(0.5).per_token(s, t, None), L.JSD(0.5).per_token(t, s, None))
    torch.testing.assert_close(L.TopKKL(k=20).per_token(s, t, None), kl(pt, ps))  # k = V is the full KL
    assert (L.TopKKL(k=3).per_token(s, t, None) != kl(pt, ps)).all()
    y = torch.randint(0, 20, (9,), generator=g)
    torch.testing.assert_close(L.CrossEntropy().per_token(s, None, y), F.cross_entropy(s, y, reduction="none"))
    mix = L.CEMix(L.ForwardKL(), ce_weight=0.25).per_token(s, t, y)
    torch.testing.assert_close(mix, 0.25 * F.cross_entropy(s, y, reduction="none") + 0.75 * kl(pt, ps))
    assert L.ForwardKL().per_token(s, s, None).abs().max() < 1e-5
    t2 = L.ForwardKL(temperature=2.0).per_token(s, t, None)
    torch.testing.assert_close(t2, 4 * kl((t / 2).softmax(-1), (s / 2).softmax(-1)))


def test_mask_and_bad_settings():
    x = _inputs()
    loss = L.ForwardKL()
    s, t = x["h"] @ x["w"].T, x["th"] @ x["tw"].T
    keep = x["mask"]
    torch.testing.assert_close(loss(s, t, mask=keep), loss.per_token(s[keep], t[keep], None).mean())
    with pytest.raises(ValueError):
        L.make_logit_loss("nope")
    with pytest.raises(ValueError):
        L.JSD(beta=1.0)
    with pytest.raises(ValueError):
        L.chunked_logit_loss(L.ForwardKL(), x["h"], x["w"], x["y"])  # KD without a teacher
    assert L.parse_layer_pairs(["3:6", "-1:-1"]) == [(3, 6), (-1, -1)]
    with pytest.raises(ValueError):
        L.parse_layer_pairs(["3"])


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_hidden_state_loss(kind):
    g = torch.Generator().manual_seed(2)
    t = [torch.randn(2, 5, 12, generator=g) for _ in range(2)]
    same = L.HiddenStateLoss(12, 12, [(0, 1), (1, 3)], kind)
    assert same.projections is None
    assert same(t, t).item() == pytest.approx(0.0, abs=1e-6)
    if kind == "cosine":  # scale-free
        assert same([x * 2 for x in t], t).item() == pytest.approx(0.0, abs=1e-6)
    else:
        assert same([x * 2 for x in t], t).item() == pytest.approx(sum((x ** 2).mean().item() for x in t) / 2)
    narrow = L.HiddenStateLoss(8, 12, [(0, 1), (1, 3)], kind)
    s = [torch.randn(2, 5, 8, generator=g, requires_grad=True) for _ in range(2)]
    mask = torch.tensor([[1, 1, 0, 0, 1]] * 2, dtype=torch.bool)
    out = narrow(s, t, mask)
    per = narrow.per_token(s, t).reshape(2, 5)
    torch.testing.assert_close(out, per[mask].mean())
    out.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in narrow.projections.parameters())
    assert s[0].grad[:, 2:4].abs().max() == 0
    if kind == "mse":
        proj = narrow.projections[0](s[0].detach())
        want = ((proj - t[0]) ** 2).mean(-1)
        want = (want + ((narrow.projections[1](s[1].detach()) - t[1]) ** 2).mean(-1)) / 2
        torch.testing.assert_close(per.detach(), want)
    assert math.isfinite(out.item())
