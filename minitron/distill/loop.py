"""The training loop, for distillation and conventional training, on 1 process or N (torchrun + FSDP2).

    minitron distill --teacher default --student runs/pruned --tokens 2000000 --out runs/distill
    torchrun --nproc_per_node 8 -m minitron distill ...      # same command, sharded (docs/distributed.md)

`distill(cfg)` reads top to bottom like nanoGPT's train.py: check the inputs, build the models, maybe resume,
then for each step: batches, forward/backward, clip, step, log, validate, save; then the final student.
Batches are a pure function of (seed, step, micro-batch): micro-batch m of a step goes to rank m % world, so 1
and N processes train on the same global batch, and a resumed run on the same batches as an unbroken one.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import LogitHead
from minitron.io import check_run_dir, write_json
from minitron.data import TokenData, default_data, tokenizer_identity
from minitron.distill.checkpoint import (MetricsLog, load_checkpoint, prepare_out, resume_point, run_lock,
                                         save_checkpoint, save_student, trainer_state)
from minitron.distill.config import Schedule, TrainConfig, distill_words, recorded, schedule
from minitron.distill.parallel import Env, Teacher, build_models, init_env, teacher_dtype
from minitron.distill.teacher_cache import TeacherCache
from minitron.errors import Interrupted, MinitronError
from minitron.numerics import autocast, label_weights, lm_loss, native_bf16, windows_in_batches
from minitron.lazy import reuse_freed_memory
from minitron.load import check_seq_len, load_config, load_tokenizer
from minitron.prune.plan import params_of
from minitron.record import Record, jsonable
from minitron.signals import StopRequest
from minitron.tracking import Tracker


@dataclass
class DistillResult:
    out: Path  # the run directory
    student: Path  # out/student, the final Hugging Face checkpoint
    steps: int  # optimiser steps done
    tokens: int  # training tokens seen
    loss: float  # training loss of the last step
    val_loss: float | None  # final validation LM loss (student cross-entropy on held-out tokens)
    tokens_per_s: float  # mean training throughput of this invocation
    seconds: float  # wall time of this invocation


def distill(cfg: TrainConfig) -> DistillResult | dict:
    """Run (or resume) the training that `cfg` describes (see `TrainConfig` for every setting); with
    `cfg.dry_run`, check it and return the plan (`show_plan`) instead."""
    cfg.validate()  # cheap checks first
    check_run_dir(Path(cfg.out), cfg.resume, cfg.overwrite)
    env = init_env(cfg.device)
    cfg = cfg.on_device(env.device)  # the precision, checkpointing and loss chunks this device takes by default
    if cfg.dry_run:
        return show_plan(cfg, env)
    if cfg.bf16 and not native_bf16(env.device) and env.is_main:
        print("warning: this CPU has no native bf16 (AVX512-BF16 or AMX); --precision bf16 will be slower than "
              "--precision fp32 here", file=sys.stderr, flush=True)
    if env.device.type == "cpu":
        reuse_freed_memory()
    with run_lock(Path(cfg.out), env):  # a second writer of the same run is refused
        return train(cfg, env)


def train(cfg: TrainConfig, env: Env) -> DistillResult:
    """`distill` once its settings are checked, the processes started and the run directory locked."""
    data, tokenizer, s_config, t_config = open_inputs(cfg, env)
    asked = cfg.global_batch_tokens
    cfg = cfg.resolved(s_config.hidden_size)  # the batch, learning rate and loss from the budget, width and teacher
    plan = schedule(cfg, data.num_tokens("train"), data.num_tokens("dev"), env.world, data.path)
    if env.is_main:
        warn_about_budget(cfg, plan, asked, data)
    cache = (TeacherCache.open(cfg.teacher_cache, cfg.teacher, teacher_dtype(cfg, env), data, t_config.vocab_size,
                               cfg.seq_len, cfg.micro_batch, cfg.seed, cfg.top_k, env) if cfg.teacher_cache else None)
    cached = cache is not None and cache.complete(plan.steps, plan.n_micro)
    if cached and env.is_main:
        print(f"teacher cache {cache.root} holds every step: the teacher is not loaded", flush=True)
    model, teacher = build_models(cfg, env, s_config, t_config, load_teacher=not cached)
    out = Path(cfg.out)
    settings = {**recorded(cfg, out), "data_fingerprint": data.fingerprint()}
    resume_from = prepare_out(cfg, env, settings)  # only now, when every input has been checked and loaded
    optimizer, scheduler = build_optimizer(cfg, model, plan, env.device)
    start = load_checkpoint(resume_from, model, optimizer, scheduler, env, plan.n_micro) if resume_from else 0
    val = data.spread("dev", plan.eval_seqs, cfg.seq_len).batch  # selection: the dev split
    ran = Record(out) if env.is_main else None
    if ran is not None:  # the resolved settings (`--config` runs them again) and the record a resume checks
        write_json(out / "train_config.json", jsonable(asdict(cfg)))
        ran.save("distill", settings, {"plan": asdict(plan), "world_size": env.world})
    log = MetricsLog(out / "metrics.jsonl", start, env.is_main)
    record = log.records[-1] if log.records else {"loss": float("nan")}
    t0 = time.perf_counter()
    tracker = Tracker(cfg.report_to, out, jsonable(asdict(cfg)), start, env.is_main)  # --report-to: the same records
    bar = tqdm(total=plan.steps, initial=min(start, plan.steps), unit="step", dynamic_ncols=True,
               disable=not env.is_main, desc="distill" if teacher is not None else "train")
    with StopRequest() as stop, tracker, bar:
        for step in range(start + 1, plan.steps + 1):
            t = time.perf_counter()
            micros = range(env.rank, plan.n_micro, env.world)  # this rank's share of the global batch
            batches = [data.sample("train", cfg.micro_batch, cfg.seq_len, cfg.seed, step, m) for m in micros]
            topk = cache and cache.targets(step, list(micros), batches, teacher,
                                           LogitHead.of(t_config), cfg.chunk_tokens, env)
            loss, grad_norm, lr = train_step(model, teacher, optimizer, batches, cfg.grad_clip, env,
                                             cfg.bf16, topk)
            scheduler.step()
            record = {"step": step, "tokens": step * plan.tokens_per_step, "loss": loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_s": plan.tokens_per_step / (time.perf_counter() - t)}
            last = step == plan.steps
            if (cfg.eval_every and step % cfg.eval_every == 0) or last:
                record["val_loss"] = validate(model, val, cfg, env)
                if env.is_main:
                    bar.write(f"step {step}: loss {loss:.4f}, val_loss {record['val_loss']:.4f}")
            log.write(record)
            tracker.log(record)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            bar.update(1)
            stopping = env.all_sum(stop.signum) > 0  # every rank stops at the same step
            if (cfg.save_every and step % cfg.save_every == 0) or last or stopping:
                save_checkpoint(out, step, step * plan.tokens_per_step, model, optimizer, scheduler, env,
                                cfg.keep_checkpoints, plan.n_micro)
            if stopping:
                signum = stop.signum or signal.SIGTERM
                raise Interrupted(f"interrupted by {signal.Signals(signum).name} at step {step}; checkpoint saved "
                                  f"to {out / 'checkpoints' / f'step-{step}'}; resume with --resume", signum)
    seconds, steps = time.perf_counter() - t0, max(start, plan.steps)
    val_loss = record.get("val_loss") if start < plan.steps else validate(model, val, cfg, env)
    student = save_student(cfg, model, s_config, tokenizer, steps, env)
    done = (steps - start) * plan.tokens_per_step
    if ran is not None:
        ran.save("distill", settings, {"plan": asdict(plan), "world_size": env.world, "steps": steps,
                                          "tokens": steps * plan.tokens_per_step, "val_loss": val_loss})
        print(f"wrote {student}: {steps} steps, {steps * plan.tokens_per_step:,} tokens, val_loss {val_loss:.4f}",
              flush=True)
    return DistillResult(out, student, steps, steps * plan.tokens_per_step, record["loss"], val_loss,
                         done / seconds if seconds > 0 and done else 0.0, seconds)


def show_plan(cfg: TrainConfig, env: Env) -> dict:
    """What `distill` would do with `cfg` (a config made explicit by `on_device`), from the models' configs and the
    data alone: every input checked as a real run checks it, a resume's record included; printed and returned."""
    data, _, s_config, t_config = open_inputs(cfg, env)
    asked = cfg.global_batch_tokens
    cfg = cfg.resolved(s_config.hidden_size)
    plan = schedule(cfg, data.num_tokens("train"), data.num_tokens("dev"), env.world, data.path)
    found = resume_point(cfg, {**recorded(cfg, Path(cfg.out)), "data_fingerprint": data.fingerprint()})
    start = trainer_state(found, plan.n_micro, env.world)["step"] if found else 0  # refused as a resume would be
    if env.is_main:
        warn_about_budget(cfg, plan, asked, data)
        init = "random initialisation" if cfg.init == "random" else "its weights"
        teacher = f"teacher {cfg.teacher}: {params_of(t_config):,} parameters" if t_config else "no teacher"
        print("\n".join([
            f"--dry-run: the plan for {cfg.out} (nothing written)",
            f"student {cfg.student}: {params_of(s_config):,} parameters, from {init}; {teacher}",
            f"data {data.path}: {data.num_tokens('train'):,} training tokens, {data.num_tokens('dev'):,} dev",
            f"{plan.steps:,} steps of {plan.tokens_per_step:,} tokens ({plan.n_micro} micro-batches of "
            f"{cfg.micro_batch} x {cfg.seq_len} on {env.world} process(es)), {plan.steps * plan.tokens_per_step:,} "
            f"tokens in all; lr {cfg.lr:g} to {cfg.min_lr:g} (warm-up {plan.warmup_steps} steps, then cosine)",
            f"loss: {distill_words(asdict(cfg))}" + (f"; LoRA rank {cfg.lora_rank}" if cfg.lora_rank else ""),
            f"speed: activation checkpointing {'on' if cfg.activation_checkpointing else 'off'}, loss chunks of "
            f"{cfg.chunk_tokens:,} tokens, layers {'compiled' if cfg.compile else 'not compiled'}"
            + (f", teacher cache {cfg.teacher_cache}" if cfg.teacher_cache else ""),
            f"validation on {plan.eval_seqs} dev sequences every {cfg.eval_every or plan.steps} steps; a checkpoint "
            f"every {cfg.save_every or plan.steps} steps",
            f"resumes from step {start:,} ({found})" if found else
            f"starts at step 0{' (--overwrite: ' + str(cfg.out) + ' deleted first)' if cfg.overwrite else ''}"]),
            flush=True)
    return {"dry_run": True, "out": str(cfg.out), "config": jsonable(asdict(cfg)), "plan": asdict(plan),
            "start": start}


def warn_about_budget(cfg: TrainConfig, plan: Schedule, asked: int | None, data: TokenData) -> None:
    """What a user may mean but should hear: a batch rounded to whole micro-batches, or more tokens than the data
    holds (several passes over it)."""
    if asked is not None and plan.tokens_per_step != asked:
        print(f"minitron: warning: --global-batch-tokens {asked:,} is rounded to {plan.tokens_per_step:,} "
              f"({plan.n_micro} micro-batches of {cfg.micro_batch} x {cfg.seq_len} tokens)", file=sys.stderr,
              flush=True)
    train_tokens = data.num_tokens("train")
    if cfg.tokens > train_tokens:
        print(f"minitron: warning: --tokens {cfg.tokens:,} is {cfg.tokens / train_tokens:.1f} passes over the "
              f"{train_tokens:,} training tokens of {data.path}; the student will see them repeatedly (add data "
              "or lower --tokens for one pass)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- one step, validation

def micro_loss(model: nn.Module, teacher: Teacher | None, batch: dict, device: torch.device,
               bf16: bool, topk: tuple | None = None) -> torch.Tensor:
    """Summed per-token loss of one micro-batch (teacher forward included, unless the teacher cache gave `topk`),
    under bf16 autocast if `bf16`."""
    ids, w = batch["input_ids"].to(device), label_weights(batch).to(device)
    with autocast(device, bf16):
        if topk is not None:
            return model(ids[:, :-1], ids[:, 1:], w, teacher_topk=tuple(t.to(device) for t in topk))
        targets = None
        if teacher is not None:
            with torch.no_grad():
                t_hidden, t_states = teacher(ids[:, :-1])
                targets = (t_hidden, t_states, teacher.head())
        return model(ids[:, :-1], ids[:, 1:], w, targets)


def train_step(model: nn.Module, teacher: Teacher | None, optimizer, batches: list[dict], grad_clip: float,
               env: Env, bf16: bool, topk: list | None = None) -> tuple[float, float, float]:
    """Accumulate gradients over this rank's micro-batches, clip, step: (mean loss per token, grad norm, lr);
    `topk`: the teacher cache's targets of each micro-batch."""
    n_tokens = max(1.0, env.all_sum(sum(label_weights(b).sum().item() for b in batches)))
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, batch in enumerate(batches):
        if env.world > 1:
            model.set_requires_gradient_sync(i == len(batches) - 1)
        loss = micro_loss(model, teacher, batch, env.device, bf16, topk[i] if topk else None)
        (loss * (env.world / n_tokens)).backward()  # FSDP averages over ranks: this makes it a global mean
        total += loss.item()
    grad_norm = clip_gradients(model, grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    return env.all_sum(total) / n_tokens, grad_norm, lr


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_([p for p in model.parameters() if p.grad is not None], max_norm, norm)
    return norm.item()


def validate(model: nn.Module, val: dict, cfg: TrainConfig, env: Env) -> float:
    """Student LM loss on the fixed held-out windows, by `minitron eval`'s loss function; every rank runs them
    all (same result everywhere), --chunk-tokens worth of logits at a time."""
    model.eval()
    loss = lm_loss(model, windows_in_batches(val, max(1, cfg.chunk_tokens // cfg.seq_len)))
    model.train()
    return loss


# ---------------------------------------------------------------- set-up

def open_inputs(cfg: TrainConfig, env: Env):
    """Token data, tokenizer and model configs, refusing mismatches before anything is loaded or written."""
    if cfg.data is not None:
        data = TokenData.open(cfg.data)
    else:
        if env.is_main:
            default_data(cfg.teacher or cfg.student)  # built once, by one process
        env.barrier()
        data = TokenData.open(default_data(cfg.teacher or cfg.student))
    try:  # the student's tokenizer, or the teacher's when the student directory has none
        tokenizer = load_tokenizer(cfg.student)
    except MinitronError:
        if cfg.teacher is None:
            raise
        tokenizer = load_tokenizer(cfg.teacher)
    s_config = load_config(cfg.student)
    t_config = load_config(cfg.teacher) if cfg.teacher else None
    for spec, config in ((cfg.student, s_config), (cfg.teacher, t_config)):
        if config is not None:
            check_seq_len(config, cfg.seq_len, spec)
    if t_config is not None and t_config.vocab_size != s_config.vocab_size:
        raise MinitronError(f"teacher {cfg.teacher} and student {cfg.student} have different vocabularies "
                            f"({t_config.vocab_size:,} vs {s_config.vocab_size:,} tokens); distillation needs the "
                            "same tokenizer (prune the student from this teacher)")
    if cfg.teacher and tokenizer_identity(load_tokenizer(cfg.teacher))["sha"] != tokenizer_identity(tokenizer)["sha"]:
        raise MinitronError(f"teacher {cfg.teacher} and student {cfg.student} use different tokenizers; "
                            "distillation needs the same vocabulary")
    for spec, config in ((cfg.student, s_config), (cfg.teacher, t_config)):
        if config is not None:
            data.check_model(tokenizer, config.vocab_size, spec)
    if len(tokenizer) > s_config.vocab_size:
        raise MinitronError(f"tokenizer has {len(tokenizer):,} tokens but {cfg.student} only {s_config.vocab_size:,} "
                            "embeddings")
    return data, tokenizer, s_config, t_config


def adamw(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decay on matrices only, PyTorch's fused kernel on CUDA and on the CPU: the unfused one is slower and
    allocates temporaries the fused one does not (docs/performance.md)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
                             fused=device.type in ("cuda", "cpu") or None)


def build_optimizer(cfg: TrainConfig, model: nn.Module, plan: Schedule, device: torch.device):
    """AdamW (see `adamw`) and a linear warm-up + cosine decay to min_lr."""
    opt = adamw(cfg, model, device)
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:  # step = optimiser steps done so far
        if step < plan.warmup_steps:
            return (step + 1) / plan.warmup_steps
        progress = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
