"""Hybrids: Nemotron-H's Mamba-2 heads and head channels and Qwen3.5's Gated DeltaNet value and key heads are scored,
pruned group by group, streamed and searched; LFM2's short convolutions' channels follow its hidden size; a student
keeps an attention layer; what transformers cannot build is refused in one line."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from conftest import build_tiny_data, cli_error, own_names, run_cli, save_tiny, tiny_config, tiny_model
from minitron.arch import MambaRows, arch_of, conv_of, delta_of, mamba_of
from minitron.errors import MinitronError
from minitron.importance.stats import ActivationRecorder
from minitron.prune import check_target, params_of, select_heads, target_config
from minitron.load import load_config
from minitron.prune.slicing import prune_conv, prune_mamba
from minitron.search import ParamCounter, enumerate_shapes, searched

LAYERS = 6  # Mamba-2, attention, MLP, attention, Mamba-2, attention
IDS = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(0))


def norm_inputs(mamba, x):
    """What a Mamba-2 mixer hands its gated norm (the scan's output, the gate) for input x, and its output."""
    got = []
    hook = mamba.norm.register_forward_pre_hook(lambda m, args: got.append([a.detach() for a in args]))
    with torch.no_grad():
        out = mamba(x)
    hook.remove()
    return got[0], out


@pytest.mark.parametrize("family", ["nemotron_h", "granitemoehybrid", "bamba"])
def test_pruning_mamba_heads_and_channels_keeps_their_scan(family):
    """The kept heads' kept channels scan as in the teacher (the same x, B, C, dt, A and D reach them); the gated norm
    then normalises each group over its kept channels, and out_proj reads them (Nemotron-H's, Granite 4's and Bamba's
    mixers)."""
    model = tiny_model(family, num_hidden_layers=LAYERS)
    names, head_dim = arch_of(model.config).mamba_names, mamba_of(model.model.layers[0]).head_dim
    g = torch.Generator().manual_seed(1)
    heads = [select_heads(torch.rand(8, generator=g), 2, 4, 2)[0] for _ in range(LAYERS)]  # two of four a group
    channels = [torch.randperm(head_dim, generator=g)[:5].sort().values for _ in range(LAYERS)]
    pruned = copy.deepcopy(model)
    prune_mamba(pruned, heads, channels)
    assert (getattr(pruned.config, names.heads), getattr(pruned.config, names.head_dim)) == (4, 5)
    x = torch.randn(2, 20, 64, generator=g)
    for i in (0, 4):
        teacher, student = mamba_of(model.model.layers[i]), mamba_of(pruned.model.layers[i])
        (scan, gate), _ = norm_inputs(teacher, x)
        (s_scan, s_gate), out = norm_inputs(student, x)
        kept = MambaRows.of(teacher).channels(heads[i], channels[i])
        assert_close(s_scan, scan[..., kept], rtol=1e-5, atol=1e-6)
        assert_close(s_gate, gate[..., kept])
        y = (scan[..., kept] * F.silu(gate[..., kept])).unflatten(-1, (2, -1))  # two groups of ten channels
        y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + student.norm.variance_epsilon)).flatten(-2)
        assert_close(out, F.linear(y * student.norm.weight, student.out_proj.weight), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.isfinite(pruned(IDS).logits).all()


def out_proj_inputs(model, mixer_of) -> tuple[dict[int, torch.Tensor], dict[str, torch.Tensor]]:
    """What each layer's mixer (`mixer_of`: Mamba-2's, a short convolution's) hands its out_proj for IDS, by layer
    (those without one left out), and the scores the activation recorder took on the same pass."""
    captured = {}
    hooks = [mixer_of(layer).out_proj.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0]))
             for i, layer in enumerate(model.model.layers) if mixer_of(layer) is not None]
    rec = ActivationRecorder(model, arch_of(model.config))
    with torch.no_grad(), rec:
        model(input_ids=IDS)
    for h in hooks:
        h.remove()
    return captured, rec.scores()


def test_mamba_activations_are_each_heads_and_channels_norms():
    """Mamba-2 heads score by each head's norm of out_proj's input, channels by each channel's norm over the heads,
    aggregated like attention heads (here: mean over the sequence, L2 over the batch); 0 in other layers."""
    captured, scores = out_proj_inputs(tiny_model("nemotron_h", num_hidden_layers=LAYERS), mamba_of)
    for unit, dim in (("mamba", -1), ("mamba_dim", -2)):
        got = scores[f"activation/mean-l2/{unit}"]
        assert got.shape == (LAYERS, 8)
        for i in range(LAYERS):
            if i not in captured:
                assert (got[i] == 0).all()
                continue
            per_head = captured[i].unflatten(-1, (8, 8))  # (B, S, heads, channels)
            want = torch.linalg.vector_norm(per_head, dim=dim).mean(1).pow(2).sum(0).sqrt()
            assert_close(got[i], want, rtol=1e-5, atol=1e-6)


def prune_both_ways(tmp_path, target: str, data) -> tuple[dict, dict, AutoModelForCausalLM]:
    """`prune` of tmp_path/teacher to `target`, streamed and in memory (layers chosen by their loss), checked to write
    the same tensors: those, the streamed run's record and its student."""
    for stream in ("--stream", "--no-stream"):
        run_cli("prune", "--model", tmp_path / "teacher", "--target", target, "--out", tmp_path / stream,
                "--prune.calib-seqs", 4, "--prune.seq-len", 16, "--prune.layer-criterion", "loss", stream,
                "--data", data)
    tensors = {}
    for stream in ("--stream", "--no-stream"):
        with safe_open(tmp_path / stream / "model.safetensors", "pt") as f:
            tensors[stream] = {k: f.get_tensor(k) for k in f.keys()}
    assert tensors["--stream"].keys() == tensors["--no-stream"].keys()
    for k, t in tensors["--stream"].items():
        assert torch.equal(t, tensors["--no-stream"][k]), k
    record = json.loads((tmp_path / "--stream" / "pruning.json").read_text())
    return tensors["--stream"], record, AutoModelForCausalLM.from_pretrained(tmp_path / "--stream").eval()


def test_prune_writes_a_hybrid_streamed_as_in_memory(tmp_path):
    """`prune` of every size a Nemotron-H has, its layers chosen by their scores: streamed and in memory write the same
    tensors under the names transformers stores (backbone.), with the count of the layers that went."""
    save_tiny(tmp_path / "teacher", "nemotron_h", num_hidden_layers=LAYERS)
    data = build_tiny_data(tmp_path, tmp_path / "teacher")
    target = ("hidden_size=48,intermediate_size=64,num_attention_heads=4,num_key_value_heads=1,mamba_num_heads=6,"
              "mamba_head_dim=4,num_hidden_layers=4")
    tensors, record, student = prune_both_ways(tmp_path, target, data)
    assert all(k.startswith(("backbone.", "lm_head.")) for k in tensors)
    kept = [i for i in range(LAYERS) if i not in record["dropped_layers"]]
    teacher_kinds = tiny_config("nemotron_h", num_hidden_layers=LAYERS).layer_types
    assert student.config.layer_types == [teacher_kinds[i] for i in kept]
    assert record["params_after"] == sum(p.numel() for p in student.parameters())
    assert (student.config.mamba_num_heads, student.config.mamba_head_dim, student.config.hidden_size) == (6, 4, 48)
    with torch.no_grad():
        assert torch.isfinite(student(IDS).logits).all()


def test_what_a_hybrid_cannot_be_is_refused(capsys, tmp_path):
    config = tiny_config("nemotron_h", num_hidden_layers=LAYERS)
    with pytest.raises(MinitronError, match="not a multiple of n_groups=2"):
        check_target(config, {"mamba_num_heads": 5})
    with pytest.raises(MinitronError, match="keeps none of this nemotron_h model's attention layers"):
        target_config(config, check_target(config, {}, [1, 3, 5]), [1, 3, 5])
    with pytest.raises(MinitronError, match="first layer is an MLP or mixture-of-experts layer, and transformers' "
                                            "Nemotron-H reads"):
        target_config(config, check_target(config, {}, [0, 1]), [0, 1])  # its generate() fails: a test by hand
    moe = tiny_config("nemotron_h_moe")  # attention, attention, experts, experts
    moe.layers_block_type = ["full_attention", "moe", "full_attention", "moe"]
    with pytest.raises(MinitronError, match="first layer is an MLP or mixture-of-experts layer"):
        target_config(moe, check_target(moe, {}, [0]), [0])
    moe.layers_block_type = ["linear_attention", "moe", "full_attention", "mlp"]
    with pytest.raises(MinitronError, match="has both MLP and mixture-of-experts layers; minitron prunes Nemotron-H "
                                            "models with one of the two kinds"):
        arch_of(moe)
    save_tiny(tmp_path / "teacher", "nemotron_h", num_hidden_layers=LAYERS)
    line = cli_error(capsys, "prune", "--model", tmp_path / "teacher", "--prune.drop-layers", "1", "3", "5",
                     "--out", tmp_path / "out")
    assert "keeps none of this nemotron_h model's attention layers" in line


def test_nemotron_3_nano_is_taken_counted_and_exportable():
    """Nemotron 3 Nano 30B-A3B's settings (52 layers: 23 Mamba-2, 23 of 128 squared-ReLU experts, 6 attention): taken
    as a Nemotron-H with experts, counted as transformers builds it (its 31.6B), exportable as llama.cpp's
    nemotron_h_moe graph; its experts' sizes are a target's."""
    from transformers import NemotronHConfig
    from minitron.arch import NEMOTRON_H_MOE
    from minitron.export_checks import check_exportable, export_problem
    from minitron.gguf_layout import gguf_arch

    config = NemotronHConfig(
        hybrid_override_pattern="MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME", hidden_size=2688,
        num_attention_heads=32, num_key_value_heads=2, head_dim=128, mamba_num_heads=64, mamba_head_dim=64,
        n_groups=8, ssm_state_size=128, n_routed_experts=128, num_experts_per_tok=6, moe_intermediate_size=1856,
        moe_shared_expert_intermediate_size=3712, routed_scaling_factor=2.5, vocab_size=131072,
        tie_word_embeddings=False, num_hidden_layers=52)
    assert arch_of(config) is NEMOTRON_H_MOE and gguf_arch(config) == "nemotron_h_moe"
    assert params_of(config) == 31_577_937_344 and export_problem(config) is None
    with pytest.raises(MinitronError, match="without a Mamba-2 layer: llama.cpp's graph fails to allocate"):
        check_exportable(tiny_config("nemotron_h_moe"))  # attention, attention, experts, experts
    sizes = check_target(config, {"n_routed_experts": 96, "moe_intermediate_size": 1536,
                                  "moe_shared_expert_intermediate_size": 3072})
    assert params_of(target_config(config, sizes)) < params_of(config)


def test_granite_4s_mamba_heads_follow_its_hidden_size(tmp_path, tiny_data):
    """Granite 4's Mamba-2 mixers are mamba_expand x hidden_size wide (transformers sizes them so): a target's hidden
    size sets the heads (their channels kept, whole groups), heads x channels of another width are refused in one line,
    and the search varies the hidden size alone for them, counting exactly; the student reloads in stock
    transformers."""
    config = tiny_config("granitemoehybrid")  # hidden 64, Mamba-2 2 x 64 = 8 heads x 16 channels, two groups
    assert check_target(config, {"hidden_size": 32})["mamba_n_heads"] == 4
    assert check_target(config, {"hidden_size": 48, "mamba_d_head": 12})["mamba_n_heads"] == 8
    with pytest.raises(MinitronError, match="mamba_expand x hidden_size = 2 x 48 = 96 wide, and mamba_n_heads=4 x "
                                            "mamba_d_head=16 = 64 is not"):
        check_target(config, {"hidden_size": 48, "mamba_n_heads": 4})
    with pytest.raises(MinitronError, match="mamba_n_heads=5 is not a multiple of mamba_n_groups=2"):
        check_target(config, {"hidden_size": 40})
    shapes = enumerate_shapes(config, int(0.6 * params_of(config)), 0.15, steps={"hidden_size": 16,
                                                                                  "shared_intermediate_size": 32})
    assert shapes and all("mamba_n_heads" not in c.sizes and c.sizes["hidden_size"] % 16 == 0 for c in shapes)
    for c in shapes:
        assert c.params == params_of(target_config(config, check_target(config, c.sizes)))
    save_tiny(tmp_path / "teacher", "granitemoehybrid")
    run_cli("prune", "--model", tmp_path / "teacher", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len",
            16, "--target", "hidden_size=32,shared_intermediate_size=48", "--out", tmp_path / "out")
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert (student.config.hidden_size, student.config.mamba_n_heads, student.config.mamba_d_head) == (32, 4, 16)
    from minitron.pipeline import stage_targets  # a compress round's hidden size keeps whole groups of heads too
    assert stage_targets(config, check_target(config, {"hidden_size": 32}), {"hidden_size": 32}, 2) == [
        {"hidden_size": 48}, {"hidden_size": 32}]
    with torch.no_grad():
        assert torch.isfinite(student(input_ids=IDS).logits).all()


def test_the_search_varies_mamba_heads_and_keeps_a_hybrids_layers_unscored():
    """Its layers differ in kind, so which go decides the count: without scores the search keeps them, and counts the
    Mamba-2 heads it varies (in whole groups) exactly."""
    config = tiny_config("nemotron_h", num_hidden_layers=LAYERS)
    budget = int(0.6 * params_of(config))
    shapes = enumerate_shapes(config, budget, 0.1, steps={"hidden_size": 16, "intermediate_size": 32})
    assert shapes and {c.sizes["num_hidden_layers"] for c in shapes} == {LAYERS}
    assert {c.sizes["mamba_num_heads"] for c in shapes} > {8}
    count = ParamCounter(config)
    for c in shapes:
        assert c.sizes["mamba_num_heads"] % 2 == 0 and "-m" in c.name
        assert c.params == count(c.sizes) == params_of(target_config(config, check_target(config, c.sizes)))


@pytest.mark.parametrize("family", ["nemotron_h", "qwen3_5_text", "qwen3_5_moe_text", "lfm2", "lfm2_moe", "qwen3_moe"])
def test_a_hybrids_count_follows_the_layers_dropped(family):
    """A hybrid's layers cost by kind: with the layers dropped at each depth, every shape is counted exactly, whichever
    kinds go; a size that no kept layer has is enumerated at the teacher's value only. A mixture of experts' dense
    layers are a kind of their own (LFM2-MoE's first layer; a Qwen3-MoE's mlp_only_layers), their neurons the teacher's
    (not searched)."""
    dense = {"mlp_only_layers": [1, 4]} if family == "qwen3_moe" else {}
    config = tiny_config(family, num_hidden_layers=LAYERS, **dense)
    L = config.num_hidden_layers
    drops = {L - 1: [0], L - 2: [2, 4], 3: [0, 2, 4], 2: [1, 2, 5] if family == "nemotron_h" else [0, 1, 2, 5]}
    drops = {d: drop for d, drop in drops.items() if L - len(drop) == d}
    count = ParamCounter(config, drops)
    mixer = {"nemotron_h": "mamba_num_heads", "qwen3_5_text": "linear_num_value_heads",
             "qwen3_5_moe_text": "linear_num_value_heads"}.get(family)  # (LFM2's short convolutions follow the hidden
    # size, as wide as it)
    heads, experts = config.num_key_value_heads, {"num_experts": 2} if arch_of(config).moe else {}
    for depth, drop in drops.items():
        for D, H, F, M in [(32, heads, 32, 2), (48, 2 * heads, 64, 4)]:
            sizes = own_names(config, {"hidden_size": D, "num_attention_heads": H, "intermediate_size": F,
                                       "num_hidden_layers": depth, **({mixer: M * getattr(config, mixer) // 4}
                                                                      if mixer else {}), **experts})
            assert count(sizes) == params_of(target_config(config, check_target(config, sizes), drop)), (depth, sizes)
    assert count.most(L) == params_of(config) and count.most(1) < params_of(config)
    assert ("intermediate_size" in searched(config)) == (arch_of(config).mlp_size == "intermediate_size")
    if family == "nemotron_h":  # at depth 3 (layers 1, 3, 5: attention only) the Mamba-2 heads and MLP are idle
        shapes = enumerate_shapes(config, int(0.5 * params_of(config)), 0.3,
                                  steps={"hidden_size": 16, "intermediate_size": 32}, drops=drops)
        at3 = [c.sizes for c in shapes if c.sizes["num_hidden_layers"] == 3]
        assert at3 and all(s["mamba_num_heads"] == 8 and s["intermediate_size"] == 96 for s in at3)
        assert len({c.name for c in shapes}) == len(shapes)


def test_a_depth_that_keeps_no_attention_layer_is_not_searched():
    """Transformers runs no hybrid without an attention layer, nor a Nemotron-H whose first layer is an MLP layer: a
    depth whose dropped layers would leave one is left out, and the depths whose costliest layers cannot reach the
    budget are not scored."""
    from minitron.importance import Scores
    from minitron.prune import PruneConfig
    from minitron.search import hybrid_depths, layer_drops

    config = tiny_config("nemotron_h", num_hidden_layers=LAYERS)  # attention at 1, 3, 5
    scores = Scores({"layers/loss": torch.tensor([5.0, 1.0, 4.0, 2.0, 6.0, 3.0])})
    loss = PruneConfig(layer_criterion="loss")
    assert layer_drops(config, scores, loss, [6, 5, 4, 3, 2]) == {6: [], 5: [1], 4: [1, 3]}
    first = Scores({"layers/loss": torch.tensor([1.0, 2.0, 9.0, 8.0, 7.0, 6.0])})  # depths 4 and 3: the MLP first
    assert layer_drops(config, first, loss, [6, 5, 4, 3]) == {6: [], 5: [0]}
    budget = int(0.6 * params_of(config))
    depths = hybrid_depths(config, budget, 0.1)
    count = ParamCounter(config)
    assert depths == [d for d in range(1, LAYERS + 1) if count.most(d) >= 0.9 * budget] and depths[-1] == LAYERS
    assert depths[0] > 1


def test_a_hybrids_search_varies_its_depth_once_scored(tmp_path, capsys, one_thread):
    """The search scores a hybrid first, for every depth the budget may reach, takes each depth's dropped layers from
    the scores, and counts every shape exactly as prune writes it; the winner is pruned to its count. A dry run lists
    the shapes with fewer layers from --scores, and without them says that it lists only the full depth."""
    from minitron.importance import Scores
    from minitron.load import load_config
    from minitron.prune import PruneConfig, make_plan
    from minitron.search import search

    save_tiny(tmp_path / "teacher", "nemotron_h", num_hidden_layers=LAYERS)
    data = build_tiny_data(tmp_path, tmp_path / "teacher")
    teacher, steps, prune = str(tmp_path / "teacher"), {"hidden_size": 16, "intermediate_size": 32}, \
        PruneConfig(calib_seqs=4, seq_len=32)
    full = search(0.6, teacher, dry_run=True, tolerance=0.1, steps=steps, prune=prune)
    assert "give --scores to list those with" in capsys.readouterr().out
    assert {s["sizes"]["num_hidden_layers"] for s in full["shapes"]} == {LAYERS}
    result = search(0.6, teacher, out=tmp_path / "best", work=tmp_path / "work", tolerance=0.1, steps=steps,
                    distill_top=0, data=data, val_seqs=2, screen_seqs=1, screen_keep=4, prune=prune, device="cpu")
    rows = json.loads((tmp_path / "work" / "search.json").read_text())["candidates"]
    assert min(r["sizes"]["num_hidden_layers"] for r in rows) < LAYERS and len(rows) > len(full["shapes"])
    config, scores = load_config(teacher), Scores.load(tmp_path / "work" / "scores")
    for r in rows[::5]:
        drop = make_plan(scores, config, r["sizes"], prune).drop
        assert "full_attention" in [config.layer_types[i] for i in range(LAYERS) if i not in drop]
        assert r["params"] == params_of(target_config(config, check_target(config, r["sizes"]), drop))
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "best").num_parameters() == result["params"]
    dry = search(0.6, teacher, dry_run=True, tolerance=0.1, steps=steps, prune=prune,
                 scores=tmp_path / "work" / "scores")
    assert sorted(json.dumps(s["sizes"]) for s in dry["shapes"]) == sorted(json.dumps(r["sizes"]) for r in rows)
    from minitron.prune import prune as prune_model  # prune's dry run of a depth target counts exactly with --scores
    depth = min(r["sizes"]["num_hidden_layers"] for r in rows)
    counted = prune_model(teacher, target={"num_hidden_layers": depth}, prune=prune, dry_run=True,
                          scores=tmp_path / "work" / "scores")["params_after"]
    written = prune_model(teacher, target={"num_hidden_layers": depth}, prune=prune, out=tmp_path / "deep",
                          scores=tmp_path / "work" / "scores", device="cpu")["params_after"]
    assert counted == written == AutoModelForCausalLM.from_pretrained(tmp_path / "deep").num_parameters()
    first = params_of(target_config(config, check_target(config, {"num_hidden_layers": depth})))
    assert counted != first  # (what the dry run counted without the scores: the first layers kept)


def test_export_writes_what_llama_cpps_granitehybrid_graph_reads(tmp_path):
    """Granite 4 as llama.cpp's converter writes it: its recurrent layers by no KV heads, its Mamba-2 sizes, no RoPE
    (`rope.scaling.finetuned` false: llama.cpp's switch), its multipliers, and its MLP's fused gate and up rows as a
    dense model's two tensors; its GGUF reads back as the model; what llama.cpp's graph computes otherwise is
    refused."""
    import gguf
    from minitron.export import export
    from minitron.export_checks import check_exportable
    from test_export import byte_level_tokenizer, save_model

    model = save_model(tmp_path / "hf", "granitemoehybrid", byte_level_tokenizer())
    reader = gguf.GGUFReader(export(str(tmp_path / "hf"), tmp_path / "m.gguf", "f16").gguf)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    kinds = model.config.layer_types
    assert fields["general.architecture"] == "granitehybrid"
    assert fields["granitehybrid.attention.head_count_kv"] == [2 if k == "full_attention" else 0 for k in kinds]
    assert (fields["granitehybrid.ssm.inner_size"], fields["granitehybrid.ssm.time_step_rank"],
            fields["granitehybrid.ssm.group_count"], fields["granitehybrid.ssm.state_size"]) == (128, 8, 2, 16)
    assert fields["granitehybrid.rope.scaling.finetuned"] is False and "granitehybrid.rope.freq_base" not in fields
    assert fields["granitehybrid.feed_forward_length"] == 96
    assert fields["granitehybrid.embedding_scale"] == pytest.approx(12.0)
    tensors = {t.name: t for t in reader.tensors}
    gate, up = (gguf.dequantize(tensors[f"blk.0.ffn_{n}.weight"].data, tensors[f"blk.0.ffn_{n}.weight"].tensor_type)
                for n in ("gate", "up"))
    fused = model.model.layers[0].shared_mlp.input_linear.weight.detach().half().float().numpy()
    assert (gate == fused[:96]).all() and (up == fused[96:]).all() and "blk.0.ffn_down_shexp.weight" not in tensors
    assert "blk.1.ssm_in.weight" not in tensors and "blk.0.ssm_in.weight" in tensors
    for change, refusal in [({"mamba_expand": 3, "mamba_n_heads": 12}, "takes Mamba-2 mixers twice the hidden size"),
                            ({"time_step_limit": (0.0, 10.0)}, "does not clamp the time step"),
                            ({"mamba_proj_bias": True}, "has no in_proj bias")]:
        with pytest.raises(MinitronError, match=refusal):
            check_exportable(tiny_config("granitemoehybrid", **change))


def test_export_writes_what_llama_cpps_nemotron_h_graph_reads(tmp_path):
    """Each layer's kind by its neurons and KV heads (0 where it has none), query heads one number (llama.cpp takes the
    head size from the first layer's), the Mamba-2 sizes, and A, D, the convolution and the gated norm in the layouts
    llama.cpp's converter writes, in f32; and what its graph computes otherwise is refused."""
    import gguf
    import numpy as np
    from minitron.export import export
    from minitron.export_checks import check_exportable
    from test_export import byte_level_tokenizer, save_model  # a BPE tokenizer llama.cpp reads

    model = save_model(tmp_path / "hf", "nemotron_h", byte_level_tokenizer(), num_hidden_layers=LAYERS)
    out = export(str(tmp_path / "hf"), tmp_path / "m.gguf", "q8_0").gguf
    reader = gguf.GGUFReader(out)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    kinds = model.config.layer_types
    assert fields["nemotron_h.feed_forward_length"] == [96 if k == "mlp" else 0 for k in kinds]
    assert fields["nemotron_h.attention.head_count_kv"] == [2 if k == "full_attention" else 0 for k in kinds]
    assert fields["nemotron_h.attention.head_count"] == 8 and "nemotron_h.rope.freq_base" not in fields
    assert {k: fields[f"nemotron_h.ssm.{k}"] for k in ("conv_kernel", "inner_size", "state_size", "time_step_rank",
                                                         "group_count")} == {
        "conv_kernel": 4, "inner_size": 64, "state_size": 16, "time_step_rank": 8, "group_count": 2}
    tensors = {t.name: t for t in reader.tensors}
    mixer = model.model.layers[0].mixer
    expected = {"blk.0.ssm_a": -mixer.A_log.detach().exp()[:, None], "blk.0.ssm_d": mixer.D.detach()[:, None],
                "blk.0.ssm_dt.bias": mixer.dt_bias.detach(), "blk.0.ssm_conv1d.weight": mixer.conv1d.weight[:, 0],
                "blk.0.ssm_norm.weight": mixer.norm.weight.view(2, 32)}
    for name, want in expected.items():
        assert tensors[name].tensor_type == gguf.GGMLQuantizationType.F32, name
        assert np.allclose(np.asarray(tensors[name].data), want.detach().numpy(), rtol=1e-6), name
    for change, refusal in [({"time_step_limit": (0.0, 10.0)}, "does not clamp the time step"),
                            ({"use_bias": True}, "with use_bias"), ({"use_conv_bias": False}, "use_conv_bias false"),
                            ({"mamba_hidden_act": "relu"}, "activations 'relu2' and 'relu'")]:
        with pytest.raises(MinitronError, match=refusal):
            check_exportable(tiny_config("nemotron_h", **change))


def test_compress_prunes_and_distils_a_hybrid_in_two_rounds(tmp_path, one_thread):
    """The whole recipe on a tiny Nemotron-H, in two rounds whose Mamba-2 heads stay whole groups: scored, pruned,
    distilled, evaluated and reported; the student reloads in stock transformers with the target's sizes."""
    import minitron
    from minitron.distill import TrainConfig
    from minitron.eval import EvalConfig
    from minitron.pipeline import stage_targets
    from minitron.prune import PruneConfig

    config = tiny_config("nemotron_h", num_hidden_layers=LAYERS)
    target = {"mamba_num_heads": 2, "hidden_size": 48}
    rounds = stage_targets(config, check_target(config, target), target, 3)
    assert [r["mamba_num_heads"] for r in rounds] == [6, 4, 2]
    save_tiny(tmp_path / "teacher", "nemotron_h", num_hidden_layers=LAYERS)
    data = build_tiny_data(tmp_path, tmp_path / "teacher")
    metrics = minitron.compress(teacher=str(tmp_path / "teacher"), data=data, out=tmp_path / "run", target=target,
                                stages=2, prune=PruneConfig(calib_seqs=4, seq_len=32), prompt="hello",
                                eval=EvalConfig(tokens=128, tasks=[]),
                                distill=TrainConfig(tokens=1024, seq_len=32, micro_batch=4, global_batch_tokens=256,
                                                    lr=3e-3))
    assert (tmp_path / "run" / "report.md").is_file() and metrics["distilled"]["test_loss"] > 0
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student")
    assert (student.config.mamba_num_heads, student.config.hidden_size) == (2, 48)


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", ["qwen3_5_text", "qwen3_next"])
@pytest.mark.parametrize("v_heads,k_heads", [([0, 2], [0, 1]), ([2, 3], [1])])
def test_pruning_delta_heads_equals_zeroing_their_outputs(family, v_heads, k_heads):
    """Qwen3.5's Gated DeltaNet value heads run apart (each its own z, a, b, convolution channels and per-head norm) and
    read their key head (value heads 0 and 1 key head 0, 2 and 3 key head 1): keeping some, the same number for each
    kept key head, equals zeroing the others' out_proj columns; a key head goes with its value heads. So with
    Qwen3-Next's projections fused key head by key head."""
    from minitron.prune import Plan, apply_plan
    from minitron.prune.slicing import head_rows

    model = tiny_model(family)  # Gated DeltaNet, attention, Gated DeltaNet, attention
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for delta in filter(None, map(delta_of, zeroed.model.layers)):
            gone = torch.tensor([h for h in range(4) if h not in v_heads])
            delta.out_proj.weight[:, head_rows(gone, 8)] = 0
    keep = [torch.tensor(v_heads)] * 4, [torch.tensor(k_heads)] * 4
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, [], delta=keep[0], delta_k=keep[1]))
    assert (pruned.config.linear_num_value_heads, pruned.config.linear_num_key_heads) == (len(v_heads), len(k_heads))
    assert_close(logits(pruned), logits(zeroed), rtol=1e-5, atol=1e-6)


def fused_rows(delta) -> tuple[torch.Tensor, torch.Tensor]:
    """Which in_proj_qkvz row each query, key, value and z channel of a Qwen3-Next Gated DeltaNet reads, and which
    in_proj_ba row each b and a, as transformers' own `fix_query_key_value_ordering` splits them."""
    qkvz, ba = (torch.arange(linear.out_features, dtype=torch.float)[None, None]
                for linear in (delta.in_proj_qkvz, delta.in_proj_ba))
    q, k, v, z, b, a = delta.fix_query_key_value_ordering(qkvz, ba)
    return (torch.cat([t.flatten() for t in (q, k, v, z)]).long(), torch.cat([b.flatten(), a.flatten()]).long())


def unfused_twin(model):
    """The Qwen3.5-MoE model that computes what a Qwen3-Next model computes: the same weights, its Gated DeltaNet's
    in_proj_qkvz and in_proj_ba split into in_proj_qkv, in_proj_z, in_proj_b and in_proj_a (`fused_rows`)."""
    c = model.config
    sizes = ("vocab_size", "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
             "linear_value_head_dim")
    twin = AutoModelForCausalLM.from_config(tiny_config("qwen3_5_moe_text", **{k: getattr(c, k) for k in sizes})).eval()
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("in_proj_qkvz.weight"):
            qkvz, _ = fused_rows(model.get_submodule(key.rsplit(".", 2)[0]))
            qkv = 2 * c.linear_num_key_heads * c.linear_key_head_dim + \
                c.linear_num_value_heads * c.linear_value_head_dim
            state[key.replace("qkvz", "qkv")], state[key.replace("qkvz", "z")] = value[qkvz[:qkv]], value[qkvz[qkv:]]
        elif key.endswith("in_proj_ba.weight"):
            _, ba = fused_rows(model.get_submodule(key.rsplit(".", 2)[0]))
            state[key.replace("ba", "b")], state[key.replace("ba", "a")] = value[ba].chunk(2)
        else:
            state[key] = value
    twin.load_state_dict(state)
    return twin


@pytest.mark.parametrize("k_heads,v_heads", [(2, 4), (2, 6), (3, 6), (1, 1)])
def test_qwen3_next_fuses_the_projections_of_qwen3_5_key_head_by_key_head(k_heads, v_heads):
    """Qwen3-Next's in_proj_qkvz and in_proj_ba hold Qwen3.5's four projections' rows key head by key head, in the
    order transformers' own split reads them (`DeltaRows.fused_order`); with them split, a Qwen3.5-MoE of the same
    weights computes the same logits, is scored alike by every criterion and pruned to the same model."""
    from minitron.arch import DeltaRows
    from minitron.importance import compute_scores
    from minitron.prune import Plan, apply_plan

    model = tiny_model("qwen3_next", linear_num_key_heads=k_heads, linear_num_value_heads=v_heads)
    for delta in filter(None, map(delta_of, model.model.layers)):
        assert all(torch.equal(got, want) for got, want in zip(DeltaRows.of(delta).fused_order(), fused_rows(delta)))
    if (k_heads, v_heads) != (2, 4):
        return
    twin = unfused_twin(model)
    assert_close(logits(model), logits(twin), rtol=0, atol=0)
    criteria = ["activation", "wanda", "magnitude"]
    fused, unfused = (compute_scores(m, [IDS], criteria).tensors for m in (model, twin))
    assert fused.keys() == unfused.keys() and any(k.endswith("/delta") for k in fused)
    for key in fused:
        assert_close(fused[key], unfused[key], rtol=1e-5, atol=1e-6, msg=key)
    keep = [torch.tensor([2, 3])] * 4, [torch.tensor([1])] * 4
    plan = Plan(None, None, None, None, [], delta=keep[0], delta_k=keep[1])
    pruned, pruned_twin = (apply_plan(copy.deepcopy(m), plan) for m in (model, twin))
    assert_close(unfused_twin(pruned).state_dict(), pruned_twin.state_dict(), rtol=0, atol=0)
    assert_close(logits(pruned), logits(pruned_twin), rtol=1e-5, atol=1e-6)


def test_delta_heads_are_scored_targeted_and_searched(tmp_path):
    """Each value head's activation is its norm of out_proj's input; a target keeps as many value heads for each key
    head (no more than the teacher's); the search varies the value heads in whole key-head groups and keeps the
    layers, counting exactly."""
    model = tiny_model("qwen3_5_text")
    captured = {}
    hooks = [delta.out_proj.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0]))
             for i, delta in enumerate(map(delta_of, model.model.layers)) if delta is not None]
    rec = ActivationRecorder(model, arch_of(model.config))
    with torch.no_grad(), rec:
        model(input_ids=IDS)
    for h in hooks:
        h.remove()
    got = rec.scores()["activation/mean-l2/delta"]
    for i in range(4):
        want = torch.linalg.vector_norm(captured[i].unflatten(-1, (4, 8)), dim=-1).mean(1).pow(2).sum(0).sqrt() \
            if i in captured else torch.zeros(4)
        assert_close(got[i], want, rtol=1e-5, atol=1e-6)
    config = model.config
    with pytest.raises(MinitronError, match="linear_num_value_heads=3 is not a multiple of linear_num_key_heads=2"):
        check_target(config, {"linear_num_value_heads": 3})
    with pytest.raises(MinitronError, match="4 Gated DeltaNet value heads per group, more than the teacher's 2"):
        check_target(config, {"linear_num_key_heads": 1})
    shapes = enumerate_shapes(config, int(0.7 * params_of(config)), 0.1, steps={"hidden_size": 16,
                                                                                "intermediate_size": 32})
    assert shapes and {c.sizes["num_hidden_layers"] for c in shapes} == {4}
    assert {c.sizes["linear_num_value_heads"] for c in shapes} == {2, 4} and all("-d" in c.name for c in shapes)
    for c in shapes[::7]:
        assert c.params == params_of(target_config(config, check_target(config, c.sizes)))


def test_export_writes_qwen3_5_as_llama_cpps_qwen35_graph_reads_it(tmp_path):
    """Which layers are recurrent, the Gated DeltaNet sizes as llama.cpp's `ssm.*` keys, and the value heads tiled over
    the key heads (value head 0 of key head 0, value head 0 of key head 1, value head 1 of key head 0, ...) in every
    tensor that has them; key and value heads of different sizes are refused."""
    import gguf
    import numpy as np
    from minitron.export import export
    from minitron.export_checks import check_exportable
    from test_export import byte_level_tokenizer, save_model

    model = save_model(tmp_path / "hf", "qwen3_5_text", byte_level_tokenizer())
    reader = gguf.GGUFReader(export(str(tmp_path / "hf"), tmp_path / "m.gguf", "f16").gguf)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["qwen35.attention.recurrent_layers"] == [True, False, True, False]
    assert {k: fields[f"qwen35.ssm.{k}"] for k in ("inner_size", "state_size", "group_count", "time_step_rank")} == {
        "inner_size": 32, "state_size": 8, "group_count": 2, "time_step_rank": 4}
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    delta = model.model.layers[0].linear_attn
    tiled = torch.tensor([0, 2, 1, 3])  # value heads 0, 1 read key head 0; 2, 3 key head 1
    assert np.allclose(tensors["blk.0.ssm_a"], -delta.A_log.detach().exp()[tiled].numpy())
    assert np.allclose(tensors["blk.0.ssm_beta.weight"], delta.in_proj_b.weight.detach()[tiled].half().numpy())
    columns = delta.out_proj.weight.detach().view(64, 4, 8)[:, tiled].reshape(64, 32)
    assert np.allclose(tensors["blk.0.ssm_out.weight"], columns.half().numpy())
    with pytest.raises(MinitronError, match="llama.cpp's qwen35 graph takes one head size"):
        check_exportable(tiny_config("qwen3_5_text", linear_value_head_dim=16))


def test_export_writes_qwen3_next_as_llama_cpps_qwen3next_graph_reads_it(tmp_path):
    """Qwen3-Next's Gated DeltaNet sizes as llama.cpp's `ssm.*` keys, its fused in_proj_qkvz written as Qwen3.5's
    in_proj_qkv and in_proj_z apart (`attn_qkv`, `attn_gate`) and in_proj_ba as it is, its value heads grouped by key
    head as transformers holds them (its qwen3next graph reads them so); what the graph computes otherwise is
    refused."""
    import gguf
    import numpy as np
    from minitron.export import export
    from minitron.export_checks import check_exportable
    from test_export import byte_level_tokenizer, save_model

    model = save_model(tmp_path / "hf", "qwen3_next", byte_level_tokenizer())
    reader = gguf.GGUFReader(export(str(tmp_path / "hf"), tmp_path / "m.gguf", "f16").gguf)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "qwen3next"
    assert fields["qwen3next.attention.recurrent_layers"] == [True, False, True, False]
    assert {k: fields[f"qwen3next.ssm.{k}"] for k in ("inner_size", "state_size", "group_count", "time_step_rank")} == {
        "inner_size": 32, "state_size": 8, "group_count": 2, "time_step_rank": 4}
    assert (fields["qwen3next.expert_count"], fields["qwen3next.expert_shared_feed_forward_length"]) == (6, 64)
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    delta, twin = model.model.layers[0].linear_attn, unfused_twin(model).model.layers[0].linear_attn
    for name, want in {"attn_qkv.weight": twin.in_proj_qkv.weight, "attn_gate.weight": twin.in_proj_z.weight,
                       "ssm_ba.weight": delta.in_proj_ba.weight, "ssm_out.weight": delta.out_proj.weight,
                       "ssm_a": -delta.A_log.exp()}.items():
        assert np.allclose(tensors[f"blk.0.{name}"], want.detach().numpy(), rtol=1e-3, atol=1e-4), name  # (f16)
    with pytest.raises(MinitronError, match="llama.cpp's qwen3next graph always renormalises"):
        check_exportable(tiny_config("qwen3_next", norm_topk_prob=False))
    with pytest.raises(MinitronError, match="llama.cpp's qwen3next graph takes one head size"):
        check_exportable(tiny_config("qwen3_next", linear_value_head_dim=16))
    with pytest.raises(MinitronError, match=r"dense layers \[1\] among its mixture-of-experts ones"):
        check_exportable(tiny_config("qwen3_next", mlp_only_layers=[1]))


@pytest.mark.parametrize("family", ["nemotron_h", "qwen3_5_moe_text", "qwen3_next", "granitemoehybrid", "lfm2"])
def test_the_report_plots_a_hybrids_importance(family, tmp_path):
    """The compress report's importance plot shows each layer's heads: attention heads, and in a recurrent layer its
    Mamba-2 or Gated DeltaNet heads or its short convolution's channels."""
    from minitron.importance import compute_scores
    from minitron.report import plot_importance

    compute_scores(tiny_model(family), [IDS], ["activation"]).save(tmp_path / "scores")
    assert plot_importance(tmp_path / "scores", tmp_path / "importance.png").stat().st_size > 0


def test_pruning_short_convolution_channels_equals_zeroing_their_outputs():
    """An LFM2 short convolution's channels are independent (each its own B, C and x rows, filter and out_proj column):
    keeping some equals zeroing the others' out_proj columns; their activation score is out_proj's input per channel
    (here: mean over the sequence, L2 over the batch), 0 in attention layers."""
    model = tiny_model("lfm2", num_hidden_layers=LAYERS)
    g = torch.Generator().manual_seed(1)
    keep = [torch.randperm(64, generator=g)[:40].sort().values for _ in range(LAYERS)]
    pruned, zeroed = copy.deepcopy(model), copy.deepcopy(model)
    prune_conv(pruned, keep)
    with torch.no_grad():
        for layer, kept in zip(zeroed.model.layers, keep):
            if conv_of(layer) is not None:
                dropped = torch.ones(64, dtype=torch.bool)
                dropped[kept] = False
                conv_of(layer).out_proj.weight[:, dropped] = 0
        assert_close(pruned(IDS).logits, zeroed(IDS).logits, rtol=1e-5, atol=1e-5)
    assert [conv_of(layer).conv.weight.shape[0] for layer in pruned.model.layers if conv_of(layer)] == [40] * 3
    captured, scores = out_proj_inputs(model, conv_of)
    got = scores["activation/mean-l2/conv"]
    for i in range(LAYERS):
        want = captured[i].abs().mean(1).pow(2).sum(0).sqrt() if i in captured else torch.zeros(64)
        assert_close(got[i], want, rtol=1e-5, atol=1e-6)


def test_an_lfm2_as_released_prunes_streamed_as_in_memory(tmp_path):
    """An LFM2 config as the released ones write it (the MLP's neurons derived from intermediate_size by
    block_auto_adjust_ff_dim, the attention layers listed in full_attn_idxs, older names for its widths) is read as
    the model it builds; `prune` of its hidden size (its short convolutions' channels with it), heads, neurons and a
    layer writes the same tensors streamed and in memory, and a config stock transformers builds that model from,
    its attention layers' indices renumbered."""
    save_tiny(tmp_path / "teacher", "lfm2", num_hidden_layers=LAYERS, intermediate_size=144, block_multiple_of=32,
              block_auto_adjust_ff_dim=True, layer_types=None, full_attn_idxs=[1, 3, 5], conv_dim=64, num_heads=8)
    assert load_config(tmp_path / "teacher").intermediate_size == 96  # 2/3 of 144, a multiple of 32
    data = build_tiny_data(tmp_path, tmp_path / "teacher")
    target = "hidden_size=48,num_attention_heads=6,intermediate_size=64,num_hidden_layers=5"
    _, record, student = prune_both_ways(tmp_path, target, data)
    config = student.config
    assert (config.intermediate_size, config.block_auto_adjust_ff_dim, config.hidden_size) == (64, False, 48)
    assert config.full_attn_idxs == [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"]
    assert not hasattr(config, "conv_dim") and not hasattr(config, "num_heads")  # no stale copy of the widths
    kept = [i for i in range(LAYERS) if i not in record["dropped_layers"]]
    assert config.layer_types == [["conv", "full_attention"][i % 2] for i in kept]
    assert all(conv_of(layer).conv.weight.shape == (48, 1, 3) for layer in student.model.layers if conv_of(layer))
    assert record["params_after"] == sum(p.numel() for p in student.parameters())
    with torch.no_grad():
        assert torch.isfinite(student(IDS).logits).all()
