"""Distillation and scoring speed and memory: minitron's step against the plain loop, side by side in one run.

The plain loop is what a user writes first: teacher forward under no_grad, student forward and backward,
full-vocabulary `F.kl_div` in fp32, AdamW. minitron's step is the trainer's own pieces (`Teacher`,
`DistillModel` with the chunked logit loss, the trainer's optimiser settings). Both get the same models (random
weights of a real shape, same seed), the same batch and the same data; on CUDA both run the student in fp32 under
bf16 autocast and the teacher in bf16, as the trainer does; minitron's step with its defaults on the device (on a
CPU: bf16 where the CPU has native bf16, activation checkpointing, 512-token loss chunks), and `--experiments before`
as it shipped before those defaults. Scoring compares minitron's scoring walk (`compute_scores`, what `minitron
score` runs; it needs no logits) and a forward pass with its activation hooks (`ActivationRecorder`) against a plain
forward of the same tokens, pass by pass, in a process that keeps freed memory for reuse as minitron's scoring does on
the CPU (`minitron.lazy.reuse_freed_memory`); the training loops run without it (the
trainer has it too, so minitron's step is measured a little slow).

    .venv/bin/python benchmarks/throughput.py                      # preset by device: gpu on CUDA, cpu otherwise
    .venv/bin/python benchmarks/throughput.py --preset gpu --memory-cap-gib 80 --big-tokens 16384 --profile prof.txt
    .venv/bin/python benchmarks/throughput.py --preset tiny --steps 1   # seconds; what the test suite runs

Presets (tokens per step = micro_batch x seq_len, one micro-batch a step for both loops):
  cpu   SmolLM2-135M's shape -> the ~68M student of the demo's target, 4 x 512 = 2,048 tokens
  gpu   a Mistral-shaped 1.5B teacher -> a 0.9B student, vocabulary 131072, 4 x 1024 = 4,096 tokens
  tiny  a few-layer model for the test suite

MFU counts 6N + 12 L d T FLOPs per token for the student's training and 2N + 4 L d T for the teacher's forward
(N = parameters of the linear layers incl. lm_head, L layers, d = heads x head_dim, T sequence length), against
the dense bf16 datasheet peak on known GPUs and, always, against a matmul measured in the same run.
The last line printed is one JSON object (device, kd_speedup, kd_memory_ratio, score_speed_ratio, ...).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

from minitron.arch import LogitHead, arch_of
from minitron.distill.losses import ForwardKL
from minitron.distill.config import TrainConfig
from minitron.distill.loop import adamw
from minitron.distill.parallel import DistillModel, Teacher, speed_options
from minitron.numerics import autocast  # the trainer's: bf16 on CUDA (and with precision=bf16), else fp32
from minitron.importance import compute_scores
from minitron.importance.stats import ActivationRecorder
from minitron.lazy import reuse_freed_memory
from minitron.prune import check_target, target_config

sys.path.insert(0, str(Path(__file__).parent))
from results_tables import pct  # noqa: E402 (sibling scripts)
from search_speed import machine  # noqa: E402

GIB = 2**30
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5)
MISTRAL_1_5B = dict(vocab_size=131072, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
                    max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-5, sliding_window=None)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, max_position_embeddings=512)
PRESETS = {  # teacher config, student target, sequence length, micro-batch
    "cpu": (LlamaConfig, SMOLLM2_135M, dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6), 512, 4),
    "gpu": (MistralConfig, MISTRAL_1_5B, dict(hidden_size=1536, intermediate_size=4608), 1024, 4),
    "tiny": (LlamaConfig, TINY, dict(hidden_size=48, intermediate_size=64), 32, 2),
}
DATASHEET_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


# ---------------------------------------------------------------- measuring

class PeakMemory:
    """Peak memory of a block: CUDA's allocator statistics, or on CPU the peak resident set size sampled by a
    thread every 5 ms (the heap is trimmed first so that freed memory of an earlier block does not count)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self.start, self._stop = device, 0, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.peak = self.start = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int] | None = None) -> float:
    """FLOP/s of a matmul in `dtype` (what minitron's step computes in by default on this device): a large square
    one, or an (m, k) by (k, n) one of `shape`."""
    size = 8192 if device.type == "cuda" else 1024
    m, k, n = shape or (size, size, size)
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    reps, start = (20 if device.type == "cuda" else 5), time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * m * k * n * reps / (time.perf_counter() - start)


def linear_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(model: torch.nn.Module, seq_len: int, train: bool) -> float:
    cfg = model.config
    attn = cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return (6 * linear_params(model) + 12 * attn) if train else (2 * linear_params(model) + 4 * attn)


# ---------------------------------------------------------------- models and steps

@dataclass
class Setup:
    device: torch.device
    teacher_config: object
    student_config: object
    seq_len: int
    micro_batch: int
    lr: float = 1e-4
    data: list[torch.Tensor] = field(default_factory=list)

    @property
    def teacher_dtype(self) -> torch.dtype:
        """The plain loop's teacher: bf16 on CUDA, fp32 on the CPU (where bf16 autocast is the trainer's option)."""
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    def build(self, config, dtype: torch.dtype, seed: int) -> torch.nn.Module:
        """Random weights of `config`, initialised directly on the device."""
        torch.manual_seed(seed)
        with torch.device(self.device):
            return AutoModelForCausalLM.from_config(config, dtype=dtype)

    def batch(self, step: int, micro_batch: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(step)
        shape = (micro_batch or self.micro_batch, self.seq_len + 1)
        return torch.randint(0, self.teacher_config.vocab_size, shape, generator=g).to(self.device)


def plain_adamw(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The plain loop's AdamW: PyTorch's default implementation, the trainer's hyperparameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def plain_loss(teacher, student, ids: torch.Tensor) -> torch.Tensor:
    """The plain loop's loss: both models' full logits, then full-vocabulary KL(teacher || student) in fp32."""
    x = ids[:, :-1]
    with torch.no_grad(), autocast(ids.device):
        t_logits = teacher(input_ids=x).logits
    with autocast(ids.device):
        s_logits = student(input_ids=x).logits
    s = F.log_softmax(s_logits.float(), dim=-1).flatten(0, 1)
    t = F.log_softmax(t_logits.float(), dim=-1).flatten(0, 1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


def minitron_loss(teacher: Teacher, model: DistillModel, ids: torch.Tensor, bf16: bool) -> torch.Tensor:
    """minitron's loss: the trainer's teacher pass (hidden states only) and DistillModel (chunked loss)."""
    x, y = ids[:, :-1], ids[:, 1:]
    w = torch.ones(y.shape, device=ids.device)
    with autocast(ids.device, bf16):
        with torch.no_grad():
            t_hidden, t_states = teacher(x)
        total = model(x, y, w, (t_hidden, t_states, teacher.head()))
    return total / w.sum()


def hold_teacher(teacher_lm: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The one teacher in the dtype a variant holds it in, converted in place, so that no variant's peak memory
    counts a second copy (the trainer holds only one: bf16 when it computes in bf16). A round trip through bf16
    rounds the random weights, which changes neither speed nor memory."""
    return teacher_lm.to(dtype)


def make_plain(setup: Setup, teacher_lm):
    teacher_lm = hold_teacher(teacher_lm, setup.teacher_dtype)
    student = setup.build(setup.student_config, torch.float32, seed=1).train()
    return student, plain_adamw(student, setup.lr), lambda ids: plain_loss(teacher_lm, student, ids)


def make_minitron(setup: Setup, teacher_lm, **options):
    """minitron's step as the trainer builds it: `TrainConfig(**options)` on this device (its defaults, or e.g.
    compile=True) decides the speed and memory options (`speed_options`), the loss chunks, the precision (the
    teacher held in bf16 when it computes in bf16) and the optimiser (`adamw`: fused)."""
    cfg = TrainConfig(lr=setup.lr, **options).on_device(setup.device)
    bf16 = cfg.bf16
    student = speed_options(setup.build(setup.student_config, torch.float32, seed=1).train(), cfg, True)
    teacher_lm = hold_teacher(teacher_lm, torch.bfloat16 if bf16 else setup.teacher_dtype)
    teacher = Teacher(teacher_lm, ())
    model = DistillModel(student, ForwardKL(), None, 1.0, cfg.chunk_tokens, (LogitHead(), LogitHead()))
    return model, adamw(cfg, model, setup.device), lambda ids: minitron_loss(teacher, model, ids, bf16)


# Trainer options measured beside its defaults (`--experiments`); each is a TrainConfig setting. `before` is the
# step as it shipped before the defaults followed the device (fp32 on every CPU, nothing recomputed, 1,024-token
# chunks); the others change one default each.
EXPERIMENTS = {"before": dict(precision="fp32", activation_checkpointing=False, chunk_tokens=1024),
               "fp32": dict(precision="fp32"), "bf16": dict(precision="bf16"),
               "no_ckpt": dict(activation_checkpointing=False), "ckpt": dict(activation_checkpointing=True),
               "c1024": dict(chunk_tokens=1024), "c512": dict(chunk_tokens=512),
               "compile": dict(compile=True), "compile_ckpt": dict(compile=True, activation_checkpointing=True)}


def train_steps(step_loss, opt, setup: Setup, steps: int, warmup: int, micro_batch: int) -> dict:
    """Time `steps` optimiser steps after `warmup` untimed ones; a CUDA out-of-memory is a result too."""
    dev, seconds, losses = setup.device, 0.0, []
    try:
        with PeakMemory(dev) as mem:
            for i in range(warmup + steps):
                ids = setup.batch(i, micro_batch)
                sync(dev)
                start = time.perf_counter()
                loss = step_loss(ids)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync(dev)
                if i >= warmup:
                    seconds += time.perf_counter() - start
                losses.append(loss.item())
    except torch.OutOfMemoryError:
        return {"oom": True, "tokens_per_step": micro_batch * setup.seq_len}
    tokens = steps * micro_batch * setup.seq_len
    return {"oom": False, "tokens_per_step": micro_batch * setup.seq_len, "tokens_per_s": tokens / seconds,
            "peak_memory_gib": mem.peak / GIB, "start_memory_gib": mem.start / GIB, "losses": losses}


def scoring(setup: Setup, model, steps: int) -> dict:
    """The same tokens three ways: a plain forward of the teacher (`plain`), the forward with minitron's activation
    hooks (`hooks`: their own cost), and minitron's scoring walk as `minitron score` runs it for activation scores
    (`walk`: `compute_scores`, layer by layer, no logits), the order rotating pass by pass so that the machine's drift
    falls on all alike; each one's median pass."""
    rec = ActivationRecorder(model, arch_of(model.config))
    arms = {"plain": lambda ids: model(input_ids=ids), "hooks": lambda ids: hooked(rec, model, ids),
            "walk": lambda ids: compute_scores(model, [ids], ["activation"])}
    seconds = {name: [] for name in arms}
    with torch.no_grad(), autocast(setup.device):
        for i in range(steps + 1):
            ids = setup.batch(1000 + i)[:, :-1]
            names = list(arms)
            for name in names[i % 3:] + names[:i % 3]:
                sync(setup.device)
                start = time.perf_counter()
                arms[name](ids)
                sync(setup.device)
                if i:  # the first pass of each is a warm-up
                    seconds[name].append(time.perf_counter() - start)
    return {name: {"tokens_per_s": ids.numel() / statistics.median(s), "seconds": s} for name, s in seconds.items()}


def hooked(rec: ActivationRecorder, model, ids: torch.Tensor) -> None:
    with rec:
        model(input_ids=ids)


def profile_step(step_loss, opt, setup: Setup, path: Path) -> None:
    """Where the time of one minitron step goes: the profiler's table of the most expensive operators."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        loss = step_loss(setup.batch(0))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(setup.device)
    key = "self_cuda_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=40))


# ---------------------------------------------------------------- the run

def release() -> None:
    """Return freed memory before the next variant (the caller has dropped its references)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def mfu(result: dict, per_token: float, peak: float | None) -> float | None:
    if result.get("oom") or not peak:
        return None
    return round(result["tokens_per_s"] * per_token / peak, 4)


def kd_variants(setup: Setup, teacher_lm, steps: int, warmup: int, big_tokens: int | None,
                profile: Path | None, experiments: list[str]) -> dict:
    """Both loops at the preset's batch, then (with `big_tokens`) both at that many tokens a step; each
    experiment of EXPERIMENTS as a further variant of minitron's step."""
    sizes = [("equal", setup.micro_batch)]
    if big_tokens:
        sizes.append(("big", max(1, big_tokens // setup.seq_len)))
    makers = [("plain", make_plain), ("minitron", make_minitron)] + [
        (f"minitron+{e}", lambda setup, t, e=e: make_minitron(setup, t, **EXPERIMENTS[e])) for e in experiments]
    out = {}
    for label, mb in sizes:
        for name, make in makers:
            model, opt, step_loss = make(setup, teacher_lm)
            out[f"{name}_{label}"] = r = train_steps(step_loss, opt, setup, steps, warmup, mb)
            print(f"  {name:24s} {r['tokens_per_step']:>6,} tok/step: " + (
                "out of memory" if r["oom"] else f"{r['tokens_per_s']:9.1f} tok/s, peak {r['peak_memory_gib']:.2f} GiB "
                f"({r['start_memory_gib']:.2f} before the first step)"),
                flush=True)
            if profile and name == "minitron" and label == "equal":
                profile_step(step_loss, opt, setup, profile)
            del model, opt, step_loss
            release()
    return out


def preset_models(preset: str, device: torch.device) -> tuple[Setup, torch.nn.Module]:
    """The preset's setup and its teacher (random weights, seed 0, frozen)."""
    family, teacher_sizes, target, seq_len, micro_batch = PRESETS[preset]
    t_config = family(**teacher_sizes)
    setup = Setup(device, t_config, target_config(t_config, check_target(t_config, target)), seq_len, micro_batch)
    return setup, setup.build(t_config, setup.teacher_dtype, seed=0).eval().requires_grad_(False)


def scoring_as_minitron_runs(preset: str, device: torch.device, steps: int) -> dict:
    """`scoring` as minitron scores: on the CPU with freed memory kept for reuse (`reuse_freed_memory`), which is
    process-wide, so in a process of its own, leaving the training loops' allocator as a user's script has it."""
    if device.type != "cpu":
        return scoring(*preset_models(preset, device), steps)
    done = subprocess.run([sys.executable, __file__, "--score-only", "--preset", preset, "--steps", str(steps)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the scoring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(preset: str, device: torch.device, steps: int, warmup: int, big_tokens: int | None,
        profile: Path | None, experiments: list[str] = ()) -> dict:
    setup, teacher = preset_models(preset, device)
    t_config, s_config, seq_len = setup.teacher_config, setup.student_config, setup.seq_len
    with torch.device("meta"):  # sizes only: no weights allocated
        student_meta = AutoModelForCausalLM.from_config(s_config)
    per_token = flops_per_token(student_meta, seq_len, True) + flops_per_token(teacher, seq_len, False)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "machine": machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "preset": preset,
              "teacher_params": sum(p.numel() for p in teacher.parameters()),
              "student_params": sum(p.numel() for p in student_meta.parameters()),
              "vocab_size": t_config.vocab_size, "seq_len": seq_len, "steps": steps}
    dtype = torch.bfloat16 if TrainConfig().on_device(device).bf16 else torch.float32
    report["matmul_dtype"], report["matmul_flops"] = str(dtype).removeprefix("torch."), matmul_peak(device, dtype)
    print(f"{report['device']}: teacher {report['teacher_params']:,} -> student {report['student_params']:,} "
          f"parameters; {report['matmul_dtype']} matmul {report['matmul_flops'] / 1e12:.2f} TFLOP/s", flush=True)
    report["score"] = scoring_as_minitron_runs(preset, device, max(steps, 8))
    report["kd"] = kd = kd_variants(setup, teacher, steps, warmup, big_tokens, profile, list(experiments))
    datasheet = next((v for k, v in DATASHEET_BF16.items() if k in report["device"]), None)
    for r in kd.values():
        r["mfu_vs_matmul"] = mfu(r, per_token, report["matmul_flops"])
        r["mfu_vs_datasheet"] = mfu(r, per_token, datasheet)
    return report


def step_memory(result: dict) -> float:
    """The memory a step adds to what was resident before it (the process, both models' weights): activations,
    logits, gradients and AdamW's state."""
    return result["peak_memory_gib"] - result["start_memory_gib"]


def summary(report: dict) -> dict:
    kd, sc = report["kd"], report["score"]
    plain, ours = kd["plain_equal"], kd["minitron_equal"]
    both = not plain["oom"] and not ours["oom"]
    out = {"device": report["device"], "preset": report["preset"],
           "kd_speedup": round(ours["tokens_per_s"] / plain["tokens_per_s"], 3) if both else None,
           "kd_memory_ratio": round(ours["peak_memory_gib"] / plain["peak_memory_gib"], 3) if both else None,
           "kd_step_memory_ratio": round(step_memory(ours) / step_memory(plain), 3) if both else None,
           "score_speed_ratio": round(sc["walk"]["tokens_per_s"] / sc["plain"]["tokens_per_s"], 3),
           "score_hooks_ratio": round(sc["hooks"]["tokens_per_s"] / sc["plain"]["tokens_per_s"], 3),
           "kd_tokens_per_s": None if ours["oom"] else round(ours["tokens_per_s"], 1),
           "matmul_dtype": report["matmul_dtype"], "matmul_tflops": round(report["matmul_flops"] / 1e12, 4),
           "kd_mfu_vs_matmul": ours.get("mfu_vs_matmul"),
           "kd_mfu": {k: v.get("mfu_vs_datasheet") or v.get("mfu_vs_matmul") for k, v in kd.items()}}
    if "minitron_big" in kd:
        out["big_tokens_per_step"] = kd["minitron_big"]["tokens_per_step"]
        out["big_minitron_peak_gib"] = None if kd["minitron_big"]["oom"] else round(kd["minitron_big"]["peak_memory_gib"], 2)
        out["big_plain_oom"] = kd["plain_big"]["oom"]
    return out


def variant_label(name: str, report: dict) -> str:
    """What a kd variant ran, in words: its TrainConfig settings as the measured device resolved them (precision
    auto as the run recorded it in its matmul's dtype, not as the machine rendering the table would)."""
    device = report["device"]
    if name == "plain":
        return "plain loop (fp32" + (", bf16 autocast)" if device != "cpu" else ")")
    measured = "bf16" if report["matmul_dtype"] == "bfloat16" else "fp32"
    options = {"precision": measured, **EXPERIMENTS.get(name.partition("+")[2], {})}
    cfg = TrainConfig(**options).on_device(torch.device("cpu" if device == "cpu" else "cuda"))
    what = (f"{cfg.precision}, {'checkpointing' if cfg.activation_checkpointing else 'no checkpointing'}, "
            f"{cfg.chunk_tokens}-token chunks" + (", compiled" if cfg.compile else ""))
    return f"minitron{' defaults' if name == 'minitron' else ', ' + name.partition('+')[2]} ({what})"


def table(report: dict) -> str:
    """docs/performance.md's table of a run (results_tables renders it from the JSON --json wrote)."""
    kd, sc, summ = report["kd"], report["score"], report["summary"]
    plain = kd["plain_equal"]
    lines = ["| step | tokens/s | × plain | peak GiB | × plain | MFU vs the matmul |", "|---|---:|---:|---:|---:|---:|"]
    for key, r in kd.items():
        name, _, size = key.rpartition("_")
        if r["oom"]:
            lines.append(f"| {variant_label(name, report)}, {r['tokens_per_step']:,} tokens | out of memory "
                         "| | | | |")
            continue
        lines.append(f"| {variant_label(name, report)}" + ("" if size == "equal" else
                     f", {r['tokens_per_step']:,} tokens") + f" | {r['tokens_per_s']:.1f} | "
                     f"{r['tokens_per_s'] / plain['tokens_per_s']:.2f} | {r['peak_memory_gib']:.2f} | "
                     f"{r['peak_memory_gib'] / plain['peak_memory_gib']:.2f} | {pct(r['mfu_vs_matmul'])} |")
    lines.append(f"| scoring: minitron's walk (`minitron score`) vs a plain forward | {sc['walk']['tokens_per_s']:.0f} vs "
                 f"{sc['plain']['tokens_per_s']:.0f} | {summ['score_speed_ratio']:.2f} | | | |")
    lines.append(f"| scoring: a forward with minitron's hooks vs a plain one | {sc['hooks']['tokens_per_s']:.0f} vs "
                 f"{sc['plain']['tokens_per_s']:.0f} | {summ['score_hooks_ratio']:.2f} | | | |")
    return ("\n".join(lines) + f"\n\n{report.get('machine', report['device'])}; {report['matmul_dtype']} matmul "
            f"{report['matmul_flops'] / 1e12:.3f} TFLOP/s in the same run (the MFU column's peak); "
            f"`{report['command']}`. Last line printed: `{json.dumps(summ)}`\n")


def sentence(report: dict) -> str:
    """The README's figures of a run: the defaults against the plain loop (results_tables renders it)."""
    summ, ours = report["summary"], report["kd"]["minitron_equal"]
    what = variant_label("minitron", report).partition("(")[2].rstrip(")")
    return (f"with its defaults ({what}) distillation runs **{summ['kd_speedup']:.2f}×** the plain loop's "
            f"tokens/s at **{summ['kd_memory_ratio']:.2f}×** its peak memory ({report['teacher_params'] / 1e6:.0f}M → {report['student_params'] / 1e6:.0f}M "
            f"parameters, {ours['tokens_per_step']:,} tokens a step; "
            f"{ours['tokens_per_s']:.0f} tokens/s, {pct(ours['mfu_vs_matmul'])} of a {report['matmul_dtype']} matmul's "
            f"FLOP rate measured in the same run); `minitron score`'s walk runs at {summ['score_speed_ratio']:.2f}× a "
            f"plain forward of the same tokens (its hooks inside a forward: {summ['score_hooks_ratio']:.2f}×). "
            f"`{report['command']}`, {report['machine']}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: gpu on CUDA, cpu otherwise")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--big-tokens", type=int, help="also run both loops at this many tokens a step")
    parser.add_argument("--memory-cap-gib", type=float, help="cap CUDA memory (e.g. 80 to act as an H100 80GB)")
    parser.add_argument("--profile", type=Path, help="write a profile of one minitron step to this file")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--experiments", nargs="*", default=[], choices=sorted(EXPERIMENTS),
                        help="further variants of minitron's step to measure beside it")
    parser.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.score_only:  # `scoring_as_minitron_runs`'s process
        if device.type == "cpu":
            reuse_freed_memory()
        print(json.dumps(scoring(*preset_models(args.preset, device), args.steps)))
        return
    if args.memory_cap_gib and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * GIB / total), index)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    report = run(preset, device, args.steps, args.warmup, args.big_tokens, args.profile, args.experiments)
    report["summary"] = summary(report)
    report["command"] = "benchmarks/throughput.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v not in (None, False, []) and k != "device")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"]))


if __name__ == "__main__":
    main()
