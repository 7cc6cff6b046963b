"""Standard benchmarks through lm-evaluation-harness, on data that installs offline (`minitron eval --tasks`,
`compress --eval.tasks`).

The lm-eval task configs are the YAML files beside this file (`lm_eval --include_path` takes this directory);
`sources` prepares the JSONL files they read, `run` evaluates a loaded model on them.
"""
from minitron.tasks.run import (MAIN_METRIC, benchmark_gap_ci, check_tasks, main_score, paired_benchmarks, run_tasks,
                               task_config)
from minitron.tasks.sources import MC_TASKS, TASK_NAMES, YAML_DIR, dataset_id, ood_documents, prepare, tasks_dir


def prepare_tasks() -> None:
    """Every task's JSONL file (`make tasks` calls this after downloading the sources)."""
    for name in TASK_NAMES:
        print(f"{name}: {prepare(name)}")


__all__ = ["MAIN_METRIC", "MC_TASKS", "TASK_NAMES", "YAML_DIR", "benchmark_gap_ci", "check_tasks", "dataset_id",
           "main_score", "ood_documents", "paired_benchmarks", "prepare", "prepare_tasks", "run_tasks", "task_config",
           "tasks_dir"]
