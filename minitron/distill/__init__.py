"""Distillation: `distill(TrainConfig(...))`. config.py holds every setting, losses.py the losses, parallel.py
processes and model wrapping (FSDP2), checkpoint.py the resumable run directory, loop.py the loop itself,
model.py `minitron.distill(teacher, student, data, config)` on models in memory (the package is callable)."""
from minitron.callable import make_callable
from minitron.distill.config import TrainConfig
from minitron.distill.loop import DistillResult, distill
from minitron.distill.model import distill_models

__all__ = ["TrainConfig", "DistillResult", "distill", "distill_models"]

make_callable(__name__, distill_models)  # `minitron.distill(teacher, student, data, config)` on models in memory
