"""Pruning slices exactly: each op equals the teacher with those units zeroed or skipped."""
import copy
import json

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from conftest import FALCON_LAYOUTS, own_names, save_tiny, tiny_model
from minitron.arch import (PER_LAYER, arch_of, attention_of, attention_out, count_params, decoder_layers, head_dims,
                           is_sparse, mlp_down, mlp_of, moe_block, moe_weights, shared_width)
from minitron.errors import MinitronError
from minitron.load import load_model
from minitron.importance import random_scores
from minitron.prune import Plan, apply_plan, check_target, params_of, select_heads, target_config
from minitron.prune.slicing import head_rows, slice_norm

IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def random_keep(n: int, k: int, layers: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g)[:k].sort().values for _ in range(layers)]


@pytest.mark.parametrize("tie", [False, True])
def test_pruning_nothing_is_identity(family, tie, tmp_path):
    model = tiny_model(family, tie)
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, []))
    assert_close(logits(pruned), logits(model), rtol=0, atol=0)
    pruned.save_pretrained(tmp_path)
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path).eval()), logits(model))


@pytest.mark.parametrize("tie", [False, True])
def test_mlp_pruning_equals_zeroed_neurons(family, tie):
    """Of a mixture of experts, each expert keeps neurons of its own (the router reads the layer's input: zeroing
    down_proj columns changes no routing); its dense layers (LFM2-MoE's first) keep theirs (`test_moe`)."""
    model = tiny_model(family, tie)
    arch = arch_of(model.config)
    experts = 6 if arch.moe else 1
    keep = [torch.stack(random_keep(96, 40, experts, seed=l)) for l in range(4)]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer, k in zip(decoder_layers(zeroed), keep):
            mask = torch.ones(experts, 96, dtype=torch.bool).scatter_(1, k, False)
            if is_sparse(layer, arch):
                for e in range(experts):  # (hidden, neurons): GPT-OSS's a transposed view
                    moe_weights(moe_block(layer, arch), arch).down[e][:, mask[e]] = 0
            elif mlp_of(layer) is not None and not arch.moe:  # a hybrid's layer without an MLP: none
                mlp_down(mlp_of(layer), arch).weight[:, mask[0]] = 0
    keep = keep if arch.moe else [k[0] for k in keep]
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, keep, []))
    assert getattr(pruned.config, arch.mlp_size) == 40
    assert_close(logits(pruned), logits(zeroed))


class KeptChannels(torch.nn.Module):
    """A q/k norm over the whole projection (OLMo 2's) computed over the kept heads' channels only, the others zero:
    what the pruned model's sliced norm computes, inside the unpruned model."""

    def __init__(self, norm: torch.nn.Module, keep: torch.Tensor):
        super().__init__()
        self.keep, self.norm = keep, copy.deepcopy(norm)
        slice_norm(self.norm, keep)

    def forward(self, x):
        out = torch.zeros_like(x)
        out[..., self.keep] = self.norm(x[..., self.keep])
        return out


@pytest.mark.parametrize("new_heads,new_kv", [(4, 2), (2, 1), (6, 2)])
def test_head_pruning_equals_zeroed_heads_and_keeps_gqa(family, new_heads, new_kv):
    """Slicing heads equals zeroing their o_proj columns; where a q/k norm spans every head (OLMo 2), the kept heads
    are normalised over the kept channels alone, so the reference computes its norms that way. Multi-head latent
    attention's heads each have their own keys and values (a group each), as GPT-NeoX's; GPTBigCode's share one."""
    assert_heads_pruned_as_zeroed(family, new_heads, new_kv)


@pytest.mark.parametrize("layout", FALCON_LAYOUTS)
def test_falcon_layouts_prune_heads_as_zeroing_them(layout):
    """Falcon's layouts beside the 40B's (each family's tests run that): Falcon-7B's one key and value head after the
    queries, Falcon2-11B's KV groups behind one LayerNorm, and every head's queries, key and value in turn (a group a
    head) with biases; refused in one line: ALiBi (Falcon-RW's), and a layout transformers cannot run."""
    from transformers import FalconConfig

    assert_heads_pruned_as_zeroed(layout, 4, 2)
    with pytest.raises(MinitronError, match="this falcon model adds ALiBi position biases"):
        arch_of(FalconConfig(alibi=True))
    with pytest.raises(MinitronError, match="new_decoder_architecture without parallel_attn, which transformers"):
        arch_of(FalconConfig(new_decoder_architecture=True, parallel_attn=False))


def assert_heads_pruned_as_zeroed(family: str, new_heads: int, new_kv: int) -> None:
    model = tiny_model(family, tie=family == "qwen3")
    dim, groups = head_dims(model.config).out, model.config.num_key_value_heads
    new_kv = new_heads if groups == 8 else min(new_kv, groups)
    scores = torch.rand(4, 8, generator=torch.Generator().manual_seed(1))
    chosen = [select_heads(s, groups, new_heads, new_kv) for s in scores]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for attn, (q, kv) in zip(map(attention_of, decoder_layers(zeroed)), chosen):
            if attn is None:  # a hybrid's layer without attention
                continue
            mask = torch.ones(8 * dim, dtype=torch.bool)
            mask[head_rows(q, dim)] = False
            attention_out(attn).weight[:, mask] = 0
            for name, heads in (("q_norm", q), ("k_norm", kv)):
                norm = getattr(attn, name, None)
                if norm is not None and norm.weight.dim() == 1 and norm.weight.numel() > dim:
                    setattr(attn, name, KeptChannels(norm, head_rows(heads, dim)))
    pruned = apply_plan(copy.deepcopy(model), Plan(None, [c[0] for c in chosen], [c[1] for c in chosen], None, []))
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (new_heads, new_kv)
    for q, kv in chosen:  # every kept head belongs to a kept group, equal numbers per group
        groups = (q // (8 // model.config.num_key_value_heads)).tolist()
        assert set(groups) == set(kv.tolist()) and all(groups.count(g) == new_heads // new_kv for g in groups)
    assert_close(logits(pruned), logits(zeroed))


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_latent_attention_prunes_whole_heads_and_keeps_its_latents(q_lora_rank, tmp_path):
    """Multi-head latent attention (DeepSeek V3's; without a query latent, V2-Lite's): a head's queries (q_b_proj's
    rows, or q_proj's), its keys' unrotated channels and its values (kv_b_proj's rows) and its o_proj columns go
    together, and slicing them equals zeroing its o_proj columns; the latents and the rotated key every head shares
    stay whole; hidden channels go from the columns of what reads the residual (q_a_proj or q_proj,
    kv_a_proj_with_mqa); the student reloads. The KV heads are the query heads: a target setting them apart is
    refused."""
    model = tiny_model("deepseek_v3", q_lora_rank=q_lora_rank)
    keep, hidden = torch.tensor([1, 2, 5]), torch.arange(0, 64, 2)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for attn in map(attention_of, decoder_layers(zeroed)):
            attn.o_proj.weight[:, torch.ones(128, dtype=torch.bool).scatter_(0, head_rows(keep, 16), False)] = 0
    pruned = apply_plan(copy.deepcopy(model), Plan(None, [keep] * 4, [keep] * 4, None, []))
    assert_close(logits(pruned), logits(zeroed))
    apply_plan(pruned, Plan(hidden, None, None, None, []))
    attn = attention_of(decoder_layers(pruned)[0])
    query = attn.q_proj if q_lora_rank is None else attn.q_b_proj
    assert (query.out_features, attn.kv_b_proj.out_features, attn.o_proj.weight.shape) == (3 * 20, 3 * 28, (32, 48))
    assert attn.kv_a_proj_with_mqa.weight.shape == (40, 32) and attn.kv_b_proj.in_features == 32
    assert (attn.q_proj if q_lora_rank is None else attn.q_a_proj).in_features == 32
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (3, 3)
    pruned.save_pretrained(tmp_path)
    assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path).eval()), logits(pruned))

    config = model.config
    assert check_target(config, {"num_attention_heads": 4})["num_key_value_heads"] == 4
    assert check_target(config, {"num_key_value_heads": 2})["num_attention_heads"] == 2
    with pytest.raises(MinitronError, match=r"num_key_value_heads=2 is not num_attention_heads=4: every head of this "
                                            r"deepseek_v3 model has its own keys and values \(multi-head latent"):
        check_target(config, {"num_attention_heads": 4, "num_key_value_heads": 2})


def test_gpt_neox_heads_are_their_own_kv_heads_fused_head_by_head(tmp_path):
    """GPT-NeoX's config has no num_key_value_heads: a checkpoint's gets its heads' as it is read (every head has its
    own keys and values). Its q, k and v rows are fused head by head: a head's queries, keys and values go together,
    and the kept heads stay in that order. A target sets the heads (or the hidden size, which they follow) and its KV
    heads follow; one setting them apart is refused."""
    save_tiny(tmp_path / "neox", "gpt_neox")
    config = json.loads((tmp_path / "neox" / "config.json").read_text())
    config.pop("num_key_value_heads")  # as Pythia's own
    (tmp_path / "neox" / "config.json").write_text(json.dumps(config))
    model = load_model(tmp_path / "neox")
    assert model.config.num_key_value_heads == model.config.num_attention_heads == 8
    keep, qkv = torch.tensor([1, 2, 6]), decoder_layers(model)[0].attention.query_key_value.weight
    pruned = apply_plan(copy.deepcopy(model), Plan(None, [keep] * 4, [keep] * 4, None, []))
    assert_close(decoder_layers(pruned)[0].attention.query_key_value.weight, qkv.view(8, 24, 64)[keep].flatten(0, 1))
    assert check_target(model.config, {"hidden_size": 32})["num_key_value_heads"] == 4
    assert check_target(model.config, {"num_attention_heads": 4, "hidden_size": 32})["num_key_value_heads"] == 4
    with pytest.raises(MinitronError, match="num_key_value_heads=2 is not num_attention_heads=4: every head of this "
                                            "gpt_neox model has its own keys and values; set"):
        check_target(model.config, {"num_attention_heads": 4, "num_key_value_heads": 2})


def test_gpt2_conv1d_weights_are_held_as_linears_and_stored_as_conv1d(tmp_path):
    """transformers holds GPT-2's linears as Conv1D, weights (in, out): minitron holds them as linears (what it slices
    and scores), computing the same logits, and their state dict is Conv1D's, so that what transformers and the
    streamed writer save is the layout GPT-2's files have. A model given as transformers built it (Conv1D) is pruned
    as the one minitron loads; a GPT-2 with cross-attention or attention scaled by the layer's index is refused."""
    from transformers import GPT2Config

    from minitron.arch import Conv1DLinear, as_linears

    conv = AutoModelForCausalLM.from_config(tiny_model("gpt2").config).eval()
    linear = as_linears(copy.deepcopy(conv))
    c_attn = decoder_layers(linear)[0].attn.c_attn
    assert isinstance(c_attn, Conv1DLinear) and c_attn.weight.shape == (192, 64)
    assert_close(c_attn.weight, decoder_layers(conv)[0].attn.c_attn.weight.t(), rtol=0, atol=0)
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert_close(linear(ids).logits, conv(ids).logits)
    assert {k: v.shape for k, v in linear.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    assert all(torch.equal(v, conv.state_dict()[k]) for k, v in linear.state_dict().items())
    twin = as_linears(AutoModelForCausalLM.from_config(conv.config)).eval()
    twin.load_state_dict(conv.state_dict())
    with torch.no_grad():
        assert_close(twin(ids).logits, conv(ids).logits, rtol=0, atol=0)
    heads, neurons = torch.tensor([0, 3, 5, 6]), torch.randperm(96)[:40]
    plan = Plan(None, [heads] * 4, [heads] * 4, [neurons] * 4, [2])
    pruned = apply_plan(conv, plan)  # (the model transformers built, pruned: its Conv1D modules held as linears)
    assert isinstance(decoder_layers(pruned)[0].mlp.c_fc, Conv1DLinear)
    assert_close(logits(pruned), logits(apply_plan(linear, plan)), rtol=0, atol=0)
    for setting in ({"add_cross_attention": True}, {"scale_attn_by_inverse_layer_idx": True}):
        with pytest.raises(MinitronError, match="cross-attention or scales each layer's attention by its index"):
            arch_of(GPT2Config(**setting))


def test_gpt_bigcode_heads_share_its_one_kv_head(tmp_path):
    """GPTBigCode's multi-query attention: c_attn holds the queries, then one key head and one value head, which every
    kept query head shares; transformers builds one KV head whatever a config's num_key_value_heads says, and so does
    minitron read it; a GPTBigCode of multi-head attention (multi_query false) is refused in one line."""
    from transformers import GPTBigCodeConfig

    save_tiny(tmp_path / "sc", "gpt_bigcode")
    config = json.loads((tmp_path / "sc" / "config.json").read_text())
    (tmp_path / "sc" / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 2}))
    model = load_model(tmp_path / "sc")
    assert model.config.num_key_value_heads == 1 and decoder_layers(model)[0].attn.c_attn.weight.shape == (80, 64)
    keep, c_attn = torch.tensor([1, 2, 6]), decoder_layers(model)[0].attn.c_attn.weight
    pruned = apply_plan(copy.deepcopy(model), Plan(None, [keep] * 4, [torch.tensor([0])] * 4, None, []))
    rows = torch.cat([head_rows(keep, 8), torch.arange(64, 80)])  # the kept queries, the key and the value
    assert_close(decoder_layers(pruned)[0].attn.c_attn.weight, c_attn[rows], rtol=0, atol=0)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (3, 1)
    with pytest.raises(MinitronError, match="this gpt_bigcode model has multi-head attention or cross-attention"):
        arch_of(GPTBigCodeConfig(multi_query=False))


def test_select_heads_ranks_within_groups():
    scores = torch.tensor([9.0, 1.0, 8.0, 2.0, 7.0, 6.0, 0.5, 0.1])  # group 0: heads 0-3, group 1: heads 4-7
    heads, groups = select_heads(scores, kv_groups=2, heads=4, new_kv=2)
    assert heads.tolist() == [0, 2, 4, 5] and groups.tolist() == [0, 1]
    heads, groups = select_heads(scores, kv_groups=2, heads=2, new_kv=1)
    assert heads.tolist() == [0, 2] and groups.tolist() == [0]


def skip_layers(model, drop):
    """The teacher with layers `drop` turned into identities (GLM-5's handing on the indexer picks they are given)."""
    skipped = copy.deepcopy(model)
    arch = arch_of(model.config)
    for i in drop:
        decoder_layers(skipped)[i].forward = (lambda h, *a, prev_topk_indices=None, **k: (h, prev_topk_indices)) \
            if arch.picks_carried else (lambda h, *a, **k: (h, None)) if arch.layer_pair else \
            (lambda hidden_states, *a, **k: hidden_states)
    return skipped


@pytest.mark.parametrize("drop", [[1], [1, 2], [0, 3]])
def test_dropping_layers_equals_skipping_them(family, drop, tmp_path):
    model = tiny_model(family)
    pruned = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, drop))
    assert pruned.config.num_hidden_layers == 4 - len(drop)
    assert_close(logits(pruned), logits(skip_layers(model, drop)))
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert_close(logits(reloaded), logits(pruned))
    kept = [i for i in range(4) if i not in drop]
    for name in PER_LAYER:  # per-layer attention types and RoPE flags follow their layers
        if getattr(model.config, name, None) is not None:
            assert getattr(reloaded.config, name) == [getattr(model.config, name)[i] for i in kept]


def prune_wide_and_deep(family: str, tie: bool = False):
    """A tiny model of `family` pruned in every width it has (random scores) and by one layer (the third): the model,
    the pruned one, the target and its parameter count as the dry run computes it."""
    model = tiny_model(family, tie)
    arch = arch_of(model.config)
    experts = {"num_experts": 4} if arch.moe else {}
    hidden = 32 if arch.mamba_expand else 40  # Granite 4's Mamba-2 heads follow it: 2 x 32 / 16 = 4, two a group
    target = own_names(model.config, dict(hidden_size=hidden, intermediate_size=48, num_attention_heads=2,
                                          num_key_value_heads=1, num_hidden_layers=3, **experts))
    sizes = check_target(model.config, target, [2])
    expected = params_of(target_config(model.config, sizes, [2]))  # a hybrid's count depends on which layer goes
    r = random_scores(model.config, seed=0)
    chosen = [select_heads(s, model.config.num_key_value_heads, 2, sizes["num_key_value_heads"]) for s in r["heads"]]
    plan = Plan(r["hidden"].topk(target["hidden_size"]).indices.sort().values, [c[0] for c in chosen],
                [c[1] for c in chosen], [s.topk(48).indices.sort().values for s in r["mlp"]], [2],
                [s.topk(4).indices.sort().values for s in r["experts"]] if arch.moe else None,
                mamba=[select_heads(s, 2, 4, 2)[0] for s in r["mamba"]] if arch.mamba_expand else None,
                conv=[s.topk(target["hidden_size"]).indices.sort().values for s in r["conv"]]
                if arch.mixer == "conv" else None,  # LFM2's short convolutions are as wide as the hidden size
                shared=[s.topk(shared_width(model.config, sizes)).indices.sort().values for s in r["shared"]]
                if arch.shared_expert and not arch.shared_names.size else None)  # a shared expert as wide as experts
    # (GLM-4.5's, Hunyuan's)
    return model, apply_plan(copy.deepcopy(model), plan), target, expected


@pytest.mark.parametrize("tie", [False, True])
def test_full_width_and_depth_prune_reloads_with_dry_run_count(family, tie, tmp_path):
    _, pruned, target, expected = prune_wide_and_deep(family, tie)
    assert count_params(pruned) == expected
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert count_params(reloaded) == expected
    assert {k: getattr(reloaded.config, k) for k in target} == target
    assert_close(logits(reloaded), logits(pruned))
    assert torch.isfinite(logits(reloaded)).all()


def test_a_pruned_model_generates_through_its_cache_as_without_one(family, tmp_path):
    """Pruned in width and depth and reloaded by stock transformers, a model's greedy generation through its cache
    (keys and values, Mamba-2 and convolution states, sliding windows) gives at every step the logits of a full
    forward without one: the cache's slots and each layer's kind follow the kept layers."""
    _, pruned, _, _ = prune_wide_and_deep(family)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = IDS[:, :12]
    out = reloaded.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                            output_logits=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    assert out.sequences.shape == (2, 20)
    with torch.no_grad():
        full = reloaded(out.sequences, use_cache=False).logits[:, 11:-1]
    assert_close(torch.stack(out.logits, 1), full, rtol=1e-4, atol=1e-4)


def test_hidden_pruning_keeps_tied_embeddings_tied():
    model = tiny_model("llama", tie=True)
    pruned = apply_plan(model, Plan(torch.arange(0, 64, 2), None, None, None, []))
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight
    assert pruned.lm_head.weight.shape == (256, 32)


def test_hidden_pruning_slices_the_residual_stream_consistently(family):
    """Keeping every channel but in a permuted order changes nothing: all readers/writers moved together."""
    model = tiny_model(family)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    permuted = apply_plan(copy.deepcopy(model), Plan(perm, None, None, None, []))
    assert_close(logits(permuted), logits(model), rtol=1e-4, atol=1e-4)


def test_unsupported_architecture_is_refused_by_name():
    from transformers import BloomConfig

    with pytest.raises(MinitronError, match=r"'bloom'.*supported model types: afmoe, apertus, arcee, bamba, cohere, "
                                            "cohere2, cwm, deepseek_v2, deepseek_v3, deepseek_v32, dots1, "
                                            "ernie4_5, ernie4_5_moe, exaone, exaone4, exaone_moe, falcon, gemma, "
                                            "gemma2, "
                                            "gemma3_text, "
                                            "glm, glm4, "
                                            "glm4_moe, glm4_moe_lite, glm_moe_dsa, gpt2, gpt_bigcode, gpt_neo, "
                                            "gpt_neox, "
                                            "gpt_oss, gptj, granite, granite_swa, "
                                            "granitemoe, granitemoe_swa, "
                                            "granitemoehybrid, "
                                            "granitemoeshared, helium, "
                                            "hunyuan_v1_dense, hunyuan_v1_moe, hy_v3, internlm3, iquestcoder, jais2, "
                                            "lfm2, "
                                            "lfm2_moe, "
                                            "llama, "
                                            "minimax_m2, ministral, ministral3, mistral, mixtral, nemotron, "
                                            "nemotron_h, "
                                            "olmo, olmo2, olmo3, olmoe, opt, "
                                            "phi, phi3, qwen2, qwen2_moe, qwen3, qwen3_5_moe_text, qwen3_5_text, "
                                            "qwen3_moe, "
                                            "qwen3_next, "
                                            "sarvam_mla, seed_oss, smollm3, solar_open, stablelm, starcoder2, "
                                            "vaultgemma, youtu"):
        arch_of(BloomConfig())


@pytest.mark.parametrize("target,message", [
    ({"num_attention_heads": 7}, "not a multiple of num_key_value_heads=2"),
    ({"num_attention_heads": 8, "num_key_value_heads": 1}, "more than the teacher's 4"),
    ({"hidden_size": 65}, "between 1 and the teacher's 64"),
    ({"intermediate_size": 0}, "between 1 and the teacher's 96"),
    ({"head_size": 8}, "cannot prune head_size"),
])
def test_impossible_targets(target, message):
    with pytest.raises(MinitronError, match=message):
        check_target(tiny_model("llama").config, target)


# Dry-run arithmetic on the seed models' configs (meta device, nothing allocated).
NEMO_12B = dict(model_type="mistral", hidden_size=5120, num_hidden_layers=40, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=131072,
                tie_word_embeddings=False, sliding_window=None)
NEMOTRON_15B = dict(model_type="nemotron", hidden_size=6144, num_hidden_layers=32, num_attention_heads=48,
                    num_key_value_heads=8, head_dim=128, intermediate_size=24576, vocab_size=256000,
                    tie_word_embeddings=False, hidden_act="relu2", partial_rotary_factor=0.5)


@pytest.mark.parametrize("config,target,teacher_params,student_params", [
    (NEMO_12B, dict(hidden_size=4096, intermediate_size=11520), 12_247_782_400, 8_414_105_600),
    (NEMOTRON_15B, dict(hidden_size=4096, intermediate_size=16384), 15_628_775_424, 8_271_699_968),
    (NEMOTRON_15B, dict(hidden_size=3072, num_attention_heads=24, intermediate_size=9216), 15_628_775_424,
     4_190_509_056),
])
def test_seed_model_parameter_counts(tmp_path, config, target, teacher_params, student_params, capsys):
    from minitron.cli import main

    (tmp_path / "config.json").write_text(json.dumps(config))
    flag = ",".join(f"{k}={v}" for k, v in target.items())
    main(["prune", "--model", str(tmp_path), "--target", flag, "--dry-run"])
    out = capsys.readouterr().out
    assert f"parameters: {teacher_params:,} -> {student_params:,}" in out
    assert list(tmp_path.iterdir()) == [tmp_path / "config.json"]  # nothing written, no weights needed


def test_phi_q_k_layernorms_are_every_heads_and_stay_whole(tmp_path):
    """Phi's q/k LayerNorms (qk_layernorm), where set, normalise each head's channels with one weight for every head:
    pruning heads and hidden channels together (its head size is hidden_size / heads) leaves them whole, and the
    pruned model reloads in transformers as it was."""
    model = tiny_model("phi", qk_layernorm=True)
    r = random_scores(model.config, seed=0)
    chosen = [select_heads(s, 2, 4, 2) for s in r["heads"]]
    plan = Plan(r["hidden"].topk(32).indices.sort().values, [c[0] for c in chosen], [c[1] for c in chosen], None, [])
    pruned = apply_plan(copy.deepcopy(model), plan)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert (reloaded.config.hidden_size, reloaded.config.num_attention_heads) == (32, 4)
    for name in ("q_layernorm", "k_layernorm"):
        assert_close(getattr(reloaded.model.layers[0].self_attn, name).weight,
                     getattr(model.model.layers[0].self_attn, name).weight)
    assert_close(logits(reloaded), logits(pruned))


def test_stablelm_2_12b_is_refused_by_what_it_has(tmp_path):
    """StableLM 2 12B's per-head q/k LayerNorms and parallel residual are not what minitron's StableLM adapter
    describes: refused in one line when the model is read."""
    from conftest import save_tiny
    from minitron.load import load_config

    for name, setting in (("qk", {"qk_layernorm": True}), ("parallel", {"use_parallel_residual": True})):
        save_tiny(tmp_path / name, "stablelm", **setting)
        with pytest.raises(MinitronError, match="per-head q/k LayerNorms or a parallel residual .StableLM 2 12B's."):
            load_config(tmp_path / name)
