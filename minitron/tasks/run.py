"""Run benchmark tasks on a loaded model through lm-evaluation-harness (`lm_eval.simple_evaluate` with its `HFLM`
wrapper and a `TaskManager` over the YAMLs beside this file)."""
from __future__ import annotations

import yaml
from torch import nn

from minitron.errors import MinitronError
from minitron.tasks.sources import TASK_NAMES, YAML_DIR, chance_accuracy, prepare, tasks_dir

# the score the report shows for a task of each kind (accuracy: higher is better; perplexity: lower)
MAIN_METRIC = {"multiple_choice": "acc", "loglikelihood_rolling": "word_perplexity"}


def check_tasks(tasks: list[str], limit: int | None = None) -> list[str]:
    """The task names of `--tasks` (a list, or comma-separated items), each known and its data prepared, and
    `--limit` checked; refused in one line otherwise (before any model is loaded)."""
    names = [t.strip() for item in tasks for t in str(item).split(",") if t.strip()]
    if not names:
        raise MinitronError(f"--tasks is empty; choose from {', '.join(TASK_NAMES)}")
    unknown = [t for t in names if t not in TASK_NAMES]
    if unknown:
        raise MinitronError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASK_NAMES)}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise MinitronError(f"--limit must be a positive number of documents, not {limit!r}")
    for name in names:
        prepare(name)
    return list(dict.fromkeys(names))


def task_config(name: str) -> dict:
    """The task's YAML (from this package) with its data_dir set to where this machine keeps the prepared data."""
    config = yaml.safe_load((YAML_DIR / f"{name}.yaml").read_text())
    config["dataset_kwargs"]["data_dir"] = str(tasks_dir())
    return config


def run_tasks(model: nn.Module, tokenizer, tasks: list[str], limit: int | None = None,
              batch_size: int = 1) -> dict[str, dict]:
    """Scores of `model` on `tasks` (zero-shot): {task: {metric: value, metric_stderr: value, "samples": n,
    "kind": output type, "chance": accuracy of guessing (multiple choice)}}; `limit` takes the first N documents
    of each task (None: all). `batch_size` requests go through the model at once (lm-eval's default is 1: a
    perplexity task's windows are long, and their logits over a large vocabulary are big)."""
    # lm_eval is an optional, heavy dependency (pandas, scikit-learn, ...): imported only when tasks run
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MinitronError("benchmark tasks need lm-evaluation-harness: pip install 'minitron[tasks]' "
                            "(or `make setup`)") from None
    names = check_tasks(tasks, limit)
    manager = TaskManager(include_path=str(YAML_DIR), include_defaults=False)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              max_length=getattr(model.config, "max_position_embeddings", None))
    out = lm_eval.simple_evaluate(model=lm, tasks=[task_config(n) for n in names], task_manager=manager,
                                  limit=limit, bootstrap_iters=1000, log_samples=False)
    return {name: scores(name, out["results"][name], out["n-samples"][name]["effective"], out["configs"][name])
            for name in names}


def scores(name: str, result: dict, samples: int, config: dict) -> dict:
    """lm-eval's result of one task ({"acc,none": 0.4, "acc_stderr,none": 0.02, "alias": ...}) as plain floats,
    with the number of documents and, for a multiple-choice task, the accuracy of guessing at random."""
    values = {key.split(",")[0]: float(v) for key, v in result.items()
              if "," in key and isinstance(v, (int, float))}
    values.update(samples=int(samples), kind=config["output_type"])
    if config["output_type"] == "multiple_choice":
        values["chance"] = chance_accuracy(name, int(samples))
    return values


def main_score(result: dict) -> tuple[str, float, float | None]:
    """The metric the report shows for a task result of `run_tasks`: its name, value and standard error."""
    metric = MAIN_METRIC[result["kind"]]
    return metric, result[metric], result.get(f"{metric}_stderr")
