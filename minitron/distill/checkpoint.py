"""The run directory of `distill`: resumable checkpoints that resume exactly (model, optimiser, scheduler, RNG,
data position = the step), the final Hugging Face student, and metrics.jsonl. Every directory is written
atomically: a kill or a full disk leaves the previous checkpoint intact.

    OUT/checkpoints/step-N/{model.safetensors, optimizer.safetensors, trainer_state.json}
    OUT/student/  OUT/metrics.jsonl  OUT/train_config.json
"""
from __future__ import annotations

import errno
import json
import random
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import safetensors.torch  # called through the module, so a test can make save_file fail
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from transformers import AutoModelForCausalLM

from minitron.card import write_model_card
from minitron.distill.config import RESUMABLE_CHANGES, TrainConfig
from minitron.distill.lora import merged
from minitron.distill.parallel import Env
from minitron.errors import MinitronError
from minitron.io import atomic_dir, save_hf, write_atomic, write_json
from minitron.load import load_generation_config

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, gathered on CPU (rank 0)


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in (out / "checkpoints").glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def prepare_out(cfg: TrainConfig, env: Env) -> Path | None:
    """The checkpoint to resume from, after refusing to clobber an existing run or to resume a different one."""
    out = Path(cfg.out)
    found = checkpoint_dirs(out) if cfg.resume else []
    if found:
        check_resumable(cfg)
    elif cfg.resume:
        if env.is_main:
            print(f"no checkpoint in {out / 'checkpoints'}: starting from step 0", flush=True)
    elif out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise MinitronError(f"{out} already holds a run; pass --resume to continue it or --overwrite to "
                                "start again (or choose another --out)")
        env.barrier()
        if env.is_main:
            shutil.rmtree(out)
    env.barrier()
    if env.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in [*(out / "checkpoints").glob(".step-*"), *out.glob(".student.*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed save
    env.barrier()
    return found[-1] if found else None


def check_resumable(cfg: TrainConfig) -> None:
    try:
        saved = json.loads((Path(cfg.out) / "train_config.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return
    now = jsonable(asdict(cfg))
    diff = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise MinitronError(f"cannot resume {cfg.out}: it was started with --{k.replace('_', '-')} {saved.get(k)}, "
                            f"now {now[k]}; use the same settings or a new --out")


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
    tensors = {f"state/{fqn}/{k}": v for fqn, s in optim_sd["state"].items() for k, v in s.items()
               if isinstance(v, torch.Tensor)}
    rng, rng_extra = _rng_state()
    with atomic_dir(path, overwrite=True) as tmp:
        safetensors.torch.save_file(_unshare(model_sd), tmp / "model.safetensors")
        safetensors.torch.save_file({**_unshare(tensors), **rng}, tmp / "optimizer.safetensors")
        write_json(tmp / "trainer_state.json", {**state, "param_groups": optim_sd["param_groups"],
                                                "rng": rng_extra})


def read_checkpoint(path: Path) -> tuple[dict, dict, dict, dict]:
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        model_sd = safetensors.torch.load_file(path / "model.safetensors")
        flat = safetensors.torch.load_file(path / "optimizer.safetensors")
    except (OSError, ValueError) as e:
        raise MinitronError(f"checkpoint {path} is unreadable ({e}); delete it to resume from an older one") from None
    optim_state: dict = {}
    for key, v in flat.items():
        if key.startswith("state/"):
            fqn, _, name = key[len("state/"):].rpartition("/")
            optim_state.setdefault(fqn, {})[name] = v
    rng = {k: v for k, v in flat.items() if k.startswith("rng/")}
    return model_sd, {"state": optim_state, "param_groups": state.pop("param_groups")}, rng, state


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, env: Env) -> int:
    """Restore everything a checkpoint holds (on every rank); returns its step."""
    model_sd, optim_sd, rng, state = read_checkpoint(path)
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_sd, options=opts)
    set_optimizer_state_dict(model, optimizer, optim_sd, options=opts)
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(rng, state["rng"])
    if env.is_main:
        print(f"resuming {path.parent.parent} from {path.name} ({state['tokens']:,} tokens done)", flush=True)
    return state["step"]


def save_checkpoint(out: Path, step: int, tokens: int, model: nn.Module, optimizer, scheduler, env: Env,
                    keep: int) -> None:
    """A resumable checkpoint of this step (every rank calls it); a full disk keeps the previous one and says so."""
    model_sd = get_model_state_dict(model, options=FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=FULL)
    failed = None
    if env.is_main:
        previous = checkpoint_dirs(out)
        state = {"step": step, "tokens": tokens, "scheduler": scheduler.state_dict(), "world_size": env.world}
        try:
            write_checkpoint(out / "checkpoints" / f"step-{step}", model_sd, optim_sd, state)
            for old in checkpoint_dirs(out)[:-max(1, keep)]:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            kept = (f"the previous checkpoint {previous[-1].name} is intact" if previous
                    else "no earlier checkpoint exists")
            problem = "no space left on device" if e.errno == errno.ENOSPC else f"{e.strerror or e}"
            failed = f"{problem} while saving checkpoint step-{step}; {kept}: fix it and rerun with --resume"
    if env.all_sum(failed is not None):
        raise MinitronError(failed or f"saving checkpoint step-{step} failed on rank 0 (see its message)")


def save_student(cfg: TrainConfig, model: nn.Module, s_config, tokenizer, step: int, env: Env) -> Path:
    """OUT/student: an ordinary Hugging Face checkpoint (stock from_pretrained loads it)."""
    sd = get_model_state_dict(model, options=FULL)
    path, failed = Path(cfg.out) / "student", None
    if env.is_main:
        student = AutoModelForCausalLM.from_config(s_config, dtype=torch.float32)
        weights = {k[len("student."):]: v for k, v in sd.items() if k.startswith("student.")}
        if cfg.lora_rank:  # the adapters merged into the weights: a stock checkpoint
            student = merged(student, weights, cfg)
        else:
            student.load_state_dict(weights)
        try:
            with atomic_dir(path, overwrite=True) as tmp:
                save_hf(student, tokenizer, tmp, load_generation_config(s_config, cfg.student, cfg.teacher))
                write_model_card(tmp, teacher=cfg.teacher, run=Path(cfg.out), name=f"{Path(cfg.out).name}/student")
        except OSError as e:
            failed = (f"{e.strerror or e} while writing {path}; the checkpoint of step {step} is intact: "
                      "fix it and rerun with --resume")
    if env.all_sum(failed is not None):
        raise MinitronError(failed or f"writing {path} failed on rank 0 (see its message)")
    return path


class MetricsLog:
    """metrics.jsonl: one JSON object per step; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: Path, start_step: int, active: bool):
        self.path, self.active = path, active
        self.records = [r for r in self._read() if r["step"] <= start_step] if active else []
        if active:  # rewritten atomically: a kill now cannot lose the lines before the checkpoint
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in self.records))

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
