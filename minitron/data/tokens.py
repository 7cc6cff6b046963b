"""Token shards on disk: the writer, the read-only `TokenData` view, and calibration batches.

A data directory holds `meta.json` and, per split (train, dev, test: whole documents each, so that no token of dev or
test is in a document train has), `{split}.bin` (uint16 when the vocabulary fits, else uint32) with documents
separated by the EOS token, and `{split}.docs.bin` (uint64: where each document starts); chat data adds
`{split}.mask.bin` (uint8, 1 where a token is trained on). Training sequences are sampled from a seed and a step, so
any batch can be re-made exactly; evaluation windows are spread evenly over a whole split (`TokenData.spread`).
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

SPLITS = ("train", "dev", "test")  # train on train; select (search, benchmarks, defaults) on dev; report on test
SEQ_LEN = 256  # tokens per window, the default everywhere: calibration, training and evaluation
VAL_SEQS = 32  # held-out windows a candidate is ranked on (the search's zero-shot ranking, on dev)
EVAL_TOKENS = 65536  # held-out tokens a report measures a model on (eval, compress's three models), where the split has them


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
        self.starts = {s: open(out / f"{s}.docs.bin", "wb") for s in SPLITS}
        self.masks = {s: open(out / f"{s}.mask.bin", "wb") for s in SPLITS} if with_mask else {}
        self.tokens = dict.fromkeys(SPLITS, 0)
        self.docs = dict.fromkeys(SPLITS, 0)

    def add(self, split: str, ids: list[int], mask: list[int] | None = None) -> None:
        self.starts[split].write(np.uint64(self.tokens[split]).tobytes())
        self.files[split].write(np.asarray(ids, dtype=self.dtype).tobytes())
        if self.with_mask:
            self.masks[split].write(np.asarray(mask, dtype=np.uint8).tobytes())
        self.tokens[split] += len(ids)
        self.docs[split] += 1

    def close(self) -> dict:
        for f in [*self.files.values(), *self.starts.values(), *self.masks.values()]:
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
    if isinstance(meta.get("splits"), dict) and "val" in meta["splits"]:
        return "it was made by an older minitron, with train/val splits and no test split"
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
            counts = meta["splits"][split]
            for f, expected in ((path / f"{split}.bin", counts["tokens"] * np.dtype(meta["dtype"]).itemsize),
                                (path / f"{split}.docs.bin", counts["documents"] * 8)):
                if not f.is_file() or f.stat().st_size != expected:
                    raise MinitronError(f"{f} is missing or truncated (expected {expected:,} bytes); rebuild the "
                                        "directory with `minitron data`")
        return data

    def check_tokenizer(self, tokenizer, whose: str = "the model's") -> None:
        """Refuse shards made with a different tokenizer than `tokenizer` (`whose` names it in the message)."""
        ours, theirs = self.meta["tokenizer"], tokenizer_identity(tokenizer)
        if ours["sha"] != theirs["sha"]:
            raise MinitronError(f"data in {self.path} was made with another tokenizer ({ours['name'] or '?'}, "
                                f"vocabulary {ours['vocab_size']:,}) than {whose} ({theirs['vocab_size']:,}); "
                                "rebuild it with `minitron data --tokenizer MODEL`")

    def check_model(self, tokenizer, vocab_size: int, model: str | Path) -> None:
        """Refuse shards made with a different tokenizer than the model's, or holding a token id the model has no
        embedding for (before any work starts: inside the model it would be an IndexError)."""
        self.check_tokenizer(tokenizer)
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
        mask = self.mask(split)
        batch = {"input_ids": windows_of(self.tokens(split), starts, seq_len)}
        if mask is not None:
            batch["loss_mask"] = windows_of(mask, starts, seq_len)[:, 1:].bool()
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

    def doc_starts(self, split: str) -> np.ndarray:
        """Where each document of a split starts (token offsets, ascending)."""
        if self.meta["splits"][split]["documents"] == 0:
            return np.zeros(0, dtype=np.uint64)
        return np.memmap(self.path / f"{split}.docs.bin", dtype=np.uint64, mode="r")

    def spread(self, split: str, num_seqs: int, seq_len: int) -> "Windows":
        """`num_seqs` windows of `seq_len` + 1 tokens spread evenly over the whole split (`spread_starts`)."""
        self._require(split, seq_len + 1)
        starts, touched = spread_starts(self.num_tokens(split), self.doc_starts(split), num_seqs, seq_len)
        return Windows(split, self._windows(split, starts, seq_len), touched, self.meta["splits"][split]["documents"])


def spread_starts(n_tokens: int, doc_starts: np.ndarray, num_seqs: int, seq_len: int) -> tuple[np.ndarray, int]:
    """Where `num_seqs` windows of `seq_len` + 1 tokens start when spread evenly over a stream of `n_tokens` (as many
    as fit when fewer do), and how many of its documents (starting at `doc_starts`) they take tokens from: every
    document longer than the spacing is in them, not just the first pages."""
    n = max(1, min(num_seqs, (n_tokens - 1) // seq_len))
    starts = np.linspace(0, n_tokens - seq_len - 1, n).round().astype(np.int64)
    doc_starts = np.asarray(doc_starts, dtype=np.int64)
    first = np.searchsorted(doc_starts, starts, side="right") - 1
    last = np.searchsorted(doc_starts, starts + seq_len, side="right")  # the window's last token is a label too
    return starts, len({d for a, b in zip(first, last) for d in range(max(a, 0), b)})


def windows_of(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    """The windows of `seq_len` + 1 tokens of `tokens` at `starts`: (N, seq_len + 1) int64."""
    return torch.from_numpy(np.asarray(tokens)[starts[:, None] + np.arange(seq_len + 1)[None, :]].astype(np.int64))


@dataclass
class Windows:
    """Evaluation windows of a split (`TokenData.spread`) and what they cover."""

    split: str
    batch: dict[str, torch.Tensor]  # input_ids (N, seq_len + 1) and, for chat data, loss_mask (N, seq_len)
    documents: int  # documents of the split the windows take tokens from
    split_documents: int  # documents in the split

    @property
    def tokens(self) -> int:
        """The labels counted (every label, or those the loss mask keeps)."""
        mask = self.batch.get("loss_mask")
        return int(self.batch["input_ids"][:, 1:].numel() if mask is None else mask.sum())

    def describe(self) -> str:
        return f"{self.tokens:,} tokens of {self.documents} of the {self.split_documents} {self.split} documents"


def calibration_batches(data: TokenData, num_seqs: int, seq_len: int, batch_size: int,
                        seed: int = 1234) -> list[torch.Tensor]:
    """`num_seqs` training windows of `seq_len` tokens, in batches: the activations that score importance."""
    windows = data.sample("train", num_seqs, seq_len - 1, seed=seed, step=0)["input_ids"]
    return list(windows.split(batch_size))
