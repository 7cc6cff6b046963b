"""Models whose layers are in memory only while they are used: a checkpoint larger than memory is read one
module at a time (`LazyModel`); a model already in memory is the same thing with every layer resident
(`Resident`). Scoring and pruning walk either one the same way.

A `LazyModel` is a skeleton whose parameters live on the meta device (buffers such as rotary frequencies
are real); `loaded(module)` materialises modules from the safetensors files and releases them after use.
Peak memory is about one layer plus the embeddings.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from minitron.arch import arch_of, as_linears, num_experts, stored_as
from minitron.errors import MinitronError
from minitron.shards import Checkpoint, TensorSpec
from minitron.text_model import directory_config

MEMORY_MARGIN = 1.25  # stream unless the weights fit in available memory this many times over


def memory_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def choose_stream(path: Path, stream: bool | None, dtype: torch.dtype = torch.float32) -> bool:
    """`stream` if given; else stream when the weights in `dtype` do not fit in available memory (saying so).

    Unless told not to stream, the checkpoint is checked here against its config, before any work: every
    shard there and whole, the index true to the shards, every tensor the model needs present, shapes right."""
    if stream is False:
        return False
    lazy = LazyModel.open(path)
    if stream:
        return True
    need, have = lazy.ckpt.numel() * dtype.itemsize, memory_available()
    if have is None or need * MEMORY_MARGIN <= have:
        return False
    name = str(dtype).removeprefix("torch.")
    print(f"streaming {path.name} one layer at a time: its weights need {need / 2**30:.1f} GiB in {name} but "
          f"{have / 2**30:.1f} GiB of memory is available (--no-stream to load it whole)", flush=True)
    return True


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; nothing elsewhere). Without it, glibc
    keeps fragments of every layer's temporaries: resident memory grew by about one batch of hidden
    states per layer (1.5 GiB over Mistral-NeMo 12B's 40 layers)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of mapping every large block afresh: by default each
    block over 32 MB (a logit chunk, an activation) is its own mmap, unmapped when freed, so every step faults its
    pages in again (docs/performance.md measures the difference: distillation, scoring and the search's zero-shot
    losses all gain). Process-wide; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@contextmanager
def params_on_meta() -> Iterator[None]:
    """Parameters created inside go to the meta device (no memory, no initialisation); buffers stay real, since
    some are computed at construction (rotary frequencies). What accelerate's init_empty_weights does, without
    the dependency: every nn.Module.register_parameter moves its parameter to meta."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def skeleton(config, device: torch.device | str = "cpu") -> nn.Module:
    """The model in eval mode with every parameter on the meta device and its buffers real on `device`."""
    from transformers import AutoModelForCausalLM  # lazy: CLI start-up speed

    with params_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()
    as_linears(model)
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None:
                module._buffers[name] = buf.to(device)
    return model.eval()


def tied_sources(model: nn.Module, stored: set[str]) -> dict[str, str]:
    """For every state-dict entry, the stored tensor that holds it (tied weights are stored once)."""
    groups: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), []).append(name)
    out = {}
    for names in groups.values():
        out.update(dict.fromkeys(names, next((n for n in names if n in stored), names[0])))
    return out


class LazyModel:
    """A skeleton over a checkpoint: `loaded(module)` materialises modules from the files, then releases them."""

    def __init__(self, ckpt: Checkpoint, model: nn.Module, device: torch.device | str, dtype: torch.dtype | None):
        self.ckpt, self.model, self.device, self.dtype = ckpt, model, device, dtype
        self.sources = tied_sources(model, set(ckpt.specs))
        arch, experts = arch_of(model.config), num_experts(model.config)
        # entries a checkpoint stores in other tensors or under other names (a mixture of experts', OPT's released
        # files': `arch.stored_as`), by the entry that holds them (a tied one's source)
        self.joined = {n: s for n in set(self.sources.values())
                       if n not in ckpt.specs and (s := stored_as(n, arch, experts))}
        self.prefix = {id(m): f"{n}." if n else "" for n, m in model.named_modules()}
        ckpt.require(list(dict.fromkeys(n for k in self.sources for n in self._stored(k))))
        self._check_shapes()

    @classmethod
    def open(cls, path: Path | str, device: torch.device | str = "cpu",
             dtype: torch.dtype | None = torch.float32) -> "LazyModel":
        """`dtype`: what modules are materialised as (None: as stored)."""
        return cls(Checkpoint.open(path), skeleton(directory_config(Path(path)), device), device, dtype)

    def _stored(self, name: str) -> list[str]:
        """The stored tensors the state-dict entry `name` is read from."""
        source = self.sources[name]
        return self.joined[source].all() if source in self.joined else [source]

    def _check_shapes(self) -> None:
        for name, t in self.model.state_dict(keep_vars=True).items():
            source = self.sources[name]
            implied = self.joined[source].shapes(tuple(t.shape)) if source in self.joined else {source: t.shape}
            for stored_name, shape in implied.items():
                stored = self.ckpt.specs[stored_name].shape
                if stored != tuple(shape):
                    raise MinitronError(f"{self.ckpt.files[stored_name]}: {stored_name} has shape "
                                        f"{list(stored)} but config.json implies {list(shape)}")

    def stored_spec(self, name: str) -> TensorSpec:
        """The stored type and shape of the entry `name` (of its first stored part, when it joins several)."""
        return self.ckpt.specs[self._stored(name)[0]]

    def materialise(self, module: nn.Module) -> None:
        keys = [self.prefix[id(module)] + k for k in module.state_dict(keep_vars=True)]
        tensors = self.ckpt.read(list(dict.fromkeys(n for k in keys for n in self._stored(k))), self.dtype, self.device)
        start = len(self.prefix[id(module)])
        entries = {k: self.joined[s].join(tensors) if (s := self.sources[k]) in self.joined else tensors[s]
                   for k in keys}
        module.load_state_dict({k[start:]: t for k, t in entries.items()}, assign=True)

    @staticmethod
    def release(module: nn.Module) -> None:
        """Put the module's parameters back on the meta device (their memory is freed)."""
        for m in module.modules():
            for name, p in m._parameters.items():
                if p is not None:
                    m._parameters[name] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
        trim_heap()

    @contextmanager
    def loaded(self, *modules: nn.Module) -> Iterator[None]:
        try:
            for m in modules:
                self.materialise(m)
            yield
        finally:
            for m in modules:
                self.release(m)


# ---------------------------------------------------------------------------------------- scoring


class Resident:
    """A model in memory seen as a `LazyModel` whose every module is already loaded: `loaded` does nothing."""

    def __init__(self, model: nn.Module):
        self.model, self.device = model, next(model.parameters()).device

    @contextmanager
    def loaded(self, *modules: nn.Module) -> Iterator[None]:
        yield
