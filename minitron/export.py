"""GGUF export: a Hugging Face directory of any family minitron prunes (Llama, Mistral, Ministral 3, Qwen2, Qwen3, ERNIE
4.5, Seed-OSS, Hunyuan (dense), SmolLM3, Granite, Gemma, Gemma 2, Gemma 3, Arcee, Nemotron, Apertus, Phi-3, GLM-4,
Cohere, Cohere 2, OLMo 2, OLMo 3, EXAONE 4, StableLM 2, the mixtures of experts Qwen3-MoE, Mixtral, OLMoE, Granite-MoE
and Qwen2-MoE, and the hybrids Nemotron-H, Qwen3.5 and Qwen3.5-MoE) as one .gguf file for llama.cpp, Ollama and LM
Studio, with an Ollama Modelfile beside it.

The `gguf` package (llama.cpp's own Python writer) writes the format: its tensor-name maps, its quantisers and its
metadata keys. This module decides what goes in: the architecture numbers llama.cpp reads, the tokenizer, and the
weights with the transforms llama.cpp's own converter (convert_hf_to_gguf.py) applies: the Llama rotary layout for q/k,
1 added to the norm weights of Gemma (x * (1 + w)) and Nemotron (LayerNorm1P), RoPE scaling factors as tensors (Llama
3.1's, Phi-3's LongRoPE), a mixture of experts' tensors stacked over its experts, Nemotron-H's Mamba-2 and Qwen3.5's
Gated DeltaNet tensors in their graphs' layouts. Weight types are minitron.export_quant's, the identity keys and the
Modelfile minitron.export_ollama's.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import NamedTuple

import gguf
import numpy as np
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from minitron.arch import (ATTENTION, MLP, MOE, RECURRENT, arch_of, dense_layers, expert_groups, head_dim,
                           num_experts, shared_width, tied)
from minitron.card import card_name
from minitron.errors import MinitronError
from minitron.export_ollama import add_identity, modelfile
from minitron.export_checks import (HIDDEN_WIDE_SOME_BUILDS, YARN_DERIVED, approximated_gelu, check_exportable,
                                    dynamic_ntk, layer_types, original_context, rope_theta, swa_period, unsupported,
                                    yarn_factor, yarn_unrounded)
from minitron.export_quant import TYPES, ExportDtype, encode, ggml_library, tensor_type
from minitron.gguf_config import GEMMA_27B_LAYERS, gemma_query_size, rope_parameters, rotary_dims
from minitron.gguf_layout import (EXPERT_TENSOR, GGUF_ARCH, INTERLEAVED_ROTARY, LAYER_NORM_EPS, OUTPUT_REQUIRED,
                                  RMS_NORM_EPS, XIELU, XIELU_TENSOR, delta_in_gguf, delta_stored, experts_in_gguf,
                                  fused_gate_up,
                                  gguf_arch, gguf_tensor, granite_mlp_in_gguf, interleave_rotary, mamba_in_gguf,
                                  mamba_stored, mla_in_gguf, mla_stored, oss_in_gguf, oss_stored, qkv_by_kind,
                                  qkvz_in_gguf, qkvz_stored, stacked_key, stored_plus_one, tensor_names)
from minitron.io import atomic_file, refuse_existing_file
from minitron.load import load_config, load_tokenizer, resolve_model
from minitron.shards import Checkpoint, require_safetensors

# The split regexes of common byte-level BPE tokenizers, by the name llama.cpp gives them (tokenizer.ggml.pre).
PRE_TOKENIZERS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+",
    "tekken": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"  # Mistral NeMo
              r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
              r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "seed-coder": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"  # Seed-OSS
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen35": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"  # Qwen3.5
              r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt-4o": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"  # o200k: GPT-OSS
              r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
              r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
              r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


class Exported(NamedTuple):
    """What `export` wrote: the GGUF file and the Ollama Modelfile beside it."""

    gguf: Path
    modelfile: Path


def export(model: str, out: Path, dtype: ExportDtype = "f16", overwrite: bool = False,
           name: str | None = None) -> Exported:
    """Export a Hugging Face model directory to one GGUF file for llama.cpp, Ollama and LM Studio, and an Ollama
    Modelfile beside it (out.gguf -> out.Modelfile).

    Args:
        model: The model to export: a Hugging Face directory written by minitron (or any stock Llama, Mistral,
            Ministral 3, Qwen2, Qwen3, ERNIE 4.5, Seed-OSS, Hunyuan dense, SmolLM3, Granite, Gemma, Gemma 2, Gemma 3
            text, Arcee, Nemotron, Apertus, Phi-3, GLM-4, Cohere, Cohere 2, OLMo 2, OLMo 3, EXAONE 4, StableLM 2,
            Qwen3-MoE, Mixtral, OLMoE, Granite-MoE, Qwen2-MoE, GLM-4.5, ERNIE 4.5 MoE, dots.llm1, Hunyuan MoE,
            Nemotron-H, Qwen3.5 or Qwen3.5-MoE checkpoint), a .gguf file or 'default'.
        out: The .gguf file to write (written to a temporary sibling, then renamed into place).
        dtype: Weight type of the 2-D tensors: f16, bf16, q8_0, q5_1, q5_0, q4_1 or q4_0 (every weight in that
            type; a tensor whose rows are not a multiple of 32 stays f16), or llama.cpp's k-quant mixes q6_k,
            q5_k_m, q4_k_m (quantised by llama.cpp's own library, which `make llamacpp` installs; not for a mixture
            of experts). Norms, biases and routers stay f32.
        overwrite: Replace `out` (and its Modelfile) if they already exist.
        name: The model's name in the file (general.name); default: the name its minitron model card gives it
            (SmolLM2-135M-Instruct-minitron-67M), else the model directory's name.

    Returns:
        The paths of the GGUF file and of the Modelfile.
    """
    out = Path(out)
    refuse_existing_file(out, overwrite)
    if dtype not in TYPES:
        raise MinitronError(f"--dtype {dtype!r} is not a GGUF export type; use one of {', '.join(TYPES)}")
    path = resolve_model(model)
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except json.JSONDecodeError:
        raise MinitronError(f"{path / 'config.json'} is not valid JSON; is {path} a complete model "
                            f"directory?") from None
    if model_type not in GGUF_ARCH:
        raise MinitronError(unsupported(model_type))
    config = load_config(path)
    require_safetensors(path)  # no weights (or only a pickle): refused, not a GGUF without tensors
    check_exportable(config)
    arch, weight_type = gguf_arch(config), TYPES[dtype]
    if weight_type.ggml and arch_of(config).moe:
        raise MinitronError(f"cannot export a mixture of experts as {dtype}: llama.cpp's k-quant mixes pick other "
                            f"types for its experts; export f16, bf16 or q8_0 and quantise with llama-quantize")
    if weight_type.ggml:
        ggml_library()  # the k-quants need llama.cpp's quantiser: refused here, before anything is written
    tokenizer = load_tokenizer(path)
    recipe = modelfile(out.name, tokenizer)
    ollama = out.with_suffix(".Modelfile")
    refuse_existing_file(ollama, overwrite)
    with atomic_file(out) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        try:
            writer.add_type("model")
            add_identity(writer, name or card_name(path) or path.name, path)
            add_architecture(writer, config)
            writer.add_file_type(weight_type.file_type)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            add_tokenizer(writer, tokenizer, config.vocab_size)
            add_weights(writer, path, config, arch, weight_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file(progress=True)
        finally:
            writer.close()
        with atomic_file(ollama) as tmp_recipe:  # inside: a failure here leaves neither file
            tmp_recipe.write_text(recipe, encoding="utf-8")
    print(f"wrote {out} ({dtype}, {out.stat().st_size / 1e6:.1f} MB) and {ollama}", flush=True)
    return Exported(out, ollama)


def attention_scale_fix(config) -> float:
    """Gemma scales queries by query_pre_attn_scalar**-0.5; llama.cpp's Gemma 2 and 3 graphs by 1/sqrt(head size)
    (1/sqrt(hidden/heads) for the 27Bs, which it knows by their layer count): the ratio, folded into the queries
    (Gemma 3's q-norm weights, Gemma 2's q_proj; 1 for stock models, and a pruned model whose head count or hidden
    size changed keeps its own scale this way)."""
    if config.model_type not in GEMMA_27B_LAYERS:
        return 1.0
    return math.sqrt(gemma_query_size(config) / config.query_pre_attn_scalar)


def layer_sizes(config) -> tuple[int | list[int], ...]:
    """(MLP neurons, query heads, KV heads): of every layer; of a Nemotron-H, neurons and KV heads a list, 0 in the
    layers without the part (llama.cpp's nemotron_h graph tells its layers' kinds by them: a Mamba-2 layer has
    neither), and query heads one number (llama.cpp takes the head size from the first layer's, which a Mamba-2 layer
    has none of); of a Granite 4 and an LFM2, KV heads a list likewise (their graphs' recurrent layers have none)."""
    arch = arch_of(config)
    neurons = getattr(config, "intermediate_size", getattr(config, arch.mlp_size))  # (a sparse MoE's: each expert's)
    if arch.mla:  # llama.cpp's deepseek2 graph attends to the latent as one KV head (`key_value_lengths`)
        return neurons, config.num_attention_heads, 1
    if arch.mixer not in ("mamba", "conv"):
        return neurons, config.num_attention_heads, config.num_key_value_heads
    kinds = config.layer_types  # the recurrent layers by no KV heads
    kv = [config.num_key_value_heads if kind == ATTENTION else 0 for kind in kinds]
    if config.model_type == "nemotron_h":  # its MLP layers (or its experts' layers: Nemotron 3's) apart
        neurons = [getattr(config, arch.mlp_size) if kind in (MLP, MOE) else 0 for kind in kinds]
    elif config.model_type == "granitemoehybrid":  # its MLP (or experts) under its own name
        neurons = getattr(config, arch.mlp_size)
    return neurons, config.num_attention_heads, kv


def add_architecture(writer: gguf.GGUFWriter, config) -> None:
    """The numbers llama.cpp builds its graph from (`{arch}.*` keys)."""
    model_type = config.model_type
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    neurons, heads, kv_heads = layer_sizes(config)
    writer.add_feed_forward_length(neurons)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    key_length, value_length = key_value_lengths(config)
    writer.add_key_length(key_length)
    writer.add_value_length(value_length)
    writer.add_vocab_size(config.vocab_size)
    if model_type in HIDDEN_WIDE_SOME_BUILDS and config.num_attention_heads * head_dim(config) != config.hidden_size:
        print(f"warning: this model's attention is {config.num_attention_heads} heads x {head_dim(config)} wide, not "
              f"hidden_size {config.hidden_size}: the llama.cpp that node-llama-cpp 3.22.1 ships refuses such a "
              f"{model_type} file (it builds the attention hidden_size wide)", flush=True)
    if yarn_unrounded(config):
        print(f"warning: this {model_type} model's YaRN leaves its correction range unrounded (truncate false), and "
              "llama.cpp rounds it: its RoPE frequencies between the two betas differ a little (as in any GGUF of "
              "it; docs/export.md)", flush=True)
    if approximated_gelu(config):
        print(f"warning: this {model_type} model's MLP computes the exact GELU; llama.cpp's graph for it computes the "
              "tanh approximation (as in any GGUF of it; the two differ by less than 0.0005 an activation)", flush=True)
    if dynamic_ntk(config):
        print(f"warning: this {model_type} model's dynamic NTK RoPE stretches past max_position_embeddings "
              f"({config.max_position_embeddings} tokens) in transformers; llama.cpp computes plain RoPE, the same "
              "within that context (the file's context_length)", flush=True)
    if model_type in LAYER_NORM_EPS:  # LayerNorm (Nemotron's with bias)
        eps = LAYER_NORM_EPS[model_type]
        writer.add_layer_norm_eps(eps if isinstance(eps, float) else getattr(config, eps))
    else:
        writer.add_layer_norm_rms_eps(getattr(config, RMS_NORM_EPS.get(model_type, "rms_norm_eps")))
    FAMILY_KEYS.get(model_type, lambda *_: None)(writer, config)
    arch = arch_of(config)
    rope = arch.mixer != "mamba" or getattr(config, "position_embedding_type", None) == "rope" or \
        model_type == "bamba"  # (Nemotron-H's attention has no positions, nor Granite 4's; Bamba's has RoPE)
    if arch.positions is None and rope:  # (GPT-2's positions are learned)
        add_rope(writer, config)


def key_value_lengths(config) -> tuple[int, int]:
    """Each KV head's key and value sizes as llama.cpp's graph attends with them: head_dim, or for multi-head latent
    attention the latent (kv_lora_rank) with the rotated key every head shares, and the latent (its deepseek2 graph
    multiplies the queries into the latent and the values out of it, `latent_keys`)."""
    if arch_of(config).mla:
        return config.kv_lora_rank + config.qk_rope_head_dim, config.kv_lora_rank
    return head_dim(config), head_dim(config)


def add_rope(writer: gguf.GGUFWriter, config) -> None:
    """RoPE's base, rotated channels and scaling."""
    writer.add_rope_freq_base(rope_theta(config))  # Gemma 3: of its global layers
    writer.add_rope_dimension_count(rotary_dims(config))
    add_rope_scaling(writer, config)


def granite_keys(writer: gguf.GGUFWriter, config) -> None:
    """Granite's four multipliers (llama.cpp divides the logits by logit_scale, as transformers does)."""
    writer.add_embedding_scale(config.embedding_multiplier)
    writer.add_residual_scale(config.residual_multiplier)
    writer.add_attention_scale(config.attention_multiplier)
    writer.add_logit_scale(config.logits_scaling)


def granite_swa_keys(writer: gguf.GGUFWriter, config) -> None:
    """Granite SWA's multipliers, window, sliding layers and the layers with RoPE (one flag a layer each; its one RoPE
    base is checked: `check_granite_swa`)."""
    granite_keys(writer, config)
    writer.add_sliding_window(config.sliding_window)
    writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in layer_types(config)])
    if not all(config.layer_rope_theta):  # (llama.cpp gives every layer RoPE without the key)
        writer.add_array(f"{writer.arch}.attention.rope_pattern", [bool(theta) for theta in config.layer_rope_theta])
    if arch_of(config).moe:  # (Granite-MoE SWA's experts, and its shared expert's width where it has one)
        moe_keys(writer, config)


def gemma2_keys(writer: gguf.GGUFWriter, config) -> None:
    """Gemma 2's window (its local and global layers in turn are checked) and both soft-caps."""
    writer.add_sliding_window(config.sliding_window)
    writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
    writer.add_final_logit_softcapping(config.final_logit_softcapping)


def gemma3_keys(writer: gguf.GGUFWriter, config) -> None:
    """Gemma 3's window, layer pattern and local RoPE base, where some layers slide, and its final soft-cap if any."""
    period = swa_period(config)
    if config.sliding_window and period > 1:  # some layers slide
        writer.add_sliding_window(config.sliding_window)
        writer.add_sliding_window_pattern(period)
        writer.add_rope_freq_base_swa(rope_theta(config, "sliding_attention"))
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(config.final_logit_softcapping)


def olmo_keys(writer: gguf.GGUFWriter, config) -> None:
    """OLMo 1's clipping of q, k and v, where it clips them (OLMo 1.7's 8)."""
    if config.clip_qkv is not None:
        writer.add_clamp_kqv(config.clip_qkv)


def cohere_keys(writer: gguf.GGUFWriter, config) -> None:
    """Cohere's logit scale (llama.cpp multiplies the logits by it, as transformers does)."""
    writer.add_logit_scale(config.logit_scale)


def cohere2_keys(writer: gguf.GGUFWriter, config) -> None:
    """Cohere 2's logit scale and window (its layer pattern, fixed in llama.cpp, is checked: `check_cohere2`)."""
    cohere_keys(writer, config)
    writer.add_sliding_window(config.sliding_window)


def phi3_keys(writer: gguf.GGUFWriter, config) -> None:
    """Phi-3's window."""
    if getattr(config, "sliding_window", None):
        writer.add_sliding_window(config.sliding_window)


def ministral3_keys(writer: gguf.GGUFWriter, config) -> None:
    """Ministral 3's YaRN as llama.cpp's mistral3 graph reads it (its attention factor from mscale_all_dim, under
    the yarn_log_multiplier key, with mscale 1: `check_ministral3`) and its query scaling past YaRN's original context
    (llama_4_scaling_beta, as the attention temperature scale)."""
    rope = rope_parameters(config)
    if rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast") or YARN_DERIVED["beta_fast"]))
        writer.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow") or YARN_DERIVED["beta_slow"]))
        writer.add_rope_scaling_yarn_log_mul(float(rope["mscale_all_dim"]))
    if rope.get("llama_4_scaling_beta"):  # with YaRN only (`check_ministral3`)
        writer.add_attn_temperature_scale(float(rope["llama_4_scaling_beta"]))


def exaone4_keys(writer: gguf.GGUFWriter, config) -> None:
    """EXAONE 4's window, where it has sliding layers (which ones, llama.cpp fixes: `check_exaone4`)."""
    if config.sliding_window is not None:
        writer.add_sliding_window(config.sliding_window)


def olmo3_keys(writer: gguf.GGUFWriter, config) -> None:
    """OLMo 3's window and which layers slide (one flag a layer), as llama.cpp's converter writes them."""
    writer.add_sliding_window(config.sliding_window)
    writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in layer_types(config)])


def moe_keys(writer: gguf.GGUFWriter, config) -> None:
    """A mixture of experts' experts and experts a token; Qwen3-MoE's, Qwen2-MoE's, Qwen3.5-MoE's and GLM-4.5's
    expert width (their feed_forward_length is that of dense layers), and a shared expert's width, or the number of
    experts it is as wide as (GLM-4.5's, `SharedNames.count`)."""
    arch = arch_of(config)
    writer.add_expert_count(num_experts(config))
    writer.add_expert_used_count(config.num_experts_per_tok)
    if arch.mlp_size == "moe_intermediate_size":
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    if arch.shared_expert and arch.shared_names.count:
        writer.add_expert_shared_count(getattr(config, arch.shared_names.count))
    elif arch.shared_expert:
        writer.add_expert_shared_feed_forward_length(shared_width(config))


def gpt_oss_keys(writer: gguf.GGUFWriter, config) -> None:
    """GPT-OSS's experts and their width, its window and which layers slide (one flag a layer); its clamped SwiGLU's
    constants and YaRN's betas are llama.cpp's (`check_gpt_oss`, `check_rope`)."""
    moe_keys(writer, config)
    writer.add_expert_feed_forward_length(config.intermediate_size)
    writer.add_sliding_window(config.sliding_window)
    writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in layer_types(config)])


def granitemoe_keys(writer: gguf.GGUFWriter, config) -> None:
    """Granite-MoE's multipliers and experts (and its shared expert's width, where it has one: `moe_keys`)."""
    granite_keys(writer, config)
    moe_keys(writer, config)


def nemotron_h_keys(writer: gguf.GGUFWriter, config) -> None:
    """Nemotron-H's Mamba-2 sizes: its convolution, inner width (heads x head_dim), state, heads and groups; its norms'
    epsilon under the LayerNorm key too (the llama.cpp node-llama-cpp 3.22.1 ships reads that one; later ones the
    RMSNorm key written with every family's); Nemotron 3's experts (`routed_keys`: its nemotron_h_moe graph's router
    is a sigmoid, steered by the bias), and the latent they work in where they have one (Super's)."""
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    mamba_keys(writer, config)
    if not arch_of(config).moe:
        return
    routed_keys(writer, config, gguf.ExpertGatingFuncType.SIGMOID, config.norm_topk_prob)
    if config.moe_latent_size:
        writer.add_moe_latent_size(config.moe_latent_size)


def mamba_keys(writer: gguf.GGUFWriter, config) -> None:
    """A Mamba-2 hybrid's mixer sizes (by the family's names, `Arch.mamba_names`): its convolution, inner width (heads x
    head channels), state, heads (as the time-step rank) and groups."""
    names = arch_of(config).mamba_names
    heads = getattr(config, names.heads)
    writer.add_ssm_conv_kernel(getattr(config, names.conv))
    writer.add_ssm_inner_size(heads * getattr(config, names.head_dim))
    writer.add_ssm_state_size(getattr(config, names.state))
    writer.add_ssm_time_step_rank(heads)
    writer.add_ssm_group_count(getattr(config, names.groups))


def granite_hybrid_keys(writer: gguf.GGUFWriter, config) -> None:
    """Granite 4's multipliers and Mamba-2 sizes, whether its attention has RoPE (llama.cpp's granitehybrid graph
    takes `rope.scaling.finetuned` as that switch), and its experts if it has them."""
    granite_keys(writer, config)
    mamba_keys(writer, config)
    writer.add_rope_scaling_finetuned(config.position_embedding_type == "rope")
    if arch_of(config).moe:  # H-Tiny, H-Small: its experts, and its MLP as their shared expert
        moe_keys(writer, config)


def bamba_keys(writer: gguf.GGUFWriter, config) -> None:
    """Bamba's Mamba-2 sizes and its attention's RoPE (`rope.scaling.finetuned`, which llama.cpp's granitehybrid graph
    takes as that switch); no multipliers (the graph's defaults are Bamba's: none)."""
    mamba_keys(writer, config)
    writer.add_rope_scaling_finetuned(True)


def lfm2_keys(writer: gguf.GGUFWriter, config) -> None:
    """LFM2's short convolutions' width: each filter's taps (conv_L_cache)."""
    writer.add_shortconv_l_cache(config.conv_L_cache)


def lfm2_moe_keys(writer: gguf.GGUFWriter, config) -> None:
    """LFM2-MoE's short convolutions, experts and their width, its leading dense layers and its sigmoid router."""
    lfm2_keys(writer, config)
    moe_keys(writer, config)
    writer.add_leading_dense_block_count(config.num_dense_layers)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)


def glm4_moe_keys(writer: gguf.GGUFWriter, config) -> None:
    """GLM-4.5's (and dots.llm1's) mixture of experts (`routed_keys`), its sigmoid router's routing weights
    renormalised where norm_topk_prob says."""
    routed_keys(writer, config, gguf.ExpertGatingFuncType.SIGMOID, config.norm_topk_prob)


def routed_keys(writer: gguf.GGUFWriter, config, gating: gguf.ExpertGatingFuncType, renormalised: bool,
                scale: str = "routed_scaling_factor") -> None:
    """A mixture of experts' experts, shared expert and their width (`moe_keys`), its leading dense layers, its
    router's `gating`, whether the picked experts' weights are renormalised, their `scale` (the config's name), and
    the topk_group best of n_group groups it picks its experts within where it has them (DeepSeek V3's 4 of 8:
    llama.cpp's graphs score a group by its two best experts' biased scores, as transformers does)."""
    moe_keys(writer, config)
    if expert_groups(config) > 1:
        writer.add_expert_group_count(config.n_group)
        writer.add_expert_group_used_count(config.topk_group)
    writer.add_leading_dense_block_count(len(dense_layers(config)))  # (the first ones: `check_exportable`)
    writer.add_expert_gating_func(gating)
    writer.add_expert_weights_norm(renormalised)
    writer.add_expert_weights_scale(getattr(config, scale))


def hy_v3_keys(writer: gguf.GGUFWriter, config) -> None:
    """Hy3's mixture of experts (`routed_keys`: its sigmoid router's picked scores renormalised and scaled by its
    router_scaling_factor) and its shared expert's width, which llama.cpp's hy_v3 graph reads apart."""
    routed_keys(writer, config, gguf.ExpertGatingFuncType.SIGMOID, True, "router_scaling_factor")
    writer.add_expert_shared_feed_forward_length(shared_width(config))


def afmoe_keys(writer: gguf.GGUFWriter, config) -> None:
    """AFMoE's mixture of experts (`routed_keys`: its sigmoid router's picked scores renormalised and scaled by its
    route_scale) and its window (every 4th layer global without RoPE, fixed in llama.cpp's graph: `check_afmoe`)."""
    routed_keys(writer, config, gguf.ExpertGatingFuncType.SIGMOID, True, "route_scale")
    writer.add_sliding_window(config.sliding_window)


def deepseek_v3_keys(writer: gguf.GGUFWriter, config) -> None:
    """DeepSeek V3's mixture of experts (GLM-4.5's, `glm4_moe_keys`) and its multi-head latent attention
    (`latent_keys`)."""
    glm4_moe_keys(writer, config)
    latent_keys(writer, config)


def deepseek_v32_keys(writer: gguf.GGUFWriter, config) -> None:
    """DeepSeek V3's keys (`deepseek_v3_keys`: its dense layers listed by kind, GLM-4.7-Flash's, leading ones only,
    `check_latent`) and its lightning indexer's heads, their size and the keys each query attends to."""
    deepseek_v3_keys(writer, config)
    writer.add_indexer_head_count(config.index_n_heads)
    writer.add_indexer_key_length(config.index_head_dim)
    writer.add_indexer_top_k(config.index_topk)


def glm_moe_dsa_keys(writer: gguf.GGUFWriter, config) -> None:
    """DeepSeek V3.2's keys (`deepseek_v32_keys`) and which layers run their own indexer, every one (llama.cpp takes a
    file without the key and a context of a million tokens for GLM-5.2's, whose layers reuse each other's picks;
    gguf-py 0.19 has no writer for it)."""
    deepseek_v32_keys(writer, config)
    writer.add_array(f"{writer.arch}.attention.indexer.types", [True] * config.num_hidden_layers)


def deepseek_v2_keys(writer: gguf.GGUFWriter, config) -> None:
    """DeepSeek V2's mixture of experts (`routed_keys`: its softmax router's picked probabilities never
    renormalised; picking within groups is refused, `check_deepseek_v2`) and its multi-head latent attention
    (`latent_keys`)."""
    routed_keys(writer, config, gguf.ExpertGatingFuncType.SOFTMAX, False)
    latent_keys(writer, config)


def youtu_keys(writer: gguf.GGUFWriter, config) -> None:
    """Youtu-LLM's MLP in every layer as llama.cpp's deepseek2 graph reads it, as its converter writes it (every
    layer a leading dense one, their width the experts' too, no shared experts), and its multi-head latent attention
    (`latent_keys`)."""
    writer.add_leading_dense_block_count(config.num_hidden_layers)
    writer.add_expert_feed_forward_length(config.intermediate_size)
    writer.add_expert_shared_count(0)
    latent_keys(writer, config)


def latent_keys(writer: gguf.GGUFWriter, config) -> None:
    """Multi-head latent attention's sizes, as llama.cpp's converter writes them: the query latent's rank (0: none,
    queries from q_proj), the KV latent's, and each head's key and value sizes (its unrotated and rotated key channels;
    its value channels); with YaRN its betas and 0.1 x mscale_all_dim (which llama.cpp's deepseek2 graph reads as the
    attention's scale, `check_latent`)."""
    rope = rope_parameters(config)
    if rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast") or YARN_DERIVED["beta_fast"]))
        writer.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow") or YARN_DERIVED["beta_slow"]))
        writer.add_rope_scaling_yarn_log_mul(0.1 * float(rope.get("mscale_all_dim") or 0.0))
    writer.add_q_lora_rank(config.q_lora_rank or 0)
    writer.add_kv_lora_rank(config.kv_lora_rank)
    writer.add_key_length_mla(config.qk_nope_head_dim + config.qk_rope_head_dim)
    writer.add_value_length_mla(config.v_head_dim)


def ernie4_5_moe_keys(writer: gguf.GGUFWriter, config) -> None:
    """ERNIE 4.5 MoE's experts and their width, its shared expert's width (its count too, as llama.cpp's converter
    writes it) and its leading dense layers, a mixture of experts in every layer after them."""
    moe_keys(writer, config)
    writer.add_expert_shared_feed_forward_length(shared_width(config))
    writer.add_leading_dense_block_count(config.moe_layer_start_index)
    writer.add_interleave_moe_layer_step(config.moe_layer_interval)


def hunyuan_moe_keys(writer: gguf.GGUFWriter, config) -> None:
    """Hunyuan MoE's experts, their width (its feed_forward_length too, which llama.cpp's graph sizes them by) and its
    shared expert's (MiniMax-M2's the same, `minimax_m2_keys`)."""
    moe_keys(writer, config)
    writer.add_expert_feed_forward_length(config.intermediate_size)


def exaone_moe_keys(writer: gguf.GGUFWriter, config) -> None:
    """K-EXAONE's window and which layers slide (`olmo3_keys`; llama.cpp's exaone-moe graph rotates those only), and
    GLM-4.5's mixture of experts (`glm4_moe_keys`) with its shared expert's width, which that graph reads apart."""
    olmo3_keys(writer, config)
    glm4_moe_keys(writer, config)
    writer.add_expert_shared_feed_forward_length(shared_width(config))


def minimax_m2_keys(writer: gguf.GGUFWriter, config) -> None:
    """MiniMax-M2's experts, their width (expert_feed_forward_length, which its graph sizes them by) and its sigmoid
    router (the graph steers its picks by the bias and renormalises their weights, as transformers does)."""
    hunyuan_moe_keys(writer, config)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)


def delta_keys(writer: gguf.GGUFWriter, config) -> None:
    """A Gated DeltaNet's sizes under llama.cpp's `ssm.*` keys (key heads as groups, value heads as the time-step rank,
    the key head size as the state) and which layers are recurrent (Qwen3-Next's; Qwen3.5's with `qwen3_5_keys`)."""
    writer.add_ssm_conv_kernel(config.linear_conv_kernel_dim)
    writer.add_ssm_inner_size(config.linear_value_head_dim * config.linear_num_value_heads)
    writer.add_ssm_state_size(config.linear_key_head_dim)
    writer.add_ssm_group_count(config.linear_num_key_heads)
    writer.add_ssm_time_step_rank(config.linear_num_value_heads)
    writer.add_array(f"{writer.arch}.attention.recurrent_layers",
                     [kind == RECURRENT for kind in config.layer_types])


def qwen3_5_keys(writer: gguf.GGUFWriter, config) -> None:
    """Qwen3.5's Gated DeltaNet (`delta_keys`) and its RoPE's sections (the config's mrope_section; on text every
    section has the same position, so one section of every rotated pair does as well)."""
    delta_keys(writer, config)
    sections = list(rope_parameters(config).get("mrope_section") or [rotary_dims(config) // 2])
    writer.add_rope_dimension_sections((sections + [0, 0, 0, 0])[:4])


def gpt_neox_keys(writer: gguf.GGUFWriter, config) -> None:
    """Whether GPT-NeoX's attention and MLP run in parallel (Pythia's) or in turn."""
    writer.add_parallel_residual(config.use_parallel_residual)


# The `{arch}.*` keys a family's llama.cpp graph reads beyond the common ones.
FAMILY_KEYS = {"granite": granite_keys, "granite_swa": granite_swa_keys, "granitemoe_swa": granite_swa_keys,
               "gemma2": gemma2_keys,
               "gemma3_text": gemma3_keys, "phi3": phi3_keys,
               "cohere": cohere_keys, "cohere2": cohere2_keys, "ministral3": ministral3_keys, "olmo3": olmo3_keys,
               "exaone4": exaone4_keys, "qwen3_moe": moe_keys, "mixtral": moe_keys, "olmoe": moe_keys,
               "granitemoe": granitemoe_keys, "nemotron_h": nemotron_h_keys, "qwen3_5_text": qwen3_5_keys,
               "qwen3_5_moe_text": lambda writer, config: (qwen3_5_keys(writer, config), moe_keys(writer, config)),
               "qwen3_next": lambda writer, config: (delta_keys(writer, config), moe_keys(writer, config)),
               "qwen2_moe": moe_keys, "gpt_oss": gpt_oss_keys, "granitemoehybrid": granite_hybrid_keys,
               "lfm2": lfm2_keys, "lfm2_moe": lfm2_moe_keys, "glm4_moe": glm4_moe_keys,
               "ernie4_5_moe": ernie4_5_moe_keys, "dots1": glm4_moe_keys, "hunyuan_v1_moe": hunyuan_moe_keys,
               "deepseek_v3": deepseek_v3_keys, "glm4_moe_lite": deepseek_v3_keys, "deepseek_v2": deepseek_v2_keys,
               "youtu": youtu_keys, "sarvam_mla": deepseek_v3_keys, "minimax_m2": minimax_m2_keys,
               "exaone_moe": exaone_moe_keys, "granitemoeshared": granitemoe_keys, "deepseek_v32": deepseek_v32_keys,
               "solar_open": glm4_moe_keys, "afmoe": afmoe_keys, "glm_moe_dsa": glm_moe_dsa_keys, "olmo": olmo_keys,
               "gpt_neox": gpt_neox_keys, "hy_v3": hy_v3_keys, "bamba": bamba_keys}


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int) -> None:
    """`tokenizer.ggml.*`: the vocabulary padded to the embedding rows, merges, special ids, chat template.

    Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM) is llama.cpp's "gpt2" model; sentencepiece-style BPE
    (Llama 2, Mistral 7B: `▁` for spaces, `<0xNN>` byte tokens) is its "llama" model.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise MinitronError(f"cannot export a {spec['model']['type']} tokenizer to GGUF; llama.cpp reads BPE "
                            f"tokenizers (byte-level or sentencepiece-style)")
    byte_level = "ByteLevel" in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    tokens, types = vocabulary(tokenizer, vocab_size, byte_level)
    writer.add_tokenizer_model("gpt2" if byte_level else "llama")
    if byte_level:
        writer.add_tokenizer_pre(pre_tokenizer_name(spec.get("pre_tokenizer")))
    else:  # llama.cpp's sentencepiece merges by score: earlier ids are merged first, as sentencepiece orders them
        writer.add_token_scores([-float(i) for i in range(len(tokens))])
        writer.add_add_space_prefix("Prepend" in json.dumps(spec.get("normalizer"))
                                    or (spec.get("pre_tokenizer") or {}).get("prepend_scheme") in ("first", "always"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    add_special_tokens(writer, tokenizer)


def vocabulary(tokenizer, vocab_size: int, byte_level: bool) -> tuple[list[str], list[int]]:
    """Tokens by id, padded with `[PADn]` up to the model's vocab_size, and llama.cpp's token types."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise MinitronError(f"the tokenizer has ids up to {max(by_id)} but the model's vocab_size is {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i == tokenizer.unk_token_id and not byte_level:
            tokens.append(token)
            types.append(gguf.TokenType.UNKNOWN)
        elif i in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            is_byte = not byte_level and len(token) == 6 and token.startswith("<0x") and token.endswith(">")
            types.append(gguf.TokenType.BYTE if is_byte else gguf.TokenType.NORMAL)
    return tokens, types


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for how a byte-level tokenizer splits text before merging ('default' if unknown)."""
    if pre_tokenizer and pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"  # llama.cpp's name (with the hyphen): it refuses to load a file that says "gpt2"
    parts = (pre_tokenizer or {}).get("pretokenizers", [])
    if [p.get("type") for p in parts] == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"  # GPT-2's split after cutting numbers into single digits
    splits = [escaped_breaks(p.get("pattern", {}).get("Regex")) for p in parts if p.get("type") == "Split"]
    for name, regex in PRE_TOKENIZERS.items():
        if splits == [regex]:
            return name
    print(f"warning: unrecognised pre-tokenizer {json.dumps(pre_tokenizer)[:120]}; llama.cpp will split text "
          f"its default way, which may tokenize digits and whitespace differently", flush=True)
    return "default"


def escaped_breaks(regex: str | None) -> str | None:
    """A split regex with carriage returns and line feeds written as escapes: some tokenizer.json files hold them as
    themselves (Seed-Coder's, in three of its classes), which matches the same text."""
    return regex.replace("\r", "\\r").replace("\n", "\\n") if regex is not None else None


def add_special_tokens(writer: gguf.GGUFWriter, tokenizer) -> None:
    """bos/eos/unk/pad ids, whether encoding adds bos/eos (as the tokenizer really does), and the chat template."""
    for add, token_id in [(writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_unk_token_id, tokenizer.unk_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id)]:
        if token_id is not None:
            add(token_id)
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id)
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)


def add_weights(writer: gguf.GGUFWriter, path: Path, config, arch: str, weight_type) -> None:
    """Every tensor of the checkpoint (`Checkpoint`: GPT-OSS's MXFP4 experts dequantised) under its GGUF name,
    transformed as llama.cpp's converter does (`gguf_tensors`), in the type export_quant.tensor_type picks (1-D tensors
    in f32); a mixture of experts' stored tensors, one an expert, stacked (`ExpertStack`); Apertus's xIELU scalars as
    keys (`add_xielu`)."""
    checkpoint, names = Checkpoint.open(path), tensor_names(arch, config.num_hidden_layers)
    xielu = {name: [0.0] * config.num_hidden_layers for name in XIELU}
    add = tensor_adder(writer, config, arch, weight_type)
    experts, ignored = ExpertStack(num_experts(config)), ignored_on_load(config)
    for key in checkpoint.specs:
        if key == "lm_head.weight" and tied(config) or ignored.search(key):
            continue  # llama.cpp reuses token_embd when there is no output tensor; what transformers drops too
        data = checkpoint.read([key], torch.float32)[key].numpy()
        if match := XIELU_TENSOR.fullmatch(key):
            xielu[match[2]][int(match[1])] = float(data)
            continue
        if match := EXPERT_TENSOR.fullmatch(key):
            if (stacked := experts.add(match, data)) is None:
                continue  # until the layer's last expert of this linear
            key, data = stacked
        for name, part in gguf_tensors(key, data, config, names):
            add(name, part)
    experts.check_done()
    for name, data in rope_tensors(config).items():
        add(name, data)
    if config.model_type == "apertus":
        add_xielu(writer, xielu)


def ignored_on_load(config) -> re.Pattern:
    """The stored tensors transformers drops when it loads a model of this config, which export leaves out as
    llama.cpp's converter does: old checkpoints' buffers (GPT-NeoX's causal mask, attention.bias and masked_bias, as
    Pythia's files hold them, GPT-2's attn.bias; any family's rotary_emb.inv_freq a layer, position_ids). Each pattern
    from a name's start or a part's (transformers drops only the names it does not expect: GPT-2's attn.bias pattern
    also finds c_attn.bias, which it keeps)."""
    from transformers import AutoModelForCausalLM  # lazy: CLI start-up speed

    own = AutoModelForCausalLM._model_mapping[type(config)]._keys_to_ignore_on_load_unexpected or []
    return re.compile("|".join(rf"((^|\.)(?:{p}))" for p in [*own, r"rotary_emb\.inv_freq", r"position_ids$"]))


def gguf_tensors(key: str, data: np.ndarray, config, names) -> list[tuple[str, np.ndarray]]:
    """The GGUF tensors (name, data) the Hugging Face tensor `key` is written as, transformed as llama.cpp's converter
    does: split (Granite-MoE's gate and up; GPT-OSS's experts), in a graph's own layout (Nemotron-H's Mamba-2,
    Qwen3.5's Gated DeltaNet, Llama's interleaved q/k rows), norms as 1 + w, Gemma's query scale folded in, a tied head
    written out where the graph has none."""
    arch = gguf_arch(config)
    if gate_up := fused_gate_up(key):  # Granite-MoE's: every expert's gate rows, then its up rows
        return list(zip(gate_up, np.split(data, 2, axis=1)))
    if mamba := mamba_in_gguf(key):  # Nemotron-H's, Granite 4's
        return [(mamba[0], mamba_stored(mamba[1], data, getattr(config, arch_of(config).mamba_names.groups)))]
    if mlp := granite_mlp_in_gguf(key, num_experts(config), arch):  # Granite 4's: gate and up fused
        return list(zip(mlp, np.split(data, len(mlp), axis=0)))
    if delta := delta_in_gguf(key):  # Qwen3.5's, Qwen3-Next's
        return [(delta[0], delta_stored(delta[1], data, config))]
    if qkvz := qkvz_in_gguf(key):  # Qwen3-Next's fused queries, keys, values and z
        return list(zip(qkvz, qkvz_stored(data, config)))
    if oss := oss_in_gguf(key, config.model_type):  # GPT-OSS's experts
        return list(zip(oss[0], oss_stored(oss[1], data)))
    if experts := experts_in_gguf(key):  # 3D experts stored as held in memory (Granite-MoE SWA's): gate rows, then up
        return list(zip(experts, np.split(data, len(experts), axis=1)))
    if mla := mla_in_gguf(key):  # multi-head latent attention's keys and values, from the latent
        return list(zip(mla, mla_stored(data, config)))
    name = gguf_tensor(names, key)
    if name is None:
        raise MinitronError(f"tensor {key} has no GGUF name in llama.cpp's {arch} architecture")
    if arch_of(config).qkv_grouped and f".{arch_of(config).qkv}." in key:  # (Falcon's, GPT-NeoX's)
        data = qkv_by_kind(data, config.num_attention_heads, config.num_key_value_heads)
    if (transposed := arch_of(config).transposed) and re.search(transposed, key):  # (GPT-2's Conv1D weights)
        data = np.ascontiguousarray(data.T)
    if arch in INTERLEAVED_ROTARY and ".self_attn.q_proj." in key:
        data = interleave_rotary(data, config.num_attention_heads, rotary_dims(config))
    elif arch in INTERLEAVED_ROTARY and ".self_attn.k_proj." in key:
        data = interleave_rotary(data, config.num_key_value_heads, rotary_dims(config))
    if stored_plus_one(config.model_type, key):
        data = data + 1.0
    if name.endswith(".shortconv.conv.weight"):  # LFM2's filters (channels, 1, taps): llama.cpp's are 2-D
        data = data.squeeze(1)
    if name.endswith(".exp_probs_b.bias"):  # a router's steering bias, 1-D (ERNIE 4.5's is one row of experts)
        data = data.reshape(-1)
    q_scale = attention_scale_fix(config)  # into the q-norm where there is one (Gemma 3), else into q_proj (Gemma 2)
    if q_scale != 1.0 and key.endswith(".self_attn.q_norm.weight" if config.model_type == "gemma3_text"
                                       else ".self_attn.q_proj.weight"):
        data = data * np.float32(q_scale)
    if name == "token_embd.weight" and tied(config) and arch in OUTPUT_REQUIRED:
        return [(name, data), ("output.weight", data)]  # this graph has no tied head: the head is written out
    return [(name, data)]


class ExpertStack:
    """A mixture of experts' stored tensors, one an expert and linear, gathered into the tensors a GGUF file holds,
    stacked over the experts (a layer and linear each: `ffn_gate_exps`), each handed on once its last expert is read."""

    def __init__(self, experts: int):
        self.experts, self.parts = experts, {}

    def add(self, match, data: np.ndarray) -> tuple[str, np.ndarray] | None:
        """(the stacked tensor's Hugging Face key, its data) once every expert's part of it is in, else None."""
        layer, block, expert, linear = int(match[1]), match[2], int(match[3]), match[4]
        parts = self.parts.setdefault((layer, block, linear), {})
        parts[expert] = data
        if len(parts) < self.experts:
            return None
        del self.parts[layer, block, linear]
        return stacked_key(layer, block, linear), np.stack([parts[e] for e in range(self.experts)])

    def check_done(self) -> None:
        for (layer, block, linear), parts in self.parts.items():
            raise MinitronError(f"layer {layer}'s {block} stores {linear} for {len(parts)} experts, not the "
                                f"{self.experts} its config has")


def add_xielu(writer: gguf.GGUFWriter, values: dict[str, list[float]]) -> None:
    """Apertus's xIELU scalars as llama.cpp's converter writes them: one array key each (`xielu.alpha_p`, ...), a
    value a layer, as stored (llama.cpp applies the softplus to alpha_p and alpha_n itself, as transformers does)."""
    for name, per_layer in values.items():
        getattr(writer, f"add_xielu_{name}")(per_layer)


def tensor_adder(writer: gguf.GGUFWriter, config, arch: str, weight_type):
    """add(name, float32 data): the tensor in the type export_quant.tensor_type picks for it."""
    shared = tied(config) and arch not in OUTPUT_REQUIRED

    def add(name: str, data: np.ndarray) -> None:
        qtype = tensor_type(name, data.shape, weight_type, config.num_hidden_layers, shared)
        writer.add_tensor(name, encode(data, qtype), raw_dtype=qtype)
    return add


# ------------------------------------------------------------------------------------------------ RoPE scaling


def add_rope_scaling(writer: gguf.GGUFWriter, config) -> None:
    """The rope.scaling keys of linear scaling, of YaRN (its factor and original context) and of LongRoPE (its
    original context and attention factor)."""
    rope = rope_parameters(config)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(yarn_factor(config))
        writer.add_rope_scaling_orig_ctx_len(original_context(config))
    elif rope.get("rope_type") == "longrope":
        writer.add_rope_scaling_orig_ctx_len(original_context(config))
        writer.add_rope_scaling_attn_factors(ROPE_INIT_FUNCTIONS["longrope"](config, "cpu")[1])


def rope_tensors(config) -> dict[str, np.ndarray]:
    """The per-frequency factors llama.cpp divides RoPE's frequencies by, under its tensor names: Llama 3.1's (what
    transformers' own llama3 frequencies are to plain RoPE's), LongRoPE's long and short ones; none for other RoPE."""
    rope = rope_parameters(config)
    if rope.get("rope_type") == "llama3":
        dims = rotary_dims(config)
        plain = 1.0 / rope_theta(config) ** (torch.arange(0, dims, 2, dtype=torch.int64).float() / dims)
        scaled = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")[0]
        return {f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS]}.weight": (plain / scaled).numpy()}
    if rope.get("rope_type") == "longrope":
        return {f"{gguf.TENSOR_NAMES[tensor]}.weight": np.asarray(rope[key], dtype=np.float32)
                for tensor, key in ((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, "long_factor"),
                                    (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, "short_factor"))}
    return {}
