"""`minitron correct`: teacher correction, the second Minitron paper's first step. The teacher is fine-tuned briefly
on the distillation data with plain cross-entropy (all its weights, or LoRA adapters through peft, merged
afterwards), so that it knows the data it will teach from. The same trainer as `distill`, without a teacher.

    minitron correct --model default --tokens 200000 --out runs/teacher-corrected
    minitron compress --teacher runs/teacher-corrected/student ...     # or: compress --correct-teacher 200000

OUT is a training run directory like distill's (checkpoints/, metrics.jsonl, train_config.json, resumable with
--resume); the corrected model is OUT/student, an ordinary Hugging Face checkpoint with a model card.
"""
from __future__ import annotations

import os
from pathlib import Path

from minitron.card import write_model_card
from minitron.distill import TrainConfig, distill
from minitron.errors import MinitronError


def correct(model: str = "default", data: Path | None = None, tokens: int = 100_000, out: Path | None = None,
            lora: bool = False, lora_rank: int = 16, lora_alpha: float = 32.0, lr: float = 1e-4,
            min_lr: float = 1e-5, seq_len: int = 512, micro_batch: int = 4, global_batch_tokens: int = 16384,
            seed: int = 1, device: str = "auto", resume: bool = False, overwrite: bool = False) -> dict:
    """Fine-tune a teacher briefly on the distillation data (plain cross-entropy): a stock Hugging Face checkpoint.

    Args:
        model: the teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        data: token data directory from `minitron data` (default: the default corpus in the model's tokenizer)
        tokens: fine-tuning budget in tokens (whole optimiser steps of global_batch_tokens)
        out: run directory; the corrected model is OUT/student (required)
        lora: train LoRA adapters (merged into the weights at the end) instead of all the weights
        lora_rank: rank of the LoRA adapters (with --lora)
        lora_alpha: LoRA scale numerator: updates are scaled by lora_alpha / lora_rank (with --lora)
        lr: peak learning rate (AdamW, cosine decay after a warm-up of 5 percent of the steps); LoRA usually wants about 10x more
        min_lr: learning rate at the end of the decay
        seq_len: tokens per training sequence
        micro_batch: sequences per forward/backward
        global_batch_tokens: tokens per optimiser step
        seed: seed of the data sampling (1 by default: other windows of the data than distillation's first ones)
        device: auto, cpu or cuda
        resume: continue from the newest checkpoint in OUT
        overwrite: delete an existing OUT and start again
    """
    if out is None:
        raise MinitronError("correct needs --out (the run directory; the corrected model is OUT/student)")
    if lora and lora_rank < 1:
        raise MinitronError(f"--lora-rank must be a positive whole number with --lora, not {lora_rank!r}")
    cfg = TrainConfig(student=str(model), out=Path(out), data=str(data) if data is not None else None, loss="ce",
                      tokens=tokens, seq_len=seq_len, micro_batch=micro_batch, global_batch_tokens=global_batch_tokens,
                      lr=lr, min_lr=min(min_lr, lr), seed=seed, device=device, resume=resume, overwrite=overwrite,
                      lora_rank=lora_rank if lora else 0, lora_alpha=lora_alpha)
    result = distill(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, process 0 writes (as distill does)
        write_model_card(result.student, teacher=str(model), run=result.out,
                         name=f"{Path(out).name} (corrected teacher)")
        print(f"corrected teacher in {result.student}: {result.tokens:,} tokens, validation loss "
              f"{result.val_loss:.4f}")
    return {"model": str(result.student), "tokens": result.tokens, "steps": result.steps, "val_loss": result.val_loss,
            "lora_rank": cfg.lora_rank}
