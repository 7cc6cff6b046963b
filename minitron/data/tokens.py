"""Token shards on disk: the writer, the read-only `TokenData` view, and calibration batches.

A data directory holds `meta.json` and, per split, `{split}.bin` (uint16 when the vocabulary fits,
else uint32) with documents separated by the EOS token; chat data adds `{split}.mask.bin` (uint8, 1 where
a token is trained on). Sequences are sampled from a seed and a step, so any batch can be re-made exactly.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minitron.errors import MinitronError
from minitron.io import write_json

SPLITS = ("train", "val")
SEQ_LEN = 256  # tokens per window, the default everywhere: calibration, training and evaluation
VAL_SEQS = 32  # held-out windows a model is measured on (eval, the search's candidates, compress's three models)


def tokenizer_identity(tokenizer) -> dict:
    """Name, vocabulary size and a hash of the vocabulary: shards made with another tokenizer are refused."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
    return {"name": getattr(tokenizer, "name_or_path", ""), "vocab_size": len(tokenizer), "sha": digest}


class ShardWriter:
    """Appends token arrays (and optional loss masks) for one split to `{split}.bin` files."""

    def __init__(self, out: Path, dtype: np.dtype, with_mask: bool):
        self.out, self.dtype, self.with_mask = out, dtype, with_mask
        self.files = {s: open(out / f"{s}.bin", "wb") for s in SPLITS}
        self.masks = {s: open(out / f"{s}.mask.bin", "wb") for s in SPLITS} if with_mask else {}
        self.tokens = dict.fromkeys(SPLITS, 0)
        self.docs = dict.fromkeys(SPLITS, 0)

    def add(self, split: str, ids: list[int], mask: list[int] | None = None) -> None:
        self.files[split].write(np.asarray(ids, dtype=self.dtype).tobytes())
        if self.with_mask:
            self.masks[split].write(np.asarray(mask, dtype=np.uint8).tobytes())
        self.tokens[split] += len(ids)
        self.docs[split] += 1

    def close(self) -> dict:
        for f in [*self.files.values(), *self.masks.values()]:
            f.close()
        return {s: {"tokens": self.tokens[s], "documents": self.docs[s]} for s in SPLITS}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_meta(out: Path, tokenizer, dtype: np.dtype, splits: dict, **extra) -> None:
    write_json(out / "meta.json", {"tokenizer": tokenizer_identity(tokenizer), "dtype": dtype.name,
                                   "eos_token_id": tokenizer.eos_token_id, "splits": splits, **extra})


def meta_problem(meta) -> str | None:
    """What is missing or wrong in a loaded meta.json (None when every field `TokenData` reads is right)."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    if meta.get("dtype") not in ("uint16", "uint32"):
        return f"dtype {meta.get('dtype')!r} is not uint16 or uint32"
    splits = meta.get("splits")
    for split in SPLITS:
        tokens = splits.get(split, {}).get("tokens") if isinstance(splits, dict) and isinstance(
            splits.get(split), dict) else None
        if type(tokens) is not int or tokens < 0:
            return f"splits.{split}.tokens is {tokens!r}, not a token count"
    tok = meta.get("tokenizer")
    if not isinstance(tok, dict) or not isinstance(tok.get("sha"), str) or type(tok.get("vocab_size")) is not int:
        return "tokenizer has no sha and vocab_size"
    return None


@dataclass
class TokenData:
    """Read-only view of a data directory."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> "TokenData":
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
        except FileNotFoundError:
            raise MinitronError(f"{path} is not a minitron data directory (no meta.json); "
                                "make one with `minitron data`") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MinitronError(f"{path / 'meta.json'} is corrupt") from None
        problem = meta_problem(meta)
        if problem:
            raise MinitronError(f"{path / 'meta.json'} is not a minitron data description ({problem}); "
                                "rebuild the directory with `minitron data`")
        data = cls(path, meta)
        for split in SPLITS:
            expected = meta["splits"][split]["tokens"] * np.dtype(meta["dtype"]).itemsize
            f = path / f"{split}.bin"
            if not f.is_file() or f.stat().st_size != expected:
                raise MinitronError(f"{f} is missing or truncated (expected {expected:,} bytes)")
        return data

    def check_model(self, tokenizer, vocab_size: int, model: str | Path) -> None:
        """Refuse shards made with a different tokenizer than the model's, or holding a token id the model has no
        embedding for (before any work starts: inside the model it would be an IndexError)."""
        ours, theirs = self.meta["tokenizer"], tokenizer_identity(tokenizer)
        if ours["sha"] != theirs["sha"]:
            raise MinitronError(f"data in {self.path} was made with another tokenizer ({ours['name'] or '?'}, "
                                f"vocabulary {ours['vocab_size']:,}) than the model's ({theirs['vocab_size']:,}); "
                                "rebuild it with `minitron data --tokenizer MODEL`")
        for split in SPLITS:
            tokens = self.tokens(split)
            top = int(tokens.max()) if len(tokens) else -1
            if top >= vocab_size:
                raise MinitronError(f"data in {self.path} holds token id {top:,} (in its {split} split), but {model} "
                                    f"has embeddings for ids 0-{vocab_size - 1:,} only; rebuild the data with "
                                    "`minitron data --tokenizer MODEL`")

    def fingerprint(self) -> str:
        """A hash of meta.json and the shards' sizes: what a run records to notice data rebuilt under it."""
        h = hashlib.sha256((self.path / "meta.json").read_bytes())
        for f in sorted(self.path.glob("*.bin")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        return h.hexdigest()[:16]

    def tokens(self, split: str) -> np.ndarray:
        if self.meta["splits"][split]["tokens"] == 0:
            return np.zeros(0, dtype=self.meta["dtype"])
        return np.memmap(self.path / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    def mask(self, split: str) -> np.ndarray | None:
        f = self.path / f"{split}.mask.bin"
        return np.memmap(f, dtype=np.uint8, mode="r") if f.is_file() and f.stat().st_size else None

    def num_tokens(self, split: str) -> int:
        return self.meta["splits"][split]["tokens"]

    def _windows(self, split: str, starts: np.ndarray, seq_len: int) -> dict[str, torch.Tensor]:
        """Windows of seq_len+1 tokens: `input_ids` and, for chat data, `loss_mask` over the labels."""
        toks, mask = self.tokens(split), self.mask(split)
        idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
        batch = {"input_ids": torch.from_numpy(toks[idx].astype(np.int64))}
        if mask is not None:
            batch["loss_mask"] = torch.from_numpy(mask[idx[:, 1:]].astype(np.bool_))
        return batch

    def _require(self, split: str, n_tokens: int) -> int:
        have = self.num_tokens(split)
        if have < n_tokens:
            raise MinitronError(f"data in {self.path} has {have:,} {split} tokens, fewer than the {n_tokens:,} "
                                "needed; add data or ask for fewer/shorter sequences")
        return have

    def sample(self, split: str, batch_size: int, seq_len: int, seed: int, step: int,
               micro: int = 0) -> dict[str, torch.Tensor]:
        """Random packed windows, a pure function of (seed, step, micro): exact resume needs no state."""
        have = self._require(split, seq_len + 1)
        rng = np.random.default_rng([seed, step, micro])
        return self._windows(split, rng.integers(0, have - seq_len, size=batch_size), seq_len)

    def fixed(self, split: str, num_seqs: int, seq_len: int) -> dict[str, torch.Tensor]:
        """The first `num_seqs` consecutive windows of a split: the same tokens for every model."""
        self._require(split, num_seqs * seq_len + 1)
        return self._windows(split, np.arange(num_seqs) * seq_len, seq_len)


def calibration_batches(data: TokenData, num_seqs: int, seq_len: int, batch_size: int,
                        seed: int = 1234) -> list[torch.Tensor]:
    """`num_seqs` training windows of `seq_len` tokens, in batches: the activations that score importance."""
    windows = data.sample("train", num_seqs, seq_len - 1, seed=seed, step=0)["input_ids"]
    return list(windows.split(batch_size))
