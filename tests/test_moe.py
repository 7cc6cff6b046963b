"""Mixtures of experts (Qwen3-MoE, Mixtral): the experts' activations as recorded, experts pruned as if their router
never picked them, the sizes a target may set, and checkpoints in the form transformers stores them."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from conftest import cli_error, run_cli, save_tiny, tiny_config, tiny_model
from minitron.arch import (MoEWeights, arch_of, dense_layers, is_sparse, mlp_down, mlp_of, moe_block, moe_weights,
                           num_experts, prunable_sizes, shared_down, stored_as)
from minitron.errors import MinitronError
from minitron.importance.stats import moe_activations, seq_stats
from minitron.load import load_config
from minitron.prune import Plan, apply_plan, check_target, params_of, target_config
from minitron.search import budget_of, enumerate_shapes

MOE = ["qwen3_moe", "mixtral", "olmoe", "granitemoehybrid_moe", "granitemoe", "qwen3_5_moe_text", "qwen3_next",
       "qwen2_moe", "gpt_oss", "lfm2_moe", "glm4_moe", "ernie4_5_moe", "dots1", "hunyuan_v1_moe", "deepseek_v3",
       "glm4_moe_lite", "deepseek_v2", "sarvam_mla", "minimax_m2", "nemotron_h_moe", "nemotron_h_latent", "exaone_moe",
       "granitemoeshared", "deepseek_v32", "solar_open",
       "afmoe", "glm_moe_dsa", "hy_v3"]
IDS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))


def block_of(model, i: int) -> tuple[torch.nn.Module, MoEWeights]:
    """Layer i's mixture-of-experts block and its weights (router, experts)."""
    arch = arch_of(model.config)
    block = moe_block(model.model.layers[i], arch)
    return block, moe_weights(block, arch)


def layer_input(model, i: int) -> torch.Tensor:
    """What layer i's MoE block reads (its post-attention norm's output) for IDS."""
    seen = []
    handle = block_of(model, i)[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        model(IDS)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("family", MOE)
def test_expert_activations_are_those_of_every_expert_run_densely(family):
    """Every expert run on every token, its neurons and its routed contribution zeroed where the router did not pick
    it: the sequence statistics of those dense tensors are what `moe_activations` records, and the routed
    contributions sum to the block's output (with its shared expert's gated output, where it has one)."""
    model = tiny_model(family)
    sparse = next(i for i, layer in enumerate(model.model.layers) if is_sparse(layer, arch_of(model.config)))
    block, w = block_of(model, sparse)
    x = layer_input(model, sparse)
    with torch.no_grad():
        _, weights, chosen = w.route(x.reshape(-1, 64))
        routed = torch.zeros(24, 6).scatter_(1, chosen, weights.float())  # (tokens, experts): 0 where not routed
        if w.oss:  # GPT-OSS: biases, gate and up columns in turn, its own clamped SwiGLU
            ex = w.experts
            act = ex._apply_gate(torch.einsum("td,edf->tef", x.reshape(-1, 64), ex.gate_up_proj) + ex.gate_up_proj_bias)
            out = torch.einsum("ten,end->ted", act, ex.down_proj) + ex.down_proj_bias
        else:  # (tokens, experts, neurons): act(gate) * up, or act(up) where ungated (Nemotron 3's), behind a latent
            # projection where there is one (Super's)
            into, out_of = w.latent or (torch.nn.Identity(), None)
            rows = torch.einsum("td,efd->tef", into(x.reshape(-1, 64)), w.gate_up)
            gate, up = rows.chunk(2, dim=-1) if w.gated else (rows, 1)
            act = w.experts.act_fn(gate) * up
            out = torch.einsum("ten,edn->ted", act, w.down)
            out = out @ out_of.weight.T if out_of is not None else out
        out = out * routed[..., None]
        act = act * (routed > 0)[..., None]
        neurons, contribution = moe_activations(w, x)
        names = arch_of(model.config).shared_names  # a shared expert in the block (Granite 4's: in the layer), gated
        # or not (GLM-4.5's)
        shared = 0
        if arch_of(model.config).shared_expert and not names.in_layer:
            shared = getattr(block, names.module)(x)
            shared = torch.sigmoid(getattr(block, names.gate)(x)) * shared if names.gate else shared
        y = block(x)
        y = y[0] if isinstance(y, tuple) else y  # GPT-OSS's block returns its router scores too
        assert_close(out.sum(1).view(2, 12, 64) + shared, y, rtol=1e-5, atol=1e-6)
    assert_close(contribution, out.norm(dim=-1).view(2, 12, 6), rtol=1e-5, atol=1e-6)
    assert_close(neurons, seq_stats(act.view(2, 12, 6 * 96)).view(3, 2, 6, 96), rtol=1e-5, atol=1e-6)
    assert (contribution > 0).sum(-1).eq(2).all()  # two experts a token


@pytest.mark.parametrize("family", MOE)
def test_pruning_experts_equals_a_router_that_never_picks_them(family, tmp_path):
    """Keeping experts [0, 2, 3, 5] gives the logits of the teacher whose router scores experts 1 and 4 at -inf (the
    softmax over the kept experts: renormalised top-k weights or not, as Mixtral always, Qwen3-MoE with norm_topk_prob,
    OLMoE without, DeepSeek V2 never but scaled; Granite-MoE's softmax over the top-k logits is the renormalised one;
    ERNIE 4.5 picks by that softmax plus a bias, so its picks are those of the softmax over the kept experts, not over
    all of them); the pruned model reloads in stock transformers with the same logits."""
    model = tiny_model(family)
    keep = torch.tensor([0, 2, 3, 5])
    masked = copy.deepcopy(model)
    for i in (i for i, layer in enumerate(model.model.layers) if is_sparse(layer, arch_of(model.config))):
        w = block_of(masked, i)[1]
        router = w.router if w.gate is None else w.gate  # (Hunyuan's gate routes, its weights in its linear `wg`)

        def route(x, *steer, router=router, weights=w.router):
            logits = F.linear(x.reshape(-1, 64).float(), weights.weight, getattr(weights, "bias", None))  # (GPT-OSS's)
            if hasattr(router, "moe_statics"):  # ERNIE 4.5: the softmax over the experts kept (the others' logits
                # -inf), the picks steered by the statistics' bias
                probs = logits.index_fill(1, torch.tensor([1, 4]), float("-inf")).softmax(-1)
                picks = (probs + router.moe_statics.e_score_correction_bias).index_fill(
                    1, torch.tensor([1, 4]), float("-inf")).topk(2, dim=-1)[1]
                top = probs.gather(1, picks)
                return logits, top / top.sum(-1, keepdim=True), picks
            steer = steer or ([router.e_score_correction_bias] if hasattr(router, "e_score_correction_bias") else [])
            if steer:  # LFM2-MoE, MiniMax-M2, AFMoE and Hy3 (the block's bias), GLM-4.5 (the router's): sigmoid
                # scores, the picks steered by the bias, the picked scores renormalised and scaled (MiniMax-M2's not
                # scaled; AFMoE's by its route_scale, Hy3's by its router_scaling_factor)
                scores = logits.sigmoid()
                picks = (scores + steer[0]).index_fill(1, torch.tensor([1, 4]), float("-inf")).topk(2, dim=-1)[1]
                top = scores.gather(1, picks)
                if hasattr(router, "route_scale"):
                    return logits, top / top.sum(-1, keepdim=True) * router.route_scale, picks
                if hasattr(router, "router_scaling_factor"):  # (Hy3's)
                    return logits, top / (top.sum(-1, keepdim=True) + 1e-20) * router.router_scaling_factor, picks
                if not hasattr(router, "routed_scaling_factor"):
                    return logits, top / top.sum(-1, keepdim=True), picks
                return logits, top / (top.sum(-1, keepdim=True) + 1e-6) * router.routed_scaling_factor, picks
            logits[:, [1, 4]] = float("-inf")
            top, index = logits.softmax(-1).topk(2, dim=-1)
            if hasattr(router, "topk_method"):  # DeepSeek V2: the picked probabilities, not renormalised, scaled
                return logits, top * router.routed_scaling_factor, index
            renormalised = getattr(router, "norm_topk_prob", True)  # Mixtral's and Granite-MoE's always are
            return logits, top / top.sum(-1, keepdim=True) if renormalised else top, index
        router.forward = route
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, [], [keep] * 4))
    w = block_of(pruned, 3)[1]
    assert num_experts(pruned.config) == 4 and w.gate_up.shape[:2] == (4, 192 if w.gated else 96)
    with torch.no_grad():
        assert_close(pruned(IDS).logits, masked(IDS).logits, rtol=1e-5, atol=1e-5)
        pruned.save_pretrained(tmp_path)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert_close(reloaded(IDS).logits, pruned(IDS).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", MOE)
def test_a_target_prunes_the_families_own_sizes(family):
    config = tiny_config(family)
    mlp = arch_of(config).mlp_size
    experts = arch_of(config).experts_size
    assert mlp == ("moe_intermediate_size" if family in ("qwen3_moe", "qwen3_5_moe_text", "qwen3_next", "qwen2_moe",
                                                         "lfm2_moe", "glm4_moe", "ernie4_5_moe", "dots1", "deepseek_v3",
                                                         "glm4_moe_lite", "deepseek_v2", "sarvam_mla",
                                                         "nemotron_h_moe", "nemotron_h_latent", "exaone_moe",
                                                         "deepseek_v32", "solar_open", "afmoe", "glm_moe_dsa",
                                                         "hy_v3")
                   else "intermediate_size")
    assert experts == {"granitemoe": "num_local_experts", "gpt_oss": "num_local_experts",
                       "granitemoeshared": "num_local_experts",
                       "granitemoehybrid_moe": "num_local_experts", "glm4_moe": "n_routed_experts",
                       "dots1": "n_routed_experts", "deepseek_v3": "n_routed_experts",
                       "glm4_moe_lite": "n_routed_experts", "deepseek_v2": "n_routed_experts",
                       "sarvam_mla": "n_routed_experts", "minimax_m2": "num_local_experts",
                       "nemotron_h_moe": "n_routed_experts", "nemotron_h_latent": "n_routed_experts",
                       "ernie4_5_moe": "moe_num_experts", "deepseek_v32": "n_routed_experts",
                       "solar_open": "n_routed_experts", "glm_moe_dsa": "n_routed_experts"}.get(family, "num_experts")
    assert check_target(config, {mlp: 48, experts: 3})[mlp] == 48
    with pytest.raises(MinitronError, match="every token is routed to num_experts_per_tok=2 experts"):
        check_target(config, {experts: 1})
    with pytest.raises(MinitronError, match=f"target {mlp}=44 is refused: .* multiples of 8"):  # (grouped_mm's rows)
        check_target(config, {mlp: 44})
    if family == "qwen3_moe":  # intermediate_size is the width of dense layers, which a sparse Qwen3-MoE has none of
        with pytest.raises(MinitronError, match="cannot prune intermediate_size of this qwen3_moe model; a target may "
                                                "set hidden_size, moe_intermediate_size, .*num_experts"):
            check_target(config, {"intermediate_size": 48})


@pytest.mark.parametrize("family", ["lfm2_moe", "qwen3_moe", "glm4_moe", "ernie4_5_moe", "glm4_moe_lite"])
def test_a_mixture_of_experts_dense_layers_keep_neurons_of_their_own(family, tmp_path, tiny_data):
    """A mixture of experts with dense layers among its sparse ones (LFM2-MoE's first, Qwen-MoE's mlp_only_layers):
    their neurons are a size of their own (intermediate_size), scored apart ("dense"), and keeping some equals zeroing
    the others' down_proj columns, the sparse layers untouched; `prune` of every size, a layer with them, writes the
    same model streamed and in memory, which stock transformers builds from its config (the dense layers renumbered
    with the layers kept), its count the dry run's with the scores. A mixture of experts in every other layer only
    (decoder_sparse_step) is refused in one line."""
    overrides = {"mlp_only_layers": [1]} if family == "qwen3_moe" else {}
    model, config = tiny_model(family, **overrides), tiny_config(family, **overrides)
    dense, F_dense = dense_layers(config), config.intermediate_size
    assert dense == ([1] if family == "qwen3_moe" else [0]) and "intermediate_size" in prunable_sizes(config)
    experts = arch_of(config).experts_size
    keep = [torch.randperm(F_dense, generator=torch.Generator().manual_seed(l))[:24].sort().values for l in range(4)]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for i in dense:
            dropped = torch.ones(F_dense, dtype=torch.bool)
            dropped[keep[i]] = False
            mlp_down(mlp_of(zeroed.model.layers[i]), arch_of(config)).weight[:, dropped] = 0
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, [], dense=keep))
    assert pruned.config.intermediate_size == 24 and getattr(pruned.config, arch_of(config).mlp_size) == 96
    assert all(is_sparse(layer, arch_of(config)) != (i in dense) for i, layer in enumerate(pruned.model.layers))
    with torch.no_grad():
        assert_close(pruned(IDS).logits, zeroed(IDS).logits, rtol=1e-5, atol=1e-5)
    save_tiny(tmp_path / "m", family, **overrides)
    target = (f"hidden_size=48,num_attention_heads=6,moe_intermediate_size=64,{experts}=4,intermediate_size=40,"
              "num_hidden_layers=3")
    args = ["--model", tmp_path / "m", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len", 16,
            "--prune.layer-criterion", "loss", "--target", target]
    run_cli("score", "--model", tmp_path / "m", "--data", tiny_data, "--calib-seqs", 4, "--seq-len", 16,
            "--block-sizes", 1, "--out", tmp_path / "scores")
    for stream in ("--stream", "--no-stream"):
        run_cli("prune", *args, "--scores", tmp_path / "scores", stream, "--out", tmp_path / stream)
    streamed, in_memory = (AutoModelForCausalLM.from_pretrained(tmp_path / d).eval()
                           for d in ("--stream", "--no-stream"))
    with torch.no_grad():
        assert_close(streamed(IDS).logits, in_memory(IDS).logits, rtol=0, atol=0)
    record = json.loads((tmp_path / "--stream" / "pruning.json").read_text())
    kept = [i for i in range(4) if i not in record["dropped_layers"]]
    assert dense_layers(streamed.config) == [j for j, i in enumerate(kept) if i in dense]
    assert streamed.config.intermediate_size == 40 and record["params_after"] == sum(
        p.numel() for p in streamed.parameters())
    assert [e is None for e in record["kept_experts"]] == [i in dense for i in kept]  # a dense layer has none
    save_tiny(tmp_path / "step", "qwen3_moe", decoder_sparse_step=2)
    with pytest.raises(MinitronError, match="a mixture of experts in one of every 2 layers only"):
        load_config(tmp_path / "step")


@pytest.mark.parametrize("family", MOE)
def test_prune_writes_experts_as_transformers_stores_them(family, tmp_path, tiny_data):
    """`minitron prune` scores the experts on the calibration text and keeps the best, streamed or not; the student
    stores one tensor per expert and linear, under the family's names, and loads in stock transformers."""
    save_tiny(tmp_path / "m", family)
    mlp = arch_of(tiny_config(family)).mlp_size
    args = ["--model", tmp_path / "m", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len", 16,
            "--target", f"hidden_size=48,num_attention_heads=6,{mlp}=64,{arch_of(tiny_config(family)).experts_size}=4,"
                        "num_hidden_layers=3"]
    run_cli("prune", *args, "--stream", "--out", tmp_path / "s")
    run_cli("prune", *args, "--no-stream", "--out", tmp_path / "n")
    with safe_open(tmp_path / "s" / "model.safetensors", "pt") as f:
        names = set(f.keys())
    streamed, in_memory = (AutoModelForCausalLM.from_pretrained(tmp_path / d).eval() for d in ("s", "n"))
    stored = [stored_as(key, arch_of(streamed.config), 4) for key in streamed.state_dict()]
    assert {n for layout in stored if layout for n in layout.all()} <= names  # what transformers' save writes
    if family == "gpt_oss":  # the 3D tensors and their biases, as in memory
        assert {"model.layers.2.mlp.experts.gate_up_proj", "model.layers.2.mlp.experts.down_proj_bias"} <= names
    else:  # not the in-memory 3D names
        assert not any(n.endswith(("gate_up_proj", "experts.down_proj")) for n in names)
    if family not in ("granitemoe", "gpt_oss", "granitemoehybrid_moe", "granitemoeshared"):  # one tensor an expert
        # and linear
        assert {"model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.2.block_sparse_moe.experts.3.w2.weight",
                "model.layers.2.feed_forward.experts.3.w2.weight",
                "backbone.layers.2.mixer.experts.3.down_proj.weight"} & names
    assert num_experts(streamed.config) == 4 and getattr(streamed.config, mlp) == 64
    with torch.no_grad():
        assert_close(streamed(IDS).logits, in_memory(IDS).logits, rtol=0, atol=0)
    record = json.loads((tmp_path / "s" / "pruning.json").read_text())
    assert len(record["kept_experts"]) == 3
    assert all(len(kept) == 4 and kept == sorted(kept) for kept in record["kept_experts"] if kept is not None)


def test_a_dense_model_has_no_experts_to_prune(capsys, tmp_path):
    """A target may not set what the family does not have: num_experts of a dense model is refused in one line."""
    save_tiny(tmp_path / "m", "llama")
    err = cli_error(capsys, "prune", "--model", tmp_path / "m", "--target", "num_experts=2", "--dry-run")
    assert "cannot prune num_experts of this llama model" in err


def test_the_search_varies_each_experts_neurons_and_ranks_moe_shapes(tmp_path, tiny_data, one_thread):
    """The search varies each expert's neurons (by the family's name, Qwen3-MoE's moe_intermediate_size) and the number
    of experts (not below a token's two), its counts exact; a zero-shot search of a tiny Qwen3-MoE prunes the winner
    and writes a table headed by the family's names."""
    from test_search import run_search

    config = tiny_config("qwen3_moe")
    shapes = enumerate_shapes(config, budget_of(0.5, params_of(config)), 0.1,
                              steps={"hidden_size": 16, "moe_intermediate_size": 32})
    assert shapes and all(list(c.sizes) == ["hidden_size", "num_attention_heads", "moe_intermediate_size",
                                            "num_hidden_layers", "num_experts"] for c in shapes)
    assert {c.sizes["num_experts"] for c in shapes} == {2, 3, 4, 5, 6}  # steps of 6 // 8 = 1, from a token's 2
    assert all(c.params == params_of(target_config(config, check_target(config, c.sizes))) for c in shapes)
    assert shapes[0].name == "h{}-a{}-f{}-l{}-e{}".format(*shapes[0].sizes.values())
    with pytest.raises(MinitronError, match="the step of moe_intermediate_size must be a multiple of 8"):
        enumerate_shapes(config, budget_of(0.5, params_of(config)), 0.1, steps={"moe_intermediate_size": 12})
    save_tiny(tmp_path / "m", "qwen3_moe")
    result = run_search(tmp_path / "m", tiny_data, tmp_path, distill_top=0,
                        steps={"hidden_size": 16, "moe_intermediate_size": 32})
    best = AutoModelForCausalLM.from_pretrained(tmp_path / "best")
    assert best.config.moe_intermediate_size == result["target"]["moe_intermediate_size"] < 96
    assert "| moe_intermediate_size |" in (tmp_path / "work" / "search.md").read_text()


def test_the_report_plots_a_mixture_of_experts_importance(tmp_path):
    """The compress report's importance plot takes each layer's mean over every expert's neurons (it once failed on
    the experts' (layers, experts, neurons) scores)."""
    from minitron.importance import compute_scores
    from minitron.report import plot_importance

    model = tiny_model("qwen3_moe")
    compute_scores(model, [IDS], ["activation"]).save(tmp_path / "scores")
    assert plot_importance(tmp_path / "scores", tmp_path / "importance.png").stat().st_size > 0


def test_olmoe_keeps_its_attention_as_wide_as_its_hidden_size(capsys, tmp_path):
    """transformers sizes OLMoE's q/k norms by hidden_size: a target's hidden size sets the heads (of the teacher's
    head_dim) unless it sets them too (`prune.attention_follows`); a hidden size that is no whole number of heads, or
    heads that do not fill it, are refused in one line (StableLM's the same); the pruned model loads."""
    save_tiny(tmp_path / "m", "olmoe")
    err = cli_error(capsys, "prune", "--model", tmp_path / "m", "--target", "hidden_size=44", "--dry-run")
    assert "target hidden_size=44 is refused: a mixture of experts' hidden size and expert width must be" in err
    save_tiny(tmp_path / "s", "stablelm")
    err = cli_error(capsys, "prune", "--model", tmp_path / "s", "--target", "hidden_size=44", "--dry-run")
    assert ("num_attention_heads x head_dim = 8 x 8 = 64 is not hidden_size 44; prune heads and hidden channels "
            "together") in err
    err = cli_error(capsys, "prune", "--model", tmp_path / "m", "--target", "hidden_size=48,num_attention_heads=4",
                    "--dry-run")
    assert "num_attention_heads x head_dim = 4 x 8 = 32 is not hidden_size 48" in err
    run_cli("prune", "--model", tmp_path / "m", "--target", "hidden_size=48", "--prune.criterion", "magnitude", "--out",
            tmp_path / "p")
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert pruned.config.num_attention_heads == 6 and pruned.model.layers[0].self_attn.q_norm.weight.shape == (48,)


def test_a_checkpoint_missing_an_experts_tensor_is_refused(capsys, tmp_path):
    """One expert's up_proj gone from the file: the streamed prune and the GGUF export each refuse in one line naming
    it, and write nothing."""
    from safetensors.torch import load_file, save_file
    from test_export import byte_level_tokenizer, save_model

    from minitron.export import export

    save_model(tmp_path / "m", "qwen3_moe", byte_level_tokenizer())
    weights = load_file(tmp_path / "m" / "model.safetensors")
    weights.pop("model.layers.1.mlp.experts.3.up_proj.weight")
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    err = cli_error(capsys, "prune", "--model", tmp_path / "m", "--target", "num_experts=4", "--prune.criterion",
                    "magnitude", "--stream", "--out", tmp_path / "o")
    assert "lacks 1 tensor(s) the model needs (e.g. model.layers.1.mlp.experts.3.up_proj.weight)" in err
    with pytest.raises(MinitronError, match="layer 1's mlp stores up_proj for 5 experts, not the 6 its config has"):
        export(str(tmp_path / "m"), tmp_path / "m.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("family", ["qwen3_5_moe_text", "granitemoehybrid_moe"])
def test_pruning_the_shared_experts_neurons_equals_zeroing_them(family, tmp_path):
    """Qwen3.5-MoE's shared expert is a gated MLP beside the routed experts, Granite 4's an ungated one (its layer's
    `shared_mlp`, gate and up rows fused): keeping some of its neurons equals zeroing the others' down columns; a target
    names it by the family's name, and the student reloads."""
    model = tiny_model(family)
    arch = arch_of(model.config)
    keep, size = torch.tensor([1, 4, 9, 16, 25, 36, 49, 63]), arch.shared_names.size
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in zeroed.model.layers:
            gone = torch.ones(64, dtype=torch.bool).scatter_(0, keep, False)
            shared_down(layer, arch).weight[:, gone] = 0
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, [], shared=[keep] * 4))
    assert getattr(pruned.config, size) == 8 and size in check_target(model.config, {size: 8})
    with torch.no_grad():
        assert_close(pruned(IDS).logits, zeroed(IDS).logits, rtol=1e-5, atol=1e-6)
        pruned.save_pretrained(tmp_path)
        assert_close(AutoModelForCausalLM.from_pretrained(tmp_path).eval()(IDS).logits, pruned(IDS).logits)


def test_glm_shared_expert_follows_the_experts_width(tmp_path, tiny_data):
    """GLM-4.5's shared expert is as wide as n_shared_experts routed experts (transformers builds it so): a target
    sets the experts' neurons and the shared expert keeps as many times them, chosen by its own scores; keeping some
    of the experts' and of its neurons equals zeroing the others' down columns, and the student reloads. Its
    multi-token prediction layer, stored after the decoder layers, is neither read nor written (its count 0)."""
    from minitron.arch import shared_width

    config = tiny_config("glm4_moe", n_shared_experts=2)
    assert "shared_expert_intermediate_size" not in prunable_sizes(config) and shared_width(config) == 192
    assert shared_width(config, check_target(config, {"moe_intermediate_size": 40})) == 80
    model, arch = tiny_model("glm4_moe", n_shared_experts=2), arch_of(config)
    neurons = torch.tensor([0, 1, 4, 9, 16, 25, 30, 36, 42, 49, 56, 64, 72, 81, 88, 95])
    shared = torch.cat([neurons, 96 + neurons])
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in zeroed.model.layers[1:]:
            shared_down(layer, arch).weight[:, torch.ones(192, dtype=torch.bool).scatter_(0, shared, False)] = 0
            moe_weights(moe_block(layer, arch), arch).experts.down_proj[
                :, :, torch.ones(96, dtype=torch.bool).scatter_(0, neurons, False)] = 0
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, [neurons[None].expand(6, -1)] * 4, [],
                                                   shared=[shared] * 4))
    assert pruned.config.moe_intermediate_size == 16 and shared_width(pruned.config) == 32
    with torch.no_grad():
        assert_close(pruned(IDS).logits, zeroed(IDS).logits, rtol=1e-5, atol=1e-6)
        pruned.save_pretrained(tmp_path / "p")
        assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()(IDS).logits, pruned(IDS).logits)

    save_tiny(tmp_path / "m", "glm4_moe")  # with a multi-token prediction layer stored after its four
    stored = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**stored, "num_nextn_predict_layers": 1}))
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    from safetensors.torch import save_file

    mtp = {k.replace("layers.3.", "layers.4."): v.clone() for k, v in tensors.items() if ".layers.3." in k}
    save_file({**tensors, **mtp, "model.layers.4.eh_proj.weight": torch.zeros(64, 128)},
              tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    assert load_config(tmp_path / "m").num_nextn_predict_layers == 0
    for stream in ("--stream", "--no-stream"):
        run_cli("prune", "--model", tmp_path / "m", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len",
                16, "--target", "moe_intermediate_size=48", stream, "--out", tmp_path / stream)
        written = AutoModelForCausalLM.from_pretrained(tmp_path / stream)
        assert written.config.num_nextn_predict_layers == 0 and shared_width(written.config) == 48
        with safe_open(tmp_path / stream / "model.safetensors", "pt") as f:
            assert not any(".layers.4." in k for k in f.keys())


def test_hy_v3_files_as_released_prune_streamed_as_in_memory(tmp_path, tiny_data):
    """Hy3's files name its router mlp.router.gate, the bias that steers its picks mlp.expert_bias and its shared
    expert mlp.shared_mlp (transformers renames them as it loads and back as it saves), and store its multi-token
    prediction layer after the decoder layers: pruned streamed and in memory, the students are the same, their
    tensors under the released names, the prediction layer neither read nor written (its count 0)."""
    from safetensors.torch import save_file

    save_tiny(tmp_path / "m", "hy_v3")
    stored = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**stored, "num_nextn_predict_layers": 1}))
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert {"model.layers.1.mlp.router.gate.weight", "model.layers.1.mlp.expert_bias",
            "model.layers.1.mlp.shared_mlp.up_proj.weight"} <= set(tensors)
    mtp = {k.replace("layers.3.", "layers.4."): v.clone() for k, v in tensors.items() if ".layers.3." in k}
    save_file({**tensors, **mtp, "model.layers.4.eh_proj.weight": torch.zeros(64, 128)},
              tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    for stream in ("--stream", "--no-stream"):
        run_cli("prune", "--model", tmp_path / "m", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len",
                16, "--target", "moe_intermediate_size=48,num_experts=4", stream, "--out", tmp_path / stream)
        with safe_open(tmp_path / stream / "model.safetensors", "pt") as f:
            names = set(f.keys())
        assert "model.layers.1.mlp.router.gate.weight" in names and "model.layers.1.mlp.expert_bias" in names
        assert not any(".layers.4." in k for k in names)
    streamed, in_memory = (AutoModelForCausalLM.from_pretrained(tmp_path / s).eval() for s in ("--stream",
                                                                                              "--no-stream"))
    assert streamed.config.num_nextn_predict_layers == 0 and streamed.config.num_experts == 4
    with torch.no_grad():
        assert_close(streamed(IDS).logits, in_memory(IDS).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["glm4_moe", "deepseek_v3", "deepseek_v2"])
def test_experts_picked_within_groups_keep_as_many_in_each(family, tmp_path):
    """A router that picks its experts within the topk_group best of n_group groups (DeepSeek V3's 4 of 8) keeps the
    best of each group, as many in each; a number of experts that is not whole groups, or too few for a group's score
    (its two best) and a token's experts in the groups picked, is refused, and so is a search step of other than whole
    groups. The student runs, reloads and exports (llama.cpp's graphs pick within groups too, DeepSeek V3's way: a
    DeepSeek V2, whose router scores a group by its best expert, is refused)."""
    from minitron.export_checks import check_exportable
    from minitron.importance import Scores, random_scores
    from minitron.prune import PruneConfig, make_plan
    from minitron.search import check_axes

    v2 = {"topk_method": "group_limited_greedy"} if family == "deepseek_v2" else {}
    model = tiny_model(family, n_group=2, topk_group=1, **v2)  # six experts, two groups of three; one group a token
    config = model.config
    for bad in (3, 2):
        with pytest.raises(MinitronError, match=f"n_routed_experts={bad} is refused: .* topk_group=1 of n_group=2 "
                                                "groups, .* a multiple of 2 of at least 4"):
            check_target(config, {"n_routed_experts": bad})
    with pytest.raises(MinitronError, match="the step of n_routed_experts must be a multiple of n_group=2"):
        check_axes(config, {"n_routed_experts": 1}, None)
    scores = random_scores(config, 0)
    plan = make_plan(Scores({f"random/{k}": v for k, v in scores.items() if k != "layers"}), config,
                     {"n_routed_experts": 4}, PruneConfig(criterion="random"))
    for kept, s in zip(plan.experts, scores["experts"]):
        assert kept.tolist() == sorted(g * 3 + i for g in (0, 1) for i in s[g * 3:g * 3 + 3].topk(2).indices.tolist())
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert (pruned.config.n_routed_experts, pruned.config.n_group) == (4, 2)
    pruned.save_pretrained(tmp_path)
    with torch.no_grad():
        assert_close(AutoModelForCausalLM.from_pretrained(tmp_path).eval()(IDS).logits, pruned(IDS).logits)
    if family == "deepseek_v2":
        with pytest.raises(MinitronError, match="cannot export a deepseek_v2 model whose router picks its experts"):
            check_exportable(pruned.config)
    else:
        check_exportable(pruned.config)


@pytest.mark.parametrize("family", ["deepseek_v32", "glm_moe_dsa"])
def test_deepseek_v3_2_is_glm_4_7_flash_with_an_indexer_that_picks_the_keys(family):
    """DeepSeek V3.2's layers (and GLM-5's) are GLM-4.7-Flash's with a lightning indexer in each attention: with every
    key picked (index_topk past the sequence) their weights compute GLM-4.7-Flash's logits, with six picked of twelve
    other ones. Hidden pruning slices the indexer's key and head-weight columns (what reads the hidden channels) and
    leaves its queries, which read the query latent, whole: the pruned model with every key picked is the pruned
    GLM-4.7-Flash. V3.2's released settings count as transformers builds them (DeepSeek V3's 671B and 61 indexers),
    and export as llama.cpp's deepseek32 graph at any depth (deepseek2 takes 27 layers for V2-Lite's); a GLM-5 whose
    layers reuse an earlier layer's picks (GLM-5.2's) is refused in one line."""
    from transformers import DeepseekV3Config, DeepseekV32Config

    from minitron.export_checks import export_problem
    from minitron.gguf_layout import gguf_arch

    v32 = tiny_model(family, index_topk=64)
    flash = AutoModelForCausalLM.from_config(tiny_config("glm4_moe_lite", rms_norm_eps=v32.config.rms_norm_eps),
                                             dtype=torch.float32).eval()
    missing = flash.load_state_dict(v32.state_dict(), strict=False).unexpected_keys
    assert missing and all(".self_attn.indexer." in k for k in missing)
    assert_close(v32(IDS).logits, flash(IDS).logits, rtol=0, atol=0)
    sparse = tiny_model(family)  # six keys picked
    assert not torch.allclose(sparse(IDS).logits[:, 6:], flash(IDS).logits[:, 6:], atol=1e-3)
    assert_close(sparse(IDS).logits[:, :6], flash(IDS).logits[:, :6], rtol=1e-5, atol=1e-6)  # (up to six: all)
    keep = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:48].sort().values
    plan = Plan(keep, None, None, None, [])
    pruned, pruned_flash = (apply_plan(copy.deepcopy(m), plan) for m in (v32, flash))
    indexer = pruned.model.layers[1].self_attn.indexer
    assert indexer.wk.in_features == indexer.weights_proj.in_features == 48 and indexer.wq_b.in_features == 24
    assert_close(indexer.wk.weight, v32.model.layers[1].self_attn.indexer.wk.weight[:, keep], rtol=0, atol=0)
    assert_close(pruned(IDS).logits, pruned_flash(IDS).logits, rtol=0, atol=0)
    if family == "glm_moe_dsa":
        with pytest.raises(MinitronError, match="layers that reuse an earlier layer's indexer picks"):
            arch_of(tiny_config(family, indexer_types=["full", "shared", "full", "shared"]))
        return
    released = DeepseekV32Config()
    indexers = released.num_hidden_layers * (released.q_lora_rank * released.index_n_heads * released.index_head_dim
                                             + (released.hidden_size + 2) * released.index_head_dim
                                             + released.hidden_size * released.index_n_heads)
    assert params_of(released) == params_of(DeepseekV3Config()) + indexers == 671_877_929_216
    deep = tiny_config("deepseek_v32", num_hidden_layers=27)
    assert gguf_arch(deep) == "deepseek32" and export_problem(deep) is None


def test_ernie_moe_keeps_its_routers_bias_untrained_and_stored_by_its_name(tmp_path, tiny_data):
    """ERNIE 4.5 MoE's router statistics hold the bias its picks are steered by, a parameter transformers does not
    train: pruned (streamed or not), it keeps its experts' entries, stays untrained, and is stored under the
    checkpoint's name (`mlp.moe_statics.`); its multi-token prediction count is written 0. A mixture of experts in
    one of every few layers, or not up to the last, is refused in one line."""
    save_tiny(tmp_path / "m", "ernie4_5_moe")
    stored = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**stored, "num_nextn_predict_layers": 1}))
    teacher = tiny_model("ernie4_5_moe")
    for stream in ("--stream", "--no-stream"):
        run_cli("prune", "--model", tmp_path / "m", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len",
                16, "--target", "moe_num_experts=4", stream, "--out", tmp_path / stream)
        with safe_open(tmp_path / stream / "model.safetensors", "pt") as f:
            assert "model.layers.1.mlp.moe_statics.e_score_correction_bias" in set(f.keys())
        kept = json.loads((tmp_path / stream / "pruning.json").read_text())["kept_experts"][1]
        student = AutoModelForCausalLM.from_pretrained(tmp_path / stream)
        assert student.config.num_nextn_predict_layers == 0
        bias = student.model.layers[1].mlp.gate.moe_statics.e_score_correction_bias
        assert_close(bias, teacher.model.layers[1].mlp.gate.moe_statics.e_score_correction_bias[:, kept])
    pruned = apply_plan(copy.deepcopy(teacher), Plan(None, None, None, None, [], [torch.tensor([0, 2, 3, 5])] * 4))
    assert not pruned.model.layers[1].mlp.gate.moe_statics.e_score_correction_bias.requires_grad
    for change in ({"moe_layer_interval": 2}, {"moe_layer_end_index": 2}):
        save_tiny(tmp_path / "odd", "ernie4_5_moe", **change)
        with pytest.raises(MinitronError, match="a mixture of experts in one of every .* or not up to its last"):
            load_config(tmp_path / "odd")


def test_hunyuan_moe_shared_expert_follows_the_experts_width(tmp_path):
    """Hunyuan MoE's shared expert is as wide as one routed expert (transformers builds both intermediate_size wide):
    a target's intermediate_size sets both and the student reloads; its router's weights are its gate's linear `wg`,
    sliced with the experts. The released config's lists a layer of the same value read as that value (its per-layer
    widths, which transformers does not read, left out); experts a token of their own in each layer are refused in
    one line."""
    from minitron.arch import shared_width

    config = tiny_config("hunyuan_v1_moe")
    assert shared_width(config) == 96 and shared_width(config, check_target(config, {"intermediate_size": 48})) == 48
    model = tiny_model("hunyuan_v1_moe")
    neurons, experts = torch.arange(0, 96, 2)[None].expand(6, -1), torch.tensor([0, 2, 3, 5])
    plan = Plan(None, None, None, [neurons] * 4, [], [experts] * 4, shared=[torch.arange(1, 96, 2)] * 4)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert block_of(pruned, 0)[1].router.weight.shape == (4, 64)
    pruned.save_pretrained(tmp_path / "p")
    with torch.no_grad():
        assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()(IDS).logits, pruned(IDS).logits)
    save_tiny(tmp_path / "lists", "hunyuan_v1_moe", moe_topk=[2, 2, 2, 2], moe_intermediate_size=[96] * 4)
    config = load_config(tmp_path / "lists")  # the released config's lists of one value each: that value
    assert config.moe_topk == 2 and not hasattr(config, "moe_intermediate_size")
    save_tiny(tmp_path / "several", "hunyuan_v1_moe", moe_topk=[2, 2, 3, 2])
    with pytest.raises(MinitronError, match="experts a token of its own in each layer"):
        load_config(tmp_path / "several")


def test_a_qwen2_moe_that_llama_cpp_computes_otherwise_is_refused():
    """llama.cpp's qwen2moe graph never renormalises the picked experts' weights (the released Qwen2-MoE models do not
    either)."""
    from minitron.export_checks import check_exportable

    check_exportable(tiny_config("qwen2_moe"))
    with pytest.raises(MinitronError, match="norm_topk_prob: llama.cpp's qwen2moe graph never renormalises"):
        check_exportable(tiny_config("qwen2_moe", norm_topk_prob=True))


def test_what_llama_cpp_computes_otherwise_of_a_mixture_with_dense_layers_is_refused():
    """llama.cpp's lfm2moe graph steers every router by a bias and renormalises the picked experts' weights, unscaled
    (as the released LFM2-MoE models do), and its short convolutions have no biases; its qwen3moe and qwen2moe graphs
    take every layer sparse."""
    from minitron.export_checks import check_exportable

    check_exportable(tiny_config("lfm2_moe"))
    for change in ({"use_expert_bias": False}, {"norm_topk_prob": False}, {"routed_scaling_factor": 2.5}):
        with pytest.raises(MinitronError, match="llama.cpp's lfm2moe graph steers every router by a bias"):
            check_exportable(tiny_config("lfm2_moe", **change))
    with pytest.raises(MinitronError, match="conv_bias: llama.cpp's lfm2 graph has no biases"):
        check_exportable(tiny_config("lfm2_moe", conv_bias=True))
    for family in ("qwen3_moe", "qwen2_moe"):
        with pytest.raises(MinitronError, match=f"cannot export this {family} model with dense layers"):
            check_exportable(tiny_config(family, mlp_only_layers=[1]))


def test_a_gpt_oss_that_llama_cpp_computes_otherwise_is_refused():
    """llama.cpp's gpt-oss graph fixes the clamped SwiGLU's constants at GPT-OSS's and reads a window; it rounds YaRN's
    correction range, which GPT-OSS's configs leave unrounded: that one is exported, with a warning (any other
    family's is refused)."""
    from minitron.export_checks import check_exportable, yarn_unrounded

    check_exportable(tiny_config("gpt_oss"))
    assert yarn_unrounded(tiny_config("gpt_oss")) and not yarn_unrounded(tiny_config("llama"))
    for change, refusal in [({"swiglu_limit": 5.0}, "swiglu_limit 5.0: llama.cpp's gpt-oss graph fixes them at 1.702"),
                            ({"sliding_window": None}, "without a sliding_window")]:
        with pytest.raises(MinitronError, match=refusal):
            check_exportable(tiny_config("gpt_oss", **change))
    rope = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 64,
            "truncate": False}
    with pytest.raises(MinitronError, match="cannot export a YaRN model with its own truncate"):
        check_exportable(tiny_config("qwen3_moe", rope_parameters=rope))


def save_mxfp4(path) -> None:
    """A tiny GPT-OSS stored as the released ones are: each experts' tensor as MXFP4 blocks (two 4-bit values a byte)
    and scales (a power of two per 32 values), and the config's quantization_config."""
    from safetensors.torch import load_file, save_file

    save_tiny(path, "gpt_oss", vocab_size=320)  # room for export's BPE tokenizer's 300 ids
    weights, g = load_file(path / "model.safetensors"), torch.Generator().manual_seed(0)
    for key in [k for k in weights if k.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        experts, inputs, outputs = weights.pop(key).shape
        weights[f"{key}_blocks"] = torch.randint(0, 256, (experts, outputs, inputs // 32, 16), generator=g,
                                                 dtype=torch.uint8)
        weights[f"{key}_scales"] = torch.randint(118, 126, (experts, outputs, inputs // 32), generator=g,
                                                 dtype=torch.uint8)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (path / "config.json").write_text(json.dumps(config))


def test_gpt_oss_mxfp4_experts_are_read_as_transformers_dequantises_them(tmp_path, tiny_data):
    """GPT-OSS's released checkpoints store the experts in MXFP4: minitron's reader gives every tensor as transformers
    loads it (dequantised to bf16), with the fingerprint of a bf16 copy; streamed and in-memory pruning write the same
    student, without the quantization_config; export writes the teacher. Other quantised checkpoints stay refused."""
    from minitron.export import export
    from minitron.shards import Checkpoint
    from test_export import byte_level_tokenizer

    save_mxfp4(tmp_path / "mx")
    teacher = AutoModelForCausalLM.from_pretrained(tmp_path / "mx", dtype=torch.float32).eval()  # dequantised
    checkpoint, state = Checkpoint.open(tmp_path / "mx"), teacher.state_dict()
    assert set(checkpoint.specs) == set(state)  # the blocks and scales of each as one tensor
    for name in checkpoint.specs:
        assert torch.equal(checkpoint.read([name], torch.float32)[name], state[name]), name
    teacher.save_pretrained(tmp_path / "copy")
    assert checkpoint.fingerprint() == Checkpoint.open(tmp_path / "copy").fingerprint()
    args = ["--model", tmp_path / "mx", "--data", tiny_data, "--prune.calib-seqs", 4, "--prune.seq-len", 16,
            "--target", "hidden_size=48,intermediate_size=64,num_local_experts=4"]
    run_cli("prune", *args, "--stream", "--out", tmp_path / "s")
    run_cli("prune", *args, "--no-stream", "--out", tmp_path / "n")
    streamed, in_memory = (AutoModelForCausalLM.from_pretrained(tmp_path / d).eval() for d in ("s", "n"))
    assert "quantization_config" not in json.loads((tmp_path / "s" / "config.json").read_text())
    with torch.no_grad():
        assert_close(streamed(IDS).logits, in_memory(IDS).logits, rtol=0, atol=0)
    byte_level_tokenizer().save_pretrained(tmp_path / "mx")  # a BPE tokenizer llama.cpp reads
    assert export(str(tmp_path / "mx"), tmp_path / "mx.gguf", "bf16").gguf.is_file()
    save_tiny(tmp_path / "fp8", "gpt_oss")
    config = json.loads((tmp_path / "fp8" / "config.json").read_text())
    (tmp_path / "fp8" / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "fp8"}}))
    with pytest.raises(MinitronError, match="holds fp8 weights"):
        load_config(tmp_path / "fp8")
