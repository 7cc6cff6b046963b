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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from huggingface_hub import EvalResult

from minitron.arch import arch_of, count_params, head_dim
from minitron.card import card_name, derived_name, stored_params, write_model_card
from minitron.chat.generate import generate_reply
from minitron.correct import CORRECT_LR, correct
from minitron.data import TokenData, default_data
from minitron.distill import TrainConfig
from minitron.distill.config import distill_words, recorded, refuse_located, schedule
from minitron.distill.loop import distill as run_distill
from minitron.errors import MinitronError, real_number, whole_number
from minitron.eval import EvalConfig, generation_speed, ood_windows, summarise, window_sums, windows_info
from minitron.importance import score
from minitron.io import check_run_dir, mark, output_lock, remove, write_json
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.prune import PruneConfig, ScoreNeeds, check_target, params_of, target_config
from minitron.prune.plan import describe
from minitron.prune import prune as prune_model
from minitron.record import Record, record_path
from minitron.report import write_report
from minitron.search import DISTILL_TOKENS, DISTILL_TOP, SEARCH_TOLERANCE, Space, search
from minitron.stats import ratio_ci
from minitron.tasks import MC_TASKS, benchmark_gap_ci, dataset_id, main_score, paired_benchmarks, run_tasks

DEFAULT_PROMPT = "What is a Python list? Answer in one sentence."
REPLY_TOKENS = 48  # the most tokens of the reply to the report's prompt
CONTINUATION = "A Python list is"  # plain text, no chat template: what distillation on documents teaches
COMPRESS_EVAL = EvalConfig(tasks=list(MC_TASKS), limit=100)  # compress's default: the bundled benchmarks, 100 documents


def compress(teacher: str = "default", target: dict[str, int] | None = None, params: float | None = None,
             out: Path | None = None, data: Path | None = None, prune: PruneConfig = PruneConfig(),
             eval: EvalConfig = COMPRESS_EVAL, prompt: str = DEFAULT_PROMPT, distill: TrainConfig = TrainConfig(),
             device: str = "auto", resume: bool = False, overwrite: bool = False, search_top: int = DISTILL_TOP,
             search_tokens: int = DISTILL_TOKENS, correct_teacher: int = 0, correct_lr: float = CORRECT_LR,
             correct_lora_rank: int = 0, stages: int = 1, dry_run: bool = False) -> dict:
    """Score, prune to a target (or to the shape a search finds), distil from the teacher, evaluate all three
    models and write a report.

    Args:
        teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory, a Hub id (org/name) or a .gguf file
        target: student sizes, e.g. hidden_size=384,intermediate_size=1024,num_attention_heads=6 (this,
            --params or --prune.drop-layers is required)
        params: instead of --target, a parameter budget (a fraction of the teacher's, or a count): the student's
            shape is searched (`minitron search`) and the winner distilled
        out: run directory (default: runs/<teacher name>-pruned)
        data: token data directory from `minitron data` (default: the default corpus in the teacher's tokenizer)
        prune: how the teacher is pruned and the calibration text (`--prune.head-score attn`, a `prune:` section
            in YAML); its seq_len is also the length of the held-out sequences
        eval: what the teacher, the pruned and the distilled model are measured on (`--eval.tokens 16384`, an `eval:`
            section in YAML; `minitron eval --help` for each): tokens of the test split (windows of --prune.seq-len
            spread over every test document) and as many of out-of-domain English (ood), and the benchmark tasks run
            through lm-evaluation-harness (tasks, default the bundled multiple-choice ones, [] for none; limit: their
            first N documents; include_path: a directory of your own task YAMLs); the report shows them all
        prompt: the prompt each model answers in the report
        distill: distillation settings (`--distill.lr 3e-4`, or a `distill:` section in YAML); compress sets where
            its models, data and run are (student, out, teacher, data, device, resume, overwrite) itself
        device: auto, cpu or cuda
        resume: continue an interrupted run (recorded stages are kept, distillation continues from its checkpoint)
        overwrite: delete an existing run directory and start again
        search_top: with --params: candidates distilled briefly before the winner is chosen (0: zero-shot only)
        search_tokens: with --params: training tokens of each candidate's short distillation
        correct_teacher: tokens of teacher correction before scoring (fine-tuning the teacher on the data with
            cross-entropy, `minitron correct`); 0: use the teacher as it is
        correct_lr: peak learning rate of the teacher correction
        correct_lora_rank: correct the teacher through LoRA adapters of this rank (merged), 0: all its weights
        stages: prune and distil in this many rounds, each a geometric share of the way to the target, splitting
            the distillation tokens evenly (1: one round)
        dry_run: check every setting, print what the run would do (each round's shape and parameters, or the
            search; the distillation's steps, batch and learning rate; what is evaluated) and stop: no weights are
            loaded and nothing is written (but the default corpus, which any command builds into the minitron
            cache on first use: `make` has built it)
    """
    run = Path(out) if out is not None else Path("runs") / (Path(teacher).name.removesuffix(".gguf") + "-pruned")
    recipe = resolve(teacher, target, params, run, data, prune, distill, device, search_top, search_tokens,
                     Correction(correct_teacher, correct_lr, correct_lora_rank),
                     eval, prompt, stages, resume, overwrite)
    plan = show_plan(recipe, run, dry_run)
    if dry_run:
        return plan
    with output_lock(run):  # one writer per run directory
        check_run_dir(run, resume, overwrite)  # again, under the lock
        if overwrite and run.exists():
            remove(run)
        run.mkdir(parents=True, exist_ok=True)
        mark(run)
        report = run_stages(run, recipe)
    print(f"\nwrote {report} — distilled student in {run / 'student'}")
    return json.loads((run / "metrics.json").read_text())


@dataclass(frozen=True)
class Correction:
    """The teacher correction before scoring (`minitron correct`)."""

    tokens: int  # 0: none
    lr: float
    lora_rank: int  # 0: all the teacher's weights

    def check(self, train_tokens: int) -> "Correction":
        whole_number(self.tokens, "--correct-teacher", 0)
        whole_number(self.lora_rank, "--correct-lora-rank", 0)
        real_number(self.lr, "--correct-lr", lambda v: v > 0, "a positive number")
        if self.tokens > train_tokens:
            raise MinitronError(f"the data has {train_tokens:,} training tokens, fewer than the {self.tokens:,} of "
                                "--correct-teacher; add data or lower it")
        return self


@dataclass(frozen=True)
class Recipe:
    """Everything compress does, resolved and checked once at its front door (`resolve`) and handed on: nothing
    below re-checks or re-derives it."""

    teacher: str  # as given ('default', a directory, a Hub id, a .gguf)
    config: object  # the teacher's config
    tokens: TokenData  # the data, checked against the teacher
    data: Path | None  # --data as given (None: the default corpus)
    prune: PruneConfig  # validated against the teacher
    targets: list[dict[str, int]]  # each round's target (the last: --target itself; one empty one when searched)
    sizes: dict[str, int] | None  # the final student's sizes (None until a search finds them)
    steps: list[int]  # the optimiser step each round's distillation ends at, from 0
    tokens_per_step: int  # of the distillation
    train: TrainConfig  # the distillation, its batch (and, for a target, its learning rate) made explicit
    search: dict | None  # params, search_top, search_tokens (None: an explicit target)
    search_train: TrainConfig  # the candidates' short distillations (their batch follows their own budget)
    correction: Correction
    evaluation: EvalConfig  # checked: its tasks named
    prompt: str  # the prompt each model answers in the report
    device: str
    shapes: list[dict]  # each round's {"sizes", "params"}, its target on the teacher's config (none when searched)
    searched: tuple[int, int | None] | None  # the search's budget and its number of shapes (a hybrid's: None, unknown)


def resolve(teacher: str, target: dict[str, int] | None, params: float | None, run: Path, data: Path | None,
            prune: PruneConfig, distill: TrainConfig, device: str, search_top: int, search_tokens: int,
            correction: Correction, evaluation: EvalConfig, prompt: str, stages: int, resume: bool,
            overwrite: bool) -> Recipe:
    """compress's front door: every setting checked and every default that depends on others decided, before
    anything is written."""
    if not target and not prune.drop_layers and params is None:
        raise MinitronError("compress needs --target, e.g. hidden_size=384,intermediate_size=1024, --params 0.5 "
                            "or --prune.drop-layers (or --config configs/demo.yaml)")
    if target and params is not None:
        raise MinitronError("give --target or --params, not both")
    if params is not None:  # the search's own settings, named as compress names them
        whole_number(search_top, "--search-top", 0)
        whole_number(search_tokens, "--search-tokens", 1)
    if stages != 1 and (params is not None or prune.drop_layers):
        raise MinitronError("--stages needs an explicit --target (a searched shape or --prune.drop-layers is reached "
                            "in one round)")
    refuse_located(distill, "compress")
    replace(distill, student=str(run / "pruned"), out=run / "distill", teacher=teacher).validate("distill.")
    evaluation.refuse_eval_only("compress")
    evaluation = evaluation.validate("eval.")
    check_run_dir(run, resume, overwrite)
    config = load_config(teacher)
    prune.validate(config)
    sizes = check_target(config, target or {}, prune.drop_layers) if params is None else None
    # the final shape refused as given, before any intermediate round's shape derived from it
    final = round_shape(config, sizes, prune.drop_layers) if sizes is not None else None
    for length in {prune.seq_len, distill.seq_len}:
        check_seq_len(config, length, teacher)
    tokens = TokenData.open(data if data is not None else default_data(teacher))
    tokens.check_model(load_tokenizer(teacher), config.vocab_size, teacher)
    if tokens.num_tokens("train") < distill.tokens:
        raise MinitronError(f"the data has {tokens.num_tokens('train'):,} training tokens, fewer than the "
                            f"{distill.tokens:,} requested; add data or lower --distill.tokens")
    targets = [target or {}] if params is not None else stage_targets(config, sizes, target or {}, stages)
    train = replace(distill, data=str(tokens.path), device=device, global_batch_tokens=distill.batch_tokens())
    if sizes is not None:  # the learning rate follows the student's width (a searched width: when it is found)
        train = replace(train, lr=train.resolved(sizes["hidden_size"]).lr)
    tokens_per_step, steps = split_steps(train, tokens, stages)
    correction.check(tokens.num_tokens("train"))
    if params is not None:  # a hybrid's shapes with fewer layers are counted once scored (`search.Space`)
        space = Space(config, params, SEARCH_TOLERANCE)
        shapes, searched = [], (space.budget, None if space.depths else len(space.every()))
    else:  # more than one round: no --prune.drop-layers (refused above)
        shapes, searched = [round_shape(config, check_target(config, t), None) for t in targets[:-1]] + [final], None
    student_params = searched[0] if searched else sum(s["params"] for s in shapes)
    check_disk(run, student_params + (params_of(config) if correction.tokens else 0), distill.keep_checkpoints)
    return Recipe(teacher, config, tokens, data, prune, targets, sizes, steps, tokens_per_step, train,
                  None if params is None else {"params": params, "search_top": search_top,
                                               "search_tokens": search_tokens},
                  replace(distill, eval_every=0), correction, evaluation, prompt, device, shapes, searched)


def round_shape(config, sizes: dict[str, int], drop_layers) -> dict:
    """A round's sizes and the student's parameter count; a shape transformers refuses is refused in one line."""
    return {"sizes": sizes, "params": params_of(target_config(config, sizes, drop_layers))}


def show_plan(r: Recipe, run: Path, dry_run: bool) -> dict:
    """What the run in `run` will do, printed before it starts (and all that --dry-run does), and returned."""
    before, rounds = params_of(r.config), len(r.targets)
    train = replace(r.train, teacher=r.teacher).on_device(pick_device(r.device))
    lines = [f"compress --dry-run: the plan for {run} (nothing written)" if dry_run else
             f"compress: the plan for {run}",
             f"teacher {r.teacher}: {before:,} parameters; data {r.tokens.path}: "
             f"{r.tokens.num_tokens('train'):,} training tokens"]
    if r.correction.tokens:
        how = f"LoRA rank {r.correction.lora_rank}" if r.correction.lora_rank else "all its weights"
        lines.append(f"teacher correction: {r.correction.tokens:,} tokens at lr {r.correction.lr:g} ({how})")
    if r.searched is not None:
        budget, candidates = r.searched
        counted = f"{candidates} shapes" if candidates is not None else \
            "the shapes (of layers that differ in kind: counted once scored)"
        lines.append(f"search: {counted} within ±{SEARCH_TOLERANCE:.0%} of {budget:,} parameters, "
                     f"ranked zero-shot on dev; the best {r.search['search_top']} distilled on "
                     f"{r.search['search_tokens']:,} tokens each; the winner pruned ({r.prune.criterion} importance)")
    for k, shape in enumerate(r.shapes, 1):
        lines.append(f"round {k} of {rounds}: score ({r.prune.criterion} importance, {r.prune.calib_seqs} "
                     f"calibration sequences of {r.prune.seq_len} tokens) and prune\n"
                     f"{describe(r.config, shape['sizes'], before, shape['params'])}")
    lr = f"lr {train.lr:g}" if train.lr is not None else "lr by the winner's width"
    by_round = f" ({' + '.join(str(b - a) for a, b in zip(r.steps, r.steps[1:]))} by round)" if rounds > 1 else ""
    lines.append(f"distil: {r.steps[-1] * r.tokens_per_step:,} tokens, {r.steps[-1]:,} steps of "
                 f"{r.tokens_per_step:,} tokens{by_round}"
                 f", {lr}, {distill_words({**asdict(train), 'loss': train.loss_name()})}")
    e = r.evaluation
    tasks = f"; tasks {', '.join(e.tasks)}" + (f" ({e.limit} documents each)" if e.limit else "") if e.tasks else ""
    lines.append(f"evaluate: {e.tokens:,} test tokens{' and as many out-of-domain' if e.ood else ''}{tasks}")
    print("\n".join(lines), flush=True)
    return {"dry_run": dry_run, "run": str(run), "teacher_params": before, "targets": r.shapes,
            "search": r.search, "steps": r.steps[-1], "tokens_per_step": r.tokens_per_step, "lr": train.lr}


def run_stages(run: Path, r: Recipe) -> Path:
    """The chain of stages in RUN, each recorded in record.json and skipped when a resume finds it done: data,
    teacher correction, then per round score + prune (or the search) and distil, then evaluate and the benchmark
    tasks; the report."""
    record, rounds = Record(run), len(r.targets)
    record.run("data", {"teacher": r.teacher, "data": r.data, "correct_teacher": r.correction.tokens,
                        "stages": rounds, "search": r.search},
               lambda: {"data": str(r.tokens.path), "train_tokens": r.tokens.num_tokens("train")})
    source = r.teacher  # what is scored, pruned and distilled from: the teacher, or the corrected teacher
    if r.correction.tokens:
        done = record.run("correct", asdict(r.correction), lambda: correct_stage(r.teacher, r.tokens, run, r))
        source = str(run / done["model"])
    sizes, model = r.sizes, source
    for k, (target, start, end) in enumerate(zip(r.targets, r.steps, r.steps[1:]), 1):
        where, suffix = (run, "") if k == rounds else (run / f"stage-{k}", f"-{k}")
        where.mkdir(exist_ok=True)
        if r.search is not None:  # the shape is searched; the search prunes the winner
            found = record.run("search", {**r.search, "prune": asdict(r.prune)},
                               lambda: search_stage(source, run, r))
            sizes = check_target(r.config, found["target"])
        else:
            score_and_prune(record, suffix, model, target, r.prune if rounds == 1 else replace(r.prune,
                            drop_layers=None), r, where)
        round_train = replace(r.train, tokens=r.train.tokens if rounds == 1 else (end - start) * r.tokens_per_step,
                              student=str(where / "pruned"), out=where / "distill", teacher=source,
                              resume=(where / "distill").exists(),
                              name=r.train.name or derived_name(r.teacher, stored_params(where / "pruned")))
        record.run("distill" + suffix, recorded(round_train, run), lambda: distill_stage(round_train, where))
        model = str(where / "student")
    e = r.evaluation  # recorded under the names it had before the eval section, so that earlier runs resume
    record.run("evaluate", {"eval_tokens": e.tokens, "ood": e.ood, "seq_len": r.prune.seq_len, "prompt": r.prompt},
               lambda: evaluate_stage(r.teacher, source, run, r, sizes, record))
    if e.tasks:  # a stage of its own: a finished run resumed with --eval.tasks adds the benchmarks
        record.run("tasks", {"tasks": e.tasks, "limit": e.limit,  # include_path: None in runs from before it
                             "include_path": e.include_path and record_path(e.include_path, run)},
                   lambda: tasks_stage(r.teacher, source, run, e, pick_device(r.device)))
    return write_report(run)


def score_and_prune(record: Record, suffix: str, model: str, target: dict, prune: PruneConfig, r: Recipe,
                    where: Path) -> None:
    """One round's score and prune stages: `model` (the teacher, or the previous round's student) to `target`."""
    config = load_config(model)
    sizes = check_target(config, target, prune.drop_layers)
    needs = prune.needs(config, sizes)
    calibration = {"calib_seqs": prune.calib_seqs, "seq_len": prune.seq_len, "seed": prune.seed}
    record.run("score" + suffix, {**asdict(needs), **calibration},
               lambda: score_stage(model, r.tokens, where, needs, prune, r.device))
    record.run("prune" + suffix, {"target": sizes, "prune": asdict(prune)},
               lambda: prune_stage(model, target, where, prune, r.device))


# ---------------------------------------------------------------- the stages

def correct_stage(teacher: str, tokens: TokenData, run: Path, r: Recipe) -> dict:
    """Teacher correction on the distillation data, at the distillation's sequence length and batch size."""
    c = r.correction
    print(f"correcting the teacher on {c.tokens:,} tokens", flush=True)
    train = replace(TrainConfig(), tokens=c.tokens, lr=c.lr, min_lr=c.lr / 10, seq_len=r.train.seq_len,
                    micro_batch=r.train.micro_batch, global_batch_tokens=r.train.global_batch_tokens,
                    seed=r.train.seed + 1, lora_rank=c.lora_rank, lora_alpha=2.0 * max(c.lora_rank, 1))
    result = correct(teacher, out=run / "correct", data=tokens.path, train=train, device=r.device,
                     resume=(run / "correct").exists())
    return {"model": "correct/student", "tokens": result["tokens"], "steps": result["steps"],
            "val_loss": result["val_loss"]}


def score_stage(teacher: str, tokens: TokenData, run: Path, needs: ScoreNeeds, prune: PruneConfig,
                device: str) -> dict:
    print(f"scoring importance ({', '.join(needs.criteria)}) on {prune.calib_seqs} calibration sequences", flush=True)
    shutil.rmtree(run / "scores", ignore_errors=True)  # left by an interrupted stage
    score(teacher, data=tokens.path, out=run / "scores", calib_seqs=prune.calib_seqs, seq_len=prune.seq_len,
          criteria=list(needs.criteria), layer_loss=needs.layer_loss, layer_loss_seqs=min(8, prune.calib_seqs),
          block_sizes=list(needs.block_sizes) or None, device=device, seed=prune.seed)
    return {"scores": "scores"}


def prune_stage(teacher: str, target: dict[str, int], run: Path, prune: PruneConfig, device: str) -> dict:
    shutil.rmtree(run / "pruned", ignore_errors=True)  # left by an interrupted stage
    result = prune_model(teacher, target=target, out=run / "pruned", prune=prune, scores=run / "scores",
                         device=device)
    return {"pruned": "pruned", "params": result.get("params_after")}


def search_stage(teacher: str, run: Path, r: Recipe) -> dict:
    """The best shape under the budget (RUN/search, resumable), pruned into RUN/pruned by the recipe's criteria."""
    shutil.rmtree(run / "pruned", ignore_errors=True)  # left by an interrupted stage
    found = search(r.search["params"], teacher, out=run / "pruned", work=run / "search", data=r.tokens.path,
                   distill_top=r.search["search_top"], distill_tokens=r.search["search_tokens"],
                   prune=replace(r.prune, drop_layers=None), distill=r.search_train, device=r.device)
    return {"pruned": "pruned", "target": found["target"], "params": found["params"], "search": "search/search.json"}


def tasks_stage(original: str, teacher: str, run: Path, e: EvalConfig, device: torch.device) -> dict:
    """RUN/tasks.json: the benchmark tasks' scores of the teacher (the one distilled from), the pruned and the
    distilled model (`benchmark`); the student's model card gains its scores."""
    print(f"running {', '.join(e.tasks)} on the teacher, pruned and distilled models"
          + (f" (first {e.limit} documents of each)" if e.limit else ""), flush=True)
    saved = benchmark(run_models(teacher, run), e.tasks, e.limit, device, e.include_path)
    write_json(run / "tasks.json", saved)
    write_student_card(run, original, json.loads((run / "metrics.json").read_text()), saved["results"])
    return {"tasks": "tasks.json"}


def run_models(teacher: str, run: Path) -> dict[str, str | Path]:
    """The three models a run measures: the teacher it distilled from, RUN/pruned and RUN/student."""
    return {"teacher": teacher, "pruned": run / "pruned", "distilled": run / "student"}


def benchmark(models: dict[str, str | Path], tasks: list[str], limit: int | None, device: torch.device,
              include_path: Path | None = None) -> dict:
    """The teacher's, the pruned and the distilled model's scores on the tasks (each model loaded in turn), their mean
    accuracies over the multiple-choice tasks, the share of the teacher–pruned gap distillation closed and the paired
    differences (`paired_differences`): tasks.json's contents."""
    start, results = time.time(), {}
    for name, spec in models.items():
        model = load_model(spec, device)
        results[name] = run_tasks(model, load_tokenizer(spec), tasks, limit, include_path=include_path)
        del model
        gc.collect()
    mean = {name: mean_accuracy(res) for name, res in results.items()}
    return {"tasks": tasks, "limit": limit, "results": results, "mean_accuracy": mean,
            "gap_closed": gap_closed({k: {"acc": v} for k, v in mean.items()}, "acc"),
            "gap_closed_ci95": benchmark_gap_ci(results["teacher"], results["pruned"], results["distilled"]),
            "paired": paired_differences(results), "seconds": round(time.time() - start, 1)}


def mean_accuracy(results: dict[str, dict]) -> float:
    """The mean of the multiple-choice tasks' main scores (0 without any)."""
    scores = [main_score(task, r)[1] for task, r in results.items() if r["kind"] == "multiple_choice"]
    return sum(scores) / max(1, len(scores))


def paired_differences(results: dict[str, dict]) -> dict[str, dict]:
    """The distilled model's mean benchmark accuracy minus the pruned model's and minus the teacher's, each paired
    document by document, with its 95% interval ({"distilled-pruned": {"difference", "ci95", "documents"}, ...}; none
    where the tasks have no per-document scores)."""
    pairs = {f"distilled-{other}": paired_benchmarks(results["distilled"], results[other])
             for other in ("pruned", "teacher")}
    return {name: pair for name, pair in pairs.items() if pair is not None}


def distill_stage(train: TrainConfig, run: Path) -> dict:
    print(f"distilling on {train.tokens:,} tokens", flush=True)
    result = run_distill(train)
    student = run / "student"
    if not student.is_symlink():
        student.symlink_to(Path("distill") / "student")
    return {"student": "student", "steps": result.steps, "tokens": result.tokens, "val_loss": result.val_loss}


def evaluate_stage(original: str, teacher: str, run: Path, r: Recipe, sizes: dict, record: Record) -> dict:
    """metrics.json: the teacher, the pruned and the distilled model (and the original teacher when it was corrected)
    measured together on the same windows: the test split and the out-of-domain text, the loss with a 95% interval,
    KL(teacher ‖ model), the share of the teacher–pruned gap distillation closed; generation speed and samples."""
    start, device, seq_len = time.time(), pick_device(r.device), r.prune.seq_len
    num_seqs = math.ceil(r.evaluation.tokens / seq_len)
    held_out = {"test": r.tokens.spread("test", num_seqs, seq_len)}
    if r.evaluation.ood:
        held_out["ood"] = ood_windows(load_tokenizer(teacher), seq_len, num_seqs)
    specs = {**run_models(teacher, run), **({"original_teacher": original} if teacher != original else {})}
    models = {name: load_model(spec, device) for name, spec in specs.items()}
    distilled = [s["outputs"] for name, s in record.steps.items() if name.split("-")[0] == "distill"]
    metrics = {"tokens": sum(d["tokens"] for d in distilled), "teacher_spec": str(original), "target": sizes,
               "device": str(device), "stages": len(distilled),
               "correction_tokens": (record.steps.get("correct", {}).get("outputs") or {}).get("tokens", 0),
               "target_desc": ", ".join(f"{k} {getattr(r.config, k)}→{v}" for k, v in sizes.items()
                                        if v != getattr(r.config, k)),
               "held_out": {where: windows_info(w) for where, w in held_out.items()},
               "prompt": r.prompt, "continuation_prompt": CONTINUATION}
    closed = {}
    for where, windows in held_out.items():
        print(f"measuring the models on {windows.describe()}", flush=True)
        labels, sums = window_sums(models, windows, 4, teacher="teacher")
        for name, m in summarise(labels, sums).items():
            metrics.setdefault(name, {}).update({f"{where}_{k}": v for k, v in m.items()})
        closed.update(gap_closed_ci(labels, sums, where))
    for name, model in models.items():
        metrics[name].update(describe_model(model, load_tokenizer(specs[name]), r.prompt))
        print(f"  {name:>9}: {metrics[name]['params']:,} params, " + ", ".join(
            f"{where} loss {metrics[name][f'{where}_loss']:.3f}" for where in held_out), flush=True)
    metrics["gap_closed"] = {where: gap_closed(metrics, f"{where}_loss") for where in held_out}
    metrics["gap_closed"].update({f"{where}_kl": 1 - metrics["distilled"][f"{where}_kl"] / metrics["pruned"][
        f"{where}_kl"] for where in held_out if metrics["pruned"].get(f"{where}_kl")})
    metrics["gap_closed_ci95"] = closed
    metrics["timings_s"] = {**{k: v for k, v in record.seconds().items() if k != "data"},
                            "evaluate": round(time.time() - start, 1)}
    write_json(run / "metrics.json", metrics)
    write_student_card(run, original, metrics)
    return {"metrics": "metrics.json"}


def gap_closed_ci(labels: torch.Tensor, sums: dict, where: str) -> dict[str, float]:
    """The half-widths of the 95% intervals of the shares of the gap closed on `where`'s windows (`window_sums` of
    the three models), the windows as the unit: the loss's, (pruned - distilled) / (pruned - teacher), and the KL's,
    (pruned - distilled) / pruned."""
    p, d, t, keep = sums["pruned"], sums["distilled"], sums["teacher"], labels > 0
    out = {where: ratio_ci(p["loss"] - d["loss"], p["loss"] - t["loss"], keep)[1]}
    if "kl" in p:
        out[f"{where}_kl"] = ratio_ci(p["kl"] - d["kl"], p["kl"], keep)[1]
    return out


def gap_closed(metrics: dict, key: str) -> float | None:
    """The share of the teacher–pruned gap in `key` that distillation closed: (pruned - distilled) /
    (pruned - teacher), for a measure where lower is better (or higher: the signs cancel)."""
    t, p, d = (metrics[name].get(key) for name in ("teacher", "pruned", "distilled"))
    return None if None in (t, p, d) or p == t else (p - d) / (p - t)


HELD_OUT = {"test": "the test split of the distillation data", "ood": "out-of-domain English (the King James Bible)"}


def write_student_card(run: Path, original: str, metrics: dict, tasks: dict[str, dict] | None = None) -> None:
    """The distilled student's model card: its figures from metrics.json (and, when they ran, its benchmark scores,
    `run_tasks` results of the three models) in the card's table and as its `model-index`."""
    d, t = metrics["distilled"], metrics["teacher"]
    figures, results = {}, []
    for where, info in metrics["held_out"].items():
        what = f"{HELD_OUT[where]}, {info['tokens']:,} tokens"
        figures[f"loss on {what} (nats/token)"] = f"{d[f'{where}_loss']:.4f} ± {d[f'{where}_ci95']:.4f} (teacher " \
                                                   f"{t[f'{where}_loss']:.4f})"
        figures[f"KL(teacher ‖ student) on {what}"] = f"{d[f'{where}_kl']:.4f} ± {d[f'{where}_kl_ci95']:.4f}"
        results += [EvalResult(task_type="text-generation", dataset_type=f"minitron-{where}", dataset_name=what,
                               metric_type="loss", metric_name="cross-entropy (nats/token)",
                               metric_value=round(d[f"{where}_loss"], 4)),
                    EvalResult(task_type="text-generation", dataset_type=f"minitron-{where}", dataset_name=what,
                               metric_type="kl_divergence", metric_name="KL(teacher ‖ student) (nats/token)",
                               metric_value=round(d[f"{where}_kl"], 4))]
    figures["greedy generation (tokens/s, this machine)"] = round(d["gen_tokens_per_s"], 1)
    for task, result in ((tasks or {}).get("distilled") or {}).items():
        metric, value, stderr = main_score(task, result)
        figures[f"{task}: {metric}, zero-shot, {result['samples']} documents (lm-evaluation-harness)"] = \
            f"{value:.4f} ± {stderr or float('nan'):.4f} (teacher {main_score(task, tasks['teacher'][task])[1]:.4f})"
        results.append(EvalResult(task_type="multiple-choice" if result["kind"] == "multiple_choice" else
                                  "text-generation", dataset_type=dataset_id(task),
                                  dataset_name=task, metric_type=metric, metric_value=round(value, 4)))
    write_model_card(run / "student", teacher=str(original), run=run / "distill", name=card_name(run / "student"),
                     metrics=figures, eval_results=results)


# ---------------------------------------------------------------- helpers

# The sizes a later one's unit depends on, first: KV heads before query heads, key heads before value heads, and
# both before the hidden size (the rest in any order)
HEADS_FIRST = {"num_key_value_heads": 0, "linear_num_key_heads": 0, "num_attention_heads": 1,
               "linear_num_value_heads": 1}


def stage_targets(config, sizes: dict[str, int], target: dict[str, int], stages: int) -> list[dict[str, int]]:
    """The target of each of `stages` rounds: each size a geometric share of the way from the teacher's to the
    final one (query heads a multiple of the KV heads, Mamba-2 heads of the groups, multiples of 8 kept; a hidden size
    whose Mamba-2 heads follow it, whole groups of them; where the attention is hidden_size wide, the round's heads x
    head_dim), each no larger than the round's before (the rounding to a multiple of the round's heads can round up),
    the last round the target itself (with the heads it implies, where they follow the hidden size)."""
    whole_number(stages, "--stages")
    result, arch = [], arch_of(config)
    names = [*target, *(n for n in ("num_attention_heads", "num_key_value_heads")  # (heads that follow the hidden size:
                        if n not in target and sizes[n] != getattr(config, n))]  # `attention_follows`)
    last = {n: getattr(config, n) for n in names}  # (the sizes of the round before)
    for k in range(1, stages):
        step = {}
        for name in sorted(names, key=lambda n: HEADS_FIRST.get(n, 2)):
            start, end = getattr(config, name), sizes[name]
            value = start * (end / start) ** (k / stages)
            heads = {**sizes, **step}["num_attention_heads"]
            if name == "hidden_size" and arch.attention_is_hidden:  # its attention is as wide (OLMoE, StableLM, LFM2)
                step[name] = heads * head_dim(config)
                continue
            unit = ({**sizes, **step}["num_key_value_heads"] if name == "num_attention_heads"
                    else {**sizes, **step}["linear_num_key_heads"] if name == "linear_num_value_heads"
                    else getattr(config, arch.mamba_names.groups) if name == arch.mamba_names.heads
                    else 8 if start % 8 == 0 and end % 8 == 0 else 1)
            if name == "hidden_size" and end % sizes["num_attention_heads"] == 0:  # some families need it
                unit = math.lcm(unit, heads)
            if name == "hidden_size" and arch.mamba_expand:  # its Mamba-2 heads follow it (Granite 4): whole groups
                whole = getattr(config, arch.mamba_names.head_dim) * getattr(config, arch.mamba_names.groups)
                unit = math.lcm(unit, whole // math.gcd(whole, config.mamba_expand))
            step[name] = min(last[name], max(end, unit * round(value / unit)))
        result.append(step)
        last.update(step)
    result.append({n: sizes[n] for n in names})
    previous = {n: getattr(config, n) for n in names}
    for step in result:
        if step == previous:
            raise MinitronError(f"--stages {stages} leaves a round with nothing to prune (sizes {step}); the target is "
                                "too close to the teacher for that many rounds: lower --stages")
        previous = step
    return result


def split_steps(distill: TrainConfig, tokens: TokenData, stages: int) -> tuple[int, list[int]]:
    """Tokens per optimiser step, and the step each round ends at (from 0): the distillation's steps split
    evenly, so that S rounds train on as many tokens as one."""
    tokens_per_step = schedule(distill, tokens.num_tokens("train"), tokens.num_tokens("dev"), 1,
                               tokens.path).tokens_per_step
    steps = [distill.tokens // tokens_per_step * k // stages for k in range(stages + 1)]
    if min(b - a for a, b in zip(steps, steps[1:])) < 1:
        raise MinitronError(f"--distill.tokens {distill.tokens:,} is fewer than one optimiser step "
                            f"({tokens_per_step:,} tokens) per stage; raise it or lower --stages")
    return tokens_per_step, steps


def check_disk(run: Path, student_params: int, keep_checkpoints: int) -> None:
    """Pruned model + final student + checkpoints (weights and two AdamW moments), fp32, with a margin."""
    need = int(student_params * 4 * (2 + 3 * keep_checkpoints) * 1.2)
    where = next(p for p in [run, *run.parents] if p.exists())
    free = shutil.disk_usage(where).free
    if free < need:
        raise MinitronError(f"no disk space for this run: it needs about {need / 2**30:.1f} GiB in {run}, "
                            f"{free / 2**30:.1f} GiB are free")


def describe_model(model, tokenizer, prompt: str) -> dict:
    """A model's parameters, greedy generation speed, its reply to the prompt and its continuation of plain text."""
    return {"params": count_params(model), "gen_tokens_per_s": generation_speed(model, tokenizer, new_tokens=32),
            "sample": reply_to(model, tokenizer, prompt),
            "continuation": continue_text(model, tokenizer, CONTINUATION)}


def reply_to(model, tokenizer, prompt: str) -> str:
    """The greedy reply to one user turn in the model's own chat template (the report's, and the benchmarks')."""
    return generate_reply(model, tokenizer, [{"role": "user", "content": prompt}], max_new_tokens=REPLY_TOKENS)


@torch.no_grad()
def continue_text(model, tokenizer, text: str, new_tokens: int = 32, repetition_penalty: float = 1.3) -> str:
    """Greedy continuation of plain text (no chat template); the penalty keeps weak models out of loops."""
    inputs = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, repetition_penalty=repetition_penalty,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
