"""Processes and models: this process's place in the job (1 process, or one rank of a torchrun job), the frozen
teacher and the trained student wrapped for the loss, and FSDP2 sharding of both.

With several processes only process 0 reads the weights; the others build the same modules on the meta
device and receive their shards from process 0 by broadcast, so a host holds one copy of each model."""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM

from minitron.arch import LogitHead, as_linears, decoder, decoder_layers, held_layout
from minitron.distill.config import TrainConfig
from minitron.distill.lora import add_lora
from minitron.distill.losses import HiddenStateLoss, LogitLoss, chunked_logit_loss, make_logit_loss, parse_layer_pairs
from minitron.errors import MinitronError
from minitron.lazy import params_on_meta
from minitron.load import load_config, load_model, pick_device, resolve_model


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
        dist.all_reduce(t)
        return t.item()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_env(device: str) -> Env:
    """Single process, or one rank of a torchrun job (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world == 1:
        return Env(device=dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():  # kept for the life of the process: a second run in it reuses the group
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    mesh = init_device_mesh(dev.type, (dist.get_world_size(),))
    return Env(dist.get_rank(), dist.get_world_size(), dev, mesh)


def shard(module: nn.Module, lm: nn.Module, env: Env) -> nn.Module:
    """FSDP2: each decoder layer, then the whole module (which holds embeddings, final norm, lm_head);
    process 0's weights are broadcast to the others' meta parameters, one tensor at a time."""
    if env.world == 1:
        return module.to(env.device)
    with held_layout():  # (GPT-2's weights as the parameters hold them)
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


def load_lm(spec: str, dtype: torch.dtype, env: Env, config=None) -> nn.Module:
    """Process 0 reads the weights (or, with `config`, initialises them from the seed); the other processes
    build the same model on the meta device. A load that fails stops every process."""
    if not env.is_main:
        if env.all_sum(0):
            raise MinitronError(f"process 0 could not load {spec}; see its message")
        with params_on_meta():  # parameters on meta, buffers (rotary frequencies...) real
            model = AutoModelForCausalLM.from_config(config or load_config(resolve_model(spec)), dtype=dtype)
        model.tie_weights()  # from_config leaves meta embeddings untied
        return as_linears(model)  # (GPT-2's Conv1D modules as linears, as process 0's)
    try:
        model = (load_model(spec, "cpu", dtype) if config is None
                 else as_linears(AutoModelForCausalLM.from_config(config, dtype=dtype)))
    except MinitronError:
        env.all_sum(1)
        raise
    env.all_sum(0)
    return model


def run_hidden(lm: nn.Module, input_ids: torch.Tensor, layers: tuple[int, ...] = ()):
    """Final (normed) hidden states and the outputs of the chosen decoder layers; no logits."""
    captured: dict[int, torch.Tensor] = {}

    def hook(i):
        return lambda mod, args, output: captured.__setitem__(i, output[0] if isinstance(output, tuple) else output)

    handles = [decoder_layers(lm)[i].register_forward_hook(hook(i)) for i in set(layers)]
    try:
        hidden = decoder(lm)(input_ids=input_ids, use_cache=False).last_hidden_state
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

    def head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """lm_head's weight and bias (None: it has none; Phi-2's has one)."""
        if hasattr(self, "unshard"):  # FSDP2 root: make sure its lm_head is gathered (no-op if it is)
            self.unshard()
        return self.lm.lm_head.weight, self.lm.lm_head.bias


class DistillModel(nn.Module):
    """What the optimiser trains: the student plus the hidden-state projections. With labels, `forward` returns
    the summed per-token loss of one micro-batch, computed inside the FSDP root so lm_head is gathered; with
    input_ids alone it is the student's own forward (logits), which validation uses. The teacher's side is its
    (hidden states, chosen layers' states, lm_head (weight, bias)), or `teacher_topk` from the teacher cache."""

    def __init__(self, student: nn.Module, logit_loss: LogitLoss, hidden_loss: HiddenStateLoss | None,
                 hidden_weight: float, chunk_tokens: int, heads: tuple[LogitHead, LogitHead]):
        super().__init__()
        self.student, self.hidden_loss = student, hidden_loss
        self.logit_loss = logit_loss
        self.hidden_weight, self.chunk_tokens, self.heads = hidden_weight, chunk_tokens, heads
        self.layers = tuple(s for s, _ in hidden_loss.pairs) if hidden_loss is not None else ()

    def forward(self, input_ids, labels=None, weights=None, teacher=None, teacher_topk=None):
        if labels is None:
            return self.student(input_ids=input_ids, use_cache=False)
        hidden, states = run_hidden(self.student, input_ids, self.layers)
        t_hidden, t_states, (t_weight, t_bias) = teacher if teacher is not None else (None, None, (None, None))
        head = self.student.lm_head
        total = chunked_logit_loss(self.logit_loss, hidden, head.weight, labels, weights, t_hidden, t_weight,
                                   self.chunk_tokens, self.heads, reduction="sum", teacher_topk=teacher_topk,
                                   biases=(head.bias, t_bias))
        if states:
            per = self.hidden_loss.per_token(states, t_states)
            total = total + self.hidden_weight * (per * weights.reshape(-1).float()).sum()
        return total


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


def speed_options(lm: nn.Module, cfg: TrainConfig, train: bool) -> nn.Module:
    """--activation-checkpointing (a student's, through transformers' own gradient checkpointing) and --compile
    (each decoder layer compiled in place, so FSDP2 still wraps the layers), applied before sharding."""
    if train and cfg.activation_checkpointing:
        if hasattr(lm, "activation_checkpointing_enable"):  # the name since transformers 5.2x
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        for layer in decoder_layers(lm):
            layer.compile()
    return lm


def teacher_dtype(cfg: TrainConfig, env: Env) -> torch.dtype:
    """The teacher is held in bf16 when the run computes in bf16 (`TrainConfig.precision`), else in fp32."""
    return torch.bfloat16 if cfg.bf16 else torch.float32


def build_models(cfg: TrainConfig, env: Env, s_config, t_config,
                 load_teacher: bool = True) -> tuple[DistillModel, Teacher | None]:
    """The sharded student (with its loss) and the sharded, frozen teacher (None for plain training, or when
    the teacher cache holds everything the run needs: `load_teacher` False)."""
    loss = cfg.loss_name()
    pairs = layer_pairs(cfg, s_config, t_config) if cfg.hidden_loss else []
    teacher = None
    if loss != "ce" and load_teacher:
        teacher = Teacher(speed_options(load_lm(cfg.teacher, teacher_dtype(cfg, env), env), cfg, False),
                          tuple(j for _, j in pairs))
        shard(teacher, teacher.lm, env)
    torch.manual_seed(cfg.seed)
    student = load_lm(cfg.student, torch.float32, env, None if cfg.init == "pretrained" else s_config).train()
    if cfg.lora_rank:
        add_lora(student, cfg)
    speed_options(student, cfg, True)
    torch.manual_seed(cfg.seed)  # the projections start the same on every rank and world size
    hidden = (HiddenStateLoss(s_config.hidden_size, t_config.hidden_size, pairs, cfg.hidden_loss)
              if pairs else None)
    logit_loss = make_logit_loss(loss, cfg.temperature, cfg.jsd_beta, cfg.top_k, cfg.ce_weight)
    heads = (LogitHead.of(s_config), LogitHead.of(t_config) if t_config else LogitHead())
    model = DistillModel(student, logit_loss, hidden, cfg.hidden_weight, cfg.chunk_tokens, heads)
    return shard(model, student, env), teacher
