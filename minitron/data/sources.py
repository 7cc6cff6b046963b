"""Where documents come from: text files, directories, JSONL (text or chat conversations), saved Hugging Face
datasets and the text data of R packages, each document with an id relative to its source (the train/validation
split is a hash of that id, so it does not change when the data moves); and the named corpora built by default."""
from __future__ import annotations

import hashlib
import re
import struct
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from minitron.chat.dataset import check_conversation
from minitron.errors import MinitronError, require
from minitron.io import read_jsonl

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".jsonl")  # what a directory source holds as text unless --glob says


def split_of(doc_id: str, dev_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """Deterministic split by document: a hash of the document's id (never its position) puts it in dev (the first
    `dev_fraction` of the hash range), test (the next `test_fraction`) or train."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "little") / 2**64
    return "dev" if h < dev_fraction else "test" if h < dev_fraction + test_fraction else "train"


def source_bytes(sources: list[str | Path], glob: str | None) -> int | None:
    """The bytes of the sources' files (what the progress bar's ETA counts down), or None when a source is a saved
    dataset; a missing source, or a directory without matching files, is refused."""
    total = 0
    for src in map(Path, sources):
        if is_hf_dataset(src) or is_r_data(src):
            total = None
        else:
            files = sum(f.stat().st_size for f, _ in source_files(src, glob))
            total = None if total is None else total + files
    return total


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json",
                                                               "state.json"))


def iter_documents(sources: Iterable[str | Path], glob: str | None = None,
                   text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(document id, text) from text files, directories (with `glob`), JSONL and saved HF datasets.

    `glob` None: every text file (TEXT_SUFFIXES). Ids are relative to the source given (a file's path inside its
    directory, a JSONL file's name and line), so the split does not change when the data moves."""
    for source in map(Path, sources):
        if is_hf_dataset(source):
            yield from _hf_dataset_documents(source, text_field)
        elif is_r_data(source):
            yield from r_text_documents(source)
        else:
            for f, doc_id in source_files(source, glob):
                yield from _file_documents(f, doc_id, text_field)


def source_files(source: Path, glob: str | None) -> list[tuple[Path, str]]:
    """(file, id) of a source: itself, or the files under a directory that match `glob` (None: every text file,
    TEXT_SUFFIXES, at any depth)."""
    if not source.exists():
        raise MinitronError(f"data source {source} does not exist")
    if not source.is_dir():
        return [(source, source.name)]
    found = source.glob(glob) if glob else (p for p in source.rglob("*") if p.suffix in TEXT_SUFFIXES)
    files = sorted(p for p in found if p.is_file())
    if not files:
        wanted = repr(glob) if glob else f"text files ({', '.join(TEXT_SUFFIXES)})"
        raise MinitronError(f"no {'files match ' if glob else ''}{wanted} under {source}; set --glob")
    return [(f, f.relative_to(source).as_posix()) for f in files]


def _file_documents(path: Path, doc_id: str, text_field: str) -> Iterator[tuple[str, str]]:
    if path.suffix == ".jsonl":
        for i, record in read_jsonl(path):
            if not isinstance(record, dict) or text_field not in record:
                raise MinitronError(f"{path}:{i} has no {text_field!r} field (set --text-field)")
            text = record[text_field]
            if not isinstance(text, str):
                raise MinitronError(f"{path}:{i}: {text_field!r} is {type(text).__name__}, not text (a JSON string); "
                                    "fix the record or set --text-field")
            yield f"{doc_id}:{i}", text
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
    datasets = require("datasets")  # optional and heavy: needed only for saved Hugging Face datasets

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


def is_r_data(path: Path) -> bool:
    """An installed R package's data directory (a lazy-load database: Rdata.rdx and Rdata.rdb)."""
    return path.is_dir() and (path / "Rdata.rdx").is_file() and (path / "Rdata.rdb").is_file()


def r_text_documents(path: Path) -> Iterator[tuple[str, str]]:
    """The chapters of the books in an R package's data: every character vector is a book, one line per element;
    a line 'Chapter N' or 'CHAPTER N' starts a chapter (the front matter is chapter 0). Ids: book:chapter."""
    for book, lines in read_r_data(path):
        chapters: list[list[str]] = [[]]
        for line in lines:
            if re.fullmatch(r"chapter [0-9ivxlc]+\.?", line.strip(), re.IGNORECASE):
                chapters.append([])
            chapters[-1].append(line)
        for i, chapter in enumerate(chapters):
            paragraphs = (" ".join(p.split("\n")) for p in "\n".join(chapter).split("\n\n"))
            text = "\n\n".join(p.strip() for p in paragraphs if p.strip())
            if text:
                yield f"{book}:{i}", text


def read_r_data(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(name, strings) of the character vectors in an R lazy-load database, one at a time (Rdata.rdx: the index,
    an RDS file; Rdata.rdb: each variable serialised and zlib-compressed after its 4-byte length), read with `rdata`."""
    try:
        import rdata  # lazy: an optional dependency, needed only to build the prose corpus
    except ImportError:
        raise MinitronError(f"reading the R data in {path} needs the `rdata` package: run `make setup` or "
                            "`pip install rdata`") from None
    index = rdata.read_rds(path / "Rdata.rdx")
    if int(index["compressed"][0]) != 1:  # R writes 2 for bzip2, 3 for xz
        raise MinitronError(f"{path}/Rdata.rdb is not zlib-compressed; only zlib is read")
    with open(path / "Rdata.rdb", "rb") as f:
        for name, (offset, length) in sorted(index["variables"].items()):
            f.seek(int(offset))
            record = f.read(int(length))
            data = zlib.decompress(record[4:])
            if len(data) != struct.unpack(">I", record[:4])[0]:
                raise MinitronError(f"{path}/Rdata.rdb: variable {name} is damaged")
            value = rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"))
            if getattr(value, "dtype", None) is not None and value.dtype.kind == "U":
                yield str(name), [str(line) for line in value]


def iter_conversations(sources: Iterable[str | Path], glob: str = "**/*.jsonl") -> Iterator[tuple[str, dict]]:
    """(id, record) for every conversation in chat JSONL files (or directories of them, found with `glob`);
    ids are relative to the source, like documents'."""
    for source in map(Path, sources):
        for f, file_id in source_files(source, glob):
            for i, record in read_jsonl(f):
                check_conversation(record, f"{f}:{i}")
                yield f"{file_id}:{i}", record
