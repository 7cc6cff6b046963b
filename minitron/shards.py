"""Safetensors checkpoints read and written one tensor at a time.

`Checkpoint` reads a Hugging Face checkpoint (one `model.safetensors`, or `model.safetensors.index.json`
and its shards) lazily: opening it reads only the headers, and checks that every shard is there, whole,
and holds what the index says. `SafetensorsWriter` writes a sharded checkpoint whose layout is fixed up
front from the tensors' names, dtypes and shapes, so each tensor goes to disk as soon as it is made and
no shard is ever held in memory.

The shard layout (which tensors go in which file, the file names, the index's metadata) is
huggingface_hub's `split_torch_state_dict_into_shards`, the same split `save_pretrained` makes. The writing is
our own because no library writes a shard a tensor at a time: safetensors' `save_file` and huggingface_hub's
`save_torch_state_dict` take every tensor of a shard in memory at once, and pruning a checkpoint larger than
memory has one module in memory at a time.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError, safe_open

from minitron.errors import MinitronError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")  # pickle checkpoints, refused by name
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn}
NAMES = {v: k for k, v in DTYPES.items()}
CHUNK_BYTES = 256 * 2**20  # tensors bigger than this are read this many stored bytes of rows at a time


@dataclass(frozen=True)
class TensorSpec:
    """What a stored tensor is, without its data."""

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def _read_headers(path: Path) -> dict[str, TensorSpec]:
    """The tensors a safetensors file holds; a missing, truncated or corrupt file is refused by name."""
    try:
        with safe_open(path, framework="pt") as f:
            return {n: TensorSpec(DTYPES[f.get_slice(n).get_dtype()], tuple(f.get_slice(n).get_shape()))
                    for n in f.keys()}
    except (SafetensorError, OSError, KeyError) as e:
        raise MinitronError(f"{path} is truncated or corrupt ({str(e).splitlines()[0][:100]}): corrupt or "
                            "incomplete checkpoint; download it again") from None


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise MinitronError(f"{index} is not a valid safetensors index (JSON with a weight_map)") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise MinitronError(f"{index} has an empty or invalid weight_map")
    return weight_map


def require_safetensors(root: Path, pickles: list[str] | None = None) -> None:
    """Refuse a directory without safetensors weights in one line, naming its pickle weights file if it has
    one (`pickles`: the pickle files elsewhere, e.g. in the Hub repository the directory came from)."""
    if (root / INDEX).is_file() or (root / SINGLE).is_file():
        return
    pickles = pickles if pickles is not None else sorted(str(p) for g in PICKLE_WEIGHTS for p in root.glob(g))
    if pickles:
        raise MinitronError(f"{pickles[0]} is a pickle checkpoint: minitron loads safetensors weights only (a pickle "
                            f"can run code when loaded); convert it if you trust it (transformers' from_pretrained "
                            "then save_pretrained writes safetensors)")
    raise MinitronError(f"model directory {root} has no {SINGLE} or {INDEX}")


class Checkpoint:
    """The tensors of a safetensors checkpoint directory, read lazily from their files. MXFP4 tensors (GPT-OSS's
    released experts: `NAME_blocks` and `NAME_scales`) are read as the bf16 tensor NAME transformers dequantises them
    to (`packed`); block-wise FP8 ones (DeepSeek V3's released weights: NAME in e4m3, NAME_scale_inv a number a block
    of `block` rows and columns) as bf16, each value times its block's number (`scaled`)."""

    def __init__(self, root: Path, files: dict[str, Path], specs: dict[str, TensorSpec]):
        self.root, self.files, self.specs, self.packed = root, dict(files), dict(specs), mxfp4_pairs(specs)
        self.scaled, self.stored = fp8_pairs(specs), dict(specs)
        self.block = fp8_block(root) if self.scaled else (128, 128)  # (its config read only where it has FP8)
        for name, (blocks, scales) in self.packed.items():
            experts, rows, groups, width = self.specs.pop(blocks).shape
            del self.specs[scales]
            self.files[name] = self.files[blocks]
            self.specs[name] = TensorSpec(torch.bfloat16, (experts, 2 * groups * width, rows))  # (experts, in, out)
        for name, scales in self.scaled.items():
            del self.specs[scales]
            self.specs[name] = TensorSpec(torch.bfloat16, self.specs[name].shape)

    @classmethod
    def open(cls, root: Path | str) -> "Checkpoint":
        """Read the index and every shard's header; refuse a missing shard, an index naming tensors a
        shard lacks, or a truncated file, naming the file."""
        root = Path(root)
        require_safetensors(root)
        if (root / INDEX).is_file():
            weight_map = _weight_map(root / INDEX)
        else:
            weight_map = dict.fromkeys(_read_headers(root / SINGLE), SINGLE)
        files, specs = {}, {}
        for shard in sorted(set(weight_map.values())):
            named = [n for n, f in weight_map.items() if f == shard]
            if not (root / shard).is_file():
                raise MinitronError(f"shard {root / shard} is missing ({INDEX} puts {len(named)} tensor(s) in it): "
                                    "the checkpoint is incomplete; download it again")
            held = _read_headers(root / shard)
            absent = [n for n in named if n not in held]
            if absent:
                raise MinitronError(f"{root / INDEX} names {len(absent)} tensor(s) in {root / shard} that it does "
                                    f"not hold (e.g. {absent[0]}): the index and shards do not match")
            specs.update((n, held[n]) for n in named)
            files.update(dict.fromkeys(named, root / shard))
        return cls(root, files, specs)

    def numel(self) -> int:
        return sum(s.numel for s in self.specs.values())

    def fingerprint(self, samples: int = 8) -> str:
        """A short hash that tells this model's weights from another's, cheaply: every tensor's name and shape,
        and the first row of `samples` tensors spread over the names, in bf16 (so that the same model stored
        in another dtype has the same fingerprint)."""
        names = sorted(self.specs)
        h = hashlib.sha256(json.dumps([[n, list(self.specs[n].shape)] for n in names]).encode())
        for n in names[::max(1, len(names) // samples)][:samples]:
            row = self._rows(n, slice(0, 1) if self.specs[n].shape else None)
            h.update(row.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
        return h.hexdigest()[:16]

    def require(self, names: list[str]) -> None:
        """Refuse, by name, tensors the model needs that the checkpoint lacks."""
        absent = [n for n in names if n not in self.specs]
        if absent:
            where = self.root / INDEX if (self.root / INDEX).is_file() else self.root / SINGLE
            raise MinitronError(f"{where} lacks {len(absent)} tensor(s) the model needs (e.g. {absent[0]}): "
                                "corrupt or incomplete checkpoint")

    def read(self, names: list[str], dtype: torch.dtype | None = None,
             device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Tensors `names`, converted to `dtype` (None: as stored) on `device`."""
        return {n: self._read_one(n, dtype or self.specs[n].dtype, device) for n in names}

    @contextmanager
    def _mapped(self, path: Path) -> Iterator:
        try:
            with safe_open(path, framework="pt") as f:
                yield f
        except SafetensorError as e:
            raise MinitronError(f"cannot read {path} ({str(e).splitlines()[0][:100]}): corrupt or "
                                "incomplete checkpoint") from None

    def _read_one(self, name: str, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """One tensor. The file's mapping is closed after each piece, so the stored pages it touched are let
        go; a big tensor is copied `CHUNK_BYTES` of rows at a time into its converted self, so that its stored
        copy and its converted copy are never both resident in full."""
        spec = self.stored.get(name, self.specs[name])  # (an FP8 tensor's stored rows are a byte a value)
        rows = CHUNK_BYTES // max(1, spec.nbytes // spec.shape[0]) if spec.shape and spec.shape[0] else 0
        if spec.nbytes <= CHUNK_BYTES or rows < 1:
            return self._rows(name, None).to(device=device, dtype=dtype)
        out = torch.empty(spec.shape, dtype=dtype, device=device)
        for start in range(0, spec.shape[0], rows):
            out[start:start + rows] = self._rows(name, slice(start, start + rows))
        return out

    def _rows(self, name: str, rows: slice | None) -> torch.Tensor:
        """Rows `rows` (None: all) of tensor `name` as stored, each piece read with its file's mapping closed after
        it; an MXFP4 tensor's dequantised by transformers' own `convert_moe_packed_tensors` (bf16, (experts, in,
        out)), a block-wise FP8 one's by its blocks' numbers (`_dequantized`)."""
        if name in self.packed:
            from transformers.integrations.mxfp4 import convert_moe_packed_tensors  # lazy: CLI start-up speed

            return convert_moe_packed_tensors(*(self._rows(part, rows) for part in self.packed[name]))
        return self._dequantized(name, rows) if name in self.scaled else self._rows_stored(name, rows)

    def _dequantized(self, name: str, rows: slice | None) -> torch.Tensor:
        """Rows `rows` of a block-wise FP8 tensor in bf16: each value (in fp32) times its block's number, which
        holds for a last block of fewer rows or columns too (as DeepSeek's own dequantisation)."""
        weight = self._rows_stored(name, rows).float()
        (height, width), (bh, bw) = weight.shape, self.block
        start = (rows.start or 0) if rows is not None else 0
        first = start // bh
        scales = self._rows_stored(self.scaled[name], slice(first, -(-(start + height) // bh))).float()
        scales = scales.repeat_interleave(bh, 0)[start - first * bh:][:height].repeat_interleave(bw, 1)[:, :width]
        return (weight * scales).to(torch.bfloat16)

    def _rows_stored(self, name: str, rows: slice | None) -> torch.Tensor:
        with self._mapped(self.files[name]) as f:
            return f.get_tensor(name) if rows is None else f.get_slice(name)[rows]


def fp8_pairs(specs: dict[str, TensorSpec]) -> dict[str, str]:
    """A checkpoint's block-wise FP8 tensors: NAME (e4m3, rows x columns) -> NAME_scale_inv (a number a block)."""
    return {name: name + "_scale_inv" for name, spec in specs.items()
            if spec.dtype == torch.float8_e4m3fn and name + "_scale_inv" in specs}


def fp8_block(root: Path) -> tuple[int, int]:
    """The rows and columns of a block-wise FP8 checkpoint's blocks: its config's quantization_config
    weight_block_size (DeepSeek V3's 128 x 128, the default)."""
    try:
        quantization = json.loads((root / "config.json").read_text()).get("quantization_config") or {}
    except (OSError, ValueError):
        return 128, 128
    return tuple(quantization.get("weight_block_size") or (128, 128))


def mxfp4_pairs(specs: dict[str, TensorSpec]) -> dict[str, tuple[str, str]]:
    """A checkpoint's MXFP4 tensors: NAME -> (NAME_blocks, NAME_scales), the blocks (experts, out, in / 32, 16) of two
    4-bit values a byte, the scales (experts, out, in / 32) powers of two (GPT-OSS's released experts)."""
    return {name.removesuffix("_blocks"): (name, name.removesuffix("_blocks") + "_scales")
            for name, spec in specs.items() if name.endswith("_blocks") and spec.dtype == torch.uint8
            and len(spec.shape) == 4 and name.removesuffix("_blocks") + "_scales" in specs}


def split_shards(specs: dict[str, TensorSpec], max_shard_bytes: int):
    """huggingface_hub's split of the tensors into shards of at most `max_shard_bytes` (a bigger tensor goes
    alone), computed on meta tensors: names, `filename_to_tensors`, `tensor_to_filename`, `metadata`."""
    meta = {n: torch.empty(spec.shape, dtype=spec.dtype, device="meta") for n, spec in specs.items()}
    return split_torch_state_dict_into_shards(meta, max_shard_size=max_shard_bytes)


def _header(specs: dict[str, TensorSpec], names: list[str]) -> tuple[bytes, dict[str, int]]:
    """A safetensors header for `names` in that order (padded to 8 bytes) and each tensor's data offset."""
    header, offsets, pos = {"__metadata__": {"format": "pt"}}, {}, 0
    for n in names:
        spec = specs[n]
        header[n] = {"dtype": NAMES[spec.dtype], "shape": list(spec.shape), "data_offsets": [pos, pos + spec.nbytes]}
        offsets[n], pos = pos, pos + spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, offsets


class SafetensorsWriter:
    """Write a checkpoint of known tensors one tensor at a time, in any order, into shards + an index.

    Shard boundaries and headers are fixed from `specs` before any data is written; `write` puts each
    tensor at its place in its file; `close` checks that every tensor came and writes the index. As a context
    manager (`with SafetensorsWriter(...) as writer:`) it closes when the block ends without an error (`written`:
    close's count) and closes its open files whatever happened.
    """

    def __init__(self, out: Path, specs: dict[str, TensorSpec], max_shard_bytes: int = 5 * 2**30):
        self.out, self.specs = Path(out), specs
        self.split = split_shards(specs, max_shard_bytes)
        self.names = self.split.filename_to_tensors
        self.file_of, self.where, self.handles, self.pending = {}, {}, {}, {}
        self.written: int | None = None  # close's count, once closed by the context manager
        for fname, group in self.names.items():
            header, offsets = _header(specs, group)
            self.where.update((n, len(header) + o) for n, o in offsets.items())
            self.file_of.update(dict.fromkeys(group, fname))
            self.pending[fname] = set(group)
            self.handles[fname] = header

    def _file(self, fname: str):
        handle = self.handles[fname]
        if isinstance(handle, bytes):  # first tensor of this shard: create it with its header
            self.handles[fname] = open(self.out / fname, "wb")
            self.handles[fname].write(handle)
        return self.handles[fname]

    def write(self, name: str, tensor: torch.Tensor) -> None:
        spec = self.specs.get(name)
        got = TensorSpec(tensor.dtype, tuple(tensor.shape))
        if spec != got:
            raise RuntimeError(f"internal error: {name} is {got}, the checkpoint layout expects {spec}")
        fname = self.file_of[name]
        f = self._file(fname)
        f.seek(self.where[name])
        f.write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self.pending[fname].discard(name)
        if not self.pending[fname]:
            f.close()

    def close(self) -> int:
        """Check that every tensor was written, write the index; the number of elements written."""
        missing = [n for names in self.pending.values() for n in names]
        if missing:
            raise RuntimeError(f"internal error: {len(missing)} tensor(s) never written (e.g. {missing[0]})")
        if self.split.is_sharded:
            index = {"metadata": {**self.split.metadata, "total_parameters": sum(s.numel for s in self.specs.values())},
                     "weight_map": dict(sorted(self.split.tensor_to_filename.items()))}
            (self.out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return sum(s.numel for s in self.specs.values())

    def abort(self) -> None:
        for handle in self.handles.values():
            if not isinstance(handle, bytes):
                handle.close()

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self.written = self.close()
        finally:
            self.abort()
