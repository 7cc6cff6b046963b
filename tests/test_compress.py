"""`minitron compress` end to end: a tiny random model, the real default teacher, and bad input at the front door."""
import json
import math
import shutil
import sys
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import minitron
from conftest import cli_error, load_benchmark
from minitron.cli import main, parse
from minitron import pipeline
from minitron.card import card_name, derived_name
from minitron.distill import TrainConfig, distill
from minitron.distill.config import recorded
from minitron.data import TokenData
from minitron.errors import MinitronError
from minitron.eval import EvalConfig, ood_windows
from minitron.numerics import lm_loss
from minitron.load import load_model, load_tokenizer
from minitron.prune import PruneConfig
from minitron.prune import prune as prune_model
from minitron.record import record_path
from minitron.stats import mean_of_means
from minitron.tasks import benchmark_gap_ci

REPO = Path(__file__).resolve().parents[1]
TINY = dict(target={"hidden_size": 48, "intermediate_size": 48, "num_attention_heads": 4},
            prune=PruneConfig(calib_seqs=4, seq_len=32), eval=EvalConfig(tokens=128, tasks=[]), prompt="hello",
            distill=TrainConfig(tokens=1024, seq_len=32, micro_batch=4, global_batch_tokens=256, lr=3e-3))
MODELS = ("teacher", "pruned", "distilled")
WINDOW_INFO = {"split", "tokens", "windows", "seq_len", "documents", "split_documents"}
HELD_OUT = ("test", "ood")


def check_run(run, metrics):
    """metrics.json holds the three models measured together on the test split and the out-of-domain text, the gap
    closed computed from those same figures, and the report's first table shows them."""
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["tokens"] == metrics["tokens"] > 0
    assert set(saved) == {"tokens", "teacher_spec", "target", "device", "stages", "correction_tokens",
                          "target_desc", "held_out", "prompt", "continuation_prompt", *MODELS, "gap_closed",
                          "gap_closed_ci95",
                          "timings_s"} | ({"original_teacher"} if saved["correction_tokens"] else set())
    assert set(saved["held_out"]) == set(HELD_OUT) and all(set(i) == WINDOW_INFO for i in saved["held_out"].values())
    assert saved["held_out"]["test"]["split"] == "test" and saved["held_out"]["ood"]["split"] == "ood"
    for where in HELD_OUT:
        info = saved["held_out"][where]
        assert info["tokens"] == info["windows"] * info["seq_len"] and 0 < info["documents"] <= info["split_documents"]
    measured = {f"{w}_{k}" for w in HELD_OUT for k in ("loss", "ci95", "ppl")}
    kl = {f"{w}_{k}" for w in HELD_OUT for k in ("kl", "kl_ci95")}
    described = {"params", "gen_tokens_per_s", "sample", "continuation"}
    assert set(saved["teacher"]) == measured | described
    for name in ("pruned", "distilled"):
        assert set(saved[name]) == measured | kl | described
        assert saved[name]["test_kl"] > 0 and saved[name]["ood_kl"] > 0
    for name in MODELS:
        for where in HELD_OUT:
            m = saved[name]
            assert m[f"{where}_ppl"] == pytest.approx(math.exp(m[f"{where}_loss"]), rel=1e-6)
            assert m[f"{where}_ci95"] > 0
    assert not {"val_loss", "ppl", "val_tokens"} & ({k for name in MODELS for k in saved[name]} | set(saved))
    t, p, d = (saved[name] for name in MODELS)
    for where in HELD_OUT:
        key = f"{where}_loss"
        assert saved["gap_closed"][where] == pytest.approx((p[key] - d[key]) / (p[key] - t[key]), rel=1e-9)
        key = f"{where}_kl"  # the teacher's KL from itself is 0: the same formula
        assert saved["gap_closed"][key] == pytest.approx((p[key] - d[key]) / p[key], rel=1e-9)
    assert saved["pruned"]["params"] == saved["distilled"]["params"] < saved["teacher"]["params"]
    # the student is named after the teacher it was given (teacher_spec: the original one, even when corrected)
    assert card_name(run / "student") == derived_name(saved["teacher_spec"], d["params"])
    assert (run / "loss.png").stat().st_size > 0 and (run / "importance.png").stat().st_size > 0
    report = (run / "report.md").read_text()
    assert "| distilled |" in report and "loss.png" in report
    assert "| model | parameters | test split loss | test split KL | out-of-domain loss | out-of-domain KL | " \
           "generation tokens/s |" in report
    assert f"| distilled | {d['params']:,} | {d['test_loss']:.3f} ± {d['test_ci95']:.3f} | " \
           f"{d['test_kl']:.3f} ± {d['test_kl_ci95']:.3f} | {d['ood_loss']:.3f} ± {d['ood_ci95']:.3f} | " in report
    assert f"| teacher | {t['params']:,} | {t['test_loss']:.3f} ± {t['test_ci95']:.3f} | – |" in report
    ci = saved["gap_closed_ci95"]  # each share of the gap closed with its interval over the same windows
    assert set(ci) == set(saved["gap_closed"]) and all(0 < v < math.inf for v in ci.values())
    assert f"| gap closed by distillation | | {saved['gap_closed']['test'] + 0.0:.0%} ± {ci['test']:.0%} | " in report
    for where, label in (("test", "test split"), ("ood", "out-of-domain")):
        info = saved["held_out"][where]
        assert f"- {label}: {info['tokens']:,} tokens in {info['windows']} windows of {info['seq_len']} spread " \
               f"over {info['documents']} of its {info['split_documents']} documents" in report
    assert (run / "student" / "config.json").is_file()
    return saved


def card_of(run) -> tuple[dict, str]:
    """The student's model card: its `model-index` as {(dataset type, metric type): value} and its text."""
    text = (run / "student" / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    (index,) = yaml.safe_load(front)["model-index"]
    return {(r["dataset"]["type"], m["type"]): m["value"] for r in index["results"] for m in r["metrics"]}, body


@pytest.fixture
def trained_tiny(tiny_dir, tiny_data, tmp_path, one_thread):
    """A tiny teacher that has learnt something (plain training), so distilling from it means something; in fp32,
    so that it is the same teacher on every CPU (`precision: auto` is bf16 on one with native bf16)."""
    result = distill(TrainConfig(student=str(tiny_dir), out=tmp_path / "teacher-run", tokens=15360, data=str(tiny_data),
                                 loss="ce", lr=3e-3, seq_len=32, micro_batch=4, global_batch_tokens=256, eval_every=0,
                                 save_every=1000, device="cpu", precision="fp32"))
    return result.student


def test_compress_tiny_model_and_resume(trained_tiny, tiny_data, tmp_path, capsys, monkeypatch):
    tiny_dir, run = trained_tiny, tmp_path / "run"
    metrics = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, **TINY)
    assert capsys.readouterr().out.startswith(f"compress: the plan for {run}\n")  # the --dry-run plan, printed first
    saved = check_run(run, metrics)
    assert saved["distilled"]["test_loss"] < saved["pruned"]["test_loss"]
    assert saved["distilled"]["test_kl"] < saved["pruned"]["test_kl"]
    assert saved["held_out"]["test"]["tokens"] == saved["held_out"]["ood"]["tokens"] == 128  # --eval-tokens
    stages = json.loads((run / "record.json").read_text())
    assert list(stages) == ["data", "score", "prune", "distill", "evaluate"]  # tasks=[]: no tasks stage
    assert stages["evaluate"]["settings"] == {"eval_tokens": 128, "ood": True, "seq_len": 32, "prompt": "hello"}
    figures, body = card_of(run)
    d = saved["distilled"]
    assert figures == {("minitron-test", "loss"): round(d["test_loss"], 4),
                       ("minitron-test", "kl_divergence"): round(d["test_kl"], 4),
                       ("minitron-ood", "loss"): round(d["ood_loss"], 4),
                       ("minitron-ood", "kl_divergence"): round(d["ood_kl"], 4)}
    assert f"| loss on the test split of the distillation data, 128 tokens (nats/token) | {d['test_loss']:.4f} ± " \
           f"{d['test_ci95']:.4f} (teacher {saved['teacher']['test_loss']:.4f}) |" in body
    assert "| loss on out-of-domain English (the King James Bible), 128 tokens (nats/token) |" in body
    assert stages["distill"]["settings"]["lr"] == 3e-3 and stages["distill"]["outputs"]["tokens"] == 1024
    assert set(saved["timings_s"]) == {"score", "prune", "distill", "evaluate"}
    # a finished run is refused unless resumed; resuming keeps every recorded stage's output
    with pytest.raises(SystemExit):
        main(["compress", "--teacher", str(tiny_dir), "--data", str(tiny_data), "--out", str(run),
              "--target", "intermediate_size=48"])
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    mtime = {p: (run / p).stat().st_mtime_ns for p in ("pruned/model.safetensors", "metrics.json", "record.json")}
    again = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, **TINY)
    assert {p: (run / p).stat().st_mtime_ns for p in mtime} == mtime and again == saved
    with pytest.raises(MinitronError, match="its evaluate ran with eval_tokens = 128, now 256"):
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True,
                          **{**TINY, "eval": EvalConfig(tokens=256, tasks=[])})
    # a recorded stage is not redone with other settings
    changed = {**TINY, "distill": replace(TINY["distill"], lr=1e-3)}
    with pytest.raises(MinitronError, match="its distill ran with lr = 0.003, now 0.001"):
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, **changed)
    with pytest.raises(MinitronError, match="its prune ran with target"):
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True,
                          **{**TINY, "target": {"intermediate_size": 32}})
    # resumed with --tasks, a finished run gains the benchmark stage and its table in the report, nothing else redone
    minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True,
                      **{**TINY, "eval": EvalConfig(tokens=128, tasks=["mc_arc_easy,kjv"], limit=2)})
    assert {p: (run / p).stat().st_mtime_ns for p in mtime if p != "record.json"} == \
        {p: t for p, t in mtime.items() if p != "record.json"}
    assert list(json.loads((run / "record.json").read_text()))[-1] == "tasks"
    with pytest.raises(MinitronError, match="its tasks ran with include_path = None, now "):  # other task YAMLs
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, resume=True, **{**TINY, "eval": EvalConfig(
            tokens=128, tasks=["mc_arc_easy,kjv"], limit=2, include_path=tmp_path)})
    tasks = json.loads((run / "tasks.json").read_text())
    results = tasks["results"]
    ppl = {name: results[name]["kjv"]["word_perplexity"] for name in MODELS}
    assert len(set(ppl.values())) == 3 and all(results[n]["mc_arc_easy"]["samples"] == 2 for n in ppl)
    acc = {name: results[name]["mc_arc_easy"]["acc"] for name in MODELS}
    assert tasks["mean_accuracy"] == pytest.approx(acc)  # the mean over the multiple-choice tasks only (kjv is not)
    t, p, d = (acc[name] for name in MODELS)
    assert tasks["gap_closed"] == (None if p == t else pytest.approx((p - d) / (p - t)))
    assert tasks["gap_closed_ci95"] == (None if p == t else pytest.approx(benchmark_gap_ci(*results.values())))
    for other in ("pruned", "teacher"):  # the same two documents of each model, paired
        right = {n: [int(c) for c in results[n]["mc_arc_easy"]["per_document"]["acc"]] for n in ("distilled", other)}
        paired = tasks["paired"][f"distilled-{other}"]
        assert paired["documents"] == 2 and paired["difference"] == pytest.approx(acc["distilled"] - acc[other])
        assert paired["ci95"] == pytest.approx(mean_of_means([[x - y for x, y in zip(*right.values())]])[1])
    report = (run / "report.md").read_text()
    assert "## Benchmarks" in report and "| mc_arc_easy (acc) | 2 | " in report
    assert f"| kjv (word_perplexity) | 2 | – | {ppl['teacher']:.3f} | {ppl['pruned']:.3f} |" in report
    assert f"- benchmarks (multiple choice, mean accuracy): teacher {t:.3f}, pruned {p:.3f}, distilled {d:.3f}" \
        in report
    assert f"distilled − pruned {d - p:+.3f} ± {tasks['paired']['distilled-pruned']['ci95']:.3f}" in report
    timings = {**saved["timings_s"], "tasks": tasks["seconds"]}  # the benchmarks' stage is timed with the others
    assert tasks["seconds"] > 0 and f" · tasks {tasks['seconds']:.0f} s · all {sum(timings.values()) / 60:.1f} min" \
        in report
    # benchmarks/demo_benchmarks.py: the same three models on more documents, paired as the tasks stage pairs them
    more = tmp_path / "more.json"
    monkeypatch.setattr(sys, "argv", ["demo_benchmarks.py", "--run", str(run), "--teacher", str(tiny_dir),
                                      "--tasks", "mc_arc_easy", "--limit", "4", "--out", str(more)])
    load_benchmark("demo_benchmarks").main()
    more = json.loads(more.read_text())
    assert more["limit"] == 4 and [more["results"][n]["mc_arc_easy"]["samples"] for n in MODELS] == [4, 4, 4]
    assert [more["results"][n]["mc_arc_easy"]["per_document"]["acc"][:2] for n in MODELS] == \
        [results[n]["mc_arc_easy"]["per_document"]["acc"] for n in MODELS]  # the first two documents as before
    assert more["paired"]["distilled-pruned"]["documents"] == 4 and more["command"].startswith("python ")
    figures, body = card_of(run)
    assert "kjv: word_perplexity, zero-shot, 2 documents" in body and "validation loss" in body
    assert "loss on the test split of the distillation data, 128 tokens (nats/token)" in body
    assert {k: v for k, v in figures.items() if not k[0].startswith("minitron-")} == {
        ("allenai/ai2_arc", "acc"): round(d, 4), ("kjv", "word_perplexity"): round(ppl["distilled"], 4)}
    assert figures[("minitron-test", "loss")] == round(saved["distilled"]["test_loss"], 4)


def test_compress_scores_and_evaluates_at_its_own_seq_len(trained_tiny, tiny_data, tmp_path):
    """--prune.seq-len sets the calibration and held-out length apart from the training length
    (--distill.seq-len): the three models' losses are measured on windows of --prune.seq-len tokens, and a resume
    with another is refused."""
    run = tmp_path / "run"
    metrics = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run,
                                **{**TINY, "prune": replace(TINY["prune"], seq_len=16)})
    stages = json.loads((run / "record.json").read_text())
    assert stages["score"]["settings"]["seq_len"] == 16 and stages["distill"]["settings"]["seq_len"] == 32
    test = TokenData.open(tiny_data).spread("test", TINY["eval"].tokens // 16, 16)  # 8 windows spread over test
    ids = test.batch["input_ids"]
    assert ids.shape == (8, 17) and metrics["held_out"]["test"] == {
        "split": "test", "tokens": 128, "windows": 8, "seq_len": 16, "documents": test.documents,
        "split_documents": test.split_documents}
    ood = ood_windows(load_tokenizer(trained_tiny), 16, 8).batch["input_ids"]
    for name, model in (("teacher", trained_tiny), ("distilled", run / "student")):
        assert metrics[name]["test_loss"] == pytest.approx(lm_loss(load_model(model), ids.split(4)), rel=1e-4)
        assert metrics[name]["ood_loss"] == pytest.approx(lm_loss(load_model(model), ood.split(4)), rel=1e-4)
    with pytest.raises(MinitronError, match="its score ran with seq_len = 16, now 32"):
        minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, resume=True, **TINY)


def test_interrupted_compress_resumes_from_the_record(trained_tiny, tiny_data, tmp_path, monkeypatch, capsys,
                                                    die_after_checkpoint):
    """Killed inside distillation (after its step-2 checkpoint): the resumed run redoes neither scoring nor
    pruning, continues distillation from the checkpoint, and ends where an unbroken run ends."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    settings = {**TINY, "distill": replace(TINY["distill"], save_every=2)}
    restore = die_after_checkpoint
    with pytest.raises(KeyboardInterrupt):
        minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, **settings)
    assert list(json.loads((run / "record.json").read_text())) == ["data", "score", "prune"]
    assert (run / "distill" / "checkpoints" / "step-2").is_dir() and not (run / "student").exists()

    restore()
    for stage in ("score", "prune_model"):  # the functions the score and prune stages call
        monkeypatch.setattr(pipeline, stage, lambda *a, **k: pytest.fail("a recorded stage ran again"))
    capsys.readouterr()
    metrics = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=run, resume=True, **settings)
    out = capsys.readouterr().out
    assert "[score] done before" in out and "[prune] done before" in out and "resuming" in out
    assert list(json.loads((run / "record.json").read_text())) == ["data", "score", "prune", "distill", "evaluate"]
    monkeypatch.undo()
    unbroken = minitron.compress(teacher=str(trained_tiny), data=tiny_data, out=reference, **settings)
    for key in ("test_loss", "test_kl", "ood_loss", "ood_kl"):
        assert metrics["distilled"][key] == pytest.approx(unbroken["distilled"][key], rel=1e-5)


def test_demo_config_is_the_demo():
    """configs/demo.yaml (what `make demo` runs) holds the demo's settings."""
    fn, kw = parse(["compress", "--config", str(REPO / "configs" / "demo.yaml")])
    assert fn is minitron.compress
    assert kw["teacher"] == "default" and kw["out"] == Path("runs/smollm2-135m-half")
    # the shape the published search found, and the one the published demo run (docs/demo) pruned to
    published = json.loads((REPO / "docs" / "demo" / "metrics.json").read_text())["target"]
    winner = json.loads((REPO / "docs" / "search" / "search.json").read_text())["candidates"][0]["sizes"]
    assert kw["target"] == {"intermediate_size": 384, "num_hidden_layers": 27}
    assert all(published[k] == v for k, v in winner.items()) and all(winner[k] == v for k, v in kw["target"].items())
    assert kw["prune"] == PruneConfig(calib_seqs=32, seq_len=256) and "val_seqs" not in kw
    # the report's figures: 16,384 test tokens (64 windows of 256) and as many out-of-domain ones; the bundled
    # multiple-choice tasks (compress's default) on their first 50 documents
    assert kw["eval"] == EvalConfig(tokens=16384, ood=True, tasks=["mc_arc_easy", "mc_hellaswag", "mc_piqa"], limit=50)
    assert kw["prompt"] == "What is a Python list? Answer in one sentence."
    assert kw["distill"] == TrainConfig(tokens=204_800, seq_len=256, micro_batch=4, global_batch_tokens=1024, lr=1e-3,
                                        min_lr=1e-4, loss="forward_kl", precision="auto", eval_every=40, eval_seqs=16,
                                        save_every=40)


@pytest.mark.slow
def test_compress_real_default_teacher(tmp_path):
    """The real SmolLM2-135M-Instruct teacher on the default corpus: the demo's config, with a tiny token budget."""
    run = tmp_path / "real"
    fn, kw = parse(["compress", "--config", str(REPO / "configs" / "demo.yaml"), "--out", str(run),
                    "--prune.calib-seqs", "4", "--prune.seq-len", "128",
                    "--eval.tokens", "1024", "--eval.tasks", "[]", "--distill.tokens", "3072",
                    "--distill.seq-len", "128",
                    "--distill.global-batch-tokens", "1024", "--distill.eval-seqs", "4", "--distill.lr", "3e-4",
                    "--distill.precision", "auto"])  # bf16 only where the CPU has it (7x slower elsewhere); three
    # steps at a gentler rate than the demo's 1e-3, which its 200-step schedule warms into
    metrics = fn(**kw)
    saved = check_run(run, metrics)
    assert saved["teacher"]["params"] == 134_515_008
    assert 0.45 < saved["pruned"]["params"] / saved["teacher"]["params"] < 0.55
    assert saved["distilled"]["test_loss"] < saved["pruned"]["test_loss"]
    assert saved["teacher"]["test_loss"] < saved["distilled"]["test_loss"]
    assert saved["distilled"]["test_kl"] < saved["pruned"]["test_kl"] and 0 < saved["gap_closed"]["test"] < 1


def test_compress_runs_the_bundled_tasks_unless_told_none(tiny_dir, tiny_data, tmp_path):
    """compress's eval section by default: the bundled multiple-choice tasks on their first 100 documents; tasks=[]
    (or None): none; checked at the front door, before anything runs, and the settings `minitron eval` alone reads
    refused there."""
    from minitron.tasks import MC_TASKS

    def recipe(evaluation=pipeline.COMPRESS_EVAL):
        return pipeline.resolve(str(tiny_dir), TINY["target"], None, tmp_path / "r", tiny_data, TINY["prune"],
                                TINY["distill"], "cpu", 4, 65536, pipeline.Correction(0, 1e-4, 0), evaluation, "hi",
                                1, False, False).evaluation

    default = recipe()
    assert default.tasks == list(MC_TASKS) == ["mc_arc_easy", "mc_hellaswag", "mc_piqa"] and default.limit == 100
    assert recipe(EvalConfig(tasks=[])).tasks == recipe(EvalConfig(tasks=None)).tasks == []
    assert recipe(EvalConfig(tasks=["kjv"])).tasks == ["kjv"]
    with pytest.raises(MinitronError, match="--eval.include-path .* is not a directory of task YAMLs"):
        recipe(EvalConfig(tasks=["kjv"], include_path=tmp_path / "nowhere"))
    assert (default.tokens, default.ood) == (65536, True) and not (tmp_path / "r").exists()
    with pytest.raises(MinitronError, match="--eval.tokens must be a positive whole number, not 0"):
        recipe(EvalConfig(tokens=0))
    with pytest.raises(MinitronError, match=r"--eval.limit \(documents of each task\) must be a positive whole number, not 0"):
        recipe(EvalConfig(tasks=["kjv"], limit=0))
    for field, value in (("model", "other"), ("split", "dev"), ("seq_len", 64), ("batch_size", 2), ("speed", False),
                         ("out", Path("m.json"))):
        with pytest.raises(MinitronError, match=f"compress sets eval.{field} itself; leave it out of the eval section"):
            recipe(EvalConfig(**{field: value}))
    assert not (tmp_path / "r").exists()


def test_front_door_bad_input(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    base = ["--teacher", tiny_dir, "--data", tiny_data, "--distill.seq-len", 32]
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "a", "--target", "hidden_size=4096")
    base += ["--target", "intermediate_size=48"]
    assert "between 1 and the teacher's 64" in err and not (tmp_path / "a").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "b", "--distill.tokens", 10**9)
    assert "fewer than the 1,000,000,000 requested" in err and not (tmp_path / "b").exists()
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "c", "--distill.tokens", 1024,
                    "--distill.global-batch-tokens", 256)
    assert "no disk space" in err and not (tmp_path / "c").exists()
    err = cli_error(capsys, "compress", *base[:-2], "--out", tmp_path / "f", "--target", "hidden_size=64")
    assert "prunes nothing" in err and not (tmp_path / "f").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "g", "--eval.tasks", "kjv,nope")
    assert "unknown task 'nope'" in err and not (tmp_path / "g").exists()
    err = cli_error(capsys, "compress", *base, "--out", tmp_path / "e", "--distill.seq-len", 300)
    assert "max_position_embeddings (256)" in err and not (tmp_path / "e").exists()
    for bad in (300, 0):  # the calibration and evaluation length, checked like the training length
        err = cli_error(capsys, "compress", *base, "--out", tmp_path / "h", "--prune.seq-len", bad)
        assert ("max_position_embeddings (256)" if bad else "--prune.seq-len must be a whole number") in err
        assert not (tmp_path / "h").exists()
    for flag, bad, rule in (("--search-top", -1, "a whole number, 0 or more"),  # named as compress names them
                            ("--search-tokens", 0, "a positive whole number")):
        err = cli_error(capsys, "compress", *base[:-2], "--params", 0.5, "--out", tmp_path / "s", flag, bad)
        assert f"{flag} must be {rule}, not {bad}" in err and not (tmp_path / "s").exists()
    existing = tmp_path / "d"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    err = cli_error(capsys, "compress", *base, "--out", existing)
    assert "was not written by minitron" in err and (existing / "notes.txt").read_text() == "keep me"


def test_a_record_holds_the_inputs_inside_its_run_relative_to_it(tmp_path):
    """distill's inputs and compress's --eval.include-path are recorded by one rule: relative to the run when inside
    it (a run directory moved with its inputs still resumes), resolved otherwise."""
    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    (run / "yamls").mkdir(parents=True)
    outside.mkdir()
    assert record_path(run / "yamls", run) == "yamls"
    assert record_path(tmp_path / "run" / ".." / "elsewhere", run) == str(outside.resolve())
    settings = recorded(TrainConfig(student=str(run / "yamls"), teacher=str(outside), data="nowhere", out=run), run)
    assert (settings["student"], settings["teacher"], settings["data"]) == ("yamls", str(outside.resolve()), "nowhere")


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    """--dry-run checks every setting and prints what the run would do: each round's shape and parameters (as prune
    --dry-run counts them), the search instead where the shape is searched, the distillation's steps and learning
    rate, what is evaluated. Nothing is written and no weights are loaded."""
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("a dry run loaded weights"))
    run = tmp_path / "run"
    counted = prune_model(str(tiny_dir), target=TINY["target"], dry_run=True)
    capsys.readouterr()
    plan = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, dry_run=True, **TINY)
    out = capsys.readouterr().out
    assert not run.exists() and plan["dry_run"] and plan["targets"] == [{"sizes": counted["sizes"],
                                                                        "params": counted["params_after"]}]
    assert (plan["steps"], plan["tokens_per_step"], plan["lr"]) == (4, 256, 3e-3)
    assert f"parameters: {counted['params_before']:,} -> {counted['params_after']:,}" in out
    assert "distil: 1,024 tokens, 4 steps of 256 tokens, lr 0.003, logit forward KL" in out
    assert "evaluate: 128 test tokens and as many out-of-domain" in out
    two = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, dry_run=True, stages=2, **TINY)
    out = capsys.readouterr().out
    assert len(two["targets"]) == 2 and two["targets"][-1] == plan["targets"][0]
    assert two["targets"][0]["params"] > two["targets"][1]["params"]  # the first round prunes part of the way
    assert "round 2 of 2" in out and "4 steps of 256 tokens (2 + 2 by round)" in out and not run.exists()
    searched = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, dry_run=True, params=0.6,
                                 search_top=2, **{**{k: v for k, v in TINY.items() if k != "target"},
                                                  "distill": replace(TINY["distill"], lr=None)})
    out = capsys.readouterr().out
    assert searched["targets"] == [] and searched["search"]["search_top"] == 2 and not run.exists()
    assert "shapes within ±5% of" in out and "the best 2 distilled on 65,536 tokens each" in out
    assert "lr by the winner's width" in out and "round 1" not in out
