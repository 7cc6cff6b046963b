"""The benchmarks cannot rot: the throughput benchmark's two steps compute the same loss and gradients, and the
GPU check runs end to end in its dry mode (on the CPU, tiny)."""
import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import load_benchmark
from test_compress import trained_tiny  # noqa: F401 (a fixture)

from minitron.data import TokenData
from minitron.load import load_model
from minitron.numerics import lm_loss
from minitron.tasks import MC_TASKS, paired_benchmarks

REPO = Path(__file__).resolve().parents[1]


def test_minitron_step_matches_the_plain_loop(one_thread):
    """Same models, same batch: minitron's chunked step and the plain full-vocabulary loop give the same loss
    and the same gradients, within fp32 tolerance."""
    tp = load_benchmark("throughput")
    family, sizes, target, seq_len, micro_batch = tp.PRESETS["tiny"]
    t_config = family(**sizes)
    setup = tp.Setup(torch.device("cpu"), t_config, tp.target_config(t_config, tp.check_target(t_config, target)),
                     seq_len, micro_batch)
    teacher = setup.build(t_config, torch.float32, seed=0).eval().requires_grad_(False)
    plain, _, plain_loss = tp.make_plain(setup, teacher)
    ours, _, our_loss = tp.make_minitron(setup, teacher, chunk_tokens=16, precision="fp32")  # several chunks
    ids = setup.batch(0)
    a, b = plain_loss(ids), our_loss(ids)
    a.backward()
    b.backward()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in plain.named_parameters()}
    for name, p in ours.student.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gpu_check_dry_mode(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "cuda_tests: exit 0" in summary and "throughput: exit 0" in summary
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert {"kd_speedup", "kd_memory_ratio", "score_speed_ratio", "device"} <= report["summary"].keys()
    assert report["summary"]["device"] == "cpu" and report["kd"]["minitron_equal"]["tokens_per_s"] > 0
    last = json.loads((tmp_path / "throughput.log").read_text().strip().splitlines()[-1])  # its last line: JSON
    assert last == report["summary"]


def test_gpu_quality_dry_mode(tmp_path):
    """Issue 31's quality run, end to end on a tiny GGUF teacher on the CPU: packed into parts, the first call
    with one part stages it and exits 3, the next unpacks every part and runs compress; gpu_quality.json holds
    teacher, pruned model and student on test, out of domain, KL and the benchmarks, with throughput and time,
    and the short sweep of batch and learning rate that chose the run's."""
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_quality.sh"), "--dry"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "still missing: pack.2" in done.stdout and len(list((tmp_path / "dry" / "parts").glob("part*"))) > 1
    saved = json.loads((tmp_path / "gpu_quality.json").read_text())
    for model in ("teacher", "pruned", "distilled"):
        assert {"test_loss", "ood_loss"} <= saved["metrics"][model].keys()
    assert saved["metrics"]["distilled"]["test_kl"] > 0 and saved["metrics"]["tokens"] == 2048
    assert saved["tasks"]["mean_accuracy"].keys() >= {"teacher", "pruned", "distilled"}
    paired = saved["tasks"]["paired"]["distilled-pruned"]  # printed last: the benchmarks' paired difference
    assert f"benchmarks: student - pruned {paired['difference']:+.3f} ± {paired['ci95']:.3f}" in done.stdout
    assert saved["distill_tokens_per_s"] > 0 and saved["wall_s"] > 0 and saved["command"].startswith("minitron ")
    assert (tmp_path / "report.md").is_file()
    swept = saved["sweep"]  # the short sweep of batch and lr first: every arm measured on dev, the run used the best
    assert len(swept["arms"]) == 4 and all(a["dev_loss"] > 0 and a["tokens"] == 256 for a in swept["arms"])
    best = min(swept["arms"], key=lambda a: a["dev_loss"])
    assert f"--distill.global-batch-tokens {best['global_batch_tokens']} " in saved["command"]
    assert f"--distill.lr {best['lr']} " in saved["command"]


def test_corpus_mix_dry_mode(tmp_path, one_thread):
    """Runs end to end on a tiny random teacher: every row measured on the dev and test splits of every kind of
    text, out of domain and by KL, per seed, with the general measure the mean over the kinds and the rows paired
    against the baseline; a second run reuses the students (no retraining)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "corpus_mix.py"), "--dry", "--work", str(tmp_path),
           "--tokens", "256", "--val-seqs", "4", "--seeds", "0", "1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads((tmp_path / "corpus_mix.json").read_text())
    assert list(saved["rows"]) == ["docs", "broad"] and saved["baseline"] == "docs"
    kinds = ("documentation", "prose", "reference", "dialogue")
    for row in saved["rows"].values():
        assert set(row["seeds"]) == {"0", "1"}
        for run in row["seeds"].values():
            assert run["tokens"] == 256 and 0 < run["ood_loss"] < 20 and run["test_kl"] > 0
            assert run["dev_loss"] == pytest.approx(sum(run[f"dev:{k}_loss"] for k in kinds) / 4)
    teacher = load_model(tmp_path / "tiny-teacher")
    dev = TokenData.open(tmp_path / "prose-data").spread("dev", 4, 32).batch["input_ids"]
    assert saved["teacher"]["dev:prose_loss"] == pytest.approx(lm_loss(teacher, dev.split(4)), rel=1e-5)
    report = (tmp_path / "corpus_mix.md").read_text()
    assert "| broad | `broad` |" in report and "| broad | 2 |" in report  # the paired line, over both seeds
    trained = (tmp_path / "broad-seed1" / "bench.json").stat().st_mtime
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and (tmp_path / "broad-seed1" / "bench.json").stat().st_mtime == trained


def test_corpus_mix_replies_row_dry_mode(tmp_path, one_thread):
    """The row distilled on the teacher's own replies (`data --generate` on the bundled prompts): trained with the
    loss on the replies only, measured like every row, and the cost of writing the replies reported; the row that
    mixes a tenth of them, whole, into the general mix; every model's reply to the demo's prompt."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "corpus_mix.py"), "--dry", "--work", str(tmp_path),
           "--tokens", "128", "--val-seqs", "2", "--seeds", "0", "--rows", "docs", "replies", "docs60+replies",
           "--replies", "24"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads((tmp_path / "corpus_mix.json").read_text())
    data = TokenData.open(tmp_path / "replies-24")
    assert data.mask("train") is not None and 0 < data.mask("train").mean() < 1  # prompts masked, replies kept
    assert saved["replies"]["count"] == 24 and saved["replies"]["runs"][-1]["tokens"] > 0
    assert saved["rows"]["replies"]["seeds"]["0"]["data"] == "replies-24"
    mixed = TokenData.open(tmp_path / "docs60+replies-24")
    assert mixed.mask("train") is None and mixed.meta["shares"] == [0.9, 0.1]  # the conversations whole
    parts = [p["splits"]["train"]["tokens"] for p in mixed.meta["parts"]]
    assert parts[1] == data.num_tokens("train") and mixed.num_tokens("train") == pytest.approx(sum(parts), rel=0.1)
    assert saved["rows"]["docs60+replies"]["seeds"]["0"]["data"] == "docs60+replies-24"
    report = (tmp_path / "corpus_mix.md").read_text()
    assert "tokens/s" in report and "## The reply to the demo's prompt (seed 0)" in report
    assert all(isinstance(r["seeds"]["0"]["reply"], str) for r in saved["rows"].values())


def test_scaling_dry_mode(tmp_path, one_thread):
    """The scaling curve end to end on a tiny random teacher: a run per budget, each measured beside the teacher and
    the pruned model, the fit and the tokens to within 10% of the teacher, the report, its JSON and the plot."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "scaling.py"), "--dry", "--work", str(tmp_path),
           "--tokens", "128", "384", "--eval-seqs", "2"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert list(saved["runs"]) == ["128", "384"] and set(saved["models"]) == {"teacher", "pruned"}
    for r in [*saved["runs"].values(), saved["models"]["pruned"]]:
        assert r["test_kl"] > 0 and 0 < r["ood_loss"] < 20 and 0 <= r["benchmark_mean"] <= 1
        assert list(r["tasks"]) == list(MC_TASKS)
    assert saved["models"]["teacher"]["test_kl"] == pytest.approx(0, abs=1e-6)
    fit = saved["fit"]
    assert fit["goal_gap"] == pytest.approx(0.1 * saved["models"]["teacher"]["ood_loss"])
    assert fit["how"] in ("measured", "extrapolated", None) and (fit["how"] is None) == (fit["tokens_within"] is None)
    models = saved["models"]
    assert fit["goal_gap_closed"] == pytest.approx(0.25 * (models["pruned"]["ood_loss"] - models["teacher"]["ood_loss"]))
    assert (fit["how_closed"] is None) == (fit["tokens_closed"] is None)
    report = (tmp_path / "scaling.md").read_text()
    assert "| student | 384 |" in report and "Within 10% of the teacher" in report
    assert all(isinstance(r["reply"], str) for r in [*saved["runs"].values(), *saved["models"].values()])
    assert "- **student, 384 tokens**, reply: `" in report and "- **teacher**, continuation: `" in report
    assert (tmp_path / "scaling.png").stat().st_size > 0 and (tmp_path / "tokens-384" / "bench.json").is_file()
    assert "75% of the teacher–pruned gap closed out of domain" in report
    pruned = models["pruned"]["tasks"]  # each student's benchmarks paired with the pruned model's, document by document
    paired = paired_benchmarks(saved["runs"]["384"]["tasks"], pruned)
    diff, half = paired["difference"], paired["ci95"]
    assert f"{saved['runs']['384']['benchmark_mean']:.3f} ({diff:+.3f} ± {half:.3f}) |" in report
    again = subprocess.run([*cmd, "--report"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (tmp_path / "scaling.md").read_text() == report  # the same from its JSON
    # resumed, nothing is trained or measured again: each model's measures are kept beside it
    kept = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*-measures.json")}
    assert len(kept) == 4 and (tmp_path / "pruned" / "pruned-measures.json") in kept
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and json.loads((tmp_path / "scaling.json").read_text()) == saved
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def test_criteria_after_kd_dry_mode(tiny_dir, tiny_data, tmp_path, one_thread):
    """Every row of the after-distillation benchmark runs end to end on a tiny teacher, and a second run reuses
    the finished rows."""
    bench = load_benchmark("criteria_after_kd")
    out = tmp_path / "report.md"
    common = ["--dry", "--teacher", str(tiny_dir), "--data", str(tiny_data), "--work", str(tmp_path / "work"),
              "--seeds", "0", "1"]
    argv = common + ["--rows", "all", "--out", str(out)]
    bench.main(argv)
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["key"] for r in report["rows"]] == [r.key for r in bench.ROWS]
    for r in report["rows"]:
        assert math.isfinite(r["val_loss"]) and math.isfinite(r["zero_shot"]) and r["curve"]
        assert sorted(r["seeds"]) == ["0", "1"] and all(math.isfinite(x["test_loss"]) for x in r["seeds"].values())
    # two data orders give two students: paired against the papers' score, each row with its verdict
    act = next(r for r in report["rows"] if r["key"] == "act")["seeds"]
    assert act["0"]["dev_loss"] != act["1"]["dev_loss"]
    text = out.read_text()
    assert "## Each row against act, seed by seed" in text and re.search(r"\| wanda \| 2 \| [+-]", text)
    targets = report["targets"]
    assert targets["depth"]["num_hidden_layers"] < 4 and targets["width"]["hidden_size"] < 64
    depth = {r["key"]: r["dropped_layers"] for r in report["rows"] if r["group"] == "depth"}
    assert all(len(d) == 4 - targets["depth"]["num_hidden_layers"] for d in depth.values())
    assert out.with_suffix(".png").stat().st_size > 0 and "| criterion | random |" in out.read_text()
    dev = TokenData.open(tiny_data).spread("dev", 2, 32).batch["input_ids"]  # --dry: 2 windows of 32, on dev
    assert report["teacher_loss"] == pytest.approx(lm_loss(load_model(tiny_dir), dev.split(4)), rel=1e-5)
    bench.distill = lambda cfg: (_ for _ in ()).throw(AssertionError("trained again"))
    bench.main(common + ["--out", str(tmp_path / "again.md"), "--rows", "act", "random"])
    again = json.loads((tmp_path / "again.json").read_text())["rows"]
    assert [r["val_loss"] for r in again] == [r["val_loss"] for r in report["rows"] if r["key"] in ("act", "random")]


def test_baselines_dry_mode(trained_tiny, tiny_data, tmp_path, monkeypatch, one_thread):
    """Both modes of benchmarks/baselines.py on a tiny teacher that has learnt the data (distilling a random one
    need not lower the loss on the data): four curves (then three compress runs) in their own sections of the
    results file, hand-written text around them kept, finished runs reused."""
    bl, tiny_dir = load_benchmark("baselines"), trained_tiny
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nwritten by hand before\n")
    base = ["baselines.py", "--dry", "--teacher", str(tiny_dir), "--data", str(tiny_data), "--device", "cpu",
            "--target", "hidden_size=48,intermediate_size=48,num_attention_heads=4", "--work", str(tmp_path / "w"),
            "--out", str(out)]
    monkeypatch.setattr(sys, "argv", base)
    bl.main()
    text = out.read_text()
    assert text.startswith("# Results\n\nwritten by hand before\n") and "## Baselines at the same budget" in text
    for label, _ in bl.BASELINES:
        assert f"| {label} |" in text
    rows = json.loads((tmp_path / "baselines.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["teacher"] + [label for label, _ in bl.BASELINES]
    for r in rows[1:]:  # evaluated from the start, at the same tokens, ending at the budget
        assert [t for t, _ in r["curve"]] == [t for t, _ in rows[1]["curve"]] and r["curve"][-1][0] == 1024
        assert r["curve"][-1][1] < r["curve"][0][1], (r["label"], r["curve"])
    assert rows[1]["curve"][0][1] < rows[3]["curve"][0][1]  # pruned starts far better than random
    dev = TokenData.open(tiny_data).spread("dev", 4, 32).batch  # the distillation's validation windows
    assert rows[0]["val_loss"] == pytest.approx(lm_loss(load_model(tiny_dir), [dev]), rel=1e-5)
    assert (tmp_path / "baselines.png").stat().st_size > 0

    out.write_text(out.read_text() + "\nnotes written by hand after\n")
    seconds = [r["seconds"] for r in rows[1:]]
    monkeypatch.setattr(bl, "distill", lambda cfg: pytest.fail("a finished run was trained again"))
    bl.main()
    again = json.loads((tmp_path / "baselines.json").read_text())["rows"]
    assert [r["seconds"] for r in again[1:]] == seconds and out.read_text().count("## Baselines") == 1
    assert out.read_text().endswith("notes written by hand after\n")

    monkeypatch.setattr(sys, "argv", base + ["--mode", "recipe"])
    bl.main()
    text = out.read_text()
    assert "## Baselines at the same budget" in text and "## Teacher correction and iterative compression" in text
    rows = json.loads((tmp_path / "correction_stages.json").read_text())["rows"]
    assert [r["correction_tokens"] for r in rows] == [0, 256, 0] and {r["tokens"] for r in rows} == {1024}
    assert max(t for t, _ in rows[2]["curve"]) == 1024 and (tmp_path / "correction_stages.png").stat().st_size > 0
    assert "| teacher test loss | student test loss |" in text
    for i, r in enumerate(rows):  # the table's figures are compress's own, on its test-split windows
        metrics = json.loads((tmp_path / "w" / f"recipe{i}" / "metrics.json").read_text())
        assert metrics["held_out"]["test"]["tokens"] == 128 and "ood" not in metrics["held_out"]
        assert (r["test_loss"], r["test_ci95"], r["teacher_test_loss"], r["gap_closed"]) == (
            metrics["distilled"]["test_loss"], metrics["distilled"]["test_ci95"], metrics["teacher"]["test_loss"],
            metrics["gap_closed"]["test"])
        assert f"| {r['test_loss']:.3f} ± {r['test_ci95']:.3f} |" in text


def test_search_speed_check_finds_what_the_screening_lost():
    bench = load_benchmark("search_speed")
    full = {"candidates": [{"name": n, "screen_loss": None, "zero_shot_loss": v}
                           for n, v in zip("abcdefg", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])]}
    screened = {"candidates": [{"name": n, "screen_loss": s, "zero_shot_loss": z} for n, s, z in
                               [("a", 1.1, 1.0), ("b", 9.0, None), ("c", 3.1, 3.0), ("d", 4.1, 4.0), ("e", 5.1, 5.0),
                                ("f", 6.1, None), ("g", 7.1, None)]]}
    found = bench.check(screened, full)  # b, second in the full ranking, was screened out
    assert found["screened_top"] == ["a", "c", "d", "e"] and found["full_top"] == ["a", "b", "c", "d"]
    assert not found["same_top"] and found["full_top_kept_by_screening"] == 3 and found["worst_kept_full_rank"] == 5
    kept = {"candidates": [dict(r, zero_shot_loss=r["zero_shot_loss"] or (2.0 if r["name"] == "b" else None))
                           for r in screened["candidates"]]}
    assert bench.check(kept, full)["same_top"]


def test_generate_speed_dry_mode(one_thread):
    """The generation benchmark on a tiny random teacher: padded batches and continuous batching write the same greedy
    replies to the same prompts, and the summary renders as docs/performance.md's table."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "generate_speed.py"), "--dry", "--prompts", "9",
           "--max-new-tokens", "12", "--padded", "4", "--continuous", "3"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(summary["runs"]) == ["padded 4", "continuous 3"] and summary["prompts"] == 9
    assert all(r["same_as_first"] == 9 and r["tokens"] > 0 for r in summary["runs"].values())
    assert "| continuous 3 |" in load_benchmark("generate_speed").table(summary)


def test_gguf_convert_dry_mode(tmp_path, one_thread):
    """The GGUF reading benchmark on a tiny export: both readings run in their own processes, and the summary renders
    as docs/export.md's table."""
    from test_export import byte_level_tokenizer, save_model

    from minitron.export import export

    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    gguf = export(str(tmp_path / "hf"), tmp_path / "tiny.gguf", "q8_0").gguf
    cmd = [sys.executable, str(REPO / "benchmarks" / "gguf_convert.py"), "--dry", "--gguf", str(gguf)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads(done.stdout.strip().splitlines()[-1])
    assert saved["repeats"] == 1 and all(saved["medians"][way]["seconds"] > 0 for way in ("minitron", "transformers"))
    assert "| minitron |" in load_benchmark("gguf_convert").table(saved)


def test_demo_seeds_table_pairs_each_row_with_the_demo():
    """benchmarks/demo_seeds.py's report: each row's means over the seeds, the share of the demo's teacher–pruned gap
    closed out of domain (by hand), and the paired differences against the demo, seed by seed (by hand)."""
    demo_seeds = load_benchmark("demo_seeds")
    teacher = {"dev_loss": 3.0, "test_loss": 3.1, "ood_loss": 3.0}
    pruned = {s: {"dev_loss": 7.0, "test_loss": 7.0, "ood_loss": 7.0, "test_kl": 4.0} for s in "012"}

    def run(ood, dev):
        return {"dev_loss": dev, "test_loss": dev + 0.1, "ood_loss": ood, "test_kl": 1.0, "wall_s": 600.0}

    rows = {"teacher": teacher,
            "demo": {"pruned": pruned, "seeds": {"0": run(4.6, 4.0), "1": run(4.7, 4.1), "2": run(4.5, 3.9)}},
            "stages2": {"pruned": pruned, "seeds": {"0": run(4.4, 3.8), "1": run(4.4, 3.9), "2": run(4.3, 3.7)}}}
    settings = {"config": "configs/demo.yaml", "seeds": [0, 1, 2], "val_seqs": 32,
                "rows": {r: demo_seeds.ROWS[r] for r in ("demo", "stages2")}}
    saved = {"baseline": "demo", "rows": rows, "settings": settings}
    text = demo_seeds.render(saved)
    demo_line = next(line for line in text.splitlines() if line.startswith("| demo |"))
    assert "| 60% | 10.0 min |" in demo_line  # (7 - 4.6) / (7 - 3), over the seeds
    stages_line = next(line for line in text.splitlines() if line.startswith("| stages2 | 3 |"))
    assert stages_line.startswith("| stages2 | 3 | -0.200 ± ") and stages_line.endswith("| better |")  # dev, by hand
