"""Reading torch.distributed.checkpoint (DCP) shards without running code that a run directory could carry.

DCP stores a checkpoint's index (`.metadata`) as a pickle and reads it with `pickle.load`, and its non-tensor
items (the optimiser's param_groups) with `torch.load(weights_only=False)`: a crafted run folder, received from
someone else, would run whatever it names on `--resume`. Here the index is read by an unpickler that builds only
DCP's own metadata classes, tensor sizes, dtypes and paths, and every non-tensor item must be plain data
(`torch.load(weights_only=True)`); anything else is refused in one line before a byte of it is acted on.
"""
from __future__ import annotations

import io
import logging
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed.checkpoint.filesystem as dcp_fs
import torch.distributed.checkpoint.metadata as dcp_meta
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata

from minitron.errors import MinitronError

METADATA = ".metadata"


class MetadataUnpickler(pickle.Unpickler):
    """Builds only what a DCP index holds: its metadata classes, torch.Size, dtypes, layouts and paths."""

    def find_class(self, module: str, name: str):
        if module == dcp_meta.__name__ and isinstance(getattr(dcp_meta, name, None), type):
            return getattr(dcp_meta, name)
        if (module, name) in ((dcp_fs.__name__, "_StorageInfo"), ("torch", "Size"), ("pathlib", "PosixPath"),
                              ("pathlib", "PurePosixPath"), ("collections", "OrderedDict")):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) == ("torch.serialization", "_get_layout"):  # a layout by its name (torch.strided)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a checkpoint index never holds")


def read_metadata(path: Path) -> Metadata:
    """A checkpoint's DCP index, read safely; a damaged or crafted one is refused in one line."""
    try:
        with open(path / METADATA, "rb") as f:
            metadata = MetadataUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as e:
        problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise MinitronError(f"checkpoint {path} has an unreadable or unsafe {METADATA} ({problem}); nothing in it was "
                            "run; delete the checkpoint to resume from an older one") from None
    if not isinstance(metadata, Metadata):
        raise MinitronError(f"checkpoint {path}: {METADATA} is not a checkpoint index (it holds a "
                            f"{type(metadata).__name__}); delete the checkpoint to resume from an older one")
    return metadata


class SafeReader(FileSystemReader):
    """DCP's file-system reader with the index read by `read_metadata` (once, before DCP asks for it)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.metadata = read_metadata(Path(path))

    def read_metadata(self, *args, **kwargs) -> Metadata:
        if getattr(self.metadata, "storage_meta", None) is None:
            self.metadata.storage_meta = dcp_meta.StorageMeta()
        self.metadata.storage_meta.load_id = self.load_id
        return self.metadata


class SafePlanner(DefaultLoadPlanner):
    """DCP's load planner, with non-tensor items read as plain data only (numbers, strings, lists, dicts)."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        data = torch.load(value, weights_only=True)  # refuses any object but plain data and tensors
        clean = io.BytesIO()
        torch.save(data, clean)  # what DCP reads back is what was just checked, re-serialised here
        clean.seek(0)
        super().load_bytes(read_item, clean)


@contextmanager
def quiet_dcp() -> Iterator[None]:
    """DCP logs a traceback of its own before raising; minitron reports the problem in one line instead."""
    logger = logging.getLogger("dcp_logger")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
