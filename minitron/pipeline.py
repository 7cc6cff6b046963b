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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

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
from minitron.importance import HEAD_SCORE, HIDDEN_SCORE, Agg, Criterion, HeadScore, HiddenScore, score
from minitron.io import check_run_dir, mark, output_lock, remove, write_json
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.prune import LayerCriterion, check_target, params_of, parse_layers, prune, target_config
from minitron.report import write_report
from minitron.search import SEARCH_TOLERANCE, search, shapes_within
from minitron.tasks import check_tasks, main_score, run_tasks
from minitron.tracking import check_report_to

DEFAULT_PROMPT = "What is a Python list? Answer in one sentence."
UNRECORDED = ("student", "out", "resume", "device", "report_to")  # paths in the run; what a resume may change
CONTINUATION = "A Python list is"  # plain text, no chat template: what distillation on documents teaches
SET_BY_COMPRESS = ("student", "out", "teacher", "data", "device", "resume", "overwrite", "report_to")  # of distill


def compress(teacher: str = "default", target: dict[str, int] | None = None, drop_layers: str | None = None,
             criterion: Criterion = "activation", seq_agg: Agg = "mean", batch_agg: Agg = "l2",
             hidden_score: HiddenScore = HIDDEN_SCORE, head_score: HeadScore = HEAD_SCORE,
             layer_criterion: LayerCriterion = "block", out: Path | None = None, data: Path | None = None,
             calib_seqs: int = 32, val_seqs: int = 32, seq_len: int | None = None, prompt: str = DEFAULT_PROMPT,
             distill: TrainConfig = TrainConfig(), device: str = "auto", resume: bool = False,
             overwrite: bool = False, report_to: list[Literal["tensorboard", "wandb"]] | None = None,
             params: float | None = None, search_top: int = 4, search_tokens: int = 65536,
             correct_teacher: int = 0, correct_lr: float = 1e-4, correct_lora_rank: int = 0,
             stages: int = 1, tasks: list[str] | None = None, tasks_limit: int | None = None) -> dict:
    """Score, prune to a target (or to the shape a search finds), distil from the teacher, evaluate all three
    models and write a report.

    Args:
        teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory, a Hub id (org/name) or a .gguf file
        target: student sizes, e.g. hidden_size=384,intermediate_size=1024,num_attention_heads=6 (this,
            --drop-layers or --params is required)
        drop_layers: explicit decoder layers to remove, e.g. 16-23 (instead of choosing them by --layer-criterion)
        criterion: width importance: activation (the papers'), wanda, magnitude, taylor or random
        seq_agg: activation aggregation over the sequence: mean (of |x|), l2 or var
        batch_agg: activation aggregation over the batch: l2, mean or var
        hidden_score: activation score of hidden channels: norms (each layer's two norms scored on their own, then
            summed: the papers') or pooled (every norm's samples in one statistic, the final norm included)
        head_score: activation score of attention heads: o_proj (the head's output projected through its o_proj
            columns: best after distillation) or attn (the head's output before o_proj: the papers')
        layer_criterion: which layers a smaller num_hidden_layers removes: block (the contiguous block whose
            removal raises the LM loss least), loss (per layer), bi (Block Influence) or random
        out: run directory (default: runs/<teacher name>-pruned)
        data: token data directory from `minitron data` (default: the default corpus in the teacher's tokenizer)
        calib_seqs: calibration sequences for importance scoring (of --seq-len tokens)
        val_seqs: held-out sequences every model is evaluated on (of --seq-len tokens)
        seq_len: tokens per calibration and held-out sequence (default: the distillation's, --distill.seq-len);
            fixing it keeps the reported losses comparable when the training length changes
        prompt: the prompt each model answers in the report
        distill: distillation settings (`--distill.lr 3e-4`, or a `distill:` section in YAML); student, out,
            teacher, data, device, resume and overwrite are set by compress
        device: auto, cpu or cuda
        resume: continue an interrupted run (recorded stages are kept, distillation continues from its checkpoint)
        overwrite: delete an existing run directory and start again
        report_to: also send the distillation's metrics (and settings) to TensorBoard (RUN/distill/tensorboard)
            and/or Weights & Biases
        params: instead of --target, a parameter budget (a fraction of the teacher's, or a count): the student's
            shape is searched (`minitron search`) and the winner distilled
        search_top: with --params: candidates distilled briefly before the winner is chosen (0: zero-shot only)
        search_tokens: with --params: training tokens of each candidate's short distillation
        correct_teacher: tokens of teacher correction before scoring (fine-tuning the teacher on the data with
            cross-entropy, `minitron correct`); 0: use the teacher as it is
        correct_lr: peak learning rate of the teacher correction
        correct_lora_rank: correct the teacher through LoRA adapters of this rank (merged), 0: all its weights
        stages: prune and distil in this many rounds, each a geometric share of the way to the target, splitting
            the distillation tokens evenly (1: one round)
        tasks: benchmark tasks (comma-separated, as `minitron eval --tasks`) run on the teacher, the pruned and the
            distilled model through lm-evaluation-harness; their table goes into the report
        tasks_limit: the first N documents of each task (default: all)
    """
    if not target and not drop_layers and params is None:
        raise MinitronError("compress needs --target, e.g. hidden_size=384,intermediate_size=1024, --params 0.5 "
                            "or --drop-layers "
                            "(or --config configs/demo.yaml)")
    if target and params is not None:
        raise MinitronError("give --target or --params, not both")
    for name in SET_BY_COMPRESS:
        if getattr(distill, name) != getattr(TrainConfig(), name):
            raise MinitronError(f"compress sets distill.{name} itself; leave it out (use the top-level settings)")
    check_report_to(report_to)
    benchmarks = check_tasks(tasks, tasks_limit) if tasks is not None else []
    run = Path(out) if out is not None else Path("runs") / (Path(teacher).name.removesuffix(".gguf") + "-pruned")
    check_run_dir(run, resume, overwrite)
    # the front door: every check that needs no output comes before anything is written
    config = load_config(teacher)
    drop = parse_layers(drop_layers, config.num_hidden_layers) if drop_layers else None
    sizes = check_target(config, target or {}, drop) if params is None else None
    seq_len = distill.seq_len if seq_len is None else seq_len
    for length in {seq_len, distill.seq_len}:
        check_seq_len(config, length, teacher)
    tokens = TokenData.open(data if data is not None else default_data(teacher))
    tokens.check_model(load_tokenizer(teacher), config.vocab_size, teacher)
    if tokens.num_tokens("train") < distill.tokens:
        raise MinitronError(f"the data has {tokens.num_tokens('train'):,} training tokens, fewer than the "
                            f"{distill.tokens:,} requested; add data or lower --distill.tokens")
    if stages != 1 and (params is not None or drop_layers):
        raise MinitronError("--stages needs an explicit --target (a searched shape or --drop-layers is reached in "
                            "one round)")
    targets = [target or {}] if params is not None else stage_targets(config, sizes, target or {}, stages)
    tokens_per_step, steps = split_steps(distill, tokens, stages)
    check_correction(correct_teacher, correct_lr, correct_lora_rank, tokens.num_tokens("train"))
    student_params = (shapes_within(config, params, SEARCH_TOLERANCE)[0] if params is not None else
                      params_of(target_config(config, sizes, drop)) if len(targets) == 1 else
                      sum(params_of(target_config(config, check_target(config, t))) for t in targets))
    check_disk(run, student_params + (params_of(config) if correct_teacher else 0), distill.keep_checkpoints)
    with output_lock(run):  # one writer per run directory
        check_run_dir(run, resume, overwrite)  # again, under the lock
        if overwrite and run.exists():
            remove(run)
        run.mkdir(parents=True, exist_ok=True)
        mark(run)
        pruning = dict(drop_layers=drop_layers, criterion=criterion, seq_agg=seq_agg, batch_agg=batch_agg,
                       hidden_score=hidden_score, head_score=head_score, layer_criterion=layer_criterion)
        plan = Recipe(targets, steps, tokens_per_step, sizes, drop, pruning,
                      None if params is None else {"params": params, "search_top": search_top,
                                                   "search_tokens": search_tokens},
                      {"tokens": correct_teacher, "lr": correct_lr, "lora_rank": correct_lora_rank},
                      benchmarks, tasks_limit)
        train = replace(distill, data=str(tokens.path), device=device, report_to=report_to)
        report = run_stages(run, teacher, config, tokens, data, plan, train, calib_seqs, val_seqs, seq_len, prompt,
                            device)
    print(f"\nwrote {report} — distilled student in {run / 'student'}")
    return json.loads((run / "metrics.json").read_text())


@dataclass
class Recipe:
    """What compress does, decided and checked at its front door (compress's flags, in one place)."""

    targets: list[dict[str, int]]  # each round's target (the last: --target itself; one empty one when searched)
    steps: list[int]  # the optimiser step each round's distillation ends at, from 0
    tokens_per_step: int  # of the distillation
    sizes: dict[str, int] | None  # the final student's sizes (None until a search finds them)
    drop: list[int] | None  # explicit decoder layers to remove (--drop-layers)
    pruning: dict  # drop_layers, criterion, seq_agg, batch_agg, hidden_score, head_score, layer_criterion
    search: dict | None  # params, search_top, search_tokens (None: an explicit target)
    correction: dict  # tokens (0: none), lr, lora_rank of the teacher correction
    tasks: list[str] = field(default_factory=list)  # benchmark tasks run on the three models (none: no tasks stage)
    tasks_limit: int | None = None  # the first N documents of each task (None: all)


def run_stages(run: Path, teacher: str, config, tokens: TokenData, data: Path | None, plan: Recipe,
               train: TrainConfig, calib_seqs: int, val_seqs: int, seq_len: int, prompt: str, device: str) -> Path:
    """The chain of stages in RUN, each recorded in stages.json and skipped when a resume finds it done: data,
    teacher correction, then per round score + prune (or the search) and distil, then evaluate and the benchmark
    tasks; the report."""
    record, rounds = Record(run), len(plan.targets)
    extra = {k: v for k, v in (("correct_teacher", plan.correction["tokens"]), ("stages", rounds)) if v not in (0, 1)}
    record.stage("data", {"teacher": teacher, "data": str(data) if data else None, **extra},
                 lambda: {"data": str(tokens.path), "train_tokens": tokens.num_tokens("train")})
    source = teacher  # what is scored, pruned and distilled from: the teacher, or the corrected teacher
    if plan.correction["tokens"]:
        c = plan.correction
        done = record.stage("correct", c, lambda: correct_stage(teacher, tokens, run, c["tokens"], c["lr"],
                                                                c["lora_rank"], train, device))
        source = str(run / done["model"])
    sizes, model = plan.sizes, source
    for k, (target, start, end) in enumerate(zip(plan.targets, plan.steps, plan.steps[1:]), 1):
        where, suffix = (run, "") if k == rounds else (run / f"stage-{k}", f"-{k}")
        where.mkdir(exist_ok=True)
        if plan.search is not None:  # the shape is searched; the search prunes the winner
            criteria = {k: v for k, v in plan.pruning.items() if k != "drop_layers"}
            found = record.stage("search", {**plan.search, "calib_seqs": calib_seqs, "val_seqs": val_seqs,
                                            "seq_len": seq_len, **beyond(criteria, PRUNING)},
                                 lambda: search_stage(source, plan.search["params"], tokens, run, calib_seqs,
                                                      val_seqs, seq_len, plan.search["search_top"],
                                                      plan.search["search_tokens"], train, device, criteria))
            sizes = check_target(config, found["target"])
        else:
            score_and_prune(record, suffix, model, target, plan, tokens, where, calib_seqs, seq_len, device)
        tokens_k = train.tokens if rounds == 1 else (end - start) * plan.tokens_per_step
        round_train = replace(train, tokens=tokens_k, global_batch_tokens=train.batch_tokens(),  # the whole budget's
                              student=str(where / "pruned"), out=where / "distill", teacher=source,
                              resume=(where / "distill").exists())
        record.stage("distill" + suffix, {k: v for k, v in asdict(round_train).items() if k not in UNRECORDED},
                     lambda: distill_stage(round_train, where))  # paths inside the run are left out: it may move
        model = str(where / "student")
    record.stage("evaluate", {"val_seqs": val_seqs, "prompt": prompt},
                 lambda: evaluate_stage(teacher, source, run, tokens, val_seqs, seq_len, prompt, sizes, config,
                                        pick_device(device), record))
    if plan.tasks:  # a stage of its own: a finished run resumed with --tasks adds the benchmarks
        record.stage("tasks", {"tasks": plan.tasks, "limit": plan.tasks_limit},
                     lambda: tasks_stage(teacher, source, run, plan.tasks, plan.tasks_limit, pick_device(device)))
    return write_report(run)


def score_and_prune(record: "Record", suffix: str, model: str, target: dict, plan: Recipe, tokens: TokenData,
                    where: Path, calib_seqs: int, seq_len: int, device: str) -> None:
    """One round's score and prune stages: `model` (the teacher, or the previous round's student) to `target`."""
    config = load_config(model)
    first = not suffix and len(plan.targets) == 1  # explicit --drop-layers only in a single round
    drop = plan.drop if first else None
    pruning = plan.pruning if first else {**plan.pruning, "drop_layers": None}
    sizes = check_target(config, target, drop)
    scoring = scores_needed(config, sizes, drop, pruning["criterion"], pruning["layer_criterion"])
    record.stage("score" + suffix, {"calib_seqs": calib_seqs, "seq_len": seq_len, **beyond(scoring, SCORING)},
                 lambda: score_stage(model, tokens, where, calib_seqs, seq_len, device, **scoring))
    record.stage("prune" + suffix, {"target": sizes, **beyond(pruning, PRUNING)},
                 lambda: prune_stage(model, target, where, device, pruning))


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
                     global_batch_tokens=distill.batch_tokens(), device=device,
                     resume=(run / "correct").exists())
    return {"model": "correct/student", "tokens": result["tokens"], "steps": result["steps"],
            "val_loss": result["val_loss"]}


def scores_needed(config, sizes: dict, drop: list[int] | None, criterion: str, layer_criterion: str) -> dict:
    """The scores `prune` needs for this recipe: the width criterion, and the layer-removal losses (or random
    layer scores) when num_hidden_layers shrinks without explicit --drop-layers."""
    k = config.num_hidden_layers - sizes["num_hidden_layers"]
    depth = drop is None and k > 0
    by_loss = depth and layer_criterion in ("block", "loss")
    return {"criteria": [criterion] + (["random"] if depth and layer_criterion == "random" else []),
            "layer_loss": by_loss, "block_sizes": [k] if by_loss and k > 1 else None}


SCORING = {"criteria": ["activation"], "layer_loss": False, "block_sizes": None}  # the default recipe's
PRUNING = dict(drop_layers=None, criterion="activation", seq_agg="mean", batch_agg="l2", hidden_score=HIDDEN_SCORE,
               head_score=HEAD_SCORE, layer_criterion="block")


def beyond(settings: dict, defaults: dict) -> dict:
    """The settings that differ from the defaults: what a stage records (so a run recorded before a setting
    existed still resumes)."""
    return {k: v for k, v in settings.items() if v != defaults[k]}


def score_stage(teacher: str, tokens: TokenData, run: Path, calib_seqs: int, seq_len: int, device: str,
                criteria: list[str], layer_loss: bool, block_sizes: list[int] | None) -> dict:
    print(f"scoring importance ({', '.join(criteria)}) on {calib_seqs} calibration sequences", flush=True)
    shutil.rmtree(run / "scores", ignore_errors=True)  # left by an interrupted stage
    score(teacher, data=tokens.path, out=run / "scores", calib_seqs=calib_seqs, seq_len=seq_len, criteria=criteria,
          layer_loss=layer_loss, layer_loss_seqs=min(8, calib_seqs), block_sizes=block_sizes, device=device)
    return {"scores": "scores"}


def prune_stage(teacher: str, target: dict[str, int], run: Path, device: str, pruning: dict) -> dict:
    shutil.rmtree(run / "pruned", ignore_errors=True)  # left by an interrupted stage
    result = prune(teacher, target=target, out=run / "pruned", scores=run / "scores", device=device, **pruning)
    return {"pruned": "pruned", "params": result.get("params_after")}


def search_stage(teacher: str, params: float, tokens: TokenData, run: Path, calib_seqs: int, val_seqs: int,
                 seq_len: int, top: int, search_tokens: int, distill: TrainConfig, device: str, criteria: dict) -> dict:
    """The best shape under the budget (RUN/search, resumable), pruned into RUN/pruned by `criteria` (criterion,
    aggregations, hidden and head scores, layer criterion)."""
    shutil.rmtree(run / "pruned", ignore_errors=True)  # left by an interrupted stage
    found = search(params, teacher, out=run / "pruned", work=run / "search", data=tokens.path, calib_seqs=calib_seqs,
                   val_seqs=val_seqs, seq_len=seq_len, distill_top=top, distill_tokens=search_tokens,
                   distill=replace(distill, eval_every=0), device=device, **criteria)
    return {"pruned": "pruned", "target": found["target"], "params": found["params"], "search": "search/search.json"}


def tasks_stage(original: str, teacher: str, run: Path, tasks: list[str], limit: int | None,
                device: torch.device) -> dict:
    """RUN/tasks.json: the benchmark tasks' scores of the teacher (the one distilled from), the pruned and the
    distilled model, each loaded in turn; the student's model card gains its scores."""
    print(f"running {', '.join(tasks)} on the teacher, pruned and distilled models"
          + (f" (first {limit} documents of each)" if limit else ""), flush=True)
    results = {}
    for name, spec in (("teacher", teacher), ("pruned", run / "pruned"), ("distilled", run / "student")):
        model = load_model(spec, device)
        results[name] = run_tasks(model, load_tokenizer(spec), tasks, limit)
        del model
        gc.collect()
    write_json(run / "tasks.json", {"tasks": tasks, "limit": limit, "results": results})
    write_student_card(run, original, json.loads((run / "metrics.json").read_text()), results["distilled"])
    return {"tasks": "tasks.json"}


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
    write_student_card(run, original, metrics)
    return {"metrics": "metrics.json"}


def write_student_card(run: Path, original: str, metrics: dict, tasks: dict[str, dict] | None = None) -> None:
    """The distilled student's model card, with its figures from metrics.json and, when they ran, its benchmark
    scores (`run_tasks` results)."""
    d, t = metrics["distilled"], metrics["teacher"]
    figures = {"validation loss (held-out windows of this run)": round(d["val_loss"], 4),
               "perplexity": round(d["ppl"], 2), "teacher's validation loss": round(t["val_loss"], 4),
               "greedy generation (tokens/s, this machine)": round(d["gen_tokens_per_s"], 1)}
    for task, result in (tasks or {}).items():
        metric, value, _ = main_score(result)
        figures[f"{task}: {metric}, zero-shot, {result['samples']} documents (lm-evaluation-harness)"] = round(value, 4)
    write_model_card(run / "student", teacher=str(original), run=run / "distill", name=run.name, metrics=figures)


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
