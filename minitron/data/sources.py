"""Where documents come from: text files, directories, JSONL (text or chat conversations) and saved
Hugging Face datasets, each document with an id relative to its source (the train/validation split is a
hash of that id, so it does not change when the data moves)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator

from minitron.chat.dataset import check_conversation
from minitron.errors import MinitronError
from minitron.io import read_jsonl

DEFAULT_SOURCES = ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/linux-doc-6.1/html/_sources")
DEFAULT_GLOB = "**/*.rst.txt"


def is_validation(doc_id: str, val_fraction: float, seed: int = 0) -> bool:
    """Deterministic split by document: a hash of the document's id, never its position."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "little")
    return h / 2**64 < val_fraction


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json",
                                                               "state.json"))


def iter_documents(sources: Iterable[str | Path], glob: str = DEFAULT_GLOB,
                   text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(document id, text) from text files, directories (with `glob`), JSONL and saved HF datasets.

    Ids are relative to the source given (a file's path inside its directory, a JSONL file's name and line),
    so the train/validation split does not change when the data moves."""
    for source in map(Path, sources):
        if is_hf_dataset(source):
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
        yield doc_id, read_utf8(path)


def read_utf8(path: Path) -> str:
    """A text file's text; a file that is not UTF-8 is refused naming the first bad byte (never decoded wrongly
    or with replacement characters without a word)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinitronError(f"{path} is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start:,}); convert it to "
                            "UTF-8 (e.g. iconv -f latin1 -t utf-8) or leave it out") from None


def _hf_dataset_documents(path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    import datasets  # lazy: CLI start-up speed (a heavy import, needed only for saved Hugging Face datasets)

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:  # missing or damaged files (pyarrow's are ValueErrors)
        raise MinitronError(f"{path} is not a readable saved Hugging Face dataset ({str(e).splitlines()[0][:120]}); "
                            "save it again with save_to_disk") from None
    parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [("", ds)]
    for name, part in parts:
        if text_field not in part.column_names:
            raise MinitronError(f"dataset {path} has no column {text_field!r} (columns: {part.column_names})")
        for i, text in enumerate(part[text_field]):
            if not isinstance(text, str):
                raise MinitronError(f"dataset {path}{f' ({name})' if name else ''} row {i}: {text_field!r} is "
                                    f"{type(text).__name__}, not text (set --text-field)")
            yield f"{path.name}:{name}:{i}", text


def iter_conversations(sources: Iterable[str | Path], glob: str = "**/*.jsonl") -> Iterator[tuple[str, dict]]:
    """(id, record) for every conversation in chat JSONL files (or directories of them, found with `glob`);
    ids are relative to the source, like documents'."""
    for source in map(Path, sources):
        for f, file_id in source_files(source, glob):
            for i, record in read_jsonl(f):
                check_conversation(record, f"{f}:{i}")
                yield f"{file_id}:{i}", record
