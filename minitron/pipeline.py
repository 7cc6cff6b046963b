"""`minitron compress`: the whole recipe as a chain of stages — data, score, prune, distill, evaluate (+ report).

Each stage is a function of the run's settings that writes its outputs under the run directory. RUN/stages.json
records every finished stage with the settings it ran with and what it wrote (rewritten atomically after each
stage): --resume skips the recorded stages, continues an interrupted distillation from its checkpoint, and
refuses to go on with settings that differ from those a recorded stage ran with.

    minitron compress --config configs/demo.yaml --resume       # `make demo`
    minitron compress --teacher T --target hidden_size=2048 --distill.tokens 10000000 --distill.lr 3e-4
    minitron compress ... --correct-teacher 200000 --stages 2   # teacher correction; prune and distil in 2 stages

With --correct-teacher N the teacher is first fine-tuned on N tokens of the data (RUN/correct, `minitron correct`)
and everything after scores, prunes and distils from the corrected teacher. With --stages S the target is reached
in S prune-and-distil rounds (each prunes a geometric share of the way, RUN/stage-K/ for all but the last) that split
the distillation budget's steps evenly; the last round writes RUN/scores, RUN/pruned and RUN/distill as one does.
"""
from __future__ import annotations

import gc
import json
import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch

from minitron.arch import count_params
from minitron.chat.generate import generate_reply
from minitron.data import TokenData, default_data
from minitron.distill import TrainConfig
from minitron.distill.config import make_plan
from minitron.distill.loop import distill as run_distill
from minitron.errors import MinitronError
from minitron.card import write_model_card
from minitron.correct import correct
from minitron.eval import generation_speed, lm_loss, windows_in_batches
from minitron.importance import score
from minitron.io import write_json
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.prune import check_target, params_of, prune, target_config
from minitron.report import write_report

DEFAULT_PROMPT = "What is a Python list? Answer in one sentence."
CONTINUATION = "A Python list is"  # plain text, no chat template: what distillation on documents teaches
SET_BY_COMPRESS = ("student", "out", "teacher", "data", "device", "resume", "overwrite")  # of the distill section


def compress(teacher: str = "default", target: dict[str, int] | None = None, out: Path | None = None,
             data: Path | None = None, calib_seqs: int = 32, val_seqs: int = 32, prompt: str = DEFAULT_PROMPT,
             distill: TrainConfig = TrainConfig(), device: str = "auto", resume: bool = False,
             overwrite: bool = False, correct_teacher: int = 0, correct_lr: float = 1e-4, correct_lora_rank: int = 0,
             stages: int = 1) -> dict:
    """Score, prune to a target, distil from the teacher, evaluate all three models and write a report.

    Args:
        teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory or a .gguf file
        target: student sizes, e.g. hidden_size=384,intermediate_size=1024,num_attention_heads=6 (required)
        out: run directory (default: runs/<teacher name>-pruned)
        data: token data directory from `minitron data` (default: the default corpus in the teacher's tokenizer)
        calib_seqs: calibration sequences for importance scoring (of distill.seq_len tokens)
        val_seqs: held-out sequences every model is evaluated on (of distill.seq_len tokens)
        prompt: the prompt each model answers in the report
        distill: distillation settings (`--distill.lr 3e-4`, or a `distill:` section in YAML); its seq_len is
            also the calibration and evaluation length; student, out, teacher, data, device, resume and overwrite
            are set by compress
        device: auto, cpu or cuda
        resume: continue an interrupted run (recorded stages are kept, distillation continues from its checkpoint)
        overwrite: delete an existing run directory and start again
        correct_teacher: tokens of teacher correction before scoring (fine-tuning the teacher on the data with
            cross-entropy, `minitron correct`); 0: use the teacher as it is
        correct_lr: peak learning rate of the teacher correction
        correct_lora_rank: correct the teacher through LoRA adapters of this rank (merged), 0: all its weights
        stages: prune and distil in this many rounds, each a geometric share of the way to the target, splitting
            the distillation tokens evenly (1: one round)
    """
    if not target:
        raise MinitronError("compress needs --target, e.g. hidden_size=384,intermediate_size=1024 "
                            "(or --config configs/demo.yaml)")
    for name in SET_BY_COMPRESS:
        if getattr(distill, name) != getattr(TrainConfig(), name):
            raise MinitronError(f"compress sets distill.{name} itself; leave it out (use the top-level settings)")
    run = Path(out) if out is not None else Path("runs") / (Path(teacher).name.removesuffix(".gguf") + "-pruned")
    if run.exists() and not (resume or overwrite):
        raise MinitronError(f"{run} already exists; pass --resume to continue it or --overwrite to start again")
    # the front door: every check that needs no output comes before anything is written
    config = load_config(teacher)
    sizes = check_target(config, target)
    check_seq_len(config, distill.seq_len, teacher)
    tokens = TokenData.open(data if data is not None else default_data(teacher))
    if tokens.num_tokens("train") < distill.tokens:
        raise MinitronError(f"the data has {tokens.num_tokens('train'):,} training tokens, fewer than the "
                            f"{distill.tokens:,} requested; add data or lower --distill.tokens")
    targets = stage_targets(config, sizes, target, stages)
    tokens_per_step, steps = split_steps(distill, tokens, stages)
    check_correction(correct_teacher, correct_lr, correct_lora_rank, tokens.num_tokens("train"))
    check_disk(run, sum(params_of(target_config(config, check_target(config, t))) for t in targets)
               + (params_of(config) if correct_teacher else 0), distill.keep_checkpoints)
    if overwrite and run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)

    record = Record(run)
    recipe = {"correct_teacher": correct_teacher, "stages": stages}  # recorded only when not the plain recipe
    record.stage("data", {"teacher": teacher, "data": str(data) if data else None,
                          **{k: v for k, v in recipe.items() if v not in (0, 1)}},
                 lambda: {"data": str(tokens.path), "train_tokens": tokens.num_tokens("train")})
    source = teacher  # what is scored, pruned and distilled from: the teacher, or the corrected teacher
    if correct_teacher:
        done = record.stage("correct", {"tokens": correct_teacher, "lr": correct_lr, "lora_rank": correct_lora_rank},
                            lambda: correct_stage(teacher, tokens, run, correct_teacher, correct_lr,
                                                  correct_lora_rank, distill, device))
        source = str(run / done["model"])
    model = source
    for k, (stage_target, a, b) in enumerate(zip(targets, steps, steps[1:]), 1):
        where, suffix = (run, "") if k == stages else (run / f"stage-{k}", f"-{k}")
        where.mkdir(exist_ok=True)
        share = distill.tokens if stages == 1 else (b - a) * tokens_per_step  # S rounds: the steps of 1 round
        train = replace(distill, tokens=share, student=str(where / "pruned"),
                        out=where / "distill", teacher=source, data=str(tokens.path), device=device,
                        resume=(where / "distill").exists())
        record.stage("score" + suffix, {"calib_seqs": calib_seqs, "seq_len": distill.seq_len},
                     lambda: score_stage(model, tokens, where, calib_seqs, distill.seq_len, device))
        record.stage("prune" + suffix, {"target": check_target(config, stage_target)},
                     lambda: prune_stage(model, stage_target, where, device))
        record.stage("distill" + suffix, {**{key: v for key, v in asdict(train).items()
                                             if key not in ("student", "out", "resume", "device")}, "teacher": teacher},
                     lambda: distill_stage(train, where))  # paths inside the run are left out: a moved run resumes
        model = str(where / "student")
    record.stage("evaluate", {"val_seqs": val_seqs, "prompt": prompt},
                 lambda: evaluate_stage(teacher, source, run, tokens, val_seqs, distill.seq_len, prompt, sizes, config,
                                        pick_device(device), record))
    report = write_report(run)
    print(f"\nwrote {report} — distilled student in {run / 'student'}")
    return json.loads((run / "metrics.json").read_text())


class Record:
    """RUN/stages.json: {stage: {"settings", "outputs", "seconds"}} for every finished stage, in order."""

    def __init__(self, run: Path):
        self.path = run / "stages.json"
        self.stages: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def stage(self, name: str, settings: dict, fn: Callable[[], dict]) -> dict:
        """The stage's outputs: recorded ones if it finished before with these settings, else by running it."""
        settings = json.loads(json.dumps(settings, default=str))
        done = self.stages.get(name)
        if done is not None:
            changed = [k for k in {**done["settings"], **settings} if done["settings"].get(k) != settings.get(k)]
            if changed:
                k = changed[0]
                raise MinitronError(f"{self.path.parent} finished stage '{name}' with {k} = {done['settings'].get(k)}"
                                    f", now {settings.get(k)}; use the same settings, --overwrite, or another --out")
            print(f"[{name}] done before (recorded in {self.path.name})", flush=True)
            return done["outputs"]
        print(f"\n[{name}]", flush=True)
        start = time.time()
        outputs = fn()
        self.stages[name] = {"settings": settings, "outputs": outputs, "seconds": round(time.time() - start, 1)}
        write_json(self.path, self.stages)  # atomic: a kill leaves the old record or the new
        return outputs

    def seconds(self) -> dict[str, float]:
        return {name: s["seconds"] for name, s in self.stages.items() if name != "data"}


# ---------------------------------------------------------------- the stages

def correct_stage(teacher: str, tokens: TokenData, run: Path, n: int, lr: float, lora_rank: int,
                  distill: TrainConfig, device: str) -> dict:
    """Teacher correction on the distillation data, at the distillation's sequence length and batch size."""
    print(f"correcting the teacher on {n:,} tokens", flush=True)
    result = correct(teacher, data=tokens.path, tokens=n, out=run / "correct", lora=lora_rank > 0,
                     lora_rank=max(lora_rank, 1), lora_alpha=2.0 * max(lora_rank, 1), lr=lr, min_lr=lr / 10,
                     seq_len=distill.seq_len, micro_batch=distill.micro_batch,
                     global_batch_tokens=distill.global_batch_tokens, device=device,
                     resume=(run / "correct").exists())
    return {"model": "correct/student", "tokens": result["tokens"], "steps": result["steps"],
            "val_loss": result["val_loss"]}


def score_stage(teacher: str, tokens: TokenData, run: Path, calib_seqs: int, seq_len: int, device: str) -> dict:
    print(f"scoring importance on {calib_seqs} calibration sequences", flush=True)
    shutil.rmtree(run / "scores", ignore_errors=True)  # left by an interrupted stage
    score(teacher, data=tokens.path, out=run / "scores", calib_seqs=calib_seqs, seq_len=seq_len,
          criteria=["activation"], device=device)
    return {"scores": "scores"}


def prune_stage(teacher: str, target: dict[str, int], run: Path, device: str) -> dict:
    shutil.rmtree(run / "pruned", ignore_errors=True)  # left by an interrupted stage
    result = prune(teacher, target=target, out=run / "pruned", scores=run / "scores", device=device)
    return {"pruned": "pruned", "params": result.get("params_after")}


def distill_stage(train: TrainConfig, run: Path) -> dict:
    print(f"distilling on {train.tokens:,} tokens", flush=True)
    result = run_distill(train)
    student = run / "student"
    if not student.is_symlink():
        student.symlink_to(Path("distill") / "student")
    return {"student": "student", "steps": result.steps, "tokens": result.tokens, "val_loss": result.val_loss}


def evaluate_stage(original: str, teacher: str, run: Path, tokens: TokenData, val_seqs: int, seq_len: int, prompt: str,
                   sizes: dict, config, device: torch.device, record: Record) -> dict:
    """metrics.json: every model measured on the same held-out windows."""
    start, val = time.time(), tokens.fixed("val", val_seqs, seq_len)
    n_val = int(val["input_ids"][:, 1:].numel() if val.get("loss_mask") is None else val["loss_mask"].sum())
    print(f"evaluating teacher, pruned and distilled models on {n_val:,} held-out tokens", flush=True)
    distilled = [s["outputs"] for name, s in record.stages.items() if name.split("-")[0] == "distill"]
    metrics = {"tokens": sum(d["tokens"] for d in distilled), "teacher_spec": str(original), "target": sizes,
               "device": str(device), "stages": len(distilled),
               "correction_tokens": record.stages.get("correct", {}).get("outputs", {}).get("tokens", 0),
               "target_desc": ", ".join(f"{k} {getattr(config, k)}→{v}" for k, v in sizes.items()
                                        if v != getattr(config, k)),
               "val_tokens": n_val, "prompt": prompt, "continuation_prompt": CONTINUATION}
    models = [("teacher", teacher), ("pruned", run / "pruned"), ("distilled", run / "student")]
    for name, spec in models + [("original_teacher", original)] * (teacher != original):
        metrics[name] = measure(spec, val, device, prompt, speed_tokens=32)
        print(f"  {name:>9}: {metrics[name]['params']:,} params, val loss {metrics[name]['val_loss']:.3f}, "
              f"{metrics[name]['gen_tokens_per_s']:.1f} tok/s", flush=True)
    metrics["timings_s"] = {**record.seconds(), "evaluate": round(time.time() - start, 1)}
    write_json(run / "metrics.json", metrics)
    d, t = metrics["distilled"], metrics["teacher"]
    write_model_card(run / "student", teacher=str(original), run=run / "distill", name=run.name,
                     metrics={"validation loss (held-out windows of this run)": round(d["val_loss"], 4),
                              "perplexity": round(d["ppl"], 2), "teacher's validation loss": round(t["val_loss"], 4),
                              "greedy generation (tokens/s, this machine)": round(d["gen_tokens_per_s"], 1)})
    return {"metrics": "metrics.json"}


# ---------------------------------------------------------------- helpers

HEADS_FIRST = ["num_key_value_heads", "num_attention_heads", "hidden_size", "intermediate_size", "num_hidden_layers"]


def stage_targets(config, sizes: dict[str, int], target: dict[str, int], stages: int) -> list[dict[str, int]]:
    """The target of each of `stages` rounds: each size a geometric share of the way from the teacher's to the
    final one (query heads a multiple of the KV heads, multiples of 8 kept), the last round the target itself."""
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise MinitronError(f"--stages must be a positive whole number, not {stages!r}")
    result = []
    for k in range(1, stages):
        step = {}
        for name in sorted(target, key=HEADS_FIRST.index):  # KV heads, then query heads, then what follows them
            start, end = getattr(config, name), sizes[name]
            value = start * (end / start) ** (k / stages)
            heads = {**sizes, **step}["num_attention_heads"]
            unit = ({**sizes, **step}["num_key_value_heads"] if name == "num_attention_heads"
                    else 8 if start % 8 == 0 and end % 8 == 0 else 1)
            if name == "hidden_size" and end % sizes["num_attention_heads"] == 0:  # some families need it
                unit = math.lcm(unit, heads)
            step[name] = min(start, max(end, unit * round(value / unit)))
        result.append(step)
    result.append(dict(target))
    previous = {n: getattr(config, n) for n in target}
    for step in result:
        if step == previous:
            raise MinitronError(f"--stages {stages} leaves a round with nothing to prune (sizes {step}); the target is "
                                "too close to the teacher for that many rounds: lower --stages")
        previous = step
    return result


def split_steps(distill: TrainConfig, tokens: TokenData, stages: int) -> tuple[int, list[int]]:
    """Tokens per optimiser step, and the step each round ends at (from 0): the distillation's steps split
    evenly, so that S rounds train on as many tokens as one."""
    tokens_per_step = make_plan(distill, tokens.num_tokens("train"), tokens.num_tokens("val"), 1,
                                tokens.path).tokens_per_step
    steps = [distill.tokens // tokens_per_step * k // stages for k in range(stages + 1)]
    if min(b - a for a, b in zip(steps, steps[1:])) < 1:
        raise MinitronError(f"--distill.tokens {distill.tokens:,} is fewer than one optimiser step "
                            f"({tokens_per_step:,} tokens) per stage; raise it or lower --stages")
    return tokens_per_step, steps


def check_correction(n: int, lr: float, lora_rank: int, train_tokens: int) -> None:
    for name, value in (("correct_teacher", n), ("correct_lora_rank", lora_rank)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MinitronError(f"--{name.replace('_', '-')} must be a whole number, 0 or more, not {value!r}")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise MinitronError(f"--correct-lr must be a positive number, not {lr!r}")
    if n > train_tokens:
        raise MinitronError(f"the data has {train_tokens:,} training tokens, fewer than the {n:,} of "
                            "--correct-teacher; add data or lower it")


def check_disk(run: Path, student_params: int, keep_checkpoints: int) -> None:
    """Pruned model + final student + checkpoints (weights and two AdamW moments), fp32, with a margin."""
    need = int(student_params * 4 * (2 + 3 * keep_checkpoints) * 1.2)
    where = next(p for p in [run, *run.parents] if p.exists())
    free = shutil.disk_usage(where).free
    if free < need:
        raise MinitronError(f"no disk space for this run: it needs about {need / 2**30:.1f} GiB in {run}, "
                            f"{free / 2**30:.1f} GiB are free")


def measure(spec: str | Path, val: dict, device: torch.device, prompt: str, speed_tokens: int) -> dict:
    """Parameters, validation loss/perplexity (the LM loss `minitron eval` reports), generation speed and one
    sample reply of a model."""
    model, tok = load_model(spec, device), load_tokenizer(spec)
    loss = lm_loss(model, windows_in_batches(val, 4))
    result = {"params": count_params(model), "val_loss": loss, "ppl": float(torch.tensor(loss).exp()),
              "gen_tokens_per_s": generation_speed(model, tok, new_tokens=speed_tokens),
              "sample": generate_reply(model, tok, [{"role": "user", "content": prompt}], max_new_tokens=48),
              "continuation": continue_text(model, tok, CONTINUATION)}
    del model
    gc.collect()
    return result


@torch.no_grad()
def continue_text(model, tokenizer, text: str, new_tokens: int = 32, repetition_penalty: float = 1.3) -> str:
    """Greedy continuation of plain text (no chat template); the penalty keeps weak models out of loops."""
    inputs = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, repetition_penalty=repetition_penalty,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
