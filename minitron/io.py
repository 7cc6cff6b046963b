"""Files that are never half-written: atomic output directories and files, JSON and JSONL, and Hugging Face
checkpoints that stock `transformers` loads."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from safetensors import SafetensorError

from minitron.errors import MinitronError

# What the OS means when it refuses a write for lack of room (not a bug of ours).
DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EFBIG: "file too large for this file system (or above the shell's file-size limit)"}


def disk_problem(e: BaseException) -> str | None:
    """"no space left on device" (or a quota or file-size limit) when `e` is the OS refusing a write, else None.
    safetensors reports it as a `SafetensorError` whose message ends in "(os error N)", not as an OSError; torch's
    zip writer (`torch.save`) as a RuntimeError "... unexpected pos ..." when the OS cut the file short."""
    if isinstance(e, DiskFull):  # from an atomic file inside an atomic directory: named by the directory
        return e.problem
    code = e.errno if isinstance(e, OSError) else None
    if isinstance(e, SafetensorError) and (m := re.search(r"\(os error (\d+)\)", str(e))):
        code = int(m.group(1))
    if isinstance(e, RuntimeError) and "unexpected pos" in str(e):
        return "file too large or no space left on device (torch.save was cut short)"
    return DISK_ERRORS.get(code)


class DiskFull(MinitronError):
    """The OS refused to write `path` for lack of room; nothing half-written was left there."""

    def __init__(self, problem: str, path: Path):
        self.problem, self.path = problem, path
        super().__init__(f"{problem} writing {path}; nothing half-written was left (an earlier {path.name} is "
                         "untouched): free some space and run again")


MARKER = ".minitron"  # written into every directory minitron creates: what `--overwrite` may replace


def mark(directory: Path) -> None:
    """Record in `directory` that minitron wrote it (so that `--overwrite` may replace it later); once."""
    if not (directory / MARKER).is_file():
        write_json(directory / MARKER, {"written_by": "minitron"})


def is_ours(path: Path) -> bool:
    """Whether `path` is a directory minitron wrote (it holds the marker), or an empty one."""
    return path.is_dir() and ((path / MARKER).is_file() or not any(path.iterdir()))


def refuse_cwd(path: Path) -> None:
    """An output may never be the current directory or a directory above it."""
    where, here = Path(path).resolve(), Path.cwd().resolve()
    if where == here or where in here.parents:
        raise MinitronError(f"--out {path} is the current directory or one above it; name a new directory for the "
                            "output")


def refuse_existing(path: Path, overwrite: bool) -> None:
    """The front door of an output directory: an existing one needs --overwrite, and --overwrite replaces only a
    directory minitron wrote (`MARKER`), never a user's directory or file."""
    path = Path(path)
    refuse_cwd(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise MinitronError(f"{path} already exists; pass --overwrite to replace it (or choose another --out)")
    if not path.is_dir():
        raise MinitronError(f"{path} is a file, not a directory minitron wrote; --overwrite replaces only "
                            "minitron's outputs: move it away or choose another --out")
    if not is_ours(path):
        raise MinitronError(f"{path} was not written by minitron (it has no {MARKER} marker); --overwrite replaces "
                            "only minitron's outputs, never your files: choose another --out")


def check_run_dir(path: Path, resume: bool, overwrite: bool) -> None:
    """A run directory (distill, compress, search) at the front door: new, or a run minitron wrote that --resume
    continues or --overwrite starts again (one of them); never the current directory or a user's directory."""
    path = Path(path)
    refuse_cwd(path)
    if resume and overwrite:
        raise MinitronError("give --resume (continue the run in --out) or --overwrite (start it again), not both")
    if not (path.exists() or path.is_symlink()):
        return
    if not is_ours(path):
        raise MinitronError(f"{path} exists and was not written by minitron (it has no {MARKER} marker); choose "
                            "another --out (--overwrite and --resume act only on minitron's runs)")
    if not (resume or overwrite) and any(path.iterdir()):
        raise MinitronError(f"{path} already holds a run; pass --resume to continue it or --overwrite to start "
                            "again (or choose another --out)")


def refuse_existing_file(path: Path, overwrite: bool) -> None:
    """The front door of an output file (a JSON, a GGUF): an existing file needs --overwrite; a directory never."""
    path = Path(path)
    if path.is_dir():
        raise MinitronError(f"{path} is a directory; name a file for the output")
    if path.exists() and not overwrite:
        raise MinitronError(f"{path} already exists; pass --overwrite to replace it (or choose another path)")


@contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output `path` (a `.NAME.lock` file beside it, `fcntl.flock`, released
    at exit even on a crash); a second writer is refused in one line instead of replacing the first's output."""
    lock = path.with_name(f".{path.name}.lock")

    def refuse() -> None:
        raise MinitronError(f"{path} is being written by another process (it holds {lock}); wait for it "
                            "to finish or choose another --out") from None

    with _locked(lock, refuse):
        yield


def build_once(entry: Path, built: Callable[[], bool], build: Callable[[], None]) -> None:
    """Build the cache entry `entry` (a conversion, a tokenised corpus) with `build()` unless `built()`; processes that
    would each build it take turns (`one_builder`): the others wait for the first, then find it built. The writing
    itself still goes through `atomic_dir`."""
    if not built():
        with one_builder(entry):
            if not built():
                build()


@contextmanager
def one_builder(entry: Path) -> Iterator[None]:
    """The turn of one process at building the cache entry `entry` (a `.NAME.build` lock file beside it), waited
    for, saying so, while another holds it (`build_once`)."""
    with _locked(entry.with_name(f".{entry.name}.build"),
                 lambda: print(f"waiting for another process to finish building {entry}", flush=True)):
        yield


@contextmanager
def _locked(lock: Path, busy) -> Iterator[None]:
    """Hold an exclusive `fcntl.flock` on the file `lock` (created, and removed at the end; released at exit even on
    a crash). Held by another process: `busy()` is called, and unless it raises, the lock is waited for."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                busy()
            except BaseException:
                os.close(fd)
                raise
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # the lock file is still the one on disk (not removed by a holder that just finished)
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def atomic_dir(path: Path | str, overwrite: bool = False, owned: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `path`, marked as minitron's; on success it is renamed into place. The
    output is locked (`output_lock`) from start to end. `overwrite`: the user's flag (`refuse_existing`);
    `owned`: the path is minitron's by construction (a cache entry, a file inside a run) and is replaced.

    A crash (or a full disk: `DiskFull`) leaves the old `path` untouched and the temporary directory removed.
    """
    path = Path(path)
    with output_lock(path):
        if not owned:
            refuse_existing(path, overwrite)  # checked again under the lock
        with _atomic_dir(path) as tmp:
            mark(tmp)
            yield tmp


@contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        umask_modes(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.rename(path, old)
            os.rename(tmp, path)
            remove(old)
        else:
            os.rename(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        problem = disk_problem(e)
        if problem:
            raise DiskFull(problem, path) from None
        raise


def umask_modes(root: Path) -> None:
    """Give a finished output directory and everything in it the modes the umask gives new files (0644 and 0755
    under 022): temporary directories and files are created 0700 and 0600 (mkdtemp, mkstemp, and libraries that
    write through them), and would stay unreadable to a server running as another user."""
    mask = process_umask()
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def process_umask() -> int:
    """The process's umask (read by setting it and back: there is no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove(path: Path) -> None:
    """Delete a directory tree or a file (what `--overwrite` replaces may be either)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it is renamed into place: a crash (or a full
    disk) leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp's is 0600: the output is as readable as any file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        problem = disk_problem(e)
        if problem:
            raise DiskFull(problem, path) from None
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: Path | str, text: str) -> None:
    """Write `text` to `path` through `atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path) -> dict | None:
    """A JSON file minitron wrote, or None where there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(1-based line number, record) of each non-blank line of a JSONL file; bad JSON is refused by line."""
    try:
        f = open(path, "rb")  # decoded line by line, so that a bad byte is reported with its line
    except FileNotFoundError:
        raise MinitronError(f"{path} does not exist") from None
    with f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MinitronError(f"{path}:{i} is not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                    "convert the file to UTF-8") from None
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError:
                raise MinitronError(f"{path}:{i} is not valid JSON") from None


def own_config(config):
    """A config as minitron writes it: without what describes another model's file (a GGUF's quantization_config,
    and its general.name as `_model_name_or_path`, which the teacher's conversion keeps and a student would
    inherit)."""
    for name in ("quantization_config", "_model_name_or_path"):
        if name in config.__dict__:
            delattr(config, name)
    config._name_or_path = ""
    return config


def save_hf(model, tokenizer, out: Path, generation_config=None) -> None:
    """Write an ordinary Hugging Face directory (config, safetensors, tokenizer, generation config)."""
    own_config(model.config)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if generation_config is not None:
        generation_config.save_pretrained(out)
