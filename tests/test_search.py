"""`minitron search`: the shapes under a budget (exact counts, steps, floors), and the search end to end on a tiny
model: zero-shot scores, one short distillation, resume, a failing candidate skipped."""
import json

import pytest
import torch

from conftest import cli_error, own_names, tiny_config
from minitron import search as search_mod
from minitron.arch import arch_of, layers_differ
from minitron.distill import TrainConfig
from minitron.data import TokenData
from minitron.errors import MinitronError
from minitron.eval import EvalConfig
from minitron.load import load_config, load_model
from minitron.numerics import lm_loss, native_bf16, windows_in_batches
from minitron.prune import PruneConfig, check_target, params_of, target_config
from minitron.search import ParamCounter, Space, budget_of, enumerate_shapes, mixer_heads, search, spread

TRAIN = TrainConfig(seq_len=32, micro_batch=4, global_batch_tokens=256, lr=3e-3, eval_every=0, save_every=2)
PRUNE = PruneConfig(calib_seqs=4, seq_len=32)


@pytest.mark.parametrize("tie", [False, True])
def test_param_counts_are_exact(family, tie):
    config = tiny_config(family, tie)
    count = ParamCounter(config)
    for sizes in [dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=3),
                  dict(hidden_size=48, num_attention_heads=6, intermediate_size=96, num_hidden_layers=1)]:
        arch = arch_of(config)
        experts = {"num_experts": 4} if arch.moe else {}
        mixer = mixer_heads(arch)  # a hybrid's search varies its recurrent heads (its depth: test_hybrid; Granite 4's
        # Mamba-2 heads follow hidden_size)
        hybrid = {**({mixer[0]: {"mamba": sizes["num_attention_heads"], "delta": 2}[arch.mixer]} if mixer else {}),
                  "num_hidden_layers": 4} if layers_differ(config) else {}  # (and a mixture with dense layers)
        sizes = own_names(config, {**sizes, **experts, **hybrid})
        assert count(sizes) == params_of(target_config(config, check_target(config, sizes)))


def test_enumeration_respects_budget_steps_and_floors():
    config = tiny_config("llama")  # hidden 64, 8 heads in 2 KV groups, MLP 96, 4 layers
    budget = budget_of(0.5, params_of(config))
    shapes = enumerate_shapes(config, budget, 0.1, steps={"hidden_size": 16, "intermediate_size": 32},
                              floors={"num_hidden_layers": 2})
    assert shapes
    for c in shapes:
        s = c.sizes
        assert abs(c.params - budget) <= 0.1 * budget
        assert c.params == params_of(target_config(config, check_target(config, s)))
        assert s["hidden_size"] % 16 == 0 and s["intermediate_size"] % 32 == 0 and s["num_attention_heads"] % 2 == 0
        assert s["num_hidden_layers"] >= 2
    assert len({c.name for c in shapes}) == len(shapes)
    assert len(spread(shapes, 3, config)) == min(3, len(shapes))
    assert budget_of(1000, params_of(config)) == 1000
    with pytest.raises(MinitronError, match="multiple of num_key_value_heads"):
        enumerate_shapes(config, budget, 0.1, steps={"num_attention_heads": 3})


def run_search(teacher, data, tmp_path, **kw):
    args = dict(params=0.6, model=str(teacher), out=tmp_path / "best", work=tmp_path / "work", tolerance=0.15,
                steps={"hidden_size": 16, "intermediate_size": 32}, max_candidates=4, distill_top=1,
                distill_tokens=512, data=data, val_seqs=2, prune=PRUNE, distill=TRAIN, device="cpu")
    return search(**{**args, **kw})


def test_search_end_to_end_and_resume(tiny_dir, tiny_data, tmp_path, one_thread, monkeypatch, capsys):
    result = run_search(tiny_dir, tiny_data, tmp_path)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"wrote {tmp_path / 'best'}: the winner")
    record = json.loads((tmp_path / "work" / "search.json").read_text())
    rows = record["candidates"]
    assert len(rows) == 4 and all(r["zero_shot_loss"] > 0 for r in rows)
    distilled = [r for r in rows if r["distilled_loss"] is not None]
    assert len(distilled) == 1 and distilled[0]["rank"] == 1 and distilled[0]["zero_shot_rank"] == 1
    assert result["target"] == distilled[0]["sizes"]
    pruned = json.loads((tmp_path / "best" / "config.json").read_text())
    assert {k: pruned[k] for k in result["target"]} == result["target"]
    assert json.loads((tmp_path / "best" / "pruning.json").read_text())["params_after"] == result["params"]
    # candidates are ranked on windows spread over the dev split (selection), not on the test split (reports)
    dev = windows_in_batches(TokenData.open(tiny_data).spread("dev", 2, 32).batch, 4)
    winner = [r for r in rows if r["sizes"] == result["target"]][0]
    dtype = record["settings"]["dtype"]  # --dtype auto: bf16 where the CPU computes it natively
    assert dtype == ("bfloat16" if native_bf16(torch.device("cpu")) else "float32")
    best = load_model(tmp_path / "best", dtype=getattr(torch, dtype))
    assert winner["zero_shot_loss"] == pytest.approx(lm_loss(best, dev), rel=1e-5)
    assert (tmp_path / "work" / "search.png").stat().st_size > 0
    assert "| 1 | 1 |" in (tmp_path / "work" / "search.md").read_text()
    # resumed with the same settings: nothing is measured or trained again
    monkeypatch.setattr(search_mod, "lm_loss", lambda *a: pytest.fail("measured again"))
    monkeypatch.setattr(search_mod, "run_distill", lambda *a: pytest.fail("trained again"))
    again = run_search(tiny_dir, tiny_data, tmp_path, out=tmp_path / "best2")
    assert again["target"] == result["target"]
    with pytest.raises(MinitronError, match="tolerance"):
        run_search(tiny_dir, tiny_data, tmp_path, out=tmp_path / "best3", tolerance=0.2)


def test_by_default_every_shape_is_scored_and_an_interrupted_pass_keeps_its_measures(tiny_dir, tiny_data, tmp_path,
                                                                                     one_thread, monkeypatch):
    config = load_config(tiny_dir)
    shapes = Space(config, 0.6, 0.15, steps={"hidden_size": 16, "intermediate_size": 32}).every()
    assert len(shapes) > 16  # more than one save of the zero-shot pass
    real, measured = search_mod.lm_loss, []

    def stop_after_17(*a):
        if len(measured) == 17:
            raise KeyboardInterrupt
        measured.append(1)
        return real(*a)

    monkeypatch.setattr(search_mod, "lm_loss", stop_after_17)
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_dir, tiny_data, tmp_path, max_candidates=None, distill_top=0)
    kept = json.loads((tmp_path / "work" / "search.json").read_text())["candidates"]
    assert len(kept) == len(shapes) and sum(r["zero_shot_loss"] is not None for r in kept) == 16
    measured.clear()
    monkeypatch.setattr(search_mod, "lm_loss", lambda *a: (measured.append(1), real(*a))[1])
    result = run_search(tiny_dir, tiny_data, tmp_path, max_candidates=None, distill_top=0)
    rows = json.loads((tmp_path / "work" / "search.json").read_text())["candidates"]
    assert len(measured) == len(shapes) - 16  # the 16 saved are not measured again
    assert all(r["zero_shot_loss"] is not None for r in rows) and len(rows) == len(shapes)
    assert result["target"] == min(rows, key=lambda r: r["zero_shot_loss"])["sizes"]


def test_a_failing_candidate_is_reported_and_skipped(tiny_dir, tiny_data, tmp_path, one_thread, monkeypatch):
    real, calls = search_mod.run_distill, []

    def first_fails(cfg):
        calls.append(cfg.student)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(cfg)

    monkeypatch.setattr(search_mod, "run_distill", first_fails)
    result = run_search(tiny_dir, tiny_data, tmp_path, distill_top=2, max_candidates=3)
    rows = json.loads((tmp_path / "work" / "search.json").read_text())["candidates"]
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "out of memory" in failed[0]["error"] and failed[0]["rank"] == len(rows)
    assert result["target"] != failed[0]["sizes"] and len(calls) == 2
    assert "failed: RuntimeError" in (tmp_path / "work" / "search.md").read_text()


def test_search_refuses_an_impossible_budget(tiny_dir, capsys):
    assert "not fewer than the teacher" in cli_error(capsys, "search", "--model", tiny_dir, "--params", "1e12",
                                                     "--out", "/nonexistent/x")


def test_compress_with_a_parameter_budget_searches_the_shape(tiny_dir, tiny_data, tmp_path, one_thread):
    import minitron
    from dataclasses import replace

    run = tmp_path / "run"
    metrics = minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=run, params=0.6, search_top=1,
                                search_tokens=256, prune=PRUNE, prompt="hi",
                                eval=EvalConfig(tokens=64, ood=False, tasks=[]),
                                distill=replace(TRAIN, tokens=512, save_every=50))
    stages = json.loads((run / "record.json").read_text())
    assert list(stages) == ["data", "search", "distill", "evaluate"]
    assert "val_seqs" not in stages["search"]["settings"]  # the search ranks on its own default dev windows
    found = stages["search"]["outputs"]["target"]
    assert {k: metrics["target"][k] for k in found} == found
    assert metrics["distilled"]["params"] == stages["search"]["outputs"]["params"]
    assert "## Shape search" in (run / "report.md").read_text()
    with pytest.raises(MinitronError, match="not both"):
        minitron.compress(teacher=str(tiny_dir), data=tiny_data, out=tmp_path / "r2", params=0.5,
                          target={"hidden_size": 32})


def test_screening_measures_only_the_best_on_every_window(tiny_dir, tiny_data, tmp_path, one_thread):
    result = run_search(tiny_dir, tiny_data, tmp_path, max_candidates=None, distill_top=0, val_seqs=4,
                        screen_seqs=2, screen_keep=3)
    rows = json.loads((tmp_path / "work" / "search.json").read_text())["candidates"]
    assert len(rows) > 3 and all(r["screen_loss"] is not None for r in rows)
    finalists = [r for r in rows if r["zero_shot_loss"] is not None]
    by_screen = sorted(rows, key=lambda r: r["screen_loss"])
    assert sorted(r["name"] for r in finalists) == sorted(r["name"] for r in by_screen[:3])
    assert result["target"] == min(finalists, key=lambda r: r["zero_shot_loss"])["sizes"]
    assert [r["zero_shot_rank"] for r in rows[:3]] == [1, 2, 3]  # the finalists rank first, by their full loss
    tokens = TokenData.open(tiny_data)
    dtype = json.loads((tmp_path / "work" / "search.json").read_text())["settings"]["dtype"]  # as the search measured
    best = load_model(tmp_path / "best", dtype=getattr(torch, dtype))
    for split, n, key in (("dev", 2, "screen_loss"), ("dev", 4, "zero_shot_loss")):
        windows = windows_in_batches(tokens.spread(split, n, 32).batch, 4)
        assert rows[0][key] == pytest.approx(lm_loss(best, windows), rel=1e-5)
    assert "screening: every shape on 2, the best 3 on all" in (tmp_path / "work" / "search.md").read_text()
    with pytest.raises(MinitronError, match=r"--screen-keep \(at least 1 and at least --distill-top\) must be a whole "
                                            "number, at least 4, not 3"):
        run_search(tiny_dir, tiny_data, tmp_path, out=tmp_path / "b2", distill_top=4, screen_keep=3)
    for flag, bad, rule in (("tolerance", 1.5, "between 0 and 1"), ("max_candidates", 0, "a positive whole number"),
                            ("distill_top", -1, "a whole number, 0 or more"), ("val_seqs", 2.0, "a positive whole")):
        with pytest.raises(MinitronError, match=f"^--{flag.replace('_', '-')} must be {rule}"):  # each flag by name
            run_search(tiny_dir, tiny_data, tmp_path, out=tmp_path / "b3", **{flag: bad})
    assert not (tmp_path / "b3").exists()


def test_dry_run_lists_the_shapes_and_writes_nothing(tiny_dir, tmp_path, capsys, monkeypatch):
    """search --dry-run lists the shapes within the budget (spread to --max-candidates) with their exact parameter
    counts, from the teacher's config alone; without it, --out is required."""
    monkeypatch.setattr(search_mod, "load_model", lambda *a, **k: pytest.fail("a dry run loaded weights"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    plan = search(0.6, str(tiny_dir), dry_run=True, tolerance=0.15, steps={"hidden_size": 16,
                                                                          "intermediate_size": 32})
    space = Space(load_config(tiny_dir), 0.6, 0.15, {"hidden_size": 16, "intermediate_size": 32})
    budget, every = space.budget, space.every()
    assert plan["budget"] == budget and [s["sizes"] for s in plan["shapes"]] == [c.sizes for c in every]
    out = capsys.readouterr().out
    assert all(f"{c.name}: {c.params:,} parameters" in out for c in every)
    assert list((tmp_path / "cwd").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "tiny-llama"]
    assert len(search(0.6, str(tiny_dir), dry_run=True, tolerance=0.15, max_candidates=2)["shapes"]) == 2
    with pytest.raises(MinitronError, match="--out is required .* or use --dry-run"):
        search(0.6, str(tiny_dir))


@pytest.mark.parametrize("family,mha", [("stablelm", False), ("olmoe", False), ("starcoder2", False),
                                        ("gpt_neox", True), ("gpt2", True), ("gpt_bigcode", False), ("gptj", True),
                                        ("phi", True), ("stablelm", True), ("olmoe", True), ("falcon", False),
                                        ("falcon_7b", False), ("falcon_in_turn", True), ("helium", False),
                                        ("gpt_neo", True)])
def test_a_family_whose_attention_is_hidden_wide_searches_heads_with_hidden(family, mha):
    """StableLM's head size is hidden_size / heads and OLMoE's q norm is hidden_size wide: the search takes only
    shapes with num_attention_heads x head_dim == hidden_size, and counts their parameters exactly (the affine count
    in the heads at a fixed hidden size does not apply: StableLM cannot even be built with a ninth head at 64). With
    as many KV heads as heads (multi-head attention: Pythia's, Phi-2's, StableLM 2 1.6B's, OLMoE's), the KV heads
    follow the heads, stepped in eighths: the hidden size is searched too (it was not: the heads stepped by all 8)."""
    config = tiny_config(family, **({"num_key_value_heads": 8} if mha else {}))  # hidden 64: 8 heads of 8
    shapes = enumerate_shapes(config, budget_of(0.5, params_of(config)), 0.2, steps={"hidden_size": 16})
    assert shapes and all(c.sizes["num_attention_heads"] * 8 == c.sizes["hidden_size"] for c in shapes)
    assert len({c.sizes["hidden_size"] for c in shapes}) > 1
    assert all(c.params == params_of(target_config(config, check_target(config, c.sizes))) for c in shapes)
    if mha:
        assert all(check_target(config, c.sizes)["num_key_value_heads"] == c.sizes["num_attention_heads"]
                   for c in shapes)


@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "nemotron_h", "granitemoehybrid"])
def test_enumeration_finds_every_shape_within_the_budget(family):
    """The MLP sizes are solved for (the count is affine in them), not counted one by one: the shapes are those a count
    of every combination finds, in the same order (a hybrid at every depth, its layers dropped from the end)."""
    from itertools import product

    from minitron.search import ParamCounter, axis_values, check_axes, searched, valid_width

    config = tiny_config(family, num_hidden_layers=6) if family == "nemotron_h" else tiny_config(family)
    L, axes = config.num_hidden_layers, searched(config)
    drops = {d: list(range(d, L)) for d in (L - 1, L - 2)} if arch_of(config).hybrid else None  # (they keep layer 1)
    budget, tolerance = budget_of(0.6, params_of(config)), 0.15
    steps = check_axes(config, {"hidden_size": 16}, None)
    count, teacher = ParamCounter(config, drops), tuple(getattr(config, a) for a in axes)
    values = [axis_values(config, a, steps[a], getattr(config, "num_experts_per_tok", 1) if a == "num_experts" else 1)
              for a in axes]
    every = []
    for shape in product(*values):
        sizes = dict(zip(axes, shape))
        if drops and sizes["num_hidden_layers"] not in count.kept or not valid_width(config, *shape[:2]) or \
                count.idle(sizes):
            continue
        if (1 - tolerance) * budget <= count(sizes) <= (1 + tolerance) * budget and shape != teacher:
            every.append((sizes, count(sizes)))
    found = [(c.sizes, c.params) for c in enumerate_shapes(config, budget, tolerance, {"hidden_size": 16}, None, drops)]
    assert found == every and len(every) > 10
