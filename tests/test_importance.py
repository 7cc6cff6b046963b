"""Importance scores equal their definitions computed by hand."""
import copy

import pytest
import torch
from torch.testing import assert_close

from conftest import tiny_model
from minitron.arch import (arch_of, attention_inputs, attention_of, attention_out, conv_of, decoder, decoder_layers,
                           delta_of, dense_layers, is_sparse, mamba_of, mixer_inputs, mlp_inputs, moe_block)
from minitron.numerics import lm_loss
from minitron.importance import Scores, coupled_scores, compute_scores
from minitron.importance.stats import ActivationRecorder
from minitron.prune import Plan, PruneConfig, apply_plan

BATCHES = [torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(i)) for i in range(2)]


def capture(model, module, pre=True):
    """All inputs (pre) or outputs of `module` over the calibration batches."""
    seen = []
    hook = (module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach())) if pre else
            module.register_forward_hook(lambda m, a, o: seen.append(o.detach())))
    with torch.no_grad():
        for ids in BATCHES:
            model(input_ids=ids)
    hook.remove()
    return torch.cat(seen)  # (all sequences, S, D)


def by_hand(x: torch.Tensor, seq: str, batch: str) -> torch.Tensor:
    per_seq = {"mean": x.abs().mean(1), "l2": x.norm(dim=1), "var": x.var(1, unbiased=False)}[seq]
    return {"l2": per_seq.norm(dim=0), "mean": per_seq.mean(0), "var": per_seq.var(0, unbiased=False)}[batch]


@pytest.fixture(scope="module")
def scored():
    model = tiny_model("qwen2")
    return model, compute_scores(model, BATCHES, ["activation", "wanda", "magnitude", "taylor", "random"],
                                 BATCHES[:1], block_sizes=[1, 2])


@pytest.mark.parametrize("seq", ["mean", "l2", "var"])
@pytest.mark.parametrize("batch", ["l2", "mean", "var"])
def test_mlp_and_head_aggregations(scored, seq, batch):
    model, scores = scored
    layer = model.model.layers[2]
    x = capture(model, layer.mlp.down_proj)
    assert_close(scores.tensors[f"activation/{seq}-{batch}/mlp"][2], by_hand(x, seq, batch), rtol=1e-4, atol=1e-6)
    heads = capture(model, layer.self_attn.o_proj).unflatten(-1, (8, 16)).norm(dim=-1)
    assert_close(scores.tensors[f"activation/{seq}-{batch}/heads"][2], by_hand(heads, seq, batch),
                 rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("batch", ["l2", "mean"])
def test_hidden_channels_sum_per_norm_scores(scored, batch):
    """The papers' definition: per norm, mean |x| over the sequence then L2 (or mean) over the batch; summed over
    every layer's input and post-attention norm; the final norm left out."""
    model, scores = scored
    norms = [n for l in model.model.layers for n in (l.input_layernorm, l.post_attention_layernorm)]
    expected = sum(by_hand(capture(model, n, pre=False), "mean", batch) for n in norms)
    assert_close(scores.tensors[f"activation/mean-{batch}/hidden"], expected, rtol=1e-4, atol=1e-6)
    assert_close(PruneConfig(batch_agg=batch).width(scores)["hidden"], expected, rtol=1e-4, atol=1e-6)


def test_pooled_hidden_score_pools_every_norm(scored):
    """The named option `pooled`: every norm's samples, the final norm's too, in one statistic."""
    model, scores = scored
    norms = [model.model.norm] + [n for l in model.model.layers for n in (l.input_layernorm, l.post_attention_layernorm)]
    per_seq = torch.cat([capture(model, n, pre=False).abs().mean(1) for n in norms])  # every norm's samples
    pooled = PruneConfig(hidden_score="pooled").width(scores)["hidden"]
    assert_close(pooled, per_seq.norm(dim=0), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(pooled, PruneConfig().width(scores)["hidden"])


def test_gemma3_hidden_channels_use_the_norms_in_front_of_attention_and_mlp():
    model = tiny_model("gemma3_text")
    scores = compute_scores(model, BATCHES, ["activation"])
    norms = [n for l in model.model.layers for n in (l.input_layernorm, l.pre_feedforward_layernorm)]
    expected = sum(by_hand(capture(model, n, pre=False), "mean", "l2") for n in norms)
    assert_close(scores.tensors["activation/mean-l2/hidden"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seq,batch", [("mean", "l2"), ("l2", "mean")])
def test_head_score_after_o_proj(scored, seq, batch):
    """Each head's output projected through its own o_proj columns, its L2 norm per token, aggregated like the rest."""
    model, scores = scored
    o_proj = model.model.layers[1].self_attn.o_proj
    x = capture(model, o_proj)  # (N, S, 8 heads * 16)
    per_head = torch.stack([x[..., h * 16:(h + 1) * 16] @ o_proj.weight[:, h * 16:(h + 1) * 16].T
                            for h in range(8)], -2).norm(dim=-1)  # (N, S, 8)
    expected = by_hand(per_head.detach(), seq, batch)
    assert_close(PruneConfig(seq_agg=seq, batch_agg=batch, head_score="o_proj").width(scores)["heads"][1], expected,
                 rtol=1e-4, atol=1e-5)
    assert_close(PruneConfig(seq_agg=seq, batch_agg=batch).width(scores)["heads"][1], expected)  # the default
    assert not torch.allclose(PruneConfig(seq_agg=seq, batch_agg=batch, head_score="attn").width(scores)["heads"][1], expected)


def test_block_influence(scored):
    model, scores = scored
    layer = model.model.layers[1]
    x, y = capture(model, layer), capture(model, layer, pre=False)
    expected = (1 - torch.nn.functional.cosine_similarity(x, y, dim=-1)).mean()
    assert_close(scores.tensors["layers/block_influence"][1], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen2", "smollm3", "granite", "gemma2", "gemma3_text", "nemotron", "cohere",
                                    "cohere2", "apertus", "glm4", "exaone4"])
def test_layer_removal_loss_equals_loss_of_the_dropped_model(family):
    model = tiny_model(family)
    scores = compute_scores(model, BATCHES, ["magnitude"], BATCHES, block_sizes=[1, 2])
    base = lm_loss(model, BATCHES)
    assert scores.meta["base_loss"] == pytest.approx(base, rel=1e-5)
    for start, k, key in [(1, 1, "loss"), (2, 1, "loss"), (0, 2, "block_loss_k2"), (2, 2, "block_loss_k2")]:
        dropped = apply_plan(copy.deepcopy(model), Plan(None, None, None, None, list(range(start, start + k))))
        assert scores.tensors[f"layers/{key}"][start].item() == pytest.approx(lm_loss(dropped, BATCHES) - base,
                                                                              rel=1e-4, abs=1e-5)


def test_magnitude_of_one_neuron_and_one_head(scored):
    model, scores = scored
    layer, j = model.model.layers[0], 5
    mlp = layer.mlp
    expected = mlp.gate_proj.weight[j].pow(2).sum() + mlp.up_proj.weight[j].pow(2).sum() + \
        mlp.down_proj.weight[:, j].pow(2).sum()
    assert_close(scores.tensors["magnitude/mlp"][0, j], expected.detach())
    attn, h = layer.self_attn, 3
    rows = slice(h * 16, (h + 1) * 16)
    expected = attn.q_proj.weight[rows].pow(2).sum() + attn.q_proj.bias[rows].pow(2).sum() + \
        attn.o_proj.weight[:, rows].pow(2).sum()
    assert_close(scores.tensors["magnitude/heads"][0, h], expected.detach())


def test_wanda_of_one_neuron(scored):
    model, scores = scored
    down = model.model.layers[3].mlp.down_proj
    x = capture(model, down)
    expected = down.weight[:, 7].abs().sum() * x[..., 7].norm()
    assert_close(scores.tensors["wanda/mlp"][3, 7], expected.detach(), rtol=1e-4, atol=1e-6)


def test_taylor_of_one_neuron(scored):
    model, scores = scored
    model.zero_grad()
    for ids in BATCHES:
        logits = model(input_ids=ids).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    mlp, j = model.model.layers[1].mlp, 11
    expected = sum((w * w.grad)[j].abs().sum() for w in (mlp.gate_proj.weight, mlp.up_proj.weight)) + \
        (mlp.down_proj.weight * mlp.down_proj.weight.grad)[:, j].abs().sum()
    model.zero_grad()
    assert_close(scores.tensors["taylor/mlp"][1, j], expected.detach(), rtol=1e-4, atol=1e-7)


def test_accumulation_over_batches_equals_one_big_batch():
    model = tiny_model("llama")
    split = compute_scores(model, BATCHES, ["activation"])
    whole = compute_scores(model, [torch.cat(BATCHES)], ["activation"])
    for key, value in split.tensors.items():
        assert_close(value, whole.tensors[key], rtol=1e-4, atol=1e-6)


def test_scores_save_and_load(scored, tmp_path):
    _, scores = scored
    scores.save(tmp_path / "s")
    loaded = Scores.load(tmp_path / "s")
    assert loaded.tensors.keys() == scores.tensors.keys()
    taylor = PruneConfig(criterion="taylor")
    assert_close(taylor.width(loaded)["mlp"], taylor.width(scores)["mlp"])
    assert loaded.criteria() == ["activation", "magnitude", "random", "taylor", "wanda"]


def test_magnitude_of_a_neuron_and_a_head_in_fused_projections():
    """Phi-3's neuron j is rows j and I + j of gate_up_proj (gate, then up); its query head h is rows h*d ... of
    qkv_proj, before the key and value rows."""
    model = tiny_model("phi3")
    scores = compute_scores(model, BATCHES, ["magnitude"])
    layer, j, h = model.model.layers[1], 5, 3
    gate_up, down = layer.mlp.gate_up_proj.weight, layer.mlp.down_proj.weight
    expected = gate_up[j].pow(2).sum() + gate_up[96 + j].pow(2).sum() + down[:, j].pow(2).sum()
    assert_close(scores.tensors["magnitude/mlp"][1, j], expected.detach())
    rows = slice(h * 16, (h + 1) * 16)
    expected = layer.self_attn.qkv_proj.weight[rows].pow(2).sum() + layer.self_attn.o_proj.weight[:, rows].pow(2).sum()
    assert_close(scores.tensors["magnitude/heads"][1, h], expected.detach())


def test_learned_position_embeddings_are_coupled_to_the_hidden_channels():
    """OPT's position embeddings are hidden_size wide, as the token embeddings: their columns count in each hidden
    channel's weight-based score, as they go with it when it is pruned."""
    model = tiny_model("opt")
    learned = decoder(model).embed_positions.weight
    before = coupled_scores(model, arch_of(model.config), lambda p: p.detach().abs())["hidden"]
    expected = learned.detach().abs().sum(0)
    with torch.no_grad():
        learned.zero_()
    after = coupled_scores(model, arch_of(model.config), lambda p: p.detach().abs())["hidden"]
    torch.testing.assert_close(before - after, expected)


def test_coupled_scores_cover_every_family(family):
    model = tiny_model(family)
    s = coupled_scores(model, arch_of(model.config), lambda p: p.detach().abs())
    experts = (6,) if arch_of(model.config).moe else ()  # a mixture of experts: each expert's neurons, and experts
    assert s["hidden"].shape == (64,) and s["heads"].shape == (4, 8) and s["mlp"].shape == (4, *experts, 96)
    mixer = arch_of(model.config).mixer  # a hybrid's recurrent heads: Mamba-2's and their channels, Gated DeltaNet's;
    # a short convolution's channels
    units = {"mamba": ["mamba", "mamba_dim"], "delta": ["delta"], "conv": ["conv"]}.get(mixer, [])
    shared = ["shared"] if arch_of(model.config).shared_expert else []  # a shared expert's neurons
    dense = set(dense_layers(model.config))  # a mixture of experts' dense layers: their neurons apart ("dense")
    assert set(s) == {"hidden", "heads", "mlp", *(["experts"] if experts else []), *shared, *units,
                      *(["dense"] if dense else [])}
    if experts:  # scored in its sparse layers (Nemotron 3's other layers are attention or Mamba-2), 0 in the others
        sparse = [is_sparse(layer, arch_of(model.config)) for layer in model.model.layers]
        assert s["experts"].shape == (4, 6)
        assert all((e > 0).all() if sparse[i] else (e == 0).all() for i, e in enumerate(s["experts"]))
    if dense:
        assert s["dense"].shape == (4, 80)
        assert all((d > 0).all() if i in dense else (d == 0).all() for i, d in enumerate(s["dense"]))
    if mixer:  # each unit scored in the layers that have it, 0 in the others (Qwen3.5 has an MLP in every layer)
        names = arch_of(model.config).mamba_names  # Nemotron-H's MLP layers apart, every other hybrid's layer with one
        where = {"mamba": ("linear_attention", 8), "delta": ("linear_attention", 4), "heads": ("full_attention", 8),
                 "conv": ("conv", 64),
                 "mamba_dim": ("linear_attention", getattr(model.config, names.head_dim, 0)),
                 "mlp": (next((k for k in ("mlp", "moe") if k in model.config.layer_types), None), 96)}
        for unit in ["heads", "mlp", *units]:
            kind, count = where[unit]
            assert s[unit].shape == (4, *(experts if unit == "mlp" else ()), count)
            for i, (layer, scores) in enumerate(zip(model.config.layer_types, s[unit])):
                has = kind in (None, layer) and not (unit == "mlp" and i in dense)
                assert (scores > 0).all() if has else (scores == 0).all()
    assert (s["hidden"] > 0).all()


def test_wanda_input_norms_equal_the_inputs_squared(family):
    """The squared input norms structured Wanda reads, taken from the norm statistics already recorded when a
    linear reads the very tensor a norm produced (q_proj, the MLP, lm_head), equal the inputs squared and summed."""
    model = tiny_model(family)
    arch = arch_of(model.config)
    readers = {}  # statistic -> (layer, the module whose input it sums): of the first layer from layer 1 that has one
    for i in (1, 2, 3, 0):
        layer = decoder_layers(model)[i]
        attn, mamba, delta, mlp_in = attention_of(layer), mamba_of(layer), delta_of(layer), mlp_inputs(layer, arch)
        conv = conv_of(layer)
        parts = {"attn_in": attn and attention_inputs(layer, arch)[0], "o_in": attn and attention_out(attn),
                 "mlp_in": moe_block(layer, arch) if is_sparse(layer, arch) else mlp_in[-1] if mlp_in else None,  # MoE:
                 # its block
                 "mixer_in": mixer_inputs(layer)[0] if mixer_inputs(layer) else None,
                 "mamba_o_in": mamba and mamba.out_proj, "delta_o_in": delta and delta.out_proj,
                 "conv_o_in": conv and conv.out_proj}
        for key, module in parts.items():
            if module is not None:
                readers.setdefault(key, (i, module))
    recurrent = any(map(mixer_inputs, decoder_layers(model)))  # (the tiny Nemotron 3 has no recurrent layer)
    assert set(readers) == {"attn_in", "o_in", "mlp_in", *(["mixer_in", f"{arch.mixer}_o_in"] if recurrent else [])}
    expected = {key: (i, capture(model, m).pow(2).flatten(0, -2).sum(0)) for key, (i, m) in readers.items()}
    rec = ActivationRecorder(model, arch)
    with torch.no_grad(), rec:
        for ids in BATCHES:
            model(input_ids=ids)
    for key, (i, want) in expected.items():
        assert_close(rec.sq[key][i], want, rtol=1e-5, atol=1e-6)
    assert_close(rec.sq["head_in"], capture(model, model.get_output_embeddings()).pow(2).sum((0, 1)), rtol=1e-5,
                 atol=1e-6)
