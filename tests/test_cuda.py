"""The GPU path: chunked losses, scoring, compress and torchrun + NCCL on CUDA, against the CPU in fp32.

Every test here is marked `cuda` and needs a CUDA GPU; without one they are skipped with that reason (CI has
none). `benchmarks/gpu_check.sh` runs them on a lent GPU (docs/performance.md has the latest results); its dry
mode runs them on the CPU instead (MINITRON_GPU_TESTS_DEVICE=cpu), so that they cannot rot unnoticed.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from chat_tiny import save_tiny_chat_model
from conftest import build_tiny_data, save_tiny, tiny_model
from safetensors.torch import load_file

import minitron
from minitron.chat.cli import load_chat_model
from minitron.chat.generate import Sampling, complete
from minitron.chat.templates import CHATML_TEMPLATE
from minitron.distill import TrainConfig, distill
from minitron.eval import EvalConfig
from minitron.distill.losses import LOGIT_LOSSES, chunked_logit_loss, make_logit_loss
from minitron.numerics import lm_loss_sum
from minitron.importance import compute_scores
from minitron.lazy import LazyModel
from minitron.load import load_model
from minitron.prune import PruneConfig

REPO = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("MINITRON_GPU_TESTS_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_chunked_loss_and_gradients_bf16_cuda_match_cpu_fp32(name):
    """The chunked loss under bf16 autocast on CUDA gives the CPU fp32 loss and gradients, within bf16 error."""
    torch.manual_seed(0)
    n, hidden, vocab = 300, 64, 5000
    s_h, t_h = torch.randn(n, hidden), torch.randn(n, hidden)
    s_w, t_w = torch.randn(vocab, hidden) * 0.2, torch.randn(vocab, hidden) * 0.2
    labels, weights = torch.randint(0, vocab, (n,)), (torch.rand(n) > 0.2).float()
    loss = make_logit_loss(name)

    def run(device, ctx):
        h, w = s_h.to(device, copy=True).requires_grad_(), s_w.to(device, copy=True).requires_grad_()
        with ctx:
            out = chunked_logit_loss(loss, h, w, labels.to(device), weights.to(device), t_h.to(device),
                                     t_w.to(device), chunk_tokens=128)
        out.backward()
        return out.detach(), h.grad, w.grad

    ref = run("cpu", torch.autocast("cpu", enabled=False))
    got = run(DEVICE, torch.autocast(DEVICE, dtype=torch.bfloat16))
    assert got[0].dtype == torch.float32
    assert rel_err(got[0], ref[0]) < 2e-2, (got[0], ref[0])
    assert rel_err(got[1], ref[1]) < 5e-2 and rel_err(got[2], ref[2]) < 5e-2


def test_scoring_bf16_cuda_ranks_like_cpu_fp32(tmp_path):
    tiny = save_tiny(tmp_path / "tiny")
    data = build_tiny_data(tmp_path, tiny)
    common = dict(model=str(tiny), data=data, criteria=["activation", "wanda", "magnitude"], calib_seqs=8,
                  seq_len=32, batch_size=4, layer_loss=True, block_sizes=[2])
    cpu = minitron.score(**common, device="cpu", dtype="float32")
    gpu = minitron.score(**common, device=DEVICE, dtype="bfloat16")
    for key, value in cpu.tensors.items():
        got = gpu.tensors[key]
        assert got.dtype == torch.float32 and got.shape == value.shape, key
        if key.startswith("magnitude") or key.startswith("random") or value.numel() < 4:
            continue
        a, b = got.flatten().float(), value.flatten().float()
        ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).float()
        assert torch.corrcoef(ranks)[0, 1] > 0.9, key  # Spearman correlation


def test_compress_tiny_on_cuda(tmp_path):
    tiny = save_tiny(tmp_path / "tiny")
    data = build_tiny_data(tmp_path, tiny)
    teacher = distill(TrainConfig(student=str(tiny), out=tmp_path / "teacher-run", tokens=15360, data=str(data),
                                  loss="ce", lr=3e-3, seq_len=32, micro_batch=4, global_batch_tokens=256,
                                  eval_every=0, save_every=1000, device=DEVICE)).student
    metrics = minitron.compress(teacher=str(teacher), data=data, out=tmp_path / "run", device=DEVICE,
                                target={"hidden_size": 48, "intermediate_size": 48, "num_attention_heads": 4},
                                prune=PruneConfig(calib_seqs=4, seq_len=32), prompt="hello",
                                eval=EvalConfig(tokens=128, tasks=[], ood=False),  # no `make tasks` text needed
                                distill=TrainConfig(tokens=2048, seq_len=32, micro_batch=4, global_batch_tokens=256,
                                                    lr=3e-3))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["distilled"]["test_loss"] < saved["pruned"]["test_loss"]
    assert saved["distilled"]["test_kl"] < saved["pruned"]["test_kl"] and saved["device"].startswith(DEVICE)
    assert metrics["tokens"] > 0


def _distill_args(tmp: Path, out: Path, steps: int) -> list[str]:
    return ["distill", "--teacher", str(tmp / "teacher"), "--student", str(tmp / "student"), "--data",
            str(tmp / "data"), "--out", str(out), "--tokens", str(steps * 256), "--seq-len", "32",
            "--micro-batch", "4", "--global-batch-tokens", "256", "--eval-seqs", "4", "--eval-every", "0",
            "--save-every", "2", "--lr", "1e-3", "--device", DEVICE]


def _torchrun(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "minitron",
           *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_torchrun_nccl_kill_and_resume_gives_the_same_weights(tmp_path):
    """torchrun with NCCL: an uninterrupted run, and a run killed (SIGKILL) after its step-2 checkpoint and
    resumed, end with the same weights."""
    save_tiny(tmp_path / "teacher", seed=0)
    save_tiny(tmp_path / "student", seed=1, num_hidden_layers=2, hidden_size=48, num_attention_heads=4)
    build_tiny_data(tmp_path, tmp_path / "teacher")
    whole = _torchrun(_distill_args(tmp_path, tmp_path / "whole", 20))
    out = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, out[-3000:]

    killed = _torchrun(_distill_args(tmp_path, tmp_path / "killed", 20))
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoints" / "step-2").is_dir():
        assert killed.poll() is None and time.time() < deadline, killed.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "student").exists()
    resumed = _torchrun(_distill_args(tmp_path, tmp_path / "killed", 20) + ["--resume"])
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out[-3000:]
    a = load_file(tmp_path / "whole" / "student" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"max |weight difference| after kill + resume on CUDA: {worst:.3g}")
    for k in a:  # training moves the weights ~1e-3; bf16 autocast on CUDA is not bitwise deterministic
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-5, msg=k)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
def test_lm_loss_sum_bf16_cuda_matches_cpu_fp32(family):
    ids = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(0))
    mask = torch.rand(4, 32, generator=torch.Generator().manual_seed(1)) > 0.3
    model = tiny_model(family)
    ref, n_ref = lm_loss_sum(model, ids, mask)
    got, n = lm_loss_sum(model.to(DEVICE), ids, mask)
    assert got.device.type == torch.device(DEVICE).type and got.dtype == torch.float32 and n.item() == n_ref.item()
    assert abs(got.item() - ref.item()) / ref.item() < 2e-2


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_scoring_walk_resident_and_streamed_on_cuda(tmp_path, family):
    """The one scoring walk on the GPU: a resident model and one streamed from disk give the same scores, and
    both agree with the CPU."""
    batches = [torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    criteria = ["activation", "wanda", "magnitude", "random"]
    tiny_model(family).save_pretrained(tmp_path / family, max_shard_size="100KB")
    cpu = compute_scores(load_model(tmp_path / family), batches, criteria, batches[:1], [1, 2], seed=3)
    resident = compute_scores(load_model(tmp_path / family, DEVICE), batches, criteria, batches[:1], [1, 2], seed=3)
    streamed = compute_scores(LazyModel.open(tmp_path / family, DEVICE), batches, criteria, batches[:1], [1, 2],
                              seed=3)
    for key, value in resident.tensors.items():
        torch.testing.assert_close(streamed.tensors[key], value, rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(value, cpu.tensors[key], rtol=1e-3, atol=1e-4, msg=key)


def test_chat_generation_on_cuda(tmp_path):
    """Greedy replies equal the CPU's; a stop string ends generation; seeded sampling repeats."""
    path = save_tiny_chat_model(tmp_path / "chat", CHATML_TEMPLATE)
    lm_cpu, tok, fmt = load_chat_model(str(path), device="cpu")
    lm_gpu, _, _ = load_chat_model(str(path), device=DEVICE)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    a, b = (complete(m, tok, fmt, messages, sampling=Sampling(16)) for m in (lm_cpu, lm_gpu))
    assert a.token_ids == b.token_ids
    pieces = []
    cut = complete(lm_gpu, tok, replace(fmt, stop_strings=(b.text[2:5],)), messages, sampling=Sampling(16),
                   on_text=pieces.append)
    assert cut.stopped and len(cut.token_ids) < 16 and "".join(pieces) == cut.text
    sampled = [complete(lm_gpu, tok, fmt, messages, sampling=Sampling(12, 1.0, 0.9, 5)).text for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_trainer_speed_options_on_cuda(tmp_path):
    """--compile and --activation-checkpointing (with fused AdamW on CUDA) train as the defaults do."""
    save_tiny(tmp_path / "teacher", seed=0)
    save_tiny(tmp_path / "student", seed=1, num_hidden_layers=2, hidden_size=48, num_attention_heads=4)
    build_tiny_data(tmp_path, tmp_path / "teacher")
    losses = {}
    for name, options in {"plain": {}, "fast": dict(compile=True, activation_checkpointing=True)}.items():
        result = distill(TrainConfig(student=str(tmp_path / "student"), teacher=str(tmp_path / "teacher"),
                                     data=str(tmp_path / "data"), out=tmp_path / name, tokens=4 * 256, seq_len=32,
                                     micro_batch=4, global_batch_tokens=256, eval_every=0, lr=1e-3, device=DEVICE,
                                     **options))
        losses[name] = [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").open()]
        assert result.val_loss is not None
    assert losses["fast"] == pytest.approx(losses["plain"], rel=2e-2)
