"""`TrainConfig`: every setting of a distillation (or plain training) run, its default and its help, in one
place. The CLI flags (`minitron distill --lr 3e-4`), the YAML keys (`--config run.yaml`, or a run's own
train_config.json) and the library call (`distill(TrainConfig(...))`) all come from this dataclass; the string
under each field is its help text.

Two kinds of field are marked where they are declared: `located` ones say where a run's inputs and directory are
(a command that runs the training itself, like compress or search, sets them and refuses them in its `distill`
section), and `runtime` ones say how a run goes, not what it learns (they may change when it is resumed and are
not part of its record)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from minitron.data import SEQ_LEN
from minitron.errors import MinitronError, real_number, refuse_marked, whole_number
from minitron.numerics import native_bf16
from minitron.record import record_path
from minitron.tracking import check_report_to

MIN_AUTO_STEPS = 64  # the default batch leaves at least this many optimiser steps in the budget
MAX_AUTO_BATCH = 16384  # and is at most this many tokens
DEFAULT_KD_LOSS = "forward_kl"  # the logit loss with a teacher: the papers' (CE + KL ties it, docs/results.md)
INPUTS = ("student", "teacher", "data")  # recorded as resolved paths
# The speed settings whose default depends on the device (docs/performance.md measures them): on the CPU,
# activation checkpointing with 512-token loss chunks keeps the step's peak memory near half the plain loop's for a
# few percent of its speed; on CUDA nothing is recomputed (unmeasured there yet: the GPU issue runs it).
DEVICE_DEFAULTS = {"cpu": dict(activation_checkpointing=True, chunk_tokens=512),
                   "cuda": dict(activation_checkpointing=False, chunk_tokens=1024)}


def located(default=None, runtime: bool = False):
    """A field that says where the run's inputs or directory are (set by a command that runs the training)."""
    return field(default=default, metadata={"located": True, "runtime": runtime})


def runtime(default):
    """A field that says how the run goes, not what it learns: it may change on --resume and is not recorded."""
    return field(default=default, metadata={"runtime": True})

LossName = Literal["forward_kl", "reverse_kl", "jsd", "topk_kl", "ce_kd", "ce"]


@dataclass
class TrainConfig:
    """Distil a teacher into a student (or train the student alone), resumably, on 1 or N processes.

    Without --teacher (or with --loss ce) this is conventional training; with --init random it trains from
    random initialisation. Under `torchrun --nproc_per_node N` the student and teacher are sharded with FSDP2
    and each process takes its share of every global batch."""

    # --- models and data
    student: str | None = located()
    """student model, a Hugging Face directory (e.g. the output of `minitron prune`) or a Hub id; required"""
    out: Path | None = located(runtime=True)
    """run directory (student/, checkpoints/, metrics.jsonl, train_config.json, record.json); required"""
    teacher: str | None = located()
    """teacher model ('default', a Hugging Face directory, a Hub id or a .gguf); omit for plain training"""
    data: str | None = located()
    """token data directory from `minitron data` (default: the default corpus)"""
    init: Literal["pretrained", "random"] = "pretrained"
    """start from the student's weights (pretrained) or from random initialisation (a baseline)"""
    # --- the loss
    loss: LossName | None = None
    """logit loss (default: forward_kl with a teacher, the papers' choice, ce without; ce_kd ties it over three
    seeds, docs/results.md)"""
    temperature: float = 1.0
    """distillation temperature T (losses are scaled by T^2)"""
    ce_weight: float = 0.5
    """weight of cross-entropy in the ce_kd mix"""
    top_k: int = 64
    """teacher tokens kept by topk_kl"""
    jsd_beta: float = 0.5
    """mixture weight of the JSD loss"""
    hidden_loss: Literal["cosine", "mse"] | None = None
    """add a hidden-state loss (cosine or mse) at --layer-pairs"""
    hidden_weight: float = 1.0
    """weight of the hidden-state loss"""
    layer_pairs: list[str] | None = None
    """STUDENT:TEACHER pairs of 0-based decoder layers, e.g. 5:11 11:23"""
    chunk_tokens: int | None = runtime(None)
    """tokens whose logits exist at once inside the loss (lower it to save memory; default: 512 on the CPU, 1,024 on
    CUDA)"""
    # --- speed and memory
    compile: bool = runtime(False)
    """compile each decoder layer of the student and teacher with torch.compile (one graph serves every layer):
    fuses the elementwise work (docs/performance.md); the first steps are slower while it compiles"""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """bf16: matmuls of both models in bf16 under autocast (the student's weights, gradients and optimiser state
    stay fp32; the teacher is held in bf16); fp32: everything in fp32; auto: bf16 on CUDA and on a CPU with native
    bf16 (AVX512-BF16 or AMX), where it is ~1.6x as fast and ties fp32 in quality; fp32 on other CPUs, where bf16
    is several times slower (docs/performance.md)"""
    activation_checkpointing: bool | None = runtime(None)
    """recompute each student decoder layer's activations in the backward pass instead of keeping them: much
    less memory (for longer sequences or larger micro-batches) for more compute (default: on for the CPU, where
    it costs about 8 percent of the speed for a sixth of the peak memory; off on CUDA)"""
    # --- batches and the optimiser
    tokens: int = 1_000_000
    """training budget in tokens (whole optimiser steps of --global-batch-tokens); fixed for a run, since the
    learning-rate schedule decays over it: --resume with other --tokens is refused (to train longer, distil
    OUT/student further in a new run)"""
    seq_len: int = SEQ_LEN
    """tokens per training sequence (docs/recipe.md compares lengths; longer budgets and batches may want longer)"""
    micro_batch: int = 4
    """sequences per forward/backward on one process"""
    global_batch_tokens: int | None = None
    """tokens per optimiser step, all processes together (default: the largest power of two that leaves at least
    64 steps in --tokens, from one micro-batch up to 16,384; docs/recipe.md)"""
    lr: float | None = None
    """peak learning rate (AdamW, betas 0.9/0.95; default: 1e-3 x 576 / the student's hidden size, at most 1e-3:
    docs/recipe.md; 1.4e-4 at 4,096, the scale of the Minitron papers' 1e-4)"""
    min_lr: float | None = None
    """learning rate at the end of the cosine decay (default: --lr / 10)"""
    warmup_steps: int | None = None
    """linear warm-up steps (default: 5 percent of the steps)"""
    lora_rank: int = 0
    """train LoRA adapters of this rank on every linear layer (through peft) instead of all the weights; they are
    merged into the weights of the saved model (0: train all the weights)"""
    lora_alpha: float = 16.0
    """LoRA scale: the adapters' update is multiplied by lora_alpha / lora_rank"""
    weight_decay: float = 0.1
    """AdamW weight decay (matrices only, not norms or biases)"""
    grad_clip: float = 1.0
    """maximum global gradient norm (0: no clipping)"""
    seed: int = 0
    """seed of data sampling and random initialisation"""
    # --- validation, checkpoints, the run directory
    eval_every: int = runtime(50)
    """validate every this many steps (0: only at the end)"""
    eval_seqs: int = runtime(16)
    """dev-split sequences the run validates on, spread over the whole split (the same for every run)"""
    save_every: int = runtime(50)
    """write a resumable checkpoint every this many steps (and at the end)"""
    keep_checkpoints: int = runtime(2)
    """how many of the newest checkpoints to keep"""
    name: str | None = runtime(None)
    """the student's name in its model card (and in a GGUF exported from it); default: derived from the teacher and
    the size, e.g. SmolLM2-135M-Instruct-minitron-67M"""
    device: str = located("auto", runtime=True)
    """auto, cpu or cuda (under torchrun: each rank's LOCAL_RANK GPU)"""
    resume: bool = located(False, runtime=True)
    """continue from the newest checkpoint in --out, with the settings it was started with (inputs may be
    spelt differently: ./data and its absolute path are the same)"""
    overwrite: bool = located(False, runtime=True)
    """delete an existing --out and start again"""
    report_to: list[Literal["tensorboard", "wandb"]] | None = runtime(None)
    """also send every metric of metrics.jsonl, and this config, to TensorBoard (OUT/tensorboard) and/or
    Weights & Biases (needs `wandb login`)"""
    teacher_cache: str | None = None
    """directory of a cache of the teacher's top-k log-probabilities (fp16) and tokens, keyed by the teacher,
    data, seq_len, micro_batch, seed and --top-k: the first run writes it, later runs on the same batches (the
    search's candidates, reruns) read it instead of running the teacher; needs --loss topk_kl"""
    dry_run: bool = located(False, runtime=True)
    """check every setting (the models' configs, the data, the run directory, a resume's record) and print the plan:
    the models' parameters, the steps, batch, learning rate, loss and precision, where a resume starts; no weights
    are loaded and nothing is written (but the default corpus, built on first use without --data, as by any run)"""

    def batch_tokens(self) -> int:
        """--global-batch-tokens, or its default for this budget (see the field)."""
        if self.global_batch_tokens is not None:
            return self.global_batch_tokens
        per_micro = self.micro_batch * self.seq_len
        return max(per_micro, min(MAX_AUTO_BATCH, 2 ** max(0, (self.tokens // MIN_AUTO_STEPS).bit_length() - 1)))

    def resolved(self, hidden_size: int) -> "TrainConfig":
        """This config with the defaults that depend on the budget, the student's width and the teacher made
        explicit (what a run records and resumes with)."""
        lr = self.lr if self.lr is not None else float(f"{min(1.0, 576 / hidden_size) * 1e-3:.3g}")
        min_lr = self.min_lr if self.min_lr is not None else lr / 10
        if min_lr > lr:
            raise MinitronError(f"--min-lr {min_lr:g} is above the learning rate {lr:g}; lower it or set --lr")
        return replace(self, global_batch_tokens=self.batch_tokens(), lr=lr, min_lr=min_lr, loss=self.loss_name())

    def loss_name(self) -> str:
        """--loss, or its default: DEFAULT_KD_LOSS with a teacher, ce without."""
        return self.loss or (DEFAULT_KD_LOSS if self.teacher else "ce")

    def on_device(self, device: torch.device) -> "TrainConfig":
        """This config with the settings whose default depends on the device made explicit: the precision
        (`precision`: auto) and DEVICE_DEFAULTS's activation checkpointing and loss chunks."""
        defaults = DEVICE_DEFAULTS["cpu" if device.type == "cpu" else "cuda"]
        precision = self.precision if self.precision != "auto" else ("bf16" if native_bf16(device) else "fp32")
        return replace(self, precision=precision, **{k: v if getattr(self, k) is None else getattr(self, k)
                                                     for k, v in defaults.items()})

    @property
    def bf16(self) -> bool:
        """Whether this run computes in bf16 (a config made explicit by `on_device`)."""
        if self.precision == "auto":
            raise ValueError("precision 'auto' is resolved by TrainConfig.on_device first")
        return self.precision == "bf16"

    def validate(self, section: str = "") -> None:
        """Refuse bad values before anything is loaded or written; the flags named as a command that takes this config
        as `section` spells them (compress's `--distill.lr`)."""
        try:
            self._validate()
        except MinitronError as e:
            raise (MinitronError(str(e).replace("--", f"--{section}")) if section else e) from None

    def _validate(self) -> None:
        for name in ("student", "out"):
            if getattr(self, name) in (None, ""):
                raise MinitronError(f"distill needs --{name}")
        self._check_numbers()
        check_report_to(self.report_to)
        name = self.loss_name()
        if name != "ce" and not self.teacher:
            raise MinitronError(f"--loss {name} needs a --teacher (or use --loss ce for conventional training)")
        if self.hidden_loss and (not self.teacher or name == "ce"):
            raise MinitronError("--hidden-loss needs a --teacher and a distillation --loss")
        if self.teacher_cache and name != "topk_kl":
            raise MinitronError("--teacher-cache stores the teacher's top-k log-probabilities: use it with "
                                "--loss topk_kl")
        if self.teacher_cache and self.hidden_loss:
            raise MinitronError("--teacher-cache keeps no hidden states: it cannot serve --hidden-loss")
        if self.lora_rank and self.init == "random":
            raise MinitronError("--lora-rank needs pretrained weights to adapt; leave out --init random")
        if self.hidden_loss and not self.layer_pairs:
            raise MinitronError("--hidden-loss needs --layer-pairs STUDENT:TEACHER ... (0-based decoder layers)")

    def _check_numbers(self) -> None:
        """Every number in range (and of the right type: a YAML config can hold anything)."""
        def check(name: str, ok, what: str):
            real_number(getattr(self, name), f"--{name.replace('_', '-')}", ok, what)

        def whole(name: str, low: int, optional: bool = False) -> None:
            if not (optional and getattr(self, name) is None):  # None: an optional one's default
                whole_number(getattr(self, name), f"--{name.replace('_', '-')}", low)

        for name in ("tokens", "seq_len", "micro_batch", "top_k", "eval_seqs", "keep_checkpoints"):
            whole(name, 1)
        whole("chunk_tokens", 1, optional=True)
        if self.global_batch_tokens is not None:
            per_micro = self.micro_batch * self.seq_len
            whole_number(self.global_batch_tokens, "--global-batch-tokens (one micro-batch, --micro-batch x "
                         f"--seq-len, is {per_micro:,} tokens)", per_micro)
        for name in ("eval_every", "save_every", "seed", "lora_rank"):
            whole(name, 0)
        whole("warmup_steps", 0, optional=True)
        check("temperature", lambda v: v > 0, "a positive number")
        if self.lr is not None:
            check("lr", lambda v: v > 0, "a positive number")
        check("lora_alpha", lambda v: v > 0, "a positive number")
        if self.min_lr is not None:
            check("min_lr", lambda v: 0 <= v <= (self.lr or math.inf),
                  f"a number from 0 to --lr ({self.lr:g})" if self.lr else "a number, 0 or more")
        check("jsd_beta", lambda v: 0 < v < 1, "strictly between 0 and 1")
        check("ce_weight", lambda v: 0 <= v <= 1, "from 0 to 1")
        for name in ("weight_decay", "grad_clip", "hidden_weight"):
            check(name, lambda v: v >= 0, "a number, 0 or more")
        for name, choices in (("init", ("pretrained", "random")), ("hidden_loss", (None, "cosine", "mse")),
                              ("loss", (None, "forward_kl", "reverse_kl", "jsd", "topk_kl", "ce_kd", "ce"))):
            if getattr(self, name) not in choices:
                raise MinitronError(f"--{name.replace('_', '-')} must be one of "
                                    f"{', '.join(c for c in choices if c)}, not {getattr(self, name)!r}")
        for name in ("student", "teacher", "data", "teacher_cache"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, Path)):
                raise MinitronError(f"--{name} must be a path, not {getattr(self, name)!r}")


def distill_words(training: dict) -> str:
    """The loss train_config.json says the distillation optimised."""
    cfg, loss = training, training["loss"]
    words = {"forward_kl": "logit forward KL(teacher‖student)", "reverse_kl": "logit reverse KL(student‖teacher)",
             "jsd": f"logit Jensen-Shannon divergence (β {cfg.get('jsd_beta')})",
             "topk_kl": f"forward KL on the teacher's top {cfg.get('top_k')} tokens",
             "ce_kd": f"cross-entropy mixed with forward KL (cross-entropy weight {cfg.get('ce_weight')})",
             "ce": "cross-entropy on the data alone, no teacher"}.get(loss, loss)
    if loss != "ce" and cfg.get("temperature", 1.0) != 1.0:
        words += f", temperature {cfg['temperature']}"
    if cfg.get("hidden_loss"):
        words += (f", plus a {cfg['hidden_loss']} hidden-state loss at layers {' '.join(cfg.get('layer_pairs') or [])}"
                  f" (weight {cfg.get('hidden_weight')})")
    precision = {"bf16": "under bf16 autocast", "fp32": "in fp32"}.get(cfg.get("precision"))
    return words + (f", {precision}" if precision else "")


def marked(kind: str) -> tuple[str, ...]:
    """The TrainConfig fields marked `kind` ("located" or "runtime") where they are declared."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get(kind))


def recorded(cfg: TrainConfig, run: Path) -> dict:
    """What a run's record holds of `cfg`: every setting that changes what is learnt (not the runtime ones), its
    inputs as resolved paths, relative to `run` when inside it (a run directory may move), and the loss by name
    (its default resolved: a default that changes later does not change what a record says ran)."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in marked("runtime")}
    settings["loss"] = cfg.loss_name()
    for k in INPUTS:
        if settings[k] is not None and Path(settings[k]).exists():
            settings[k] = record_path(settings[k], run)
    return settings


def refuse_located(cfg: TrainConfig, command: str) -> None:
    """A command that runs the training itself sets where its inputs and run directory are: a `distill` section
    that sets them too is refused, not silently overridden."""
    refuse_marked(cfg, "located", command, "distill", "use the top-level settings")


@dataclass
class Schedule:
    """What a config means for this data and number of processes."""

    steps: int  # optimiser steps in the whole run
    n_micro: int  # micro-batches per step, all processes together (a multiple of the world size)
    tokens_per_step: int  # n_micro * micro_batch * seq_len
    warmup_steps: int
    eval_seqs: int  # validation windows actually used (fewer when the split is small)


def schedule(cfg: TrainConfig, train_tokens: int, dev_tokens: int, world: int, where: Path) -> Schedule:
    if train_tokens < cfg.seq_len + 1:
        raise MinitronError(f"data in {where} has {train_tokens:,} training tokens, fewer than one "
                            f"sequence of {cfg.seq_len + 1}; add data or lower --seq-len")
    eval_seqs = min(cfg.eval_seqs, (dev_tokens - 1) // cfg.seq_len)
    if eval_seqs < 1:
        raise MinitronError(f"data in {where} has {dev_tokens:,} dev tokens, too few for one validation "
                            f"sequence of {cfg.seq_len + 1}; add data, raise --dev-fraction or lower --seq-len")
    per_micro = cfg.micro_batch * cfg.seq_len
    n_micro = math.ceil(max(1, round(cfg.batch_tokens() / per_micro)) / world) * world
    tokens_per_step = n_micro * per_micro
    steps = cfg.tokens // tokens_per_step
    if steps < 1:
        raise MinitronError(f"--tokens {cfg.tokens:,} is less than one optimiser step ({tokens_per_step:,} tokens "
                            f"= {n_micro} x {cfg.micro_batch} sequences x {cfg.seq_len}); raise --tokens or lower "
                            "--global-batch-tokens / --micro-batch / --seq-len")
    warmup = round(0.05 * steps) if cfg.warmup_steps is None else min(cfg.warmup_steps, steps)
    return Schedule(steps, n_micro, tokens_per_step, warmup, eval_seqs)
