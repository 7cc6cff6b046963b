"""`minitron correct`: teacher correction, the second Minitron paper's first step. The teacher is fine-tuned briefly
on the distillation data with plain cross-entropy (all its weights, or LoRA adapters through peft, merged
afterwards), so that it knows the data it will teach from. The same trainer as `distill`, without a teacher.

    minitron correct --model default --train.tokens 200000 --out runs/teacher-corrected
    minitron correct --model default --train.lora-rank 16 --train.lr 1e-3 --out runs/teacher-lora
    minitron compress --teacher runs/teacher-corrected/student ...     # or: compress --correct-teacher 200000

OUT is a training run directory like distill's (checkpoints/, metrics.jsonl, train_config.json, record.json,
resumable with --resume); the corrected model is OUT/student, an ordinary Hugging Face checkpoint with a model card.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from minitron.card import base_name, write_model_card
from minitron.distill import TrainConfig, distill
from minitron.distill.config import refuse_located
from minitron.errors import MinitronError

CORRECT_LR = 1e-4  # fine-tuning a trained teacher: an order below a pruned student's distillation


def correct(model: str = "default", out: Path | None = None, data: Path | None = None,
            train: TrainConfig = TrainConfig(loss="ce", lr=CORRECT_LR), device: str = "auto", resume: bool = False,
            overwrite: bool = False, dry_run: bool = False) -> dict:
    """Fine-tune a teacher briefly on the distillation data (plain cross-entropy): a stock Hugging Face checkpoint.

    Args:
        model: the teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        out: run directory; the corrected model is OUT/student (required)
        data: token data directory from `minitron data` (default: the default corpus in the model's tokenizer)
        train: the fine-tuning's settings, as `minitron distill`'s (`--train.tokens 200000`, `--train.lora-rank 16`
            for LoRA adapters merged at the end, which usually want about 10x the learning rate); its loss is ce
        device: auto, cpu or cuda
        resume: continue from the newest checkpoint in OUT
        overwrite: delete an existing OUT and start again
        dry_run: check every setting and print the plan (the steps, batch and learning rate, where a resume
            starts), as `distill --dry-run` does; no weights loaded, nothing written
    """
    if out is None:
        raise MinitronError("correct needs --out (the run directory; the corrected model is OUT/student)")
    refuse_located(train, "correct")
    if train.loss not in (None, "ce"):
        raise MinitronError(f"correct fine-tunes with cross-entropy; leave out --train.loss {train.loss}")
    cfg = replace(train, student=str(model), out=Path(out), data=str(data) if data is not None else None, loss="ce",
                  device=device, resume=resume, overwrite=overwrite, dry_run=dry_run)
    cfg.validate("train.")  # the flags as correct spells them
    result = distill(cfg)
    if dry_run:
        return result  # the plan, printed
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, process 0 writes (as distill does)
        write_model_card(result.student, teacher=str(model), run=result.out,
                         name=cfg.name or f"{base_name(model)}-corrected")
        print(f"wrote {result.student}: the corrected teacher, {result.tokens:,} tokens, validation loss "
              f"{result.val_loss:.4f}")
    return {"model": str(result.student), "tokens": result.tokens, "steps": result.steps, "val_loss": result.val_loss,
            "lora_rank": cfg.lora_rank}
