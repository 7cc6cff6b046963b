"""SIGTERM and SIGINT, in one place. Every command runs inside `interrupts()`: a signal stops it as an exception
(SIGTERM as `Terminated`, SIGINT as Ctrl-C's KeyboardInterrupt), so that whatever it was writing is removed the same
way. Training runs its steps inside `StopRequest`: there the first signal is only noted, the loop finishes its step,
saves a checkpoint and stops; a second signal acts at once. While a command starts (`starting`: its imports and its
command line, before it writes anything) a signal ends the process at once."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers send before killing a job), raised like Ctrl-C's KeyboardInterrupt."""


_deferred: list["StopRequest"] = []  # the StopRequest a signal is noted in instead of raised (innermost last)


def _on_signal(signum, frame) -> None:
    if _deferred and not _deferred[-1].signum:
        _deferred[-1].signum = signum  # a training step is running: it finishes, saves and stops
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _exit_now(signum, frame) -> None:
    """One line and the exit code, at once: an exception raised while the import system runs one of its callbacks
    is printed as "Exception ignored" and dropped, and the command would go on."""
    name = "terminated" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"minitron: {name}\n".encode())
    os._exit(143 if signum == signal.SIGTERM else 130)


@contextmanager
def _handlers(handler=_on_signal) -> Iterator[None]:
    """`handler` for SIGTERM and SIGINT while inside (where handlers may be set: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupts():
    """A command's signals: raised as `Terminated` or KeyboardInterrupt wherever it is."""
    return _handlers()


def starting():
    """A command's start (imports, its command line: nothing written yet): a signal exits at once, in one line."""
    return _handlers(_exit_now)


class StopRequest:
    """Inside: the first SIGTERM or SIGINT is noted in `signum` (the caller stops at a safe point); a second one is
    raised at once. Works from the library too (no `interrupts()` around it)."""

    def __init__(self):
        self.signum, self._handlers = 0, _handlers()

    def __enter__(self) -> "StopRequest":
        self._handlers.__enter__()
        _deferred.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _deferred.remove(self)
        self._handlers.__exit__(*exc)
