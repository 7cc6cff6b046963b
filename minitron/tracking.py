"""Experiment tracking (`--report-to tensorboard wandb`): every record `distill` writes to metrics.jsonl also goes
to TensorBoard (OUT/tensorboard, read by `tensorboard --logdir OUT`) and/or Weights & Biases, with the run's
config as text (TensorBoard) or as the run config (W&B). Only the main process writes.

    minitron distill ... --report-to tensorboard        # then: tensorboard --logdir runs/distill
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from minitron.errors import MinitronError

TRACKERS = ("tensorboard", "wandb")


def check_report_to(report_to: list[str] | None) -> None:
    """Refuse an unknown tracker, or one that is not installed (or, for W&B, not logged in), in one line."""
    if report_to is not None and not isinstance(report_to, list):
        raise MinitronError(f"--report-to must be a list (e.g. [tensorboard]), not {report_to!r}")
    for name in report_to or []:
        if name not in TRACKERS:
            raise MinitronError(f"--report-to must name {' or '.join(TRACKERS)}, not {name!r}")
        if importlib.util.find_spec(name) is None:
            raise MinitronError(f"--report-to {name} needs the {name} package: pip install {name} "
                                f"(or pip install 'minitron[{name}]')")
    if "wandb" in (report_to or []) and not wandb_logged_in():
        raise MinitronError("--report-to wandb needs a W&B login: run `wandb login` (or set WANDB_API_KEY, or "
                            "WANDB_MODE=offline to log to local files only)")


def wandb_logged_in() -> bool:
    """An API key in WANDB_API_KEY or in ~/.netrc (where `wandb login` puts it), or an offline W&B mode."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Tracker:
    """Sends metric records to the trackers named in `report_to` (nothing when it is empty or `active` is false).

    Resuming from step `start` drops TensorBoard's records after it, as metrics.jsonl does (purge_step); W&B
    continues the run of the same id and keeps the steps it has (an exact resume logs the same values again)."""

    def __init__(self, report_to: list[str] | None, out: Path, config: dict, start: int, active: bool = True):
        self.writer = self.wandb = None
        names = (report_to or []) if active else []
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter  # lazy: an optional dependency

            self.writer = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=start + 1 if start else None)
            self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```", start)
        if "wandb" in names:
            import wandb  # lazy: an optional dependency

            where = Path(out).resolve()  # the same run directory is the same W&B run (so --resume continues it)
            run_id = f"{where.name}-{hashlib.sha256(str(where).encode()).hexdigest()[:8]}"
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "minitron"), name=Path(out).name,
                                    id=run_id, resume="allow", dir=str(out), config=config)

    def log(self, record: dict) -> None:
        """Every number in `record` as a scalar at `record["step"]`."""
        scalars = {k: float(v) for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, record["step"])
            self.writer.flush()  # a killed run keeps what it logged, as metrics.jsonl does
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
