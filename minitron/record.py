"""The one resume record of a run directory (compress, search, distill): RUN/record.json holds, for each step of the
run (a compress stage, the search's zero-shot ranking, a distillation), the settings it ran with and what it
produced. Resuming skips a step recorded with the same settings and refuses one recorded with other settings,
naming the first difference; nothing else decides whether a run may go on.

    record = Record(run)
    outputs = record.run("score", settings, lambda: score_stage(...))   # skipped when done with these settings
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from minitron.errors import MinitronError
from minitron.io import write_json

RECORD = "record.json"


def jsonable(obj):
    """`obj` as it reads back from JSON (paths and other objects as strings): what a record compares."""
    return json.loads(json.dumps(obj, default=str))


def record_path(path: Path | str, run: Path) -> str:
    """An input path as a record holds it: resolved, and relative to `run` when inside it (a run directory may move
    with its inputs and still resume)."""
    path, root = Path(path).resolve(), Path(run).resolve()
    return str(path.relative_to(root) if path.is_relative_to(root) else path)


class Record:
    """RUN/record.json: {step: {"settings", "outputs", "seconds"}}, rewritten atomically after each change."""

    def __init__(self, run: Path):
        self.dir, self.path = Path(run), Path(run) / RECORD
        try:
            self.steps: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError) as e:
            raise MinitronError(f"{self.path} is damaged ({type(e).__name__}), so what {self.dir} ran cannot be "
                                "checked; start again with --overwrite or in a new --out") from None
        if not isinstance(self.steps, dict) or not all(isinstance(s, dict) and isinstance(s.get("settings"), dict)
                                                       for s in self.steps.values()):
            raise MinitronError(f"{self.path} is not a minitron run record; start again with --overwrite or in a new "
                                "--out")

    def check(self, step: str, settings: dict, explain: dict[str, str] | None = None) -> dict | None:
        """The recorded outputs of `step` when it ran with these settings (None: it has not run); a step recorded
        with other settings is refused, naming the first difference (in the words of `explain`, by setting)."""
        done = self.steps.get(step)
        if done is None:
            return None
        settings, before = jsonable(settings), done["settings"]
        changed = [k for k in {**before, **settings} if before.get(k) != settings.get(k)]
        if changed:
            k = changed[0]
            why = (explain or {}).get(k, "use the same settings")
            raise MinitronError(f"cannot go on with {self.dir}: its {step} ran with {k} = {before.get(k)}, now "
                                f"{settings.get(k)}; {why}, --overwrite to start again, or another --out")
        return done.get("outputs")

    def save(self, step: str, settings: dict, outputs: dict | None = None, seconds: float | None = None) -> None:
        """Record `step`: its settings when it starts (outputs None), and what it produced when it ends."""
        self.steps[step] = {"settings": jsonable(settings), "outputs": jsonable(outputs),
                            **({"seconds": round(seconds, 1)} if seconds is not None else {})}
        write_json(self.path, self.steps)

    def run(self, step: str, settings: dict, fn: Callable[[], dict]) -> dict:
        """The outputs of `step`: recorded ones if it finished before with these settings, else by running it."""
        done = self.check(step, settings)
        if done is not None:
            print(f"[{step}] done before (recorded in {self.path.name})", flush=True)
            return done
        print(f"\n[{step}]", flush=True)
        start = time.time()
        outputs = fn()
        self.save(step, settings, outputs, time.time() - start)
        return outputs

    def seconds(self) -> dict[str, float]:
        return {name: s["seconds"] for name, s in self.steps.items() if "seconds" in s}
