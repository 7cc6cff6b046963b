"""Distillation: `distill(TrainConfig(...))`. config.py holds every setting, losses.py the losses, parallel.py
processes and model wrapping (FSDP2), checkpoint.py the resumable run directory, loop.py the loop itself."""
from minitron.distill.config import TrainConfig
from minitron.distill.loop import DistillResult, distill

__all__ = ["TrainConfig", "DistillResult", "distill"]
