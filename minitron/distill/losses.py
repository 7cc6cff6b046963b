"""Distillation losses: logit losses (forward KL, reverse KL, JSD, top-k KL, CE, CE+KD mix) and
hidden-state losses (cosine or MSE, with a learned projection when the widths differ).

Every logit loss is a small module with `per_token(student_logits, teacher_logits, labels)` -> (N,) fp32
and a plain `forward` that averages it over the tokens a mask keeps. `chunked_logit_loss` computes the same
value from final hidden states and lm_head weights, a chunk of tokens at a time, so a full
(tokens x vocabulary) fp32 tensor never exists: the gradient of each chunk is computed while its logits
are alive and only the (tokens x hidden) and (vocabulary x hidden) gradients are kept for the backward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitron.arch import LogitHead


class LogitLoss(nn.Module):
    """Base class: a per-token loss of student logits against teacher logits (or labels)."""

    needs_teacher = True

    def per_token(self, student: Tensor, teacher: Tensor | None, labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, labels: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """Mean loss over the kept tokens; logits (..., V), labels and mask (...)."""
        s = student_logits.reshape(-1, student_logits.shape[-1]).float()
        t = None if teacher_logits is None else teacher_logits.reshape(-1, teacher_logits.shape[-1]).float()
        y = None if labels is None else labels.reshape(-1)
        w = torch.ones(s.shape[0], device=s.device) if mask is None else mask.reshape(-1).float()
        return (self.per_token(s, t, y) * w).sum() / w.sum().clamp(min=1)


class _Tempered(LogitLoss):
    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature

    def log_probs(self, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
        return (F.log_softmax(student / self.temperature, dim=-1),
                F.log_softmax(teacher / self.temperature, dim=-1))

    def scale(self) -> float:
        return self.temperature ** 2  # keeps gradient magnitudes comparable across temperatures (Hinton et al.)


class ForwardKL(_Tempered):
    """KL(teacher || student) at temperature T, times T^2: the Minitron papers' default (T = 1)."""

    def per_token(self, student, teacher, labels=None):
        ls, lt = self.log_probs(student, teacher)
        return (lt.exp() * (lt - ls)).sum(-1) * self.scale()


class ReverseKL(_Tempered):
    """KL(student || teacher) at temperature T, times T^2 (mode seeking)."""

    def per_token(self, student, teacher, labels=None):
        ls, lt = self.log_probs(student, teacher)
        return (ls.exp() * (ls - lt)).sum(-1) * self.scale()


class JSD(_Tempered):
    """Generalised Jensen-Shannon divergence: with M = beta*P_t + (1-beta)*P_s,
    beta*KL(P_t || M) + (1-beta)*KL(P_s || M); beta = 0.5 is the symmetric JSD."""

    def __init__(self, beta: float = 0.5, temperature: float = 1.0):
        super().__init__(temperature)
        if not 0 < beta < 1:
            raise ValueError("JSD beta must be strictly between 0 and 1")
        self.beta = beta

    def per_token(self, student, teacher, labels=None):
        ls, lt = self.log_probs(student, teacher)
        lm = torch.logaddexp(lt + math.log(self.beta), ls + math.log(1 - self.beta))
        kl_t = (lt.exp() * (lt - lm)).sum(-1)
        kl_s = (ls.exp() * (ls - lm)).sum(-1)
        return (self.beta * kl_t + (1 - self.beta) * kl_s) * self.scale()


class TopKKL(_Tempered):
    """Forward KL on the teacher's k most likely tokens: the teacher is renormalised over its top k,
    the student keeps its full-vocabulary log-probabilities at those tokens. `teacher` is its full logits, or
    its top k already chosen: a pair (values (N, k), tokens (N, k)) of logits or log-probabilities, as the
    teacher cache stores them (renormalising makes any constant shift of the values drop out)."""

    def __init__(self, k: int = 64, temperature: float = 1.0):
        super().__init__(temperature)
        if k < 1:
            raise ValueError("top-k needs k >= 1")
        self.k = k

    def per_token(self, student, teacher, labels=None):
        values, index = (teacher if isinstance(teacher, tuple)
                         else teacher.topk(min(self.k, teacher.shape[-1]), dim=-1))
        lt = F.log_softmax(values.float() / self.temperature, dim=-1)
        ls = F.log_softmax(student / self.temperature, dim=-1).gather(-1, index)
        return (lt.exp() * (lt - ls)).sum(-1) * self.scale()


class CrossEntropy(LogitLoss):
    """Next-token cross-entropy on the labels: conventional training, no teacher."""

    needs_teacher = False

    def per_token(self, student, teacher=None, labels=None):
        return F.cross_entropy(student, labels, reduction="none")


class CEMix(LogitLoss):
    """ce_weight * cross-entropy + (1 - ce_weight) * a KD loss."""

    def __init__(self, kd: LogitLoss, ce_weight: float = 0.5):
        super().__init__()
        if not 0 <= ce_weight <= 1:
            raise ValueError("ce_weight must be in [0, 1]")
        self.kd, self.ce, self.ce_weight = kd, CrossEntropy(), ce_weight

    def per_token(self, student, teacher, labels):
        return (self.ce_weight * self.ce.per_token(student, None, labels)
                + (1 - self.ce_weight) * self.kd.per_token(student, teacher, labels))


LOGIT_LOSSES = ("forward_kl", "reverse_kl", "jsd", "topk_kl", "ce_kd", "ce")


def make_logit_loss(name: str = "forward_kl", temperature: float = 1.0, jsd_beta: float = 0.5, top_k: int = 64,
                    ce_weight: float = 0.5) -> LogitLoss:
    """A logit loss by name (one of LOGIT_LOSSES)."""
    if name == "forward_kl":
        return ForwardKL(temperature)
    if name == "reverse_kl":
        return ReverseKL(temperature)
    if name == "jsd":
        return JSD(jsd_beta, temperature)
    if name == "topk_kl":
        return TopKKL(top_k, temperature)
    if name == "ce_kd":
        return CEMix(ForwardKL(temperature), ce_weight)
    if name == "ce":
        return CrossEntropy()
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOGIT_LOSSES)}")


# ---------------------------------------------------------------- chunked logits from hidden states

def head_logits(hidden: Tensor, weight: Tensor, head: LogitHead = LogitHead(),
                bias: Tensor | None = None) -> Tensor:
    """lm_head applied to hidden states (plus its bias where it has one: Phi-2's), in fp32, then the family's logit
    scaling or soft-capping (`LogitHead`)."""
    logits = (hidden @ weight.t()).float()
    return head(logits if bias is None else logits + bias.float())


def _teacher_chunk(t_hidden, t_head: tuple | None, idx: Tensor, head: LogitHead):
    """The teacher's side of a chunk: its logits from hidden states and lm_head (weight, bias), or, when `t_hidden`
    is a cached top-k pair (values, tokens), those rows."""
    if t_hidden is None:
        return None
    if isinstance(t_hidden, tuple):
        return t_hidden[0][idx].float(), t_hidden[1][idx].long()
    return head_logits(t_hidden[idx], t_head[0], head, t_head[1]).detach()


def _chunk_loop(loss: LogitLoss, s_hidden: Tensor, s_head: tuple, t_hidden, t_head: tuple | None,
                labels: Tensor, weights: Tensor, chunk_tokens: int, heads: tuple, want: tuple[bool, ...]):
    """Weighted loss sum over tokens with non-zero weight, a chunk at a time, and (if wanted) its gradients with
    respect to the student's hidden states and lm_head (weight, bias: `s_head`)."""
    keep = weights.nonzero().squeeze(1)
    total = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
    grad_h = torch.zeros_like(s_hidden) if want[0] else None
    grad_p = [torch.zeros_like(p, dtype=torch.float32) if y else None for p, y in zip(s_head, want[1:])]
    for idx in keep.split(chunk_tokens):
        t_logits = _teacher_chunk(t_hidden, t_head, idx, heads[1])
        with torch.enable_grad():
            h = s_hidden[idx].detach().requires_grad_(want[0])
            w, b = (None if p is None else p.detach().requires_grad_(y) for p, y in zip(s_head, want[1:]))
            chunk = (loss.per_token(head_logits(h, w, heads[0], b), t_logits, labels[idx]) * weights[idx]).sum()
            inputs = [x for x, y in zip((h, w, b), want) if y]
            grads = iter(torch.autograd.grad(chunk, inputs) if inputs else ())
        if want[0]:
            grad_h.index_copy_(0, idx, next(grads).to(grad_h.dtype))
        for g in grad_p:
            if g is not None:
                g += next(grads).float()
        total += chunk.detach()
    return total, grad_h, grad_p


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, t_hidden, t_head, labels, weights, loss, chunk_tokens, heads):
        want = tuple(ctx.needs_input_grad[:3])
        total, grad_h, grad_p = _chunk_loop(loss, s_hidden, (s_weight, s_bias), t_hidden, t_head, labels, weights,
                                            chunk_tokens, heads, want)
        grad_p = [None if g is None else g.to(p.dtype) for g, p in zip(grad_p, (s_weight, s_bias))]
        ctx.save_for_backward(grad_h, *grad_p)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        return (*(None if g is None else g * grad_out for g in ctx.saved_tensors), *(None,) * 7)


def chunked_logit_loss(loss: LogitLoss, student_hidden: Tensor, student_weight: Tensor, labels: Tensor,
                       weights: Tensor | None = None, teacher_hidden: Tensor | None = None,
                       teacher_weight: Tensor | None = None, chunk_tokens: int = 1024,
                       heads: tuple[LogitHead, LogitHead] = (LogitHead(), LogitHead()),
                       reduction: str = "mean", teacher_topk: tuple[Tensor, Tensor] | None = None,
                       biases: tuple[Tensor | None, Tensor | None] = (None, None)) -> Tensor:
    """`loss` of the logits `hidden @ weight.T` (+ lm_head's bias, student's and teacher's in `biases`, where a family
    has one; each side's `heads`: the family's logit scaling or soft-capping), computed `chunk_tokens` tokens at a
    time.

    Hidden states are (..., H) and flattened; `weights` (...) weighs each token (a bool mask works; zero
    skips the token). `reduction="sum"` returns the weighted sum, "mean" divides by the summed weights.
    Gradients flow to the student's hidden states and lm_head (weight, bias); the teacher gets none. Instead of the
    teacher's hidden states and lm_head, `teacher_topk` may give its cached top k, (values (..., k), tokens
    (..., k)), for `TopKKL`.
    """
    h = student_hidden.reshape(-1, student_hidden.shape[-1])
    y = labels.reshape(-1)
    w = torch.ones(h.shape[0], device=h.device) if weights is None else weights.reshape(-1).float()
    th = None if teacher_hidden is None else teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).detach()
    if teacher_topk is not None:
        th = tuple(t.reshape(-1, t.shape[-1]) for t in teacher_topk)
    t_bias = None if biases[1] is None else biases[1].detach()
    tw = None if teacher_weight is None else (teacher_weight.detach(), t_bias)
    if loss.needs_teacher and th is None:
        raise ValueError(f"{type(loss).__name__} needs the teacher's hidden states and lm_head weight")
    s_bias = biases[0]
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (h, student_weight, s_bias)):
        total = _ChunkedLoss.apply(h, student_weight, s_bias, th, tw, y, w, loss, chunk_tokens, heads)
    else:
        total = _chunk_loop(loss, h, (student_weight, s_bias), th, tw, y, w, chunk_tokens, heads, (False,) * 3)[0]
    return total if reduction == "sum" else total / w.sum().clamp(min=1)


# ---------------------------------------------------------------- hidden states

class HiddenStateLoss(nn.Module):
    """Distance between student and teacher hidden states at user-chosen (student layer, teacher layer)
    pairs, averaged over the pairs: 1 - cosine similarity, or the mean squared error per channel.
    When the widths differ, a learned linear projection (one per pair) maps the student to the teacher."""

    def __init__(self, student_width: int, teacher_width: int, pairs: list[tuple[int, int]],
                 kind: str = "cosine"):
        super().__init__()
        if kind not in ("cosine", "mse"):
            raise ValueError("hidden-state loss must be 'cosine' or 'mse'")
        if not pairs:
            raise ValueError("hidden-state loss needs at least one (student layer, teacher layer) pair")
        self.pairs, self.kind = [tuple(p) for p in pairs], kind
        self.projections = None
        if student_width != teacher_width:
            self.projections = nn.ModuleList(nn.Linear(student_width, teacher_width, bias=False) for _ in pairs)

    def per_token(self, student_states: list[Tensor], teacher_states: list[Tensor]) -> Tensor:
        """(N,) loss per token from one (..., H) tensor per pair on each side."""
        total = 0.0
        for i, (s, t) in enumerate(zip(student_states, teacher_states)):
            s = s.reshape(-1, s.shape[-1])
            t = t.reshape(-1, t.shape[-1]).detach().float()
            if self.projections is not None:
                s = self.projections[i](s)
            s = s.float()
            if self.kind == "cosine":
                total = total + 1 - F.cosine_similarity(s, t, dim=-1, eps=1e-6)
            else:
                total = total + (s - t).pow(2).mean(-1)
        return total / len(student_states)

    def forward(self, student_states: list[Tensor], teacher_states: list[Tensor],
                mask: Tensor | None = None) -> Tensor:
        """Mean over the kept tokens."""
        per = self.per_token(student_states, teacher_states)
        w = torch.ones_like(per) if mask is None else mask.reshape(-1).float()
        return (per * w).sum() / w.sum().clamp(min=1)


def parse_layer_pairs(pairs: list[str]) -> list[tuple[int, int]]:
    """["3:6", "7:14"] -> [(3, 6), (7, 14)]: (student decoder layer, teacher decoder layer), 0-based."""
    out = []
    for item in pairs:
        s, sep, t = str(item).partition(":")
        try:
            out.append((int(s), int(t)))
        except ValueError:
            raise ValueError(f"layer pair {item!r} must be STUDENT:TEACHER layer numbers, e.g. 3:6") from None
        if not sep:
            raise ValueError(f"layer pair {item!r} must be STUDENT:TEACHER layer numbers, e.g. 3:6")
    return out
