"""`minitron.distill(teacher, student, data, TrainConfig)`: distillation of models a notebook holds (the package is
callable: `minitron.callable`), run as `minitron distill` runs, in the config's run directory."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from minitron.distill.config import TrainConfig
from minitron.distill.loop import DistillResult, distill
from minitron.errors import MinitronError
from minitron.importance.model import is_spec, model_spec
from minitron.io import atomic_dir, check_run_dir, mark, remove, save_hf
from minitron.load import load_generation_config, load_model, load_tokenizer


def distill_models(teacher, student, data=None, config: TrainConfig | None = None, *, tokenizer=None
                   ) -> DistillResult | dict:
    """Distil `teacher` into `student` (models in memory, or paths / Hub ids / 'default') on `data` (a `minitron
    data` directory; default: the default corpus in their tokenizer) with `config` (a `TrainConfig`: budget, loss,
    run directory `out`, ...) -> `DistillResult`; a student in memory is trained in place.

    The run is the same as `minitron distill`'s, in `config.out`: a model in memory is first saved there under
    inputs/ (what train_config.json names, so `--resume` and `minitron distill --config` work on it), then the
    trained weights are loaded back into it. `tokenizer` (an object or a spec) is needed only when the models do
    not say where they were loaded from. `teacher=None` trains the student on the data alone."""
    config = config or TrainConfig()
    in_memory = {name: m for name, m in (("student", student), ("teacher", teacher))
                 if m is not None and not is_spec(m)}
    inputs = Path(config.out or "") / "inputs"
    specs = {name: str(inputs / name) if name in in_memory else (None if m is None else str(m))
             for name, m in (("student", student), ("teacher", teacher))}
    run = replace(config, **specs, data=config.data if data is None else str(data))
    if not in_memory:
        return distill(run)
    if run.dry_run:  # checked before anything is saved under inputs/
        raise MinitronError("dry_run plans a run from models on disk (their configs and the data); give the models "
                            "as paths, or leave dry_run off")
    run.validate()
    out = Path(run.out)
    check_run_dir(out, run.resume, run.overwrite)
    if not run.resume or not inputs.is_dir():
        if run.overwrite and out.exists():
            remove(out)
        tok = _tokenizer(tokenizer, [m for m in (student, teacher) if m is not None])
        inputs.mkdir(parents=True, exist_ok=True)
        mark(out)
        for name, model in in_memory.items():
            save_input(model, tok, inputs / name)
    result = distill(replace(run, resume=True, overwrite=False))  # the run directory now holds its inputs
    if "student" in in_memory:
        with torch.no_grad():
            student.load_state_dict(load_model(result.student).state_dict())
    return result


def _tokenizer(tokenizer, models: list):
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    if tokenizer is not None:
        return load_tokenizer(tokenizer)
    for m in models:
        try:
            return load_tokenizer(m if is_spec(m) else model_spec(m))
        except MinitronError:
            continue
    raise MinitronError("neither model says where it was loaded from, so minitron cannot find their tokenizer; "
                        "pass tokenizer=")


def save_input(model: nn.Module, tokenizer, out: Path) -> None:
    """A model in memory as a Hugging Face directory under the run's inputs/ (in fp32 when it trains, as stored
    otherwise); the model itself is left as it was."""
    name = getattr(model, "name_or_path", "") or model.config._name_or_path
    with atomic_dir(out, owned=True) as tmp:
        save_hf(model, tokenizer, tmp, load_generation_config(model.config, name or None))
    if name:  # save_hf cleared it for the file; the user's model keeps saying where it came from
        model.config._name_or_path = name
