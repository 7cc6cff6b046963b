"""Run benchmark tasks on a loaded model through lm-evaluation-harness (`lm_eval.simple_evaluate` with its `HFLM`
wrapper and a `TaskManager` over the YAMLs beside this file, a user's own YAMLs (`--include-path`) and, for any
other task name, lm-eval's own tasks)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import yaml
from torch import nn

from minitron.errors import MinitronError, whole_number
from minitron.stats import mean_of_means, ratio_ci
from minitron.tasks.sources import MC_TASKS, TASK_NAMES, YAML_DIR, chance_accuracy, prepare, tasks_dir

# the score the report shows for a task of each kind (accuracy: higher is better; perplexity: lower)
MAIN_METRIC = {"multiple_choice": "acc", "loglikelihood_rolling": "word_perplexity"}
# multiple-choice tasks whose main score is the accuracy normalised by the choices' lengths (lm-eval's acc_norm), as
# the papers that report lm-eval's zero-shot tasks read them (Pythia, Mamba; the Open LLM Leaderboard for ARC and
# HellaSwag): HellaSwag, ARC-Challenge and OpenBookQA, bundled (mc_) or lm-eval's own; plain accuracy for the rest
NORMALISED = ("hellaswag", "arc_challenge", "openbookqa")
# requests per forward when none is given: multiple-choice requests are short, and 16 at once ran the bundled tasks
# about 1.8x as fast as 1 with the same accuracies (8 ties it; docs/tasks_speed.json); any other kind one at a time (a
# perplexity task's windows are thousands of tokens, each with logits over the whole vocabulary)
MC_BATCH_SIZE = 16


def check_tasks(tasks: list[str], limit: int | None = None, include_path: Path | None = None,
                prefix: str = "") -> list[str]:
    """The task names of `--tasks` (a list, or comma-separated items), each bundled (its data prepared), in a YAML
    of `include_path`, or one lm-eval knows; `--limit` checked. Refused in one line otherwise (before any model
    is loaded), naming the flags with `prefix` (compress's `eval.`)."""
    names = list(dict.fromkeys(t.strip() for item in tasks for t in str(item).split(",") if t.strip()))
    if not names:
        raise MinitronError(f"--{prefix}tasks is empty; give any lm-eval task, or one of the bundled "
                            f"{', '.join(TASK_NAMES)}")
    if limit is not None:
        whole_number(limit, f"--{prefix}limit (documents of each task)")
    if include_path is not None and not Path(include_path).is_dir():
        raise MinitronError(f"--{prefix}include-path {include_path} is not a directory of task YAMLs")
    others = [t for t in names if t not in TASK_NAMES]
    if others:
        known = set(task_manager(include_path, defaults=True).all_tasks)
        unknown = [t for t in others if t not in known]
        if unknown:
            where = f", in {include_path}" if include_path is not None else ""
            raise MinitronError(f"unknown task {unknown[0]!r}: not bundled ({', '.join(TASK_NAMES)}){where} or "
                                "among lm-eval's tasks (`lm_eval --tasks list`)")
    for name in names:
        if name in TASK_NAMES:
            prepare(name)
    return names


def task_manager(include_path: Path | None = None, defaults: bool = False):
    """lm-eval's TaskManager over the bundled YAMLs, `include_path`'s and (`defaults`) lm-eval's own tasks."""
    listing = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in Path(include_path).rglob("*.y*ml"))) \
        if include_path is not None else ()
    return _task_manager(str(include_path) if include_path is not None else None, defaults, listing)


@functools.lru_cache(maxsize=4)  # indexing lm-eval's own tasks takes seconds; a changed YAML is a new key
def _task_manager(include_path: str | None, defaults: bool, listing: tuple):
    try:
        from lm_eval.tasks import TaskManager  # an optional, heavy dependency: imported only when tasks run
    except ImportError:
        raise MinitronError("benchmark tasks need lm-evaluation-harness: pip install 'minitron[tasks]' "
                            "(or `make setup`)") from None
    return TaskManager(include_path=[str(YAML_DIR)] + ([include_path] if include_path else []),
                       include_defaults=defaults)


def load_each(specs: dict[str, str | dict], manager) -> None:
    """Build every task once before any model runs, so that one whose data is not on this machine (a Hub dataset
    not downloaded, offline; a local file missing) is refused in one line naming it and what is missing."""
    from lm_eval.tasks import get_task_dict

    for name, spec in specs.items():
        try:
            get_task_dict([spec], manager)
        except Exception as e:  # datasets and lm-eval raise many kinds: connection, file, value errors
            problem = " ".join(str(e).split())[:200] or type(e).__name__
            raise MinitronError(f"task {name} cannot load its data on this machine ({type(e).__name__}: "
                                f"{problem})") from None


def task_config(name: str) -> dict:
    """The task's YAML (from this package), merged over the template it `include:`s as lm-eval merges them (the
    task's own keys win), with its data_dir set to where this machine keeps the prepared data."""
    config = yaml.safe_load((YAML_DIR / f"{name}.yaml").read_text())
    if "include" in config:
        config = {**yaml.safe_load((YAML_DIR / config.pop("include")).read_text()), **config}
    config["dataset_kwargs"]["data_dir"] = str(tasks_dir())
    return config


def run_tasks(model: nn.Module, tokenizer, tasks: list[str], limit: int | None = None,
              batch_size: int | None = None, include_path: Path | None = None) -> dict[str, dict]:
    """Scores of `model` on `tasks` (zero-shot): {task: {metric: value, metric_stderr: value, "samples": n,
    "kind": output type, "chance": accuracy of guessing (a bundled multiple-choice task)}}, one entry per task
    lm-eval ran (a group's subtasks each); `limit` takes the first N documents of each task (None: all).
    `batch_size` requests go through the model at once (None: `MC_BATCH_SIZE` when every task is a bundled
    multiple-choice one, else 1)."""
    names = check_tasks(tasks, limit, include_path)
    import lm_eval  # checked importable by check_tasks' task manager
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(include_path, defaults=any(n not in TASK_NAMES for n in names))
    specs = {n: task_config(n) if n in TASK_NAMES else n for n in names}
    load_each(specs, manager)
    if batch_size is None:
        batch_size = MC_BATCH_SIZE if all(n in MC_TASKS for n in names) else 1
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              max_length=getattr(model.config, "max_position_embeddings", None))
    out = lm_eval.simple_evaluate(model=lm, tasks=list(specs.values()), task_manager=manager,
                                  limit=limit, bootstrap_iters=1000, log_samples=True)
    return {name: scores(name, out["results"][name], counts["effective"], out["configs"][name],
                         out["samples"].get(name, []))
            for name, counts in out["n-samples"].items()}


def scores(name: str, result: dict, samples: int, config: dict, logged: list[dict]) -> dict:
    """lm-eval's result of one task ({"acc,none": 0.4, "acc_stderr,none": 0.02, "alias": ...}) as plain floats,
    with the number of documents and, for a multiple-choice task, the accuracy of guessing at random and each
    document's score (`per_document`, from lm-eval's logged samples), so that two models can be compared document by
    document (`paired_benchmarks`)."""
    values = {key.split(",")[0]: float(v) for key, v in result.items()
              if "," in key and isinstance(v, (int, float))}
    values.update(samples=int(samples), kind=config["output_type"])
    if config["output_type"] == "multiple_choice":
        if name in TASK_NAMES:
            values["chance"] = chance_accuracy(name, int(samples))
        values["per_document"] = per_document(logged)
    return values


def per_document(logged: list[dict]) -> dict[str, str]:
    """Each 0/1 metric of a multiple-choice task's logged samples as a string of its documents' scores in document
    order ("0110..."), compact in a JSON."""
    logged = sorted(logged, key=lambda s: s["doc_id"])
    metrics = [k for k in ("acc", "acc_norm") if logged and all(s.get(k) in (0, 1) for s in logged)]
    return {k: "".join(str(int(s[k])) for s in logged) for k in metrics}


def document_scores(*models: dict[str, dict]) -> list[list[list[int]]] | None:
    """Each multiple-choice task's per-document main scores (0/1), every model's in turn, from `run_tasks` results
    of the same tasks on the same documents: [task][model][document]. None where a model lacks a task's scores or
    its documents differ in number."""
    tasks = []
    for task, result in models[0].items():
        if result.get("kind") != "multiple_choice":
            continue
        metric = main_score(task, result)[0]
        docs = [m.get(task, {}).get("per_document", {}).get(metric) for m in models]
        if None in docs or len(set(map(len, docs))) != 1:
            return None
        tasks.append([[int(x) for x in d] for d in docs])
    return tasks


def paired_benchmarks(a: dict[str, dict], b: dict[str, dict]) -> dict | None:
    """Model a's mean benchmark accuracy (the mean over the multiple-choice tasks of each one's main metric) minus
    model b's, from their `run_tasks` results on the same documents: {"difference", "ci95": the half-width of its
    95% interval with the documents as the unit (each task's paired differences, document by document),
    "documents"}. None without per-document scores in both."""
    scores = document_scores(a, b)
    pairs = [[x - y for x, y in zip(da, db)] for da, db in scores or []]
    if not pairs or min(map(len, pairs)) < 2:
        return None
    difference, ci95 = mean_of_means(pairs)
    return {"difference": difference, "ci95": ci95, "documents": sum(map(len, pairs))}


def benchmark_gap_ci(teacher: dict[str, dict], pruned: dict[str, dict], distilled: dict[str, dict]) -> float | None:
    """The half-width of the 95% interval of the share of the teacher–pruned gap in mean accuracy that distillation
    closed, from the three models' `run_tasks` results on the same documents: the ratio estimator with the documents
    as the unit, each weighted by one over its task's documents (so that the ratio is that of the mean accuracies).
    None without per-document scores."""
    num, den = [], []
    for d, t, p in document_scores(distilled, teacher, pruned) or []:
        num += [(pi - di) / len(d) for pi, di in zip(p, d)]
        den += [(pi - ti) / len(d) for pi, ti in zip(p, t)]
    if len(num) < 2 or sum(den) == 0:
        return None
    return ratio_ci(torch.tensor(num), torch.tensor(den), torch.ones(len(num), dtype=torch.bool))[1]


def main_score(task: str, result: dict) -> tuple[str, float, float | None]:
    """The metric the report shows for `task`'s result of `run_tasks`: its name, value and standard error (acc_norm
    for a task of `NORMALISED`, else its kind's main metric; for a kind without one here, its first)."""
    metric = MAIN_METRIC.get(result["kind"])
    if result["kind"] == "multiple_choice" and task.removeprefix("mc_") in NORMALISED:
        metric = "acc_norm"
    if metric not in result:
        metric = next(k for k, v in result.items() if isinstance(v, float) and not k.endswith("_stderr"))
    return metric, result[metric], result.get(f"{metric}_stderr")
