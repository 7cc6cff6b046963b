"""`minitron compress`: the whole recipe in one command — score, prune, distil, evaluate, report."""
from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path

import torch

from minitron.errors import MinitronError

DEFAULT_TARGET = {"hidden_size": 384, "intermediate_size": 1024, "num_attention_heads": 6}  # ~half of SmolLM2-135M
DEFAULT_PROMPT = "What is a Python list? Answer in one sentence."
CONTINUATION = "A Python list is"  # plain text, no chat template: what distillation on documents teaches


def run_name(teacher: str) -> str:
    return "smollm2-135m-half" if teacher == "default" else Path(teacher).name.removesuffix(".gguf") + "-pruned"


def refuse_existing_run(run: Path, resume: bool, overwrite: bool) -> None:
    if run.exists() and not (resume or overwrite):
        raise MinitronError(f"{run} already exists; pass --resume to continue it or --overwrite to start again")


def prepare_run_dir(run: Path, overwrite: bool) -> None:
    if overwrite and run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)


def check_disk(run: Path, student_params: int, keep_checkpoints: int) -> None:
    """Pruned model + final student + checkpoints (weights and two AdamW moments), fp32, with a margin."""
    need = int(student_params * 4 * (2 + 3 * keep_checkpoints) * 1.2)
    where = next(p for p in [run, *run.parents] if p.exists())
    free = shutil.disk_usage(where).free
    if free < need:
        raise MinitronError(f"no disk space for this run: it needs about {need / 2**30:.1f} GiB in {run}, "
                            f"{free / 2**30:.1f} GiB are free")


def measure(spec: str | Path, val: torch.Tensor, device: torch.device, prompt: str, speed_tokens: int) -> dict:
    """Parameters, validation loss/perplexity, generation speed and one sample reply of a model."""
    from minitron.arch import count_params
    from minitron.chat.generate import generate_reply
    from minitron.eval import generation_speed, lm_loss
    from minitron.load import load_model, load_tokenizer

    model, tok = load_model(spec, device), load_tokenizer(spec)
    loss = lm_loss(model, val.split(4))
    result = {"params": count_params(model), "val_loss": loss, "ppl": float(torch.tensor(loss).exp()),
              "gen_tokens_per_s": generation_speed(model, tok, new_tokens=speed_tokens),
              "sample": generate_reply(model, tok, [{"role": "user", "content": prompt}], max_new_tokens=48),
              "continuation": continue_text(model, tok, CONTINUATION)}
    del model
    gc.collect()
    return result


def merged_timings(previous: Path, now: dict[str, float]) -> dict[str, float]:
    """Seconds per stage over every invocation of a run (a resumed run adds to the earlier time);
    evaluation is redone each time, so it counts once."""
    before = json.loads(previous.read_text()).get("timings_s", {}) if previous.is_file() else {}
    return {k: round(v + (before.get(k, 0.0) if k != "evaluate" else 0.0), 1) for k, v in now.items()}


@torch.no_grad()
def continue_text(model, tokenizer, text: str, new_tokens: int = 32, repetition_penalty: float = 1.3) -> str:
    """Greedy continuation of plain text (no chat template); the penalty keeps weak models out of loops."""
    inputs = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, repetition_penalty=repetition_penalty,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def stage(n: int, title: str) -> float:
    print(f"\n[{n}/5] {title}", flush=True)
    return time.time()


def compress(teacher: str = "default", data: Path | None = None, target: dict[str, int] | None = None,
             tokens: int = 120_000, out: Path | None = None, device: str = "auto", calib_seqs: int = 32,
             seq_len: int = 256, micro_batch: int = 4, global_batch_tokens: int = 4096, lr: float = 1e-3,
             val_seqs: int = 32, prompt: str = DEFAULT_PROMPT, resume: bool = False,
             overwrite: bool = False) -> dict:
    """Score, prune to a target, distil from the teacher, evaluate all three models and write a report.

    Args:
        teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        data: token data directory from `minitron data` (default: the default corpus in the teacher's tokenizer)
        target: student sizes, e.g. hidden_size=384,intermediate_size=1024,num_attention_heads=6 (the default:
            about half of the default teacher)
        tokens: distillation budget in tokens
        out: run directory (default: runs/<name>)
        device: auto, cpu or cuda
        calib_seqs: calibration sequences for importance scoring
        seq_len: tokens per sequence (calibration, training and validation)
        micro_batch: sequences per forward/backward
        global_batch_tokens: tokens per optimiser step
        lr: peak learning rate of distillation
        val_seqs: held-out sequences every model is evaluated on
        prompt: the prompt each model answers in the report
        resume: continue an interrupted run (finished stages are kept)
        overwrite: delete an existing run directory and start again
    """
    from minitron.data import TokenData, default_data
    from minitron.distill import TrainConfig, distill
    from minitron.importance import Scores, score
    from minitron.load import load_config, pick_device
    from minitron.prune import check_target, params_of, prune, target_config
    from minitron.report import write_report

    target = target if target is not None else DEFAULT_TARGET
    run = Path(out) if out is not None else Path("runs") / run_name(teacher)
    refuse_existing_run(run, resume, overwrite)
    config = load_config(teacher)
    sizes = check_target(config, target)
    student_params = params_of(target_config(config, sizes))
    tokens_data = TokenData.open(data if data is not None else default_data(teacher))
    if tokens_data.num_tokens("train") < tokens:
        raise MinitronError(f"the data has {tokens_data.num_tokens('train'):,} training tokens, fewer than the "
                            f"{tokens:,} requested; add data or lower --tokens")
    val = tokens_data.fixed("val", val_seqs, seq_len)["input_ids"]
    check_disk(run, student_params, keep_checkpoints=2)
    prepare_run_dir(run, overwrite)
    dev, timings = pick_device(device), {}

    t = stage(1, f"scoring importance on {calib_seqs} calibration sequences")
    if not (run / "scores" / "scores.safetensors").is_file():
        score(teacher, data=tokens_data.path, out=run / "scores", calib_seqs=calib_seqs, seq_len=seq_len,
              criteria=["activation"], device=device)
    timings["score"] = time.time() - t

    t = stage(2, "pruning")
    if not (run / "pruned" / "pruning.json").is_file():
        prune(teacher, target=target, out=run / "pruned", scores=run / "scores", device=device)
    timings["prune"] = time.time() - t

    t = stage(3, f"distilling on {tokens:,} tokens")
    result = distill(TrainConfig(student=str(run / "pruned"), out=run / "distill", tokens=tokens, teacher=teacher, data=str(tokens_data.path),
                     seq_len=seq_len, micro_batch=micro_batch, global_batch_tokens=global_batch_tokens, lr=lr,
                     min_lr=lr / 10, eval_every=max(1, tokens // global_batch_tokens // 6), eval_seqs=val_seqs // 2,
                     save_every=max(1, tokens // global_batch_tokens // 4), device=device,
                     resume=(run / "distill").exists()))
    student = run / "student"
    if not student.exists():
        student.symlink_to(Path("distill") / "student")
    timings["distill"] = time.time() - t

    t = stage(4, f"evaluating teacher, pruned and distilled models on {val.numel() - val_seqs:,} held-out tokens")
    metrics = {"tokens": result.tokens, "teacher_spec": str(teacher), "target": sizes, "device": str(dev),
               "target_desc": ", ".join(f"{k} {getattr(config, k)}→{v}" for k, v in sizes.items()
                                        if v != getattr(config, k)),
               "val_tokens": val.numel() - val_seqs, "prompt": prompt, "continuation_prompt": CONTINUATION}
    for name, spec in (("teacher", teacher), ("pruned", run / "pruned"), ("distilled", student)):
        metrics[name] = measure(spec, val, dev, prompt, speed_tokens=32)
        print(f"  {name:>9}: {metrics[name]['params']:,} params, val loss {metrics[name]['val_loss']:.3f}, "
              f"{metrics[name]['gen_tokens_per_s']:.1f} tok/s", flush=True)
    timings["evaluate"] = time.time() - t

    stage(5, "writing the report")
    metrics["timings_s"] = merged_timings(run / "metrics.json", timings)
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    report = write_report(run)
    print(f"\nwrote {report} — distilled student in {student}")
    return metrics
