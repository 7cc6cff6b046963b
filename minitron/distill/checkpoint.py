"""The run directory of `distill`: resumable checkpoints that resume exactly (model, optimiser, scheduler, RNG,
data position = the step), the final Hugging Face student, and metrics.jsonl. Every directory is written
atomically: a kill or a full disk leaves the previous checkpoint intact.

    OUT/checkpoints/step-N/{.metadata, __0_0.distcp, __1_0.distcp, ..., trainer_state.json}
    OUT/student/  OUT/metrics.jsonl  OUT/train_config.json

A checkpoint is sharded with torch.distributed.checkpoint (DCP): each process writes its own shards of the student
and of its AdamW state, so no process ever holds a whole student plus optimiser state; one process is the case
N = 1 of the same code. trainer_state.json beside them holds the step, the data position, the scheduler and the
random generators. Only the final OUT/student is gathered (once, by process 0).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from contextlib import ExitStack, contextmanager
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from transformers import AutoModelForCausalLM

from minitron.arch import held_layout
from minitron.card import write_model_card
from minitron.distill.config import TrainConfig
from minitron.distill.lora import merged
from minitron.distill.parallel import Env
from minitron.distill.safe_dcp import SafePlanner, SafeReader
from minitron.errors import MinitronError
from minitron.io import (DiskFull, atomic_dir, check_run_dir, disk_problem, mark, output_lock, remove, save_hf,
                         write_atomic, write_json)
from minitron.load import load_generation_config
from minitron.record import RECORD, Record

ONE_PROCESS = "torch.distributed is disabled"  # DCP's warning when there is no process group: intended here
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, gathered on CPU (process 0)


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in (out / "checkpoints").glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


@contextmanager
def run_lock(out: Path, env: Env) -> Iterator[None]:
    """One writer per run directory: process 0 holds `output_lock(out)` for the whole run, and every process
    learns whether it was refused."""
    with ExitStack() as stack:
        refused = None
        if env.is_main:
            try:
                stack.enter_context(output_lock(out))
            except MinitronError as e:
                refused = e
        if env.all_sum(refused is not None):
            raise refused or MinitronError(f"{out} is being written by another process (see process 0's message)")
        yield


# Why a resumed run may not change a recorded setting, where it is not just "use the same settings".
EXPLAIN = {"tokens": "its learning-rate schedule decays over --tokens: resume with the same --tokens, or train further "
                     "in a new run from its student (--student OUT/student --out NEW)",
           "data_fingerprint": "its data changed since the run started (rebuilt in place?): resume on the data it "
                               "started with"}


def prepare_out(cfg: TrainConfig, env: Env, settings: dict) -> Path | None:
    """The checkpoint to resume from (its run checked to have been started with these `settings`), or a fresh run
    directory (an earlier run deleted with --overwrite); run with the run directory locked."""
    check_run_dir(Path(cfg.out), cfg.resume, cfg.overwrite)  # again, under the lock
    out = Path(cfg.out)
    found = resume_point(cfg, settings)
    if found is None and cfg.resume:
        if env.is_main:
            print(f"no checkpoint in {out / 'checkpoints'}: starting from step 0", flush=True)
    elif found is None and cfg.overwrite and out.exists():
        env.barrier()
        if env.is_main:
            remove(out)
    env.barrier()
    if env.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        mark(out)
        for stale in [*(out / "checkpoints").glob(".step-*"), *out.glob(".student.*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed save
    env.barrier()
    return found


def resume_point(cfg: TrainConfig, settings: dict) -> Path | None:
    """The newest checkpoint that --resume continues from, its run checked to have been started with these
    `settings`; None for a fresh start (or a --resume that finds no checkpoint). Reads, writes nothing."""
    out = Path(cfg.out)
    found = checkpoint_dirs(out) if cfg.resume else []
    if not found:
        return None
    record = Record(out)
    if "distill" not in record.steps:
        raise MinitronError(f"cannot resume {out}: it has checkpoints but no record of its settings "
                            f"({RECORD}); start again with --overwrite or in a new --out")
    record.check("distill", settings, EXPLAIN)
    return found[-1]


def _rng_state() -> dict:
    """This process's random generators, as JSON (every process restores process 0's: nothing in a training step
    draws random numbers today, so they only matter to code that does)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state().tolist(),
            "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "python": random.getstate()}


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])
    n = rng["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))


def write_shards(path: Path, model: nn.Module, optimizer, env: Env) -> None:
    """Every process writes its own shards of the model and of the AdamW state into `path` with
    torch.distributed.checkpoint (one `__RANK_0.distcp` file each, and a `.metadata` index): nothing is gathered."""
    with held_layout():  # (GPT-2's weights as the parameters hold them, as the AdamW state is)
        model_sd, optim_sd = get_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ONE_PROCESS)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path, no_dist=env.world == 1)


def read_shards(path: Path, model: nn.Module, optimizer, env: Env) -> None:
    """Load `write_shards`' files into this process's shards, whatever the number of processes that wrote them
    (DCP reads the overlap of each saved shard with each local one). Nothing in them is unpickled beyond plain
    data and DCP's own index classes (`safe_dcp`)."""
    reader = SafeReader(path)  # the index is read (safely) before DCP acts on any of it
    with held_layout():  # (as `write_shards` wrote them)
        model_sd, optim_sd = get_state_dict(model, optimizer)  # this process's shards; AdamW's state initialised
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ONE_PROCESS)
            dcp.load({"model": model_sd, "optim": optim_sd}, storage_reader=reader, planner=SafePlanner(),
                     no_dist=env.world == 1)
        set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)


def _problem(e: BaseException) -> str:
    """What went wrong, in words: DCP wraps each process's error in a CheckpointException."""
    if isinstance(e, CheckpointException) and e.failures:
        failure = next(iter(e.failures.values()))
        return _problem(failure[0] if isinstance(failure, tuple) else failure)
    text = disk_problem(e) or (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__  # some errors have no message at all


def _agree(env: Env, work) -> str | None:
    """Run `work` on this process; every process gets the same answer: None, or the problem one of them met."""
    problem = None
    try:
        work()
    except (OSError, CheckpointException, DiskFull) as e:
        problem = _problem(e)
    if env.all_sum(problem is not None):
        return problem or "failed on another process (see its message)"
    return None


def trainer_state(path: Path, n_micro: int, world: int) -> dict:
    """A checkpoint's trainer_state.json (its step, tokens, scheduler and random state), refused in one line when it
    is unreadable or when its steps had other than `n_micro` micro-batches (resumed on `world` processes)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        raise MinitronError(f"checkpoint {path} is unreadable ({e}); delete it to resume from an older one") from None
    if state["n_micro"] != n_micro:
        raise MinitronError(f"cannot resume {path} on {world} process(es): its steps had {state['n_micro']} "
                            f"micro-batches, here a step would have {n_micro} (rounded up to a multiple of the "
                            f"processes), so the batches would change; resume it on {state['world_size']} process(es)")
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, env: Env, n_micro: int) -> int:
    """Restore everything a checkpoint holds (on every process, from its own shards); returns its step.

    Any number of processes can resume any checkpoint, as long as a step still has the same `n_micro`
    micro-batches: then every step trains on the batches it would have trained on."""
    state = trainer_state(path, n_micro, env.world)
    try:
        read_shards(path, model, optimizer, env)
    except MinitronError:
        raise
    except (Exception, CheckpointException) as e:  # a damaged shard fails in DCP or torch.load in many ways
        raise MinitronError(f"checkpoint {path} is unreadable ({_problem(e)}); delete it to resume from an older "
                            "one") from None
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    if env.is_main:
        print(f"resuming {path.parent.parent} from {path.name} ({state['tokens']:,} tokens done)", flush=True)
    return state["step"]


def save_checkpoint(out: Path, step: int, tokens: int, model: nn.Module, optimizer, scheduler, env: Env,
                    keep: int, n_micro: int) -> None:
    """A resumable checkpoint of this step (every process calls it and writes its own shards into a temporary
    directory that process 0 completes with trainer_state.json and renames into place); a full disk keeps the
    previous checkpoint and says so."""
    path = out / "checkpoints" / f"step-{step}"
    tmp = path.with_name(f".{path.name}.tmp")  # a name every process knows; a killed save's is removed on restart
    previous = checkpoint_dirs(out)
    state = {"step": step, "tokens": tokens, "n_micro": n_micro, "scheduler": scheduler.state_dict(),
             "world_size": env.world, "rng": _rng_state()}

    def finish():  # process 0, once every shard is written: trainer_state.json marks the checkpoint complete
        write_json(tmp / "trainer_state.json", state)
        shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)
        for old in checkpoint_dirs(out)[:-max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)

    failed = _agree(env, lambda: (shutil.rmtree(tmp, ignore_errors=True), tmp.mkdir()) if env.is_main else None)
    failed = failed or _agree(env, lambda: write_shards(tmp, model, optimizer, env))
    failed = failed or _agree(env, finish if env.is_main else lambda: None)
    if failed:
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = (f"the previous checkpoint {previous[-1].name} is intact" if previous
                else "no earlier checkpoint exists")
        raise MinitronError(f"{failed} while saving checkpoint step-{step}; {kept}: {_advice(failed)} and rerun "
                            "with --resume")


def _advice(problem: str) -> str:
    return "free some disk space" if any(w in problem for w in ("space", "quota", "too large")) else "fix it"


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
            with atomic_dir(path, owned=True) as tmp:
                save_hf(student, tokenizer, tmp, load_generation_config(s_config, cfg.student, cfg.teacher))
                write_model_card(tmp, teacher=cfg.teacher, run=Path(cfg.out), name=cfg.name)
        except (DiskFull, OSError) as e:
            failed = (f"{_problem(e)} while writing {path}; the checkpoint of step {step} is intact: "
                      f"{_advice(_problem(e))} and rerun with --resume")
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
