"""One training loop for distillation and conventional training, on 1 process or N (torchrun + FSDP2),
with atomic checkpoints that resume exactly (model, optimiser, scheduler, RNG, data position).

    minitron distill --teacher default --student runs/pruned --tokens 2000000 --out runs/distill
    torchrun --nproc_per_node 8 -m minitron distill ...      # same command, sharded (docs/distributed.md)

Output: OUT/student/ (Hugging Face checkpoint), OUT/checkpoints/step-N/ (resumable), OUT/metrics.jsonl
(one JSON per step), OUT/train_config.json. Batches are a pure function of (seed, step, micro-batch):
micro-batch m of a step goes to rank m % world, so 1 and N processes train on the same global batch.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import decoder_layers
from minitron.io import atomic_dir, save_hf, write_json
from minitron.data import TokenData, default_data, tokenizer_identity
from minitron.distill.losses import (CrossEntropy, HiddenStateLoss, LogitLoss, chunked_logit_loss, make_logit_loss,
                                     parse_layer_pairs)
from minitron.errors import MinitronError
from minitron.load import load_config, load_model, load_tokenizer, pick_device, resolve_model

LossName = Literal["forward_kl", "reverse_kl", "jsd", "topk_kl", "ce_kd", "ce"]
# Settings that may change when resuming; any other difference is refused.
RESUMABLE_CHANGES = {"out", "tokens", "resume", "overwrite", "device", "eval_every", "eval_seqs", "save_every",
                     "keep_checkpoints", "chunk_tokens"}


@dataclass
class TrainConfig:
    student: str  # student model: a Hugging Face directory (with --init random only its config is used)
    out: Path  # run directory: student/, checkpoints/, metrics.jsonl, train_config.json
    tokens: int  # training budget in tokens (whole optimiser steps of global_batch_tokens)
    teacher: str | None = None  # teacher model; None = conventional training (cross-entropy only)
    data: str | None = None  # token data directory (`minitron data`); None = the default corpus
    loss: LossName | None = None  # logit loss; None = forward_kl with a teacher, ce without
    temperature: float = 1.0  # KD temperature T (losses are scaled by T^2)
    ce_weight: float = 0.5  # weight of cross-entropy in the ce_kd mix
    top_k: int = 64  # teacher tokens kept by topk_kl
    jsd_beta: float = 0.5  # interpolation weight of the JSD mixture
    hidden_loss: Literal["cosine", "mse"] | None = None  # add a hidden-state loss at layer_pairs
    hidden_weight: float = 1.0  # weight of the hidden-state loss
    layer_pairs: list[str] | None = None  # "S:T" pairs of 0-based decoder layers (student:teacher)
    init: Literal["pretrained", "random"] = "pretrained"  # student weights, or random init (baseline)
    seq_len: int = 512  # tokens per training sequence
    micro_batch: int = 4  # sequences per forward/backward on one process
    global_batch_tokens: int = 16384  # tokens per optimiser step, all processes together
    lr: float = 1e-4  # peak learning rate (AdamW)
    min_lr: float = 1e-5  # cosine decay ends here
    warmup_steps: int | None = None  # linear warm-up steps; None = 5% of the steps
    weight_decay: float = 0.1  # AdamW weight decay on matrices (not on norms or biases)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    eval_every: int = 50  # validation every this many steps (0 = only at the end)
    eval_seqs: int = 16  # held-out sequences for validation (the same for every run)
    save_every: int = 50  # resumable checkpoint every this many steps (and at the end)
    keep_checkpoints: int = 2  # keep the newest this many checkpoints
    chunk_tokens: int = 1024  # tokens whose logits exist at once inside the loss
    seed: int = 0  # seed of data sampling and of random initialisation
    device: str = "auto"  # auto, cpu, cuda (under torchrun: each rank's LOCAL_RANK GPU)
    resume: bool = False  # continue from the newest checkpoint in out
    overwrite: bool = False  # delete an existing out and start again


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


def distill(student: str, out: Path, tokens: int, teacher: str | None = None, data: str | None = None,
            loss: LossName | None = None, temperature: float = 1.0, ce_weight: float = 0.5, top_k: int = 64,
            jsd_beta: float = 0.5, hidden_loss: Literal["cosine", "mse"] | None = None,
            hidden_weight: float = 1.0, layer_pairs: list[str] | None = None,
            init: Literal["pretrained", "random"] = "pretrained", seq_len: int = 512, micro_batch: int = 4,
            global_batch_tokens: int = 16384, lr: float = 1e-4, min_lr: float = 1e-5,
            warmup_steps: int | None = None, weight_decay: float = 0.1, grad_clip: float = 1.0,
            eval_every: int = 50, eval_seqs: int = 16, save_every: int = 50, keep_checkpoints: int = 2,
            chunk_tokens: int = 1024, seed: int = 0, device: str = "auto", resume: bool = False,
            overwrite: bool = False) -> DistillResult:
    """Distil a teacher into a student (or train the student alone), resumably, on 1 or N processes.

    Without --teacher (or with --loss ce) this is conventional training; with --init random it trains
    from random initialisation. Under `torchrun --nproc_per_node N` the student and teacher are sharded
    with FSDP2 and each process takes its share of every global batch.

    Args:
        student: student model, a Hugging Face directory (e.g. the output of `minitron prune`)
        out: run directory (student/, checkpoints/, metrics.jsonl, train_config.json)
        tokens: training budget in tokens
        teacher: teacher model ('default', a Hugging Face directory or a .gguf); omit for plain training
        data: token data directory from `minitron data` (default: the default corpus)
        loss: logit loss (default: forward_kl with a teacher, ce without)
        temperature: distillation temperature (losses are scaled by T^2)
        ce_weight: weight of cross-entropy in the ce_kd mix
        top_k: teacher tokens kept by topk_kl
        jsd_beta: mixture weight of the JSD loss
        hidden_loss: add a hidden-state loss (cosine or mse) at --layer-pairs
        hidden_weight: weight of the hidden-state loss
        layer_pairs: STUDENT:TEACHER pairs of 0-based decoder layers, e.g. 5:11 11:23
        init: start from the student's weights (pretrained) or from random initialisation
        seq_len: tokens per training sequence
        micro_batch: sequences per forward/backward on one process
        global_batch_tokens: tokens per optimiser step, all processes together
        lr: peak learning rate
        min_lr: learning rate at the end of the cosine decay
        warmup_steps: linear warm-up steps (default: 5 percent of the steps)
        weight_decay: AdamW weight decay (matrices only)
        grad_clip: maximum global gradient norm (0: no clipping)
        eval_every: validate every this many steps (0: only at the end)
        eval_seqs: held-out sequences used for validation
        save_every: write a resumable checkpoint every this many steps
        keep_checkpoints: how many of the newest checkpoints to keep
        chunk_tokens: tokens whose logits exist at once inside the loss (lower it to save memory)
        seed: seed of data sampling and random initialisation
        device: auto, cpu or cuda
        resume: continue from the newest checkpoint in --out
        overwrite: delete an existing --out and start again
    """
    return train(TrainConfig(**{k: v for k, v in locals().items()}))


# ---------------------------------------------------------------- processes

@dataclass
class Env:
    """This process's place in the job: rank, world size, device and (under torchrun) the FSDP mesh."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mesh: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: float) -> float:
        if self.world == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.item()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_env(device: str) -> Env:
    """Single process, or one rank of a torchrun job (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world == 1:
        return Env(device=dev)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():  # kept for the life of the process: a second run in it reuses the group
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    mesh = init_device_mesh(dev.type, (dist.get_world_size(),))
    return Env(dist.get_rank(), dist.get_world_size(), dev, mesh)


def shard(module: nn.Module, lm: nn.Module, env: Env) -> nn.Module:
    """FSDP2: each decoder layer, then the whole module (which holds embeddings, final norm, lm_head).

    With several processes only process 0 holds real weights (see `load_lm`); the others hold parameters
    on the meta device and receive their shards from it by broadcast, one tensor at a time."""
    if env.world == 1:
        return module.to(env.device)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    full = module.state_dict() if env.is_main else {}  # references, not copies: freed after the broadcast
    for layer in decoder_layers(lm):
        fully_shard(layer, mesh=env.mesh)  # moves one layer at a time to the device, then keeps its shard
    fully_shard(module, mesh=env.mesh)
    if not env.is_main:
        materialise(module, env.device)
    set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return module


def materialise(module: nn.Module, device: torch.device) -> None:
    """Allocate meta parameters on `device` (contents arrive later); buffers, built real, keep their values."""
    buffers = {name: b.to(device) for name, b in module.named_buffers()}
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # keeps tied parameters one object
    try:
        module.to_empty(device=device)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(buffers[name])


# ---------------------------------------------------------------- models

def run_hidden(lm: nn.Module, input_ids: torch.Tensor, layers: tuple[int, ...] = ()):
    """Final (normed) hidden states and the outputs of the chosen decoder layers; no logits."""
    captured: dict[int, torch.Tensor] = {}

    def hook(i):
        return lambda mod, args, output: captured.__setitem__(i, output[0] if isinstance(output, tuple) else output)

    handles = [decoder_layers(lm)[i].register_forward_hook(hook(i)) for i in set(layers)]
    try:
        hidden = lm.model(input_ids=input_ids, use_cache=False).last_hidden_state
    finally:
        for h in handles:
            h.remove()
    return hidden, [captured[i] for i in layers]


class Teacher(nn.Module):
    """The frozen teacher run to its hidden states (the FSDP root, so its hooks gather parameters)."""

    def __init__(self, lm: nn.Module, layers: tuple[int, ...]):
        super().__init__()
        self.lm, self.layers = lm.eval().requires_grad_(False), layers

    def forward(self, input_ids):
        return run_hidden(self.lm, input_ids, self.layers)

    def head_weight(self) -> torch.Tensor:
        if hasattr(self, "unshard"):  # FSDP2 root: make sure its lm_head is gathered (no-op if it is)
            self.unshard()
        return self.lm.lm_head.weight


class DistillModel(nn.Module):
    """What the optimiser trains: the student plus the hidden-state projections. `forward` returns the
    summed per-token loss of one micro-batch, computed inside the FSDP root so lm_head is gathered."""

    def __init__(self, student: nn.Module, logit_loss: LogitLoss, hidden_loss: HiddenStateLoss | None,
                 hidden_weight: float, chunk_tokens: int, softcaps: tuple):
        super().__init__()
        self.student, self.hidden_loss = student, hidden_loss
        self.logit_loss, self.ce = logit_loss, CrossEntropy()
        self.hidden_weight, self.chunk_tokens, self.softcaps = hidden_weight, chunk_tokens, softcaps
        self.layers = tuple(s for s, _ in hidden_loss.pairs) if hidden_loss is not None else ()

    def forward(self, input_ids, labels, weights, teacher=None, validate: bool = False):
        hidden, states = run_hidden(self.student, input_ids, () if validate else self.layers)
        t_hidden, t_states, t_weight = teacher if teacher is not None and not validate else (None, None, None)
        total = chunked_logit_loss(self.ce if validate else self.logit_loss, hidden, self.student.lm_head.weight,
                                   labels, weights, t_hidden, t_weight, self.chunk_tokens, self.softcaps,
                                   reduction="sum")
        if states:
            per = self.hidden_loss.per_token(states, t_states)
            total = total + self.hidden_weight * (per * weights.reshape(-1).float()).sum()
        return total


# ---------------------------------------------------------------- set-up

@dataclass
class Plan:
    steps: int  # optimiser steps in the whole run
    n_micro: int  # micro-batches per step, all processes together (a multiple of the world size)
    tokens_per_step: int  # n_micro * micro_batch * seq_len
    warmup_steps: int
    eval_seqs: int  # validation windows actually used (fewer when the split is small)


def make_plan(cfg: TrainConfig, data: TokenData, world: int) -> Plan:
    for name in ("tokens", "seq_len", "micro_batch", "global_batch_tokens", "chunk_tokens"):
        if getattr(cfg, name) < 1:
            raise MinitronError(f"--{name.replace('_', '-')} must be a positive number")
    if data.num_tokens("train") < cfg.seq_len + 1:
        raise MinitronError(f"data in {data.path} has {data.num_tokens('train'):,} training tokens, fewer than one "
                            f"sequence of {cfg.seq_len + 1}; add data or lower --seq-len")
    eval_seqs = min(cfg.eval_seqs, (data.num_tokens("val") - 1) // cfg.seq_len)
    if eval_seqs < 1:
        raise MinitronError(f"data in {data.path} has {data.num_tokens('val'):,} validation tokens, too few for one "
                            f"sequence of {cfg.seq_len + 1}; add data, raise --val-fraction or lower --seq-len")
    per_micro = cfg.micro_batch * cfg.seq_len
    n_micro = math.ceil(max(1, round(cfg.global_batch_tokens / per_micro)) / world) * world
    tokens_per_step = n_micro * per_micro
    steps = cfg.tokens // tokens_per_step
    if steps < 1:
        raise MinitronError(f"--tokens {cfg.tokens:,} is less than one optimiser step ({tokens_per_step:,} tokens "
                            f"= {n_micro} x {cfg.micro_batch} sequences x {cfg.seq_len}); raise --tokens or lower "
                            "--global-batch-tokens / --micro-batch / --seq-len")
    warmup = round(0.05 * steps) if cfg.warmup_steps is None else min(cfg.warmup_steps, steps)
    return Plan(steps, n_micro, tokens_per_step, warmup, eval_seqs)


def open_data(cfg: TrainConfig, env: Env) -> TokenData:
    if cfg.data is not None:
        return TokenData.open(cfg.data)
    spec = cfg.teacher or cfg.student
    if env.is_main:
        default_data(spec)  # built once, by one process
    env.barrier()
    return TokenData.open(default_data(spec))


def load_tokenizer_for(cfg: TrainConfig):
    """The student's tokenizer, or the teacher's when the student directory has none."""
    try:
        return load_tokenizer(cfg.student)
    except MinitronError:
        if cfg.teacher is None:
            raise
        return load_tokenizer(cfg.teacher)


def check_inputs(cfg: TrainConfig, data: TokenData, tokenizer):
    """Refuse mismatched vocabularies and data before anything is loaded or written."""
    s_config = load_config(cfg.student)
    t_config = load_config(cfg.teacher) if cfg.teacher else None
    if t_config is not None and t_config.vocab_size != s_config.vocab_size:
        raise MinitronError(f"teacher {cfg.teacher} and student {cfg.student} have different vocabularies "
                            f"({t_config.vocab_size:,} vs {s_config.vocab_size:,} tokens); distillation needs the "
                            "same tokenizer (prune the student from this teacher)")
    if cfg.teacher:
        t_tok = load_tokenizer(cfg.teacher)
        if tokenizer_identity(t_tok)["sha"] != tokenizer_identity(tokenizer)["sha"]:
            raise MinitronError(f"teacher {cfg.teacher} and student {cfg.student} use different tokenizers; "
                                "distillation needs the same vocabulary")
    data.check_tokenizer(tokenizer)
    if len(tokenizer) > s_config.vocab_size:
        raise MinitronError(f"tokenizer has {len(tokenizer):,} tokens but {cfg.student} only {s_config.vocab_size:,} "
                            "embeddings")
    return s_config, t_config


def resolve_loss(cfg: TrainConfig) -> str:
    name = cfg.loss or ("forward_kl" if cfg.teacher else "ce")
    if name != "ce" and not cfg.teacher:
        raise MinitronError(f"--loss {name} needs a --teacher (or use --loss ce for conventional training)")
    if cfg.hidden_loss and (not cfg.teacher or name == "ce"):
        raise MinitronError("--hidden-loss needs a --teacher and a distillation --loss")
    if cfg.hidden_loss and not cfg.layer_pairs:
        raise MinitronError("--hidden-loss needs --layer-pairs STUDENT:TEACHER ... (0-based decoder layers)")
    return name


def layer_pairs(cfg: TrainConfig, s_config, t_config) -> list[tuple[int, int]]:
    try:
        pairs = parse_layer_pairs(cfg.layer_pairs or [])
    except ValueError as e:
        raise MinitronError(str(e)) from None
    ns, nt = s_config.num_hidden_layers, t_config.num_hidden_layers
    for s, t in pairs:
        if not (-ns <= s < ns and -nt <= t < nt):
            raise MinitronError(f"layer pair {s}:{t} is out of range (student has {ns} layers, teacher {nt})")
    return [(s % ns, t % nt) for s, t in pairs]


def load_lm(spec: str, dtype: torch.dtype, env: Env, config=None) -> nn.Module:
    """Process 0 reads the weights (or, with `config`, initialises them from the seed); the other processes
    build the same model on the meta device and get their shards from process 0 in `shard`, so the host
    holds one copy of each model however many processes it runs. A load that fails stops every process."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    if not env.is_main:
        if env.all_sum(0):
            raise MinitronError(f"process 0 could not load {spec}; see its message")
        with init_empty_weights():  # parameters on meta, buffers (rotary frequencies...) real
            model = AutoModelForCausalLM.from_config(config or load_config(resolve_model(spec)), dtype=dtype)
        model.tie_weights()  # from_config leaves meta embeddings untied
        return model
    try:
        model = (load_model(spec, "cpu", dtype) if config is None
                 else AutoModelForCausalLM.from_config(config, dtype=dtype))
    except MinitronError:
        env.all_sum(1)
        raise
    env.all_sum(0)
    return model


def load_student(cfg: TrainConfig, s_config, env: Env) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return load_lm(cfg.student, torch.float32, env, None if cfg.init == "pretrained" else s_config).train()


def build_model(cfg: TrainConfig, env: Env, s_config, t_config) -> tuple[DistillModel, Teacher | None]:
    name = resolve_loss(cfg)
    pairs = layer_pairs(cfg, s_config, t_config) if cfg.hidden_loss else []
    teacher = None
    if name != "ce":
        dtype = torch.bfloat16 if env.device.type == "cuda" else torch.float32
        teacher = Teacher(load_lm(cfg.teacher, dtype, env), tuple(j for _, j in pairs))
        shard(teacher, teacher.lm, env)
    student = load_student(cfg, s_config, env)
    torch.manual_seed(cfg.seed)  # the projections start the same on every rank and world size
    hidden = (HiddenStateLoss(s_config.hidden_size, t_config.hidden_size, pairs, cfg.hidden_loss)
              if pairs else None)
    logit_loss = make_logit_loss(name, cfg.temperature, cfg.jsd_beta, cfg.top_k, cfg.ce_weight)
    softcaps = (getattr(s_config, "final_logit_softcapping", None),
                getattr(t_config, "final_logit_softcapping", None) if t_config else None)
    model = DistillModel(student, logit_loss, hidden, cfg.hidden_weight, cfg.chunk_tokens, softcaps)
    return shard(model, student, env), teacher


def build_optimizer(cfg: TrainConfig, model: nn.Module, plan: Plan):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:  # step = optimiser steps done so far
        if step < plan.warmup_steps:
            return (step + 1) / plan.warmup_steps
        progress = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------- checkpoints

FULL = dict(full_state_dict=True, cpu_offload=True)


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in (out / "checkpoints").glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def _unshare(sd: dict) -> dict:
    """safetensors refuses tensors that share memory (tied embeddings): copy the second one."""
    seen, out = set(), {}
    for k, v in sd.items():
        v = v.contiguous()
        out[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    return out


def _rng_state() -> tuple[dict, dict]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state()
    extra = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "python": random.getstate()}
    return tensors, extra


def _set_rng_state(tensors: dict, extra: dict) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = extra["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    version, state, gauss = extra["python"]
    random.setstate((version, tuple(state), gauss))


def write_checkpoint(path: Path, model_sd: dict, optim_sd: dict, state: dict) -> None:
    """model.safetensors, optimizer.safetensors and trainer_state.json, all in one atomic directory."""
    from safetensors.torch import save_file

    tensors = {f"state/{fqn}/{k}": v for fqn, s in optim_sd["state"].items() for k, v in s.items()
               if isinstance(v, torch.Tensor)}
    rng, rng_extra = _rng_state()
    with atomic_dir(path, overwrite=True) as tmp:
        save_file(_unshare(model_sd), tmp / "model.safetensors")
        save_file({**_unshare(tensors), **rng}, tmp / "optimizer.safetensors")
        write_json(tmp / "trainer_state.json", {**state, "param_groups": optim_sd["param_groups"],
                                                "rng": rng_extra})


def read_checkpoint(path: Path) -> tuple[dict, dict, dict, dict]:
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "trainer_state.json").read_text())
        model_sd = load_file(path / "model.safetensors")
        flat = load_file(path / "optimizer.safetensors")
    except (OSError, ValueError) as e:
        raise MinitronError(f"checkpoint {path} is unreadable ({e}); delete it to resume from an older one") from None
    optim_state: dict = {}
    for key, v in flat.items():
        if key.startswith("state/"):
            fqn, _, name = key[len("state/"):].rpartition("/")
            optim_state.setdefault(fqn, {})[name] = v
    rng = {k: v for k, v in flat.items() if k.startswith("rng/")}
    return model_sd, {"state": optim_state, "param_groups": state.pop("param_groups")}, rng, state


# ---------------------------------------------------------------- the run

class Run:
    """Everything the loop needs: config, plan, process, models, optimiser, data and logs."""

    def __init__(self, cfg: TrainConfig, env: Env):
        self.cfg, self.env, self.out = cfg, env, Path(cfg.out)
        self.loss_name = resolve_loss(cfg)  # cheap checks first
        self.data = open_data(cfg, env)
        self.tokenizer = load_tokenizer_for(cfg)
        self.s_config, self.t_config = check_inputs(cfg, self.data, self.tokenizer)
        self.plan = make_plan(cfg, self.data, env.world)
        self.model, self.teacher = build_model(cfg, env, self.s_config, self.t_config)
        resume_from = self.prepare_out()  # only now, when every input has been checked and loaded
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model, self.plan)
        self.step = self.load(resume_from) if resume_from else 0
        self.val = self.data.fixed("val", self.plan.eval_seqs, cfg.seq_len)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if env.device.type == "cuda"
                         else contextlib.nullcontext())
        if env.is_main:
            write_json(self.out / "train_config.json", {"config": _jsonable(asdict(cfg)), "plan": asdict(self.plan),
                                                        "world_size": env.world, "loss": self.loss_name})
        self.metrics = MetricsLog(self.out / "metrics.jsonl", self.step, env.is_main)

    def prepare_out(self) -> Path | None:
        """The checkpoint to resume from, after refusing to clobber an existing run."""
        cfg, out = self.cfg, self.out
        found = checkpoint_dirs(out) if cfg.resume else []
        if found:
            self.check_resumable()
        elif cfg.resume:
            if self.env.is_main:
                print(f"no checkpoint in {out / 'checkpoints'}: starting from step 0", flush=True)
        elif out.exists() and any(out.iterdir()):
            if not cfg.overwrite:
                raise MinitronError(f"{out} already holds a run; pass --resume to continue it or --overwrite to "
                                    "start again (or choose another --out)")
            self.env.barrier()
            if self.env.is_main:
                shutil.rmtree(out)
        self.env.barrier()
        if self.env.is_main:
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            for stale in [*(out / "checkpoints").glob(".step-*"), *out.glob(".student.*")]:
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed save
        self.env.barrier()
        return found[-1] if found else None

    def check_resumable(self) -> None:
        try:
            saved = json.loads((self.out / "train_config.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            return
        now = _jsonable(asdict(self.cfg))
        diff = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
        if diff:
            k = diff[0]
            raise MinitronError(f"cannot resume {self.out}: it was started with --{k.replace('_', '-')} {saved.get(k)}"
                                f", now {now[k]}; use the same settings or a new --out")

    def load(self, ckpt: Path) -> int:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        model_sd, optim_sd, rng, state = read_checkpoint(ckpt)
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_sd, options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, optim_sd, options=opts)
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(rng, state["rng"])
        if self.env.is_main:
            print(f"resuming {self.out} from {ckpt.name} ({state['tokens']:,} tokens done)", flush=True)
        return state["step"]

    def save(self) -> None:
        """A resumable checkpoint of this step; a full disk keeps the previous one and says so."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(**FULL)
        model_sd = get_model_state_dict(self.model, options=opts)
        optim_sd = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        failed = None
        if self.env.is_main:
            previous = checkpoint_dirs(self.out)
            state = {"step": self.step, "tokens": self.step * self.plan.tokens_per_step,
                     "scheduler": self.scheduler.state_dict(), "world_size": self.env.world}
            try:
                write_checkpoint(self.out / "checkpoints" / f"step-{self.step}", model_sd, optim_sd, state)
                for old in checkpoint_dirs(self.out)[:-max(1, self.cfg.keep_checkpoints)]:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError as e:
                failed = _save_error(e, self.step, previous)
        if self.env.all_sum(failed is not None):
            raise MinitronError(failed or f"saving checkpoint step-{self.step} failed on rank 0 (see its message)")

    def save_student(self) -> Path:
        """OUT/student: an ordinary Hugging Face checkpoint (stock from_pretrained loads it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        from transformers import AutoModelForCausalLM

        sd = get_model_state_dict(self.model, options=StateDictOptions(**FULL))
        path, failed = self.out / "student", None
        if self.env.is_main:
            model = AutoModelForCausalLM.from_config(self.s_config, dtype=torch.float32)
            model.load_state_dict({k[len("student."):]: v for k, v in sd.items() if k.startswith("student.")})
            try:
                with atomic_dir(path, overwrite=True) as tmp:
                    save_hf(model, self.tokenizer, tmp, generation_config(self.cfg, self.s_config))
            except OSError as e:
                failed = (f"{e.strerror or e} while writing {path}; the checkpoint of step {self.step} is intact: "
                          "fix it and rerun with --resume")
        if self.env.all_sum(failed is not None):
            raise MinitronError(failed or f"writing {path} failed on rank 0 (see its message)")
        return path


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _save_error(e: OSError, step: int, previous: list[Path]) -> str:
    kept = (f"the previous checkpoint {previous[-1].name} is intact" if previous
            else "no earlier checkpoint exists")
    problem = "no space left on device" if e.errno == errno.ENOSPC else f"{e.strerror or e}"
    return f"{problem} while saving checkpoint step-{step}; {kept}: fix it and rerun with --resume"


def generation_config(cfg: TrainConfig, s_config):
    from transformers import GenerationConfig

    for spec in filter(None, (cfg.student, cfg.teacher)):
        try:
            return GenerationConfig.from_pretrained(resolve_model(spec))
        except (OSError, MinitronError, ValueError):
            continue
    return GenerationConfig.from_model_config(s_config)


class MetricsLog:
    """metrics.jsonl: one JSON object per step; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: Path, start_step: int, active: bool):
        self.path, self.active = path, active
        self.records = [r for r in self._read() if r["step"] <= start_step] if active else []
        if active:  # rewritten atomically: a kill now cannot lose the lines before the checkpoint
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
            os.replace(tmp, path)

    def _read(self) -> list[dict]:
        records = []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # the half-written last line of a killed run
                continue
        return records

    def write(self, record: dict) -> None:
        self.records.append(record)
        if self.active:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- the loop

def my_batches(run: Run, step: int) -> list[dict]:
    """This rank's micro-batches of the global batch of `step`: micro-batch m goes to rank m % world."""
    cfg, env = run.cfg, run.env
    return [run.data.sample("train", cfg.micro_batch, cfg.seq_len, cfg.seed, step, m)
            for m in range(env.rank, run.plan.n_micro, env.world)]


def _weights(batch: dict) -> torch.Tensor:
    mask = batch.get("loss_mask")
    ids = batch["input_ids"]
    return torch.ones(ids[:, 1:].shape) if mask is None else mask.float()


def micro_loss(run: Run, batch: dict, validate: bool = False) -> torch.Tensor:
    """Summed per-token loss of one micro-batch (teacher forward included)."""
    dev = run.env.device
    ids, w = batch["input_ids"].to(dev), _weights(batch).to(dev)
    with run.autocast:
        teacher = None
        if run.teacher is not None and not validate:
            with torch.no_grad():
                t_hidden, t_states = run.teacher(ids[:, :-1])
                teacher = (t_hidden, t_states, run.teacher.head_weight())
        return run.model(ids[:, :-1], ids[:, 1:], w, teacher, validate)


def train_step(run: Run) -> dict:
    """One optimiser step over the global batch: accumulate, clip, step; returns this step's metrics."""
    step, env, model = run.step + 1, run.env, run.model
    batches = my_batches(run, step)
    n_tokens = max(1.0, env.all_sum(sum(_weights(b).sum().item() for b in batches)))
    run.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, batch in enumerate(batches):
        if env.world > 1:
            model.set_requires_gradient_sync(i == len(batches) - 1)
        loss = micro_loss(run, batch)
        (loss * (env.world / n_tokens)).backward()  # FSDP averages over ranks: this makes it a global mean
        total += loss.item()
    grad_norm = clip_gradients(model, run.cfg.grad_clip)
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.step = step
    return {"step": step, "tokens": step * run.plan.tokens_per_step, "loss": env.all_sum(total) / n_tokens,
            "lr": lr, "grad_norm": grad_norm}


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_([p for p in model.parameters() if p.grad is not None], max_norm, norm)
    return norm.item()


@torch.no_grad()
def validate(run: Run) -> float:
    """Student LM loss on the fixed held-out windows (every rank runs them all: same result everywhere)."""
    run.model.eval()
    mb, total = run.cfg.micro_batch, 0.0
    for i in range(0, run.plan.eval_seqs, mb):
        total += micro_loss(run, {k: v[i:i + mb] for k, v in run.val.items()}, validate=True).item()
    run.model.train()
    return total / max(1.0, _weights(run.val).sum().item())


def train(cfg: TrainConfig) -> DistillResult:
    """Run (or resume) the training described by `cfg`; see `distill`."""
    return loop(Run(cfg, init_env(cfg.device)))


def loop(run: Run) -> DistillResult:
    cfg, plan, env = run.cfg, run.plan, run.env
    start, t0 = run.step, time.perf_counter()
    record = run.metrics.records[-1] if run.metrics.records else {"loss": float("nan")}
    with tqdm(total=plan.steps, initial=start, unit="step", dynamic_ncols=True, disable=not env.is_main,
              desc="distill" if run.teacher is not None else "train") as bar:
        while run.step < plan.steps:
            t = time.perf_counter()
            record = train_step(run)
            record["tokens_per_s"] = plan.tokens_per_step / (time.perf_counter() - t)
            last = run.step == plan.steps
            if (cfg.eval_every and run.step % cfg.eval_every == 0) or last:
                record["val_loss"] = validate(run)
                if env.is_main:
                    bar.write(f"step {run.step}: loss {record['loss']:.4f}, val_loss {record['val_loss']:.4f}")
            run.metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            bar.update(1)
            if (cfg.save_every and run.step % cfg.save_every == 0) or last:
                run.save()
    seconds = time.perf_counter() - t0
    val = record.get("val_loss") if start < plan.steps else validate(run)
    student = run.save_student()
    done = (run.step - start) * plan.tokens_per_step
    if env.is_main:
        print(f"wrote {student}: {run.step} steps, {run.step * plan.tokens_per_step:,} tokens, "
              f"val_loss {val:.4f}", flush=True)
    return DistillResult(run.out, student, run.step, run.step * plan.tokens_per_step, record["loss"], val,
                         done / seconds if seconds > 0 and done else 0.0, seconds)
