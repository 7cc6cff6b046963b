"""What llama.cpp's graphs assume of a model, checked on its config alone: the families `minitron export` writes, the
RoPE each graph computes, the layer patterns and widths some graphs fix. No gguf here (it is an extra): export refuses
by these checks, `prune` warns by them and the model card offers export by them, without a circle through export.
"""
from __future__ import annotations

import math

from minitron.arch import FAMILIES, RECURRENT, arch_of, dense_layers, expert_groups, head_dim
from minitron.errors import MinitronError
from minitron.gguf_config import rope_parameters
from minitron.gguf_layout import (AFMOE_GLOBAL_STEP, COHERE2_GLOBAL_STEP, COMMAND_R_PLUS_LAYERS, EXAONE4_GLOBAL_STEP,
                                  EXAONE4_HYBRID_LAYERS, GGUF_ARCH, SMOLLM3_NO_ROPE_STEP, gguf_arch, global_every)

# What `minitron export` writes: every Hugging Face model type with a llama.cpp graph (gguf_layout.GGUF_ARCH).
EXPORTABLE = tuple(GGUF_ARCH)
# The MLP activation each llama.cpp graph hard-codes (SwiGLU's gate activation; Nemotron's squared ReLU, no gate).
ACTIVATIONS = {"gemma": ("gelu_pytorch_tanh",), "gemma2": ("gelu_pytorch_tanh",), "gemma3_text": ("gelu_pytorch_tanh",),
               "arcee": ("relu2",), "nemotron": ("relu2",), "apertus": ("xielu",),
               "phi": ("gelu_new", "gelu_pytorch_tanh"),  # (llama.cpp's GELU: the tanh approximation)
               "gpt_neox": ("gelu_new", "gelu_pytorch_tanh", "gelu"),  # (the exact one warned of: `approximated_gelu`)
               "gpt2": ("gelu_new", "gelu_pytorch_tanh", "gelu"),
               "gpt_bigcode": ("gelu_pytorch_tanh", "gelu_new", "gelu"),
               "falcon": ("gelu_pytorch_tanh", "gelu_new", "gelu")}
# Families whose released models' exact GELU llama.cpp's graph computes as the tanh approximation (as in any GGUF of
# them: llama.cpp's converter writes them so): exported, with a warning.
GELU_APPROXIMATED = ("gpt_neox", "gpt2", "gpt_bigcode", "falcon")
# Families whose graph reads Llama 3.1's per-frequency RoPE factors from a rope_freqs tensor (the llama.cpp
# node-llama-cpp 3.22.1 ships refuses one in its Qwen3, SmolLM3 and Nemotron graphs: "wrong number of tensors").
ROPE_FREQS_FAMILIES = ("llama", "mistral", "arcee", "apertus", "exaone4", "iquestcoder",  # (graphs reading rope_freqs)
                       "exaone", "internlm3")
# YaRN settings llama.cpp derives from the scaling factor (the attention factor) or fixes, at transformers' defaults;
# a model that sets its own is refused (an attention factor written out as the one derived, as OLMo 3's, is not its
# own: `yarn_own`).
YARN_DERIVED = {"attention_factor": None, "mscale": None, "mscale_all_dim": None, "beta_fast": 32, "beta_slow": 1,
                "truncate": True}
# Families whose graph reads YaRN's settings from the file rather than deriving them (`YARN_DERIVED` does not apply;
# their family check says what it computes): Ministral 3's (llama.cpp's mistral3), `check_ministral3`; every family of
# multi-head latent attention's (its deepseek2), `check_latent`.
YARN_READ = ("ministral3", *(model_type for model_type, arch in FAMILIES.items() if arch.mla))

HUNYUAN = ("hunyuan_v1_dense", "hunyuan_v1_moe")  # the families whose dynamic RoPE reads a fixed alpha (`ntk_alpha`)
# Families whose released configs leave YaRN's correction range unrounded (truncate false), which llama.cpp rounds, as
# llama.cpp's own converter leaves it: exported, with a warning (`yarn_unrounded`), and read back unrounded.
YARN_UNROUNDED = ("gpt_oss",)
# Families whose llama.cpp graph builds the attention hidden_size wide (heads x head size = the hidden size) in every
# build, Phi-3's fused qkv, Command R's attention and OLMo 2's q-norm (the k-norm follows k): the family's name and its
# graph's, for the one line that refuses another width (`check_hidden_wide`).
HIDDEN_WIDE = {"phi3": ("Phi-3", "Phi-3"), "cohere": ("Cohere", "Command R"), "cohere2": ("Cohere 2", "Cohere 2"),
               "olmo2": ("OLMo 2", "OLMo 2"), "olmo3": ("OLMo 3", "OLMo 2"), "olmoe": ("OLMoE", "OLMoE"),
               "lfm2": ("LFM2", "LFM2"), "lfm2_moe": ("LFM2-MoE", "LFM2-MoE"), "phi": ("Phi-2", "Phi-2"),
               "glm": ("GLM", "ChatGLM"), "olmo": ("OLMo", "OLMo"), "gpt_neox": ("GPT-NeoX", "GPT-NeoX"),
               "gpt2": ("GPT-2", "GPT-2"), "gpt_bigcode": ("GPTBigCode", "StarCoder"), "falcon": ("Falcon", "Falcon")}
# Families whose graph only some llama.cpp builds take that wide (the one node-llama-cpp 3.22.1 ships among them):
# export writes another width, with a warning.
HIDDEN_WIDE_SOME_BUILDS = ("qwen2", "nemotron", "exaone4", "qwen2_moe")
# Every family the llama.cpp of the checks (node-llama-cpp 3.22.1) needs hidden_size-wide attention for.
LLAMA_CPP_HIDDEN_WIDE = (*HIDDEN_WIDE, *HIDDEN_WIDE_SOME_BUILDS)


def rope_theta(config, layer_type: str = "full_attention") -> float:
    """RoPE's base: the config's, or with Hunyuan's NTK-alpha scaling (`dynamic` with a fixed `alpha`) the larger base
    it amounts to, theta * alpha^(d / (d - 2)), as transformers computes it and llama.cpp's converter writes it."""
    default = getattr(config, "rope_local_base_freq" if layer_type == "sliding_attention" else "rope_theta", 10000.0)
    rope = rope_parameters(config, layer_type)
    theta = float(rope.get("rope_theta", default))
    if ntk_alpha(config, rope):
        dims = head_dim(config)
        theta *= float(rope["alpha"]) ** (dims / (dims - 2))
    return theta


def ntk_alpha(config, rope: dict) -> bool:
    """Whether `rope` (of `config`'s) is Hunyuan's NTK-alpha scaling: labelled `dynamic`, its fixed alpha only
    stretches the base (only Hunyuan's modeling reads an alpha)."""
    return config.model_type in HUNYUAN and rope.get("rope_type") == "dynamic" and bool(rope.get("alpha"))


def approximated_gelu(config) -> bool:
    """Whether llama.cpp computes this model's exact GELU as the tanh approximation (`GELU_APPROXIMATED`)."""
    return config.model_type in GELU_APPROXIMATED and activation(config) == "gelu"


def activation(config) -> str | None:
    """The MLP's activation, under the config's name for it (Gemma's hidden_activation, GPT-2's
    activation_function, Falcon's activation)."""
    return next((a for name in ("hidden_activation", "hidden_act", "activation_function", "activation")
                 if (a := getattr(config, name, None))), None)


def dynamic_ntk(config) -> bool:
    """Whether the model's RoPE is transformers' dynamic NTK scaling (InternLM3's), which stretches RoPE's base only
    for sequences longer than max_position_embeddings: within that context, the file's, it is plain RoPE, as llama.cpp
    computes it (and its converter writes it). Hunyuan's, with a fixed alpha, is a larger base throughout."""
    rope = rope_parameters(config)
    return rope.get("rope_type") == "dynamic" and not ntk_alpha(config, rope)


def layer_types(config) -> list[str]:
    """Gemma's and Cohere 2's attention kind per layer: sliding_attention or full_attention."""
    types = getattr(config, "layer_types", None)
    if types is None:
        period = getattr(config, "sliding_window_pattern", None) or getattr(config, "_sliding_window_pattern", 6)
        types = ["full_attention" if (i + 1) % period == 0 else "sliding_attention"
                 for i in range(config.num_hidden_layers)]
    return list(types)


def swa_period(config) -> int | None:
    """The period n of Gemma 3's layer pattern as llama.cpp reads it (layer i slides when i % n < n - 1; every
    n-th layer is global); None when no period gives this model's pattern (layers dropped from the middle)."""
    sliding = [t == "sliding_attention" for t in layer_types(config)]
    return next((n for n in range(1, len(sliding) + 2)
                 if all(s == (i % n < n - 1) for i, s in enumerate(sliding))), None)


def export_problem(config) -> str | None:
    """Why `export` would refuse a model of this config (its one line), or None: what `prune` warns of, before hours
    of distillation go into a shape llama.cpp cannot run."""
    if config.model_type not in EXPORTABLE:
        return unsupported(config.model_type)
    try:
        check_exportable(config)
    except MinitronError as e:
        return str(e)
    return None


def unsupported(model_type: str) -> str:
    return f"cannot export {model_type!r} models to GGUF; export supports {', '.join(EXPORTABLE)}"


def check_exportable(config) -> None:
    """Refuse what llama.cpp's graphs cannot run, naming it."""
    model_type = config.model_type
    check_rope(config)
    act = activation(config)
    if model_type in ACTIVATIONS and act not in ACTIVATIONS[model_type]:
        raise MinitronError(f"cannot export this {model_type} model with activation {act!r}: llama.cpp's graph for "
                            f"it computes {ACTIVATIONS[model_type][0]}")
    if model_type in HIDDEN_WIDE:
        check_hidden_wide(config, *HIDDEN_WIDE[model_type])
    dense, arch = dense_layers(config), arch_of(config)
    if dense and not arch.dense_first and (not arch.dense_kinds or dense != list(range(len(dense)))):
        raise MinitronError(f"cannot export this {model_type} model with dense layers {dense} among its "
                            "mixture-of-experts ones: llama.cpp's graph for it takes "
                            f"{'its first layers dense only' if arch.dense_kinds else 'every layer sparse'}")
    FAMILY_CHECKS.get(model_type, lambda _: None)(config)


def rope_scalings(model_type: str) -> tuple[str, ...]:
    """The RoPE of a family's global layers that llama.cpp's graph for it computes: plain, linear and YaRN (every
    graph, from the rope.scaling keys), dynamic NTK scaling (plain RoPE within the file's context, `dynamic_ntk`; with
    Hunyuan's fixed alpha, the base it gives: `rope_theta`), Llama 3.1's (per-frequency factors, `ROPE_FREQS_FAMILIES`)
    and Phi-3's LongRoPE."""
    return ("default", "linear", "yarn", "dynamic", *(("llama3",) if model_type in ROPE_FREQS_FAMILIES else ()),
            *(("longrope",) if model_type == "phi3" else ()))


def check_rope(config) -> None:
    """Refuse a RoPE scaling llama.cpp's graph does not compute: another type, any scaling of Gemma 3's sliding
    layers, a YaRN with settings of its own where llama.cpp derives or fixes them (`YARN_DERIVED`)."""
    model_type = config.model_type
    kinds = ("full_attention", "sliding_attention") if model_type == "gemma3_text" else ("full_attention",)
    for kind in kinds:
        rope = rope_parameters(config, kind)
        rope_type = rope.get("rope_type", "default")
        allowed = rope_scalings(model_type) if kind == "full_attention" else ("default",)
        if rope_type not in allowed:
            raise MinitronError(f"cannot export this {model_type} model with rope_type {rope_type!r}"
                                f"{' in its sliding layers' if kind != 'full_attention' else ''}; llama.cpp's graph "
                                f"for it computes {', '.join(allowed)}")
        own = yarn_own(config, rope) if rope_type == "yarn" and model_type not in YARN_READ else []
        if model_type in YARN_UNROUNDED and own == ["truncate"]:
            own = []
        if own:
            raise MinitronError(f"cannot export a YaRN model with its own {', '.join(own)}: llama.cpp computes YaRN's "
                                "attention factor from its scaling factor and fixes the rest")


def yarn_unrounded(config) -> bool:
    """Whether the model's YaRN leaves its correction range unrounded where llama.cpp rounds it (`YARN_UNROUNDED`)."""
    rope = rope_parameters(config)
    return rope.get("rope_type") == "yarn" and rope.get("truncate", True) is False


def yarn_own(config, rope: dict) -> list[str]:
    """The YaRN settings of `rope` that are its own, not what llama.cpp derives or fixes (`YARN_DERIVED`): an
    attention factor other than 0.1 ln(factor) + 1, the one llama.cpp computes (and transformers, when none is set)."""
    derived = 0.1 * math.log(yarn_factor(config)) + 1.0
    return [k for k, default in YARN_DERIVED.items() if rope.get(k) is not None and rope.get(k) != default
            and not (k == "attention_factor" and math.isclose(rope[k], derived, rel_tol=1e-6))]


def original_context(config) -> int:
    """The context a RoPE scaling (YaRN, LongRoPE) extends: rope_parameters' or the config's."""
    return int(rope_parameters(config).get("original_max_position_embeddings")
               or config.original_max_position_embeddings)


def yarn_factor(config) -> float:
    """YaRN's scaling factor (what export writes as rope.scaling.factor): its own, or the context's growth."""
    return float(rope_parameters(config).get("factor") or config.max_position_embeddings / original_context(config))


def check_smollm3(config) -> None:
    step = SMOLLM3_NO_ROPE_STEP
    if list(config.no_rope_layers) != [int((i + 1) % step != 0) for i in range(config.num_hidden_layers)]:
        raise MinitronError(f"cannot export this SmolLM3 model: its layers with RoPE ({list(config.no_rope_layers)}, "
                            f"0: none) are not all but every {step}th, which llama.cpp's SmolLM3 graph assumes; drop "
                            f"layers in blocks of {step} to keep the pattern")


def check_ministral3(config) -> None:
    """llama.cpp's mistral3 graph reads YaRN's betas and mscale_all_dim (as yarn_log_multiplier) and takes mscale as
    1: its attention factor is get_mscale(factor, 1) / get_mscale(factor, mscale_all_dim), transformers' with both
    set. It scales the queries past YaRN's original context."""
    rope = rope_parameters(config)
    if rope.get("rope_type") != "yarn":
        if rope.get("llama_4_scaling_beta"):
            raise MinitronError("cannot export a Ministral 3 model that scales its queries (llama_4_scaling_beta) "
                                "without YaRN: llama.cpp's mistral3 graph scales past YaRN's original context")
        return
    if not (rope.get("mscale") == 1.0 and rope.get("mscale_all_dim") is not None
            and rope.get("attention_factor") is None and rope.get("truncate") in (None, True)):
        raise MinitronError("cannot export a Ministral 3 model whose YaRN is not mscale 1 with an mscale_all_dim (and "
                            "no attention_factor or truncate of its own): llama.cpp's mistral3 graph computes only "
                            "that one")


def check_seed_oss(config) -> None:
    if getattr(config, "attention_out_bias", False):
        raise MinitronError("cannot export a Seed-OSS model with an o_proj bias (attention_out_bias): llama.cpp's "
                            "seed_oss graph has none (nor has the released model)")


def check_qwen3_moe(config) -> None:
    if not config.norm_topk_prob:
        raise MinitronError("cannot export a Qwen3-MoE model without norm_topk_prob: llama.cpp's qwen3moe graph always "
                            "renormalises the picked experts' weights (as the released models do)")


def check_olmoe(config) -> None:
    if config.norm_topk_prob:
        raise MinitronError("cannot export an OLMoE model with norm_topk_prob: llama.cpp's olmoe graph never "
                            "renormalises the picked experts' weights (nor do the released models)")
    if config.clip_qkv is not None:
        raise MinitronError("cannot export an OLMoE model that clips q, k and v (clip_qkv): minitron does not write "
                            "llama.cpp's clamp (the released models have none)")
    refuse_grouped_kv(config, "OLMoE", "llama.cpp's olmoe graph builds its k norm hidden_size wide, as in the "
                      "released models")


def refuse_grouped_kv(config, family: str, why: str) -> None:
    """Refuse grouped-query attention where llama.cpp's graph gives every query head its own KV head (`why`)."""
    if config.num_key_value_heads != config.num_attention_heads:
        raise MinitronError(f"cannot export this {family} model with grouped-query attention "
                            f"({config.num_attention_heads} query heads, {config.num_key_value_heads} KV heads): {why} "
                            "(prune query and KV heads together)")


def check_gemma(config) -> None:
    check_tied(config, "Gemma", "Gemma")
    if getattr(config, "use_bidirectional_attention", False):
        raise MinitronError("cannot export a bidirectional Gemma (an embedding model) as a causal LM")


def check_gemma2(config) -> None:
    check_tied(config, "Gemma 2", "Gemma 2")
    if swa_period(config) != 2:
        raise MinitronError(f"cannot export this Gemma 2 model: its layer pattern {layer_types(config)} is not local "
                            "and global layers in turn, which llama.cpp's Gemma 2 graph assumes; drop layers in blocks "
                            "of 2 to keep it")


def check_gemma3(config) -> None:
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise MinitronError("cannot export a Gemma 3 model with attn_logit_softcapping: llama.cpp's Gemma 3 "
                            "graph has no attention soft-capping")
    if getattr(config, "use_bidirectional_attention", False):
        raise MinitronError("cannot export a bidirectional Gemma 3 (an embedding model) as a causal LM")
    if swa_period(config) is None:
        raise MinitronError(f"cannot export this Gemma 3 model: its layer pattern {layer_types(config)} is not "
                            f"periodic, and llama.cpp reads Gemma 3's sliding-window layers as every n-th "
                            f"layer global")


def check_cohere(config) -> None:
    check_tied(config, "Cohere", "Command R")
    if bool(getattr(config, "use_qk_norm", False)) != (config.num_hidden_layers >= COMMAND_R_PLUS_LAYERS):
        raise MinitronError(f"cannot export this Cohere model: llama.cpp's Command R graph takes q/k norms for models "
                            f"of {COMMAND_R_PLUS_LAYERS} layers or more and none below, and this one has "
                            f"{config.num_hidden_layers} layers {'with' if config.use_qk_norm else 'without'} them")


def check_cohere2(config) -> None:
    check_tied(config, "Cohere 2", "Cohere 2")
    check_global_every(config, COHERE2_GLOBAL_STEP, "Cohere 2", "Cohere 2")


def check_global_every(config, step: int, family: str, graph: str, global_kind: str = "global") -> None:
    """Refuse a model whose layers are not every `step`-th one global and the others sliding (`global_every`), which
    its llama.cpp `graph` fixes in its source (Cohere 2's, AFMoE's)."""
    if layer_types(config) != global_every(step, config.num_hidden_layers):
        raise MinitronError(f"cannot export this {family} model: its layer pattern {layer_types(config)} is not every "
                            f"{step}th layer {global_kind}, which llama.cpp's {graph} graph assumes; drop layers in "
                            f"blocks of {step} to keep it")


def check_olmo3(config) -> None:
    """llama.cpp runs OLMo 3 as OLMo 2's graph with a window and a layer pattern: the global layers with the file's
    RoPE and its scaling (YaRN in the released models), the sliding ones with plain RoPE of the same base, as
    transformers' OLMo 3 computes a config's `rope_scaling` (measured in llama.cpp: YaRN on every layer falls 0.065
    short of what it computes)."""
    sliding = rope_parameters(config, "sliding_attention")
    if sliding != {"rope_type": "default", "rope_theta": rope_theta(config)}:
        raise MinitronError(f"cannot export an OLMo 3 model whose sliding layers' RoPE is {sliding}: llama.cpp's OLMo "
                            f"2 graph, which runs OLMo 3, gives them plain RoPE with the global layers' base "
                            f"({rope_theta(config):g}) and scales only the global layers")


def check_exaone4(config) -> None:
    """llama.cpp's EXAONE 4 graph makes a model hybrid by its layer count alone: at 64 layers (the 32B) three of four
    layers slide and every 4th is global without RoPE, at any other count every layer is global with RoPE, as
    transformers' EXAONE 4 computes a model without a window."""
    step, layers = EXAONE4_GLOBAL_STEP, config.num_hidden_layers
    pattern = ["full_attention" if (i + 1) % step == 0 else "sliding_attention" for i in range(layers)]
    if layers == EXAONE4_HYBRID_LAYERS and (config.sliding_window is None or layer_types(config) != pattern):
        raise MinitronError(f"cannot export this EXAONE 4 model: llama.cpp's EXAONE 4 graph takes a model of {layers} "
                            f"layers for the 32B (every {step}th layer global, the others sliding), and this one has "
                            f"window {config.sliding_window} and layers {layer_types(config)}")
    if layers != EXAONE4_HYBRID_LAYERS and config.sliding_window is not None:
        raise MinitronError(f"cannot export this EXAONE 4 model of {layers} layers with sliding ones (window "
                            f"{config.sliding_window}): llama.cpp's EXAONE 4 graph takes sliding layers only in a "
                            f"model of {EXAONE4_HYBRID_LAYERS} (the 32B's) and makes every layer of any other global "
                            f"with RoPE; keep the 32B's {EXAONE4_HYBRID_LAYERS} layers to export it")


def check_tied(config, family: str, graph: str) -> None:
    if not config.tie_word_embeddings:
        raise MinitronError(f"cannot export a {family} model whose lm_head is not tied to its embeddings: llama.cpp's "
                            f"{graph} graph has no output tensor of its own")


def check_hidden_wide(config, family: str, graph: str) -> None:
    width = config.num_attention_heads * head_dim(config)
    if width != config.hidden_size:
        raise MinitronError(f"cannot export this {family} model: its attention is {config.num_attention_heads} heads "
                            f"x {head_dim(config)} = {width} wide, and llama.cpp's {graph} graph builds it hidden_size "
                            f"({config.hidden_size}) wide; prune heads and hidden channels in the same proportion")


# What each family's llama.cpp graph assumes beyond the common checks, refused in one line when a model breaks it.
def check_nemotron_h(config) -> None:
    """Refuse a Nemotron-H that llama.cpp's nemotron_h graph computes otherwise: another activation, a clamped time
    step, biases (the released models have none; the Mamba-2 graph adds the convolution's always and in_proj's
    never)."""
    if config.mlp_hidden_act != "relu2" or config.mamba_hidden_act != "silu":
        raise MinitronError(f"cannot export this nemotron_h model with activations {config.mlp_hidden_act!r} and "
                            f"{config.mamba_hidden_act!r}: llama.cpp's graph computes relu2 (MLP) and silu (Mamba-2)")
    if tuple(config.time_step_limit) != (0.0, float("inf")):
        raise MinitronError(f"cannot export this nemotron_h model with time_step_limit {list(config.time_step_limit)}: "
                            "llama.cpp's Mamba-2 graph does not clamp the time step")
    if RECURRENT not in config.layer_types:  # (a target may drop them all)
        raise MinitronError("cannot export a nemotron_h model without a Mamba-2 layer: llama.cpp's graph fails to "
                            "allocate its recurrent state then (GGML_ASSERT(buffer))")
    biases = [name for name in ("use_bias", "attention_bias", "mlp_bias") if getattr(config, name)]
    if biases or not config.use_conv_bias:
        raise MinitronError(f"cannot export this nemotron_h model with {', '.join(biases) or 'use_conv_bias false'}: "
                            "minitron exports Nemotron-H with its convolution's bias and no other (as released)")


def check_granite_hybrid(config) -> None:
    """Refuse a Granite 4 (or Bamba) that llama.cpp's granitehybrid graph computes otherwise: Mamba-2 mixers other than
    twice the hidden size wide (it asserts 2 x hidden), a clamped time step, an in_proj bias (the released models have
    none of these)."""
    kind = config.model_type
    if config.mamba_expand != 2:
        raise MinitronError(f"cannot export this {kind} model with mamba_expand {config.mamba_expand}: "
                            "llama.cpp's granitehybrid graph takes Mamba-2 mixers twice the hidden size wide")
    if config.time_step_limit is not None and tuple(config.time_step_limit) != (0.0, float("inf")):
        raise MinitronError(f"cannot export this {kind} model with time_step_limit "
                            f"{list(config.time_step_limit)}: llama.cpp's Mamba-2 graph does not clamp the time step")
    if config.mamba_proj_bias:
        raise MinitronError(f"cannot export a {kind} model with mamba_proj_bias: llama.cpp's granitehybrid graph has "
                            "no in_proj bias")


def check_lfm2(config) -> None:
    """Refuse an LFM2 with biases in its short convolutions (conv_bias): llama.cpp's lfm2 graph has none (the released
    models have none)."""
    if config.conv_bias:
        raise MinitronError("cannot export an LFM2 model with conv_bias: llama.cpp's lfm2 graph has no biases in its "
                            "short convolutions")


def check_afmoe(config) -> None:
    """Refuse an AFMoE that llama.cpp's afmoe graph computes otherwise: without muP's embedding scale (it always scales
    by sqrt(hidden_size), as the released Trinity models do), or with a layer pattern other than every
    AFMOE_GLOBAL_STEP-th layer global without RoPE (fixed in its source)."""
    if not config.mup_enabled:
        raise MinitronError("cannot export an AFMoE model with mup_enabled false: llama.cpp's afmoe graph scales the "
                            "embeddings by sqrt(hidden_size) always")
    check_global_every(config, AFMOE_GLOBAL_STEP, "AFMoE", "afmoe", "global (without RoPE)")


def check_lfm2_moe(config) -> None:
    """Refuse an LFM2-MoE that llama.cpp's lfm2moe graph computes otherwise: its router's picks not steered by a bias
    (that graph needs one), the picked experts' weights not renormalised or scaled (it always renormalises, and scales
    by none: the released models do the same)."""
    check_lfm2(config)
    if not config.use_expert_bias or not config.norm_topk_prob or config.routed_scaling_factor != 1.0:
        raise MinitronError("cannot export an LFM2-MoE model without use_expert_bias, without norm_topk_prob or with a "
                            "routed_scaling_factor other than 1: llama.cpp's lfm2moe graph steers every router by a "
                            "bias and renormalises the picked experts' weights, unscaled")


def lite_depth(layers: int, vocab: int) -> bool:
    """Whether llama.cpp's deepseek2 graph takes a model of `layers` layers and a `vocab` vocabulary for a Lite one
    (DeepSeek-V2-Lite's 27, GigaChat3's 26, Kanana-2's 48 of 128,256 tokens), whose queries have no latent."""
    return layers in (26, 27) or (layers == 48 and vocab == 128256)


def check_latent(config) -> None:
    """Refuse a model of multi-head latent attention that llama.cpp's deepseek2 graph computes otherwise:
    - a YaRN with mscale and mscale_all_dim apart, or other settings of its own: it computes DeepSeek's (V2-Lite's
      0.707 each, V3's 1): rotated channels unscaled (transformers' attention factor 1) and the attention's scale
      times (0.1 mscale_all_dim ln(factor) + 1)^2 (its yarn_log_multiplier), its betas from the file;
    - queries through a latent at a depth it takes for a Lite model's (`lite_depth`), where it reads no query latent
      (DeepSeek V3.2's deepseek32 graph always reads one);
    - rotated channels in halves (rope_interleave false): it rotates interleaved pairs, as the released checkpoints
      store them (DeepSeek V2's always are);
    - in DeepSeek V3.2's deepseek32 graph (GLM-5's glm-dsa too), a YaRN whose mscale is not 1 (V3.2's is): llama.cpp
      takes mscale for 1 there, and mscale_all_dim from the file (with V2-Lite's 0.707 each the tiny model falls 0.18
      short, measured)."""
    rope, model_type, graph = rope_parameters(config), config.model_type, gguf_arch(config)
    if rope.get("rope_type") == "yarn" and (rope.get("mscale") != rope.get("mscale_all_dim")
                                            or rope.get("attention_factor") is not None
                                            or rope.get("truncate") not in (None, True)):
        raise MinitronError(f"cannot export a {model_type} model whose YaRN has mscale {rope.get('mscale')} "
                            f"and mscale_all_dim {rope.get('mscale_all_dim')} apart (or an attention_factor or "
                            f"truncate of its own): llama.cpp's {graph} graph computes them equal, as DeepSeek's")
    if rope.get("rope_type") == "yarn" and graph != "deepseek2" and rope.get("mscale") not in (None, 1, 1.0):
        raise MinitronError(f"cannot export a {model_type} model whose YaRN has mscale {rope['mscale']}: llama.cpp's "
                            f"{graph} graph computes mscale 1, DeepSeek V3.2's")
    if graph == "deepseek2" and config.q_lora_rank and lite_depth(config.num_hidden_layers, config.vocab_size):
        raise MinitronError(f"cannot export a {model_type} model of {config.num_hidden_layers} layers whose queries "
                            "come through a latent (q_lora_rank): llama.cpp's deepseek2 graph takes a model of 26 or "
                            "27 layers (or 48 with a vocabulary of 128,256) for a Lite one, without; keep another "
                            "number of layers")
    if not getattr(config, "rope_interleave", True):
        raise MinitronError(f"cannot export a {model_type} model with rope_interleave false: llama.cpp's deepseek2 "
                            "graph rotates interleaved pairs of channels (as the released checkpoints store them)")


def check_indexed(config) -> None:
    """Refuse a DeepSeek V3.2 (or a GLM-5) that llama.cpp's deepseek32 graph (glm-dsa) computes otherwise
    (`check_latent`), or whose indexer heads it cannot rotate: it turns them by a Hadamard matrix as wide as the largest
    power of two from 64 up that divides them, and stops where that is not the whole head (16 channels:
    `GGML_ASSERT(ggml_can_mul_mat(a, b))`, measured; the released heads are 128)."""
    check_latent(config)
    width = config.index_head_dim
    if width < 64 or width & (width - 1):
        raise MinitronError(f"cannot export a {config.model_type} model whose indexer heads are {width} channels wide: "
                            f"llama.cpp's {gguf_arch(config)} graph rotates them by a Hadamard matrix of 64, 128, "
                            "256... rows, as wide as the head")


def check_deepseek_v2(config) -> None:
    """Refuse a DeepSeek V2 that llama.cpp's deepseek2 graph computes otherwise (`check_latent`), or whose router
    picks its experts within groups (group_limited_greedy: the groups of the best experts, V2's 236B): its graphs
    score a group by its two best experts (DeepSeek V3's way)."""
    check_latent(config)
    if expert_groups(config) > 1:
        raise MinitronError(f"cannot export a deepseek_v2 model whose router picks its experts within the groups of "
                            f"the best ones (topk_method group_limited_greedy, n_group={config.n_group}): llama.cpp's "
                            "graphs score a group by its two best experts, DeepSeek V3's way")


def check_dots1(config) -> None:
    """Refuse a dots.llm1 that llama.cpp's dots1 graph computes otherwise: sliding-window layers (that graph has none)
    or fewer KV heads than query heads (it sizes k and v as q; the released model's attention is full, 32 heads
    each)."""
    if any(kind == "sliding_attention" for kind in config.layer_types):
        raise MinitronError("cannot export a dots1 model with sliding-window layers: llama.cpp's dots1 graph attends "
                            "over the whole context in every layer")
    refuse_grouped_kv(config, "dots1", "llama.cpp's dots1 graph sizes k and v as q")


def check_qwen2_moe(config) -> None:
    """Refuse a Qwen2-MoE that renormalises its picked experts' weights: llama.cpp's qwen2moe graph never does (the
    released ones do not)."""
    if config.norm_topk_prob:
        raise MinitronError("cannot export a Qwen2-MoE model with norm_topk_prob: llama.cpp's qwen2moe graph never "
                            "renormalises the picked experts' weights")


def check_qwen3_5(config) -> None:
    """Refuse a Qwen3.5 (or Qwen3-Next) that llama.cpp's qwen35 (qwen3next) graph computes otherwise: its Gated
    DeltaNet's key and value heads of one size (the graph sizes both by the state size), its MLP SwiGLU."""
    if config.linear_key_head_dim != config.linear_value_head_dim or config.hidden_act != "silu":
        raise MinitronError(f"cannot export this {config.model_type} model with linear_key_head_dim "
                            f"{config.linear_key_head_dim}, linear_value_head_dim {config.linear_value_head_dim} and "
                            f"hidden_act {config.hidden_act!r}: llama.cpp's {GGUF_ARCH[config.model_type]} graph "
                            "takes one head size and silu")


def check_qwen3_next(config) -> None:
    """Refuse a Qwen3-Next that llama.cpp's qwen3next graph computes otherwise (`check_qwen3_5`), or whose picked
    experts' weights are not renormalised (the graph always renormalises them, as the released models do)."""
    check_qwen3_5(config)
    if not config.norm_topk_prob:
        raise MinitronError("cannot export a Qwen3-Next model without norm_topk_prob: llama.cpp's qwen3next graph "
                            "always renormalises the picked experts' weights (as the released models do)")


def check_phi(config) -> None:
    """Refuse a Phi-2 with q/k LayerNorms (qk_layernorm, which no released Phi-1, 1.5 or 2 sets): llama.cpp's phi2
    graph has none."""
    if config.qk_layernorm:
        raise MinitronError("cannot export a phi model with q/k LayerNorms (qk_layernorm): llama.cpp's phi2 graph has "
                            "none")


def check_gpt_oss(config) -> None:
    """Refuse a GPT-OSS that llama.cpp's gpt-oss graph computes otherwise: its experts' clamped SwiGLU with other
    constants than GPT-OSS's (alpha 1.702, limit 7: fixed in llama.cpp's source), or no window (the graph reads
    one)."""
    if (config.swiglu_alpha, config.swiglu_limit) != (1.702, 7.0):
        raise MinitronError(f"cannot export this gpt_oss model with swiglu_alpha {config.swiglu_alpha} and "
                            f"swiglu_limit {config.swiglu_limit}: llama.cpp's gpt-oss graph fixes them at 1.702 and 7.0")
    if not config.sliding_window:
        raise MinitronError("cannot export a gpt_oss model without a sliding_window: llama.cpp's gpt-oss graph reads "
                            "one")


def check_granite_swa(config) -> None:
    """llama.cpp's granite_swa graph gives every layer with RoPE the file's one base: refuse layers of other bases
    (`layer_rope_theta`, which transformers reads in place of rope_theta; 0: no RoPE)."""
    bases = sorted({float(theta) for theta in config.layer_rope_theta if theta})
    if bases and bases != [rope_theta(config)]:
        raise MinitronError(f"cannot export this granite_swa model: its layers' RoPE bases "
                            f"({', '.join(map(str, bases))}) are not its rope_theta ({rope_theta(config):g}), the one "
                            "base llama.cpp's granite_swa graph gives every layer with RoPE")


def check_falcon(config) -> None:
    """Refuse a Falcon that llama.cpp's falcon graph computes otherwise: one with biases (bias: none of the released
    Falcons with RoPE has them; the graph reads none) or its attention and MLP in turn (the graph runs them in
    parallel)."""
    if config.bias or not config.parallel_attn:
        raise MinitronError("cannot export a falcon model with biases or with its attention and MLP in turn (bias, "
                            "parallel_attn false): llama.cpp's falcon graph has no biases and runs the two in "
                            "parallel")


FAMILY_CHECKS = {"smollm3": check_smollm3, "seed_oss": check_seed_oss,
                 "gemma": check_gemma, "gemma2": check_gemma2, "gemma3_text": check_gemma3, "cohere": check_cohere,
                 "cohere2": check_cohere2, "ministral3": check_ministral3, "olmo3": check_olmo3,
                 "exaone4": check_exaone4, "qwen3_moe": check_qwen3_moe, "olmoe": check_olmoe,
                 "nemotron_h": check_nemotron_h, "qwen3_5_text": check_qwen3_5, "qwen3_5_moe_text": check_qwen3_5,
                 "qwen3_next": check_qwen3_next,
                 "qwen2_moe": check_qwen2_moe, "gpt_oss": check_gpt_oss, "granitemoehybrid": check_granite_hybrid,
                 "bamba": check_granite_hybrid,
                 "lfm2": check_lfm2, "lfm2_moe": check_lfm2_moe, "deepseek_v3": check_latent,
                 "glm4_moe_lite": check_latent, "deepseek_v2": check_deepseek_v2, "youtu": check_latent,
                 "sarvam_mla": check_latent, "deepseek_v32": check_indexed, "dots1": check_dots1,
                 "afmoe": check_afmoe, "glm_moe_dsa": check_indexed,
                 "phi": check_phi, "falcon": check_falcon, "granite_swa": check_granite_swa}
