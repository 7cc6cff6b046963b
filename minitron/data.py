"""Tokenise text sources into memmap token shards (train/val split by document) and sample from them.

A data directory holds `meta.json` and, per split, `{split}.bin` (uint16 when the vocabulary fits,
else uint32) with documents separated by the EOS token; chat data adds `{split}.mask.bin` (uint8, 1 where
a token is trained on). Sequences are sampled from a seed and a step, so any batch can be re-made exactly.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from minitron.errors import MinitronError
from minitron.io import atomic_dir, read_jsonl, write_json

DEFAULT_SOURCES = ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/linux-doc-6.1/html/_sources")
DEFAULT_GLOB = "**/*.rst.txt"
SPLITS = ("train", "val")


def tokenizer_identity(tokenizer) -> dict:
    """Name, vocabulary size and a hash of the vocabulary: shards made with another tokenizer are refused."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
    return {"name": getattr(tokenizer, "name_or_path", ""), "vocab_size": len(tokenizer), "sha": digest}


def is_validation(doc_id: str, val_fraction: float, seed: int = 0) -> bool:
    """Deterministic split by document: a hash of the document's id, never its position."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "little")
    return h / 2**64 < val_fraction


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json",
                                                               "state.json"))


def iter_documents(sources: Iterable[str | Path], glob: str = DEFAULT_GLOB,
                   text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(document id, text) from text files, directories (with `glob`), JSONL and saved HF datasets.

    Ids are relative to the source given (a file's path inside its directory, a JSONL file's name and line),
    so the train/validation split does not change when the data moves."""
    for source in map(Path, sources):
        if _is_hf_dataset(source):
            yield from _hf_dataset_documents(source, text_field)
        else:
            for f, doc_id in source_files(source, glob):
                yield from _file_documents(f, doc_id, text_field)


def source_files(source: Path, glob: str) -> list[tuple[Path, str]]:
    """(file, id) of a source: itself, or the files under a directory that match `glob`."""
    if not source.exists():
        raise MinitronError(f"data source {source} does not exist")
    if not source.is_dir():
        return [(source, source.name)]
    files = sorted(p for p in source.glob(glob) if p.is_file())
    if not files:
        raise MinitronError(f"no files match {glob!r} under {source}; set --glob")
    return [(f, f.relative_to(source).as_posix()) for f in files]


def _file_documents(path: Path, doc_id: str, text_field: str) -> Iterator[tuple[str, str]]:
    if path.suffix == ".jsonl":
        for i, record in read_jsonl(path):
            if not isinstance(record, dict) or text_field not in record:
                raise MinitronError(f"{path}:{i} has no {text_field!r} field (set --text-field)")
            yield f"{doc_id}:{i}", str(record[text_field])
    else:
        yield doc_id, path.read_text(encoding="utf-8", errors="replace")


def _hf_dataset_documents(path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [("", ds)]
    for name, part in parts:
        if text_field not in part.column_names:
            raise MinitronError(f"dataset {path} has no column {text_field!r} (columns: {part.column_names})")
        for i, text in enumerate(part[text_field]):
            yield f"{path.name}:{name}:{i}", text


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


def build_data(source: list[str] | None = None, out: Path | None = None, tokenizer: str = "default",
               glob: str = DEFAULT_GLOB, text_field: str = "text", val_fraction: float = 0.02,
               max_tokens: int | None = None, seed: int = 0, overwrite: bool = False, chat: bool = False,
               chat_template: str = "auto") -> Path:
    """Tokenise text into memmap token shards with a train/validation split by document.

    Args:
        source: text files, directories, .jsonl files or saved Hugging Face datasets (default: the
            Python and Linux documentation sources from Debian's python3.11-doc and linux-doc-6.1)
        out: output directory (default: the minitron cache, keyed by tokenizer)
        tokenizer: model whose tokenizer to use ('default', a Hugging Face directory or a .gguf)
        glob: which files to read inside directories
        text_field: the text field of JSONL records and dataset rows
        val_fraction: share of documents held out for validation
        max_tokens: stop after about this many tokens (all splits together)
        seed: seed of the document split
        overwrite: replace an existing output directory
        chat: the sources are chat JSONL ({"messages": [...], "tools": [...]}): render each conversation
            with the chat template and train on the assistant's tokens only (writes loss masks)
        chat_template: chat format for --chat: auto, nemotron, chatml, mistral or model
    """
    from minitron.load import load_tokenizer

    if chat and (source is None or out is None):
        raise MinitronError("--chat needs --source (conversation JSONL files) and --out")
    tok = load_tokenizer(tokenizer)
    if source is None:
        missing = [s for s in DEFAULT_SOURCES if not Path(s).is_dir()]
        if missing:
            raise MinitronError(f"the default corpus is not installed ({missing[0]} is missing): run "
                                "`make corpus` or `apt-get install python3.11-doc linux-doc-6.1`")
        source = list(DEFAULT_SOURCES)
    if out is None:
        out = default_data_dir(tok, max_tokens)
    out = Path(out)
    if tok.eos_token_id is None:
        raise MinitronError(f"tokenizer of {tokenizer} has no EOS token to separate documents")
    dtype = token_dtype(len(tok))
    glob = "**/*.jsonl" if chat and glob == DEFAULT_GLOB else glob
    for src in map(Path, source):  # refuse missing sources before anything is shown or written
        if not _is_hf_dataset(src):
            source_files(src, glob)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        writer = ShardWriter(tmp, dtype, with_mask=chat)
        docs = tokenised_chats(tok, source, glob, chat_template) if chat else \
            ((d, tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], None)
             for d, t in iter_documents(source, glob, text_field))
        with tqdm(desc="tokenising", unit=" tok", unit_scale=True, dynamic_ncols=True) as bar:
            for doc_id, ids, mask in docs:
                writer.add("val" if is_validation(doc_id, val_fraction, seed) else "train", ids, mask)
                bar.update(len(ids))
                if max_tokens and sum(writer.tokens.values()) >= max_tokens:
                    break
        splits = writer.close()
        if splits["train"]["tokens"] == 0 or splits["val"]["tokens"] == 0:
            raise MinitronError(f"too little data in {', '.join(map(str, source))}: {splits['train']['documents']} "
                                f"training and {splits['val']['documents']} validation documents; both splits need "
                                "some (add data or raise --val-fraction)")
        write_meta(tmp, tok, dtype, splits, sources=[str(s) for s in source], val_fraction=val_fraction,
                   seed=seed, **({"chat_template": chat_template} if chat else {}))
    print(f"wrote {out}: {splits['train']['tokens']:,} train / {splits['val']['tokens']:,} validation tokens")
    return out


def tokenised_chats(tok, sources: list[str], glob: str,
                    template: str) -> Iterator[tuple[str, list[int], list[int]]]:
    """(id, token ids, loss mask) of chat JSONL conversations; the mask is 1 on the assistant's tokens only."""
    from minitron.chat.dataset import encode_with_mask, iter_conversations
    from minitron.chat.templates import get_format

    fmt = get_format(tok, template)
    for doc_id, record in iter_conversations(sources, glob):
        ids, mask = encode_with_mask(tok, fmt, record["messages"], record.get("tools"))
        yield doc_id, ids + [tok.eos_token_id], mask + [0]


def default_data_dir(tokenizer, max_tokens: int | None = None) -> Path:
    from minitron.load import cache_dir

    suffix = f"-{max_tokens}" if max_tokens else ""
    return cache_dir() / "data" / f"docs2-{tokenizer_identity(tokenizer)['sha']}{suffix}"


def default_data(tokenizer_spec: str = "default", max_tokens: int | None = None) -> Path:
    """The default corpus tokenised for a model's tokenizer, built on first use and cached."""
    from minitron.load import load_tokenizer

    out = default_data_dir(load_tokenizer(tokenizer_spec), max_tokens)
    if not (out / "meta.json").is_file():
        build_data(tokenizer=tokenizer_spec, out=out, max_tokens=max_tokens)
    return out


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
        except json.JSONDecodeError:
            raise MinitronError(f"{path / 'meta.json'} is corrupt") from None
        data = cls(path, meta)
        for split in SPLITS:
            expected = meta["splits"][split]["tokens"] * np.dtype(meta["dtype"]).itemsize
            f = path / f"{split}.bin"
            if not f.is_file() or f.stat().st_size != expected:
                raise MinitronError(f"{f} is missing or truncated (expected {expected:,} bytes)")
        return data

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse shards made with a different tokenizer than the model's."""
        ours, theirs = self.meta["tokenizer"], tokenizer_identity(tokenizer)
        if ours["sha"] != theirs["sha"]:
            raise MinitronError(f"data in {self.path} was made with another tokenizer ({ours['name'] or '?'}, "
                                f"vocabulary {ours['vocab_size']:,}) than the model's ({theirs['vocab_size']:,}); "
                                "rebuild it with `minitron data --tokenizer MODEL`")

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
