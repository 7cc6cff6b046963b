"""`--teacher-cache DIR`: the teacher's top-k log-probabilities on disk, so that runs that train on the same batches
(the search's candidates, a rerun, a longer run of the same recipe) do not run the teacher again.

    DIR/KEY/meta.json                       what KEY stands for
    DIR/KEY/step-0000001-0000.safetensors   micro-batch 0 of step 1: logprobs (B, S, k) fp16, index (B, S, k) uint16
                                            (int32 for vocabularies over 65,536), rest (B, S) fp32

KEY hashes everything an entry depends on: the teacher's weights (`Checkpoint.fingerprint`) and compute dtype, the
token data, seq_len, micro_batch and seed (which windows micro-batch m of a step holds: batches are a pure function
of (seed, step, m)), and k. `logprobs` are the teacher's log-probabilities (temperature 1) of its k most likely
tokens, `index` those tokens, and `rest` the log of the probability mass of all the others, so the share of the
distribution that top-k drops is known. The first run writes the entries; later runs read them, and do not even
load the teacher when every entry they need is there. The loss is `topk_kl` on these stored values (the first run
uses the stored, rounded values too, so every run on the same cache trains the same).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from minitron.arch import LogitHead
from minitron.data import TokenData
from minitron.distill.losses import head_logits
from minitron.distill.parallel import Env, Teacher
from minitron.errors import MinitronError
from minitron.numerics import autocast
from minitron.io import atomic_file, write_json
from minitron.load import resolve_model
from minitron.shards import Checkpoint

FORMAT = 1  # bump when the entries change


def data_fingerprint(data: TokenData, samples: int = 16, size: int = 1 << 16) -> str:
    """A short hash of a token data directory: its meta.json and `samples` spread-out pieces of train.bin."""
    h = hashlib.sha256(json.dumps(data.meta, sort_keys=True).encode())
    train = data.path / "train.bin"
    total = train.stat().st_size
    with open(train, "rb") as f:
        for i in range(samples):
            f.seek(total * i // samples)
            h.update(f.read(size))
    return h.hexdigest()[:16]


def topk_targets(hidden: Tensor, weight: Tensor, k: int, head: LogitHead, chunk_tokens: int,
                 bias: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The teacher's top-k log-probabilities (N, k), their tokens (N, k) and the log of the rest's mass (N,), from
    its final hidden states (N, H) and lm_head (weight, bias), `chunk_tokens` tokens of full logits at a time."""
    parts = []
    for h in hidden.split(chunk_tokens):
        logits = head_logits(h, weight, head, bias)
        lse = logits.logsumexp(-1, keepdim=True)
        values, index = logits.topk(k, dim=-1)
        rest = logits.scatter(-1, index, float("-inf")).logsumexp(-1) - lse.squeeze(-1)
        parts.append((values - lse, index, rest))
    return tuple(torch.cat(p) for p in zip(*parts))


@dataclass
class TeacherCache:
    root: Path  # DIR/KEY
    k: int  # tokens kept per position
    index_dtype: torch.dtype  # uint16 when the vocabulary fits, else int32

    @classmethod
    def open(cls, directory: str | Path, teacher: str, teacher_dtype: torch.dtype, data: TokenData, vocab_size: int,
             seq_len: int, micro_batch: int, seed: int, k: int, env: Env) -> "TeacherCache":
        what = {"format": FORMAT, "teacher": Checkpoint.open(resolve_model(teacher)).fingerprint(),
                "teacher_dtype": str(teacher_dtype).removeprefix("torch."), "data": data_fingerprint(data),
                "seq_len": seq_len, "micro_batch": micro_batch, "seed": seed, "k": k}
        key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
        cache = cls(Path(directory) / key, k, torch.uint16 if vocab_size <= 1 << 16 else torch.int32)
        if env.is_main:
            try:
                cache.root.mkdir(parents=True, exist_ok=True)
                if not (cache.root / "meta.json").is_file():
                    write_json(cache.root / "meta.json", {**what, "teacher_path": str(teacher), "data_path":
                                                          str(data.path), "vocab_size": vocab_size})
            except OSError as e:
                env.all_sum(1)
                raise MinitronError(f"cannot write the teacher cache {directory} ({e.strerror or e})") from None
        if env.all_sum(0):
            raise MinitronError(f"process 0 could not write the teacher cache {directory}; see its message")
        return cache

    def path(self, step: int, micro: int) -> Path:
        return self.root / f"step-{step:07d}-{micro:04d}.safetensors"

    def complete(self, steps: int, n_micro: int) -> bool:
        """Whether every micro-batch of steps 1..`steps` is cached (then the teacher need not be loaded)."""
        return all(self.path(s, m).is_file() for s in range(1, steps + 1) for m in range(n_micro))

    def read(self, step: int, micro: int) -> tuple[Tensor, Tensor]:
        try:
            t = safetensors.torch.load_file(self.path(step, micro))
        except (OSError, ValueError) as e:
            raise MinitronError(f"teacher cache entry {self.path(step, micro)} is unreadable ({e}); delete it "
                                "and rerun (the teacher will recompute it)") from None
        return t["logprobs"], t["index"]

    def write(self, step: int, micro: int, logprobs: Tensor, index: Tensor, rest: Tensor) -> tuple[Tensor, Tensor]:
        """Store one micro-batch's entry (atomically); returns it as stored (fp16 log-probabilities)."""
        t = {"logprobs": logprobs.half().cpu().contiguous(), "index": index.to(self.index_dtype).cpu().contiguous(),
             "rest": rest.float().cpu().contiguous()}
        with atomic_file(self.path(step, micro)) as tmp:
            safetensors.torch.save_file(t, tmp)
        return t["logprobs"], t["index"]

    def targets(self, step: int, micros: list[int], batches: list[dict], teacher: Teacher | None,
                head: LogitHead, chunk_tokens: int, env: Env) -> list[tuple[Tensor, Tensor]]:
        """(log-probabilities, tokens) of the teacher's top k for each of this process's micro-batches: read, or
        computed by the teacher and written. All processes run the teacher (FSDP gathers its weights together)
        when any of them lacks an entry of this step."""
        missing = [m for m in micros if not self.path(step, m).is_file()]
        if teacher is None or not env.all_sum(len(missing)):
            return [self.read(step, m) for m in micros]
        out = []
        for m, batch in zip(micros, batches):
            with torch.no_grad(), autocast(env.device):
                hidden, _ = teacher(batch["input_ids"][:, :-1].to(env.device))
                weight, bias = teacher.head()
                lp, index, rest = topk_targets(hidden.reshape(-1, hidden.shape[-1]), weight, self.k, head,
                                               chunk_tokens, bias)
            shape = hidden.shape[:-1]
            out.append(self.write(step, m, lp.reshape(*shape, -1), index.reshape(*shape, -1), rest.reshape(shape))
                       if m in missing else self.read(step, m))
        return out
