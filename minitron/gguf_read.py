"""GGUF files read by minitron itself, as the inverse of its export, for every family it prunes: the config from the
`{arch}.*` keys llama.cpp builds its graph from (with what a graph fixes in its source: SmolLM3's layers without
RoPE, Cohere 2's global layers, Command R's q/k norms, EXAONE 4's sliding layers; an OLMo 2 file with a layer pattern
is an OLMo 3) and what `gguf_config` reads for every family (head size, RoPE and its scaling, Gemma's settings); the
weights dequantised one tensor at a time under their Hugging Face names (q/k back from llama.cpp's interleaved rotary
layout where the graph uses it, norms stored as 1 + w back to w, a mixture of experts' stacked tensors split into one an
expert, as checkpoints store them) and written as they come, so that a file converts in the memory of its largest tensor
(of a layer's experts' tensors). transformers' own GGUF loader reads half of these families, holds the whole model in
memory and leaves settings out; minitron's reading gives its config and, bitwise, its weights where it reads them
(tests/test_export.py). The tokenizer is transformers' reading of the file's vocabulary.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from minitron.arch import (ATTENTION, GRANITE_MAMBA, MLP, MOE, RECURRENT, MambaNames, arch_of, num_experts, stored_as,
                           tied)
from minitron.errors import MinitronError
from minitron.gguf_config import Metadata, correct_config, rotary_dims
from minitron.gguf_layout import (AFMOE_GLOBAL_STEP, COHERE2_GLOBAL_STEP, COMMAND_R_PLUS_LAYERS, EXAONE4_GLOBAL_STEP,
                                  EXAONE4_HYBRID_LAYERS, EXAONE4_WINDOW, EXPERT_TENSOR, GGUF_ARCH, INTERLEAVED_ROTARY,
                                  LAYER_NORM_EPS, RMS_NORM_EPS, SMOLLM3_NO_ROPE_STEP, XIELU_TENSOR, delta_in_gguf,
                                  delta_stored, experts_in_gguf, fused_gate_up, gguf_arch, gguf_tensor, global_every,
                                  granite_mlp_in_gguf, halve_rotary, mamba_in_gguf, mamba_read, mla_in_gguf, mla_read,
                                  oss_in_gguf, oss_read, qkv_by_group, qkvz_in_gguf, qkvz_read, stacked_key,
                                  stored_plus_one, tensor_names)
from minitron.io import own_config
from minitron.shards import SafetensorsWriter, TensorSpec

# llama.cpp's graph name -> the Hugging Face model type read from it: every family minitron prunes (a Mistral is written
# as llama.cpp's Llama and read back as one, as transformers does; a GLM-4.7-Flash or a Sarvam-105B as llama.cpp's
# deepseek2 and read back as DeepSeek V3, whose layers transformers computes as theirs, a Solar Open as GLM-4.5's
# glm4moe and read back as one; an OLMo 2 file with a layer pattern is an OLMo 3, a Llama file with experts a Mixtral,
# a deepseek2 file with a softmax router a DeepSeek V2, one without experts a Youtu-LLM, a granite_swa file with experts
# a Granite-MoE SWA: `family`).
READ_AS = {graph: model_type for model_type, graph in GGUF_ARCH.items()
           if model_type not in ("mistral", "olmo3", "mixtral", "glm4_moe_lite", "deepseek_v2", "youtu", "sarvam_mla",
                                 "granitemoeshared", "solar_open", "iquestcoder", "internlm3", "bamba",
                                 "granitemoe_swa")}
READ_AS["nemotron_h_moe"] = "nemotron_h"  # Nemotron 3's graph (`gguf_layout.gguf_arch`)
# The common keys: Hugging Face config field <- `{arch}.KEY`.
COMMON_KEYS = {"hidden_size": "embedding_length", "intermediate_size": "feed_forward_length",
               "num_hidden_layers": "block_count", "num_attention_heads": "attention.head_count",
               "num_key_value_heads": "attention.head_count_kv", "max_position_embeddings": "context_length"}
# GGUF tensor types whose values a converted checkpoint keeps in the same type (exactly); the others become fp32.
KEPT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16}
SOFTMAX = 1  # llama.cpp's expert_gating_func of a softmax router (gguf.ExpertGatingFuncType.SOFTMAX)
TOKEN_IDS = {"bos_token_id": "tokenizer.ggml.bos_token_id", "eos_token_id": "tokenizer.ggml.eos_token_id",
             "pad_token_id": "tokenizer.ggml.padding_token_id"}


def convert(reader, path: Path, out: Path) -> None:
    """Write the Hugging Face checkpoint the GGUF file `path` holds into the directory `out`: config, weights one
    tensor at a time (`stored_specs`: the file's f16 and bf16 tensors as they are, the others in fp32), generation
    config, tokenizer."""
    from transformers import AutoModelForCausalLM, GenerationConfig  # lazy: CLI start-up speed

    meta, tensors = Metadata(reader), {t.name: t for t in reader.tensors}
    config = read_config(meta, reader, tensors)
    arch = arch_of(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    config.architectures, config.dtype = [type(model).__name__], torch.float32
    shapes = {}
    for key, p in model.state_dict().items():  # a mixture of experts' as checkpoints store it: one tensor an expert
        layout = stored_as(key, arch, num_experts(config))
        if not (key == "lm_head.weight" and tied(config)):  # a tied head is not written
            shapes.update(layout.shapes(tuple(p.shape)) if layout else {key: tuple(p.shape)})
    specs = stored_specs(tensors, shapes, config)
    with SafetensorsWriter(out, specs) as writer:
        for key, tensor in read_weights(meta, tensors, shapes, config):
            writer.write(key, tensor.to(specs[key].dtype))
    own_config(config).save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    read_tokenizer(path).save_pretrained(out)


def stored_specs(tensors: dict, shapes: dict[str, tuple], config) -> dict[str, TensorSpec]:
    """How each converted tensor is stored: in the file's own f16 or bf16 where its values pass unchanged (every value
    exact, half the disk of fp32: a 12B teacher of f16 takes 24 GB, not 48), in fp32 where they are dequantised,
    already f32, or changed on the way (norms stored as 1 + w). The model loads in fp32 either way."""
    names = tensor_names(gguf_arch(config), config.num_hidden_layers)

    def dtype(key: str) -> torch.dtype:
        name = gguf_name(names, key, config.model_type, num_experts(config))[0]
        if name not in tensors or stored_plus_one(config.model_type, key):
            return torch.float32
        return KEPT_DTYPES.get(tensors[name].tensor_type.name, torch.float32)
    return {key: TensorSpec(dtype(key), shape) for key, shape in shapes.items()}


def gguf_name(names, key: str, model_type: str, experts: int) -> tuple[str | None, int | None]:
    """The file's tensor that holds the Hugging Face tensor `key`, and for one expert's tensor of a mixture of experts
    its index in the tensor stacked over the experts (else None)."""
    if match := EXPERT_TENSOR.fullmatch(key):
        return gguf_tensor(names, stacked_key(int(match[1]), match[2], match[4])), int(match[3])
    if recurrent := mamba_in_gguf(key) or delta_in_gguf(key):
        return recurrent[0], None
    if gate_up := fused_gate_up(key) or granite_mlp_in_gguf(key, experts, names.graph):  # the gate half's (up's:
        # second), or down's
        return gate_up[0], None
    if oss := oss_in_gguf(key, model_type):  # GPT-OSS's experts: the gate's (up's is the second) or down's
        return oss[0][0], None
    if stored := experts_in_gguf(key):  # 3D experts stored as held (Granite-MoE SWA's): the gate's, or down's
        return stored[0], None
    if two := mla_in_gguf(key) or qkvz_in_gguf(key):  # latent attention's keys' (values' is the second), Qwen3-Next's
        return two[0], None  # queries, keys and values' (z's is the second)
    return gguf_tensor(names, key), None


def read_tokenizer(path: Path):
    """The tokenizer transformers builds from the file's vocabulary, merges and special tokens, as the file describes
    it whatever the family (`AutoTokenizer` would take the family's class, which brings defaults of its own: Gemma's
    adds a `<mask>` its vocabulary may lack, and it needs the config transformers refuses for half the families)."""
    from transformers import PreTrainedTokenizerFast  # lazy: CLI start-up speed

    return PreTrainedTokenizerFast.from_pretrained(path.parent, gguf_file=path.name)


def read_config(meta: Metadata, reader, tensors: dict):
    """The model's config: the common keys, the token ids, the biases its tensors show, the family's own keys, then
    what `gguf_config.correct_config` reads for every family (head size, RoPE and its scaling, window)."""
    from transformers import AutoConfig  # lazy: CLI start-up speed

    model_type = family(meta)
    own = OWN_KEYS.get(model_type, ())  # read by the family's FAMILY_SETTINGS, or not in its config
    settings = {name: required(meta, key, int) for name, key in COMMON_KEYS.items() if name not in own}
    if "token_embd.weight" not in tensors:
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: it has no token_embd.weight (the embeddings)")
    settings["vocab_size"] = int(tensors["token_embd.weight"].shape[-1])
    settings["tie_word_embeddings"] = "output.weight" not in tensors
    for name, key in TOKEN_IDS.items():
        field = reader.fields.get(key)
        settings[name] = int(field.contents()) if field is not None else None
    if isinstance(LAYER_NORM_EPS.get(model_type), str):  # (OLMo 1's is fixed)
        settings[LAYER_NORM_EPS[model_type]] = required(meta, "attention.layer_norm_epsilon", float)
    elif model_type not in LAYER_NORM_EPS:
        settings[RMS_NORM_EPS.get(model_type, "rms_norm_eps")] = required(meta, "attention.layer_norm_rms_epsilon",
                                                                           float)
    qkv_bias = "blk.0.attn_q.bias" in tensors or "blk.0.attn_qkv.bias" in tensors  # (GPT-NeoX's fused)
    biases = {"attention_bias": qkv_bias, "mlp_bias": "blk.0.ffn_up.bias" in tensors,
              "use_bias": "blk.0.attn_q.bias" in tensors,  # ERNIE's one flag
              "use_qkv_bias": "blk.0.attn_q.bias" in tensors,  # StableLM's
              "qkv_bias": "blk.0.attn_q.bias" in tensors,  # Qwen2-MoE's
              "attention_out_bias": "blk.0.attn_output.bias" in tensors,  # Seed-OSS's o_proj
              "use_qk_norm": "blk.0.attn_q_norm.weight" in tensors,  # GLM-4.5's per-head q/k norms, where it has them
              "num_ln_in_parallel_attn": 2 if "blk.0.attn_norm_2.weight" in tensors else 1}  # Falcon's LayerNorms
    defaults = AutoConfig.for_model(model_type)
    settings.update({name: value for name, value in biases.items() if hasattr(defaults, name)})
    settings.update(FAMILY_SETTINGS.get(model_type, lambda *_: {})(meta, settings["num_hidden_layers"]))
    config = AutoConfig.for_model(model_type, **settings)
    correct_config(config, meta)
    FAMILY_ROPE.get(model_type, lambda *_: None)(config, meta)
    return config


def family(meta: Metadata) -> str:
    """The Hugging Face model type of the file: its graph's, or OLMo 3 for an OLMo 2 graph with a layer pattern."""
    if meta.arch not in READ_AS:
        raise MinitronError(f"cannot read a GGUF file of llama.cpp's {meta.arch!r} graph: minitron reads "
                            f"{', '.join(READ_AS)} (the families it prunes)")
    if meta.arch == "olmo2" and meta.get("attention.sliding_window_pattern") is not None:
        return "olmo3"
    if meta.arch == "llama" and meta.get("expert_count"):
        return "mixtral"
    if meta.arch == "granitemoe" and meta.get("expert_shared_feed_forward_length"):
        return "granitemoeshared"
    if meta.arch == "granite_swa" and meta.get("expert_count"):
        return "granitemoe_swa"
    if meta.arch == "granitehybrid" and meta.get("embedding_scale") is None:  # (no multipliers: Bamba's)
        return "bamba"
    if meta.arch == "deepseek2" and not meta.get("expert_count"):
        return "youtu"
    if meta.arch == "deepseek2" and meta.get("expert_gating_func", SOFTMAX) == SOFTMAX:  # (llama.cpp's default)
        return "deepseek_v2"
    return READ_AS[meta.arch]


def required(meta: Metadata, key: str, kind: type):
    """`{arch}.KEY` as one number of `kind` (int or float), or the one line that says the file lacks it."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: its {meta.arch}.{key} is "
                            f"{'missing' if value is None else 'not one number'}")
    return int(value) if kind is int else float(str(np.float32(value)))  # float32 as written: 0.1, not 0.100000001


def granite(meta: Metadata, layers: int) -> dict:
    """Granite's four multipliers."""
    return {"embedding_multiplier": required(meta, "embedding_scale", float),
            "residual_multiplier": required(meta, "residual_scale", float),
            "attention_multiplier": required(meta, "attention.scale", float),
            "logits_scaling": required(meta, "logit_scale", float)}


def olmo(meta: Metadata, layers: int) -> dict:
    """OLMo 1's clipping of q, k and v (none without the key)."""
    key = "attention.clamp_kqv"
    return {"clip_qkv": None if meta.get(key) is None else required(meta, key, float)}


def gpt_neox(meta: Metadata, layers: int) -> dict:
    """GPT-NeoX's attention and MLP in parallel (Pythia's) or in turn."""
    value = meta.get("use_parallel_residual")
    if not isinstance(value, bool):
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: its {meta.arch}.use_parallel_residual is "
                            f"{'missing' if value is None else 'not true or false'}")
    return {"use_parallel_residual": value}


def gpt2(meta: Metadata, layers: int) -> dict:
    """GPT-2's neurons under its own name (n_inner); no KV heads of its own."""
    return {"n_inner": required(meta, "feed_forward_length", int)}


def gpt_bigcode(meta: Metadata, layers: int) -> dict:
    """GPTBigCode's neurons under its own name (n_inner); its one KV head (multi-query attention: a file of other KV
    heads is refused, as minitron prunes no other GPTBigCode)."""
    if required(meta, "attention.head_count_kv", int) != 1:
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: its attention.head_count_kv is not 1 (minitron "
                            "reads GPTBigCode models of multi-query attention)")
    return {**gpt2(meta, layers), "multi_query": True}


def falcon(meta: Metadata, layers: int) -> dict:
    """Falcon's neurons and KV heads under its own names, read as its new_decoder_architecture layer (KV groups fused
    group by group: Falcon-7B's multi-query attention is its one group), the blocks in parallel (llama.cpp's graph
    runs no other), behind one LayerNorm or one each (`read_config`: as the file has attn_norm_2)."""
    return {"ffn_hidden_size": required(meta, "feed_forward_length", int),
            "num_kv_heads": required(meta, "attention.head_count_kv", int), "new_decoder_architecture": True,
            "parallel_attn": True, "bias": False, "alibi": False}


def cohere(meta: Metadata, layers: int) -> dict:
    """Command R's logit scale; llama.cpp takes q/k norms at Command R+'s layer count and none below."""
    return {"logit_scale": required(meta, "logit_scale", float), "use_qk_norm": layers >= COMMAND_R_PLUS_LAYERS}


def cohere2(meta: Metadata, layers: int) -> dict:
    """Cohere 2's logit scale and layer pattern (every COHERE2_GLOBAL_STEP-th layer global, fixed in llama.cpp)."""
    return {"logit_scale": required(meta, "logit_scale", float),
            "layer_types": global_every(COHERE2_GLOBAL_STEP, layers)}


def smollm3(meta: Metadata, layers: int) -> dict:
    """SmolLM3's layers with RoPE: all but every SMOLLM3_NO_ROPE_STEP-th (fixed in llama.cpp)."""
    return {"no_rope_layers": [int((i + 1) % SMOLLM3_NO_ROPE_STEP != 0) for i in range(layers)],
            "use_sliding_window": False}


def olmo3(meta: Metadata, layers: int) -> dict:
    """OLMo 3's sliding layers, one flag a layer."""
    pattern = meta.get("attention.sliding_window_pattern")
    if not isinstance(pattern, list) or len(pattern) != layers:
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: its {meta.arch}.attention.sliding_window_pattern "
                            f"is not one flag for each of its {layers} layers")
    return {"layer_types": ["sliding_attention" if sliding else "full_attention" for sliding in pattern]}


def exaone4(meta: Metadata, layers: int) -> dict:
    """EXAONE 4's layers as llama.cpp takes them: at 64 (the 32B's) every 4th global and the others sliding, with the
    file's window or 4096; at any other count every layer global (with RoPE: no window)."""
    if layers != EXAONE4_HYBRID_LAYERS:
        return {"sliding_window": None, "layer_types": ["full_attention"] * layers}
    step = EXAONE4_GLOBAL_STEP
    return {"sliding_window": int(meta.get("attention.sliding_window", EXAONE4_WINDOW)),
            "layer_types": ["full_attention" if (i + 1) % step == 0 else "sliding_attention" for i in range(layers)]}


def mixtral(meta: Metadata, layers: int) -> dict:
    """A mixture of experts' experts and experts a token (Mixtral's and OLMoE's expert width is feed_forward_length;
    Mixtral's router always renormalises the picked experts' weights, as llama.cpp's llama graph does)."""
    return {"num_experts": required(meta, "expert_count", int),
            "num_experts_per_tok": required(meta, "expert_used_count", int)}


def qwen3_moe(meta: Metadata, layers: int) -> dict:
    """Qwen3-MoE's experts, experts a token and each expert's width; llama.cpp renormalises the picked experts'
    weights, as `norm_topk_prob` does."""
    return {**mixtral(meta, layers), "moe_intermediate_size": required(meta, "expert_feed_forward_length", int),
            "norm_topk_prob": True}


def olmoe(meta: Metadata, layers: int) -> dict:
    """OLMoE's experts and experts a token; llama.cpp does not renormalise the picked experts' weights."""
    return {**mixtral(meta, layers), "norm_topk_prob": False}


def local_experts(meta: Metadata, layers: int) -> dict:
    """The experts and experts a token of a family that names them num_local_experts (Granite-MoE, GPT-OSS)."""
    experts = mixtral(meta, layers)
    return {"num_local_experts": experts.pop("num_experts"), **experts}


def granitemoeshared(meta: Metadata, layers: int) -> dict:
    """Granite-MoE's settings (`granitemoe`) and its shared expert's width."""
    return {**granitemoe(meta, layers),
            "shared_intermediate_size": required(meta, "expert_shared_feed_forward_length", int)}


def granitemoe(meta: Metadata, layers: int) -> dict:
    """Granite-MoE's four multipliers, experts and experts a token."""
    return {**granite(meta, layers), **local_experts(meta, layers)}


def mamba_settings(meta: Metadata, names: MambaNames) -> dict:
    """A Mamba-2 hybrid's mixer sizes under its config's names (the inverse of `export.mamba_keys`)."""
    heads, inner = required(meta, "ssm.time_step_rank", int), required(meta, "ssm.inner_size", int)
    return {names.heads: heads, names.head_dim: inner // heads, names.groups: required(meta, "ssm.group_count", int),
            names.state: required(meta, "ssm.state_size", int), names.conv: required(meta, "ssm.conv_kernel", int)}


def nemotron_h(meta: Metadata, layers: int) -> dict:
    """Nemotron-H's layers' kinds from their neurons and KV heads (a Mamba-2 layer has neither, an attention layer no
    neurons), its MLP and attention widths, and its Mamba-2 sizes."""
    neurons, kv = (meta.get(key) for key in ("feed_forward_length", "attention.head_count_kv"))
    if not all(isinstance(v, list) and len(v) == layers for v in (neurons, kv)):
        raise MinitronError(f"cannot read this nemotron_h GGUF file: its feed_forward_length and "
                            f"attention.head_count_kv are not one value for each of its {layers} layers")
    experts = meta.arch == "nemotron_h_moe"  # Nemotron 3's: its MLP layers are mixtures of experts
    kinds = [(MOE if experts else MLP) if f else ATTENTION if k else RECURRENT for f, k in zip(neurons, kv)]
    settings = {"layers_block_type": kinds, "num_key_value_heads": max(kv) or 1, **mamba_settings(meta, MambaNames())}
    if not experts:
        return {**settings, "intermediate_size": max(neurons) or 1}
    return {**settings, **routed_moe(meta, layers),
            "moe_shared_expert_intermediate_size": required(meta, "expert_shared_feed_forward_length", int),
            "moe_latent_size": meta.get("moe_latent_size")}


def layer_kv_heads(meta: Metadata, layers: int) -> list[int]:
    """A hybrid's KV heads, one value a layer (0 in its recurrent layers: Granite 4's, LFM2's), or the one line that
    says the file lacks them."""
    kv = meta.get("attention.head_count_kv")
    if not isinstance(kv, list) or len(kv) != layers:
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: its attention.head_count_kv is not one value "
                            f"for each of its {layers} layers")
    return kv


def granite_hybrid(meta: Metadata, layers: int) -> dict:
    """Granite 4's layers' kinds from their KV heads (a Mamba-2 layer has none), its MLP's width (with experts: theirs,
    and its MLP's as their shared expert's), its Mamba-2 sizes (its mixers' width over the hidden size: mamba_expand),
    whether its attention has RoPE (`rope.scaling.finetuned`, as llama.cpp takes it) and its multipliers."""
    kv = layer_kv_heads(meta, layers)
    mlp = {"num_local_experts": 0, "shared_intermediate_size": required(meta, "feed_forward_length", int)}
    if meta.get("expert_count"):  # H-Tiny, H-Small
        mlp = {**local_experts(meta, layers), "intermediate_size": required(meta, "feed_forward_length", int),
               "shared_intermediate_size": required(meta, "expert_shared_feed_forward_length", int)}
    return {**granite(meta, layers), "layer_types": [ATTENTION if k else RECURRENT for k in kv],
            "num_key_value_heads": max(kv) or 1, **mlp,
            "position_embedding_type": "rope" if meta.get("rope.scaling.finetuned", True) else "nope",
            **mamba_settings(meta, GRANITE_MAMBA),
            "mamba_expand": required(meta, "ssm.inner_size", int) // required(meta, "embedding_length", int)}


def bamba(meta: Metadata, layers: int) -> dict:
    """Bamba's attention layers by index, from their KV heads (a Mamba-2 layer has none), and its Mamba-2 sizes (as
    Granite 4's: `granite_hybrid`)."""
    kv = layer_kv_heads(meta, layers)
    return {"attn_layer_indices": [i for i, k in enumerate(kv) if k], "num_key_value_heads": max(kv) or 1,
            **mamba_settings(meta, GRANITE_MAMBA),
            "mamba_expand": required(meta, "ssm.inner_size", int) // required(meta, "embedding_length", int)}


def qwen3_5(meta: Metadata, layers: int) -> dict:
    """Qwen3.5's recurrent layers (`attention.recurrent_layers`, or llama.cpp's default of every fourth layer full
    attention) and its Gated DeltaNet sizes (its key heads the `ssm` groups, its value heads the time-step rank, one
    head size: the state)."""
    recurrent = meta.get("attention.recurrent_layers")
    if recurrent is None:
        interval = int(meta.get("full_attention_interval", 4))
        recurrent = [(i + 1) % interval != 0 for i in range(layers)]
    if not isinstance(recurrent, list) or len(recurrent) != layers:
        raise MinitronError(f"cannot read this qwen35 GGUF file: its attention.recurrent_layers is not one flag for "
                            f"each of its {layers} layers")
    head = required(meta, "ssm.state_size", int)
    return {"layer_types": [RECURRENT if r else ATTENTION for r in recurrent], "linear_key_head_dim": head,
            "linear_value_head_dim": head, "linear_num_key_heads": required(meta, "ssm.group_count", int),
            "linear_num_value_heads": required(meta, "ssm.time_step_rank", int),
            "linear_conv_kernel_dim": required(meta, "ssm.conv_kernel", int)}


def short_conv(meta: Metadata, layers: int) -> dict:
    """An LFM2's layers' kinds from their KV heads (a short convolution's layer has none) and its convolutions' taps."""
    kv = layer_kv_heads(meta, layers)
    return {"layer_types": [ATTENTION if k else "conv" for k in kv], "num_key_value_heads": max(kv) or 1,
            "conv_L_cache": required(meta, "shortconv.l_cache", int)}


def lfm2(meta: Metadata, layers: int) -> dict:
    """LFM2's layers and its MLP's neurons as they are (not derived: `arch.as_built`)."""
    return {**short_conv(meta, layers), "block_auto_adjust_ff_dim": False}


def lfm2_moe(meta: Metadata, layers: int) -> dict:
    """LFM2-MoE's layers, its leading dense layers, experts, experts a token and each expert's width (its sigmoid
    router steered by a bias, the picked experts' weights renormalised, as llama.cpp's lfm2moe graph computes them:
    `check_lfm2_moe`)."""
    return {**short_conv(meta, layers), **qwen3_moe(meta, layers), "use_expert_bias": True,
            "num_dense_layers": int(meta.get("leading_dense_block_count", 0))}


def shared_moe(meta: Metadata, layers: int) -> dict:
    """A mixture of experts with a shared expert: its experts, experts a token, each expert's width and its shared
    expert's."""
    return {**mixtral(meta, layers), "moe_intermediate_size": required(meta, "expert_feed_forward_length", int),
            "shared_expert_intermediate_size": required(meta, "expert_shared_feed_forward_length", int)}


def qwen3_5_moe(meta: Metadata, layers: int) -> dict:
    """Qwen3.5-MoE's layers and Gated DeltaNet (`qwen3_5`) and its experts (`shared_moe`; a token's weights
    renormalised, as llama.cpp's graph does)."""
    return {**qwen3_5(meta, layers), **shared_moe(meta, layers)}


def qwen3_next(meta: Metadata, layers: int) -> dict:
    """Qwen3-Next's layers and Gated DeltaNet (`qwen3_5`) and its experts (`shared_moe`; a token's weights
    renormalised, every layer sparse, as llama.cpp's qwen3next graph computes them)."""
    return {**qwen3_5(meta, layers), **shared_moe(meta, layers), "norm_topk_prob": True, "mlp_only_layers": [],
            "decoder_sparse_step": 1}


def qwen2_moe(meta: Metadata, layers: int) -> dict:
    """Qwen2-MoE's experts (`shared_moe`; a token's weights not renormalised, as llama.cpp's graph); every layer
    sparse."""
    return {**shared_moe(meta, layers), "norm_topk_prob": False, "mlp_only_layers": [], "decoder_sparse_step": 1}


def routed_moe(meta: Metadata, layers: int) -> dict:
    """A mixture of experts as `export.routed_keys` writes it: its experts, experts a token and each expert's width,
    its router's renormalising and scale, and the groups it picks its experts within (one without the keys)."""
    experts = mixtral(meta, layers)
    return {"n_routed_experts": experts.pop("num_experts"), **experts,
            "n_group": int(meta.get("expert_group_count", 1)),
            "topk_group": int(meta.get("expert_group_used_count", 1)),
            "moe_intermediate_size": required(meta, "expert_feed_forward_length", int),
            "norm_topk_prob": bool(meta.get("expert_weights_norm", False)),
            "routed_scaling_factor": float(meta.get("expert_weights_scale", 1.0))}


def steered_moe(meta: Metadata, layers: int) -> dict:
    """GLM-4.5's (and dots.llm1's, DeepSeek V2's and V3's) mixture of experts (`routed_moe`), its shared expert (as wide
    as expert_shared_count experts) and its leading dense layers."""
    return {**routed_moe(meta, layers), "n_shared_experts": required(meta, "expert_shared_count", int),
            "first_k_dense_replace": int(meta.get("leading_dense_block_count", 0))}


def glm4_moe(meta: Metadata, layers: int) -> dict:
    """GLM-4.5's mixture of experts (`steered_moe`), without multi-token prediction layers."""
    return {**steered_moe(meta, layers), "num_nextn_predict_layers": 0}


def exaone_moe(meta: Metadata, layers: int) -> dict:
    """K-EXAONE's window and sliding layers (`olmo3`) and GLM-4.5's mixture of experts (`steered_moe`) under its own
    names, its leading dense layers listed by kind, without multi-token prediction layers."""
    experts = steered_moe(meta, layers)
    dense = experts["first_k_dense_replace"]
    return {**olmo3(meta, layers), "sliding_window": required(meta, "attention.sliding_window", int),
            **{k: v for k, v in experts.items() if k not in ("n_routed_experts", "n_shared_experts")},
            "num_experts": experts["n_routed_experts"], "num_shared_experts": experts["n_shared_experts"],
            "mlp_layer_types": ["dense"] * dense + ["sparse"] * (layers - dense), "num_nextn_predict_layers": 0}


def hy_v3(meta: Metadata, layers: int) -> dict:
    """Hy3's mixture of experts as `export.hy_v3_keys` writes it (`steered_moe`, under its own names: its picked
    scores always renormalised, their scale router_scaling_factor), its leading dense layers listed by kind, without
    multi-token prediction layers."""
    moe = steered_moe(meta, layers)
    dense = moe["first_k_dense_replace"]
    return {"num_experts": moe["n_routed_experts"], "num_experts_per_tok": moe["num_experts_per_tok"],
            "moe_intermediate_size": moe["moe_intermediate_size"], "num_shared_experts": moe["n_shared_experts"],
            "router_scaling_factor": moe["routed_scaling_factor"], "num_nextn_predict_layers": 0,
            "mlp_layer_types": ["dense"] * dense + ["sparse"] * (layers - dense)}


def dots1(meta: Metadata, layers: int) -> dict:
    """dots.llm1's mixture of experts (`steered_moe`), every layer attending over the whole context."""
    return {**steered_moe(meta, layers), "sliding_window": None}


def deepseek_v3(meta: Metadata, layers: int) -> dict:
    """DeepSeek V3's mixture of experts (`steered_moe`), without multi-token prediction layers, and its multi-head
    latent attention (`latent_attention`)."""
    return {**steered_moe(meta, layers), **latent_attention(meta), "num_nextn_predict_layers": 0,
            "rope_interleave": True}


def afmoe(meta: Metadata, layers: int) -> dict:
    """AFMoE's mixture of experts as `export.afmoe_keys` writes it (its shared expert as wide as expert_shared_count
    routed ones, its leading dense layers, its picked scores' scale) and its layers (every AFMOE_GLOBAL_STEP-th global,
    fixed in llama.cpp); muP's embedding scale, which that graph always applies."""
    experts = routed_moe(meta, layers)
    return {"num_experts": experts["n_routed_experts"], "num_experts_per_tok": experts["num_experts_per_tok"],
            "moe_intermediate_size": experts["moe_intermediate_size"], "route_scale": experts["routed_scaling_factor"],
            "num_shared_experts": required(meta, "expert_shared_count", int),
            "num_dense_layers": int(meta.get("leading_dense_block_count", 0)), "mup_enabled": True,
            "global_attn_every_n_layers": AFMOE_GLOBAL_STEP, "layer_types": global_every(AFMOE_GLOBAL_STEP, layers)}


def deepseek_v32(meta: Metadata, layers: int) -> dict:
    """DeepSeek V3.2's mixture of experts (`steered_moe`), its multi-head latent attention (`latent_attention`, its
    RoPE on interleaved pairs whatever the config says) and its lightning indexer's heads, their size and the keys each
    query attends to."""
    return {**steered_moe(meta, layers), **latent_attention(meta), "num_nextn_predict_layers": 0,
            "index_n_heads": required(meta, "attention.indexer.head_count", int),
            "index_head_dim": required(meta, "attention.indexer.key_length", int),
            "index_topk": required(meta, "attention.indexer.top_k", int)}


def glm_moe_dsa(meta: Metadata, layers: int) -> dict:
    """GLM-5's settings, DeepSeek V3.2's (`deepseek_v32`), and which layers run their own indexer (every one without
    the key: GLM-5's and 5.1's; a layer that reuses another's picks is refused, `arch.arch_of`)."""
    own = meta.get("attention.indexer.types") or [True] * layers
    return {**deepseek_v32(meta, layers), "indexer_types": ["full" if full else "shared" for full in own]}


def deepseek_v2(meta: Metadata, layers: int) -> dict:
    """DeepSeek V2's mixture of experts (`steered_moe`'s keys: its softmax router is not steered), its picks greedy or
    within the groups of the best experts (the model such a file is converted from: llama.cpp scores a group by its
    two best experts), and its multi-head latent attention (`latent_attention`)."""
    experts = steered_moe(meta, layers)
    return {**experts, **latent_attention(meta),
            "topk_method": "group_limited_greedy" if experts["n_group"] > 1 else "greedy"}


def youtu(meta: Metadata, layers: int) -> dict:
    """Youtu-LLM's multi-head latent attention (`latent_attention`); its MLP is every layer's."""
    return {**latent_attention(meta), "rope_interleave": True}


def latent_attention(meta: Metadata) -> dict:
    """Multi-head latent attention's sizes: the query latent's rank (none where it is 0), the KV latent's, each head's
    unrotated and rotated key channels and value channels, a KV head for each query head (llama.cpp's graph attends to
    the latent as one)."""
    rotated = required(meta, "rope.dimension_count", int)
    return {"q_lora_rank": int(meta.get("attention.q_lora_rank", 0)) or None,
            "kv_lora_rank": required(meta, "attention.kv_lora_rank", int), "qk_rope_head_dim": rotated,
            "qk_nope_head_dim": required(meta, "attention.key_length_mla", int) - rotated,
            "v_head_dim": required(meta, "attention.value_length_mla", int),
            "num_key_value_heads": required(meta, "attention.head_count", int)}


def hunyuan_v1_moe(meta: Metadata, layers: int) -> dict:
    """Hunyuan MoE's experts and experts a token (its experts and shared expert feed_forward_length wide)."""
    return {"num_experts": required(meta, "expert_count", int), "moe_topk": required(meta, "expert_used_count", int)}


def ernie4_5_moe(meta: Metadata, layers: int) -> dict:
    """ERNIE 4.5 MoE's experts, experts a token and each expert's width, its shared expert (expert_shared_count of
    them wide, or its width's worth where the count is missing), its leading dense layers and a mixture of experts in
    every layer after them; no multi-token prediction layers. (llama.cpp's converter writes the shared expert's width
    as intermediate_size // KV heads, which is its width in the released 21B only: the count is what it is.)"""
    experts, width = mixtral(meta, layers), required(meta, "expert_feed_forward_length", int)
    shared = meta.get("expert_shared_count")
    shared = int(meta.get("expert_shared_feed_forward_length", 0)) // width if shared is None else int(shared)
    return {"moe_num_experts": experts["num_experts"], "moe_k": experts["num_experts_per_tok"],
            "moe_intermediate_size": width, "moe_num_shared_experts": shared,
            "moe_layer_start_index": int(meta.get("leading_dense_block_count", 0)), "moe_layer_end_index": -1,
            "moe_layer_interval": int(meta.get("interleave_moe_layer_step", 1)), "num_nextn_predict_layers": 0}


def gpt_oss(meta: Metadata, layers: int) -> dict:
    """GPT-OSS's experts, experts a token and their width, its window and sliding layers (as OLMo 3's)."""
    return {**local_experts(meta, layers), **olmo3(meta, layers),
            "intermediate_size": required(meta, "expert_feed_forward_length", int),
            "sliding_window": required(meta, "attention.sliding_window", int)}


def granite_swa(meta: Metadata, layers: int) -> dict:
    """Granite SWA's multipliers, window and sliding layers (as OLMo 3's), and each layer's RoPE base: the file's where
    the layer has RoPE (`attention.rope_pattern`, one flag a layer; all of them without the key), 0 where not."""
    pattern = meta.get("attention.rope_pattern", [True] * layers)
    if not isinstance(pattern, list) or len(pattern) != layers:
        raise MinitronError(f"cannot read this {meta.arch} GGUF file: its {meta.arch}.attention.rope_pattern is not "
                            f"one flag for each of its {layers} layers")
    base = required(meta, "rope.freq_base", float)
    return {**granite(meta, layers), **olmo3(meta, layers), "layer_rope_theta": [base if r else 0.0 for r in pattern],
            "sliding_window": required(meta, "attention.sliding_window", int)}


def granitemoe_swa(meta: Metadata, layers: int) -> dict:
    """Granite SWA's settings with Granite-MoE's experts, and its shared expert's width (0: none)."""
    return {**granite_swa(meta, layers), **local_experts(meta, layers),
            "shared_intermediate_size": int(meta.get("expert_shared_feed_forward_length", 0))}


FAMILY_SETTINGS = {"granite": granite, "granite_swa": granite_swa, "granitemoe_swa": granitemoe_swa, "cohere": cohere,
                   "cohere2": cohere2, "smollm3": smollm3, "olmo3": olmo3,
                   "exaone4": exaone4, "mixtral": mixtral, "qwen3_moe": qwen3_moe, "olmoe": olmoe,
                   "granitemoe": granitemoe, "nemotron_h": nemotron_h, "qwen3_5_text": qwen3_5,
                   "qwen3_5_moe_text": qwen3_5_moe, "qwen3_next": qwen3_next, "qwen2_moe": qwen2_moe,
                   "gpt_oss": gpt_oss,
                   "granitemoehybrid": granite_hybrid, "lfm2": lfm2, "lfm2_moe": lfm2_moe, "glm4_moe": glm4_moe,
                   "ernie4_5_moe": ernie4_5_moe, "dots1": dots1, "hunyuan_v1_moe": hunyuan_v1_moe,
                   "deepseek_v3": deepseek_v3, "deepseek_v2": deepseek_v2, "youtu": youtu, "minimax_m2": local_experts,
                   "exaone_moe": exaone_moe, "granitemoeshared": granitemoeshared, "deepseek_v32": deepseek_v32,
                   "afmoe": afmoe, "glm_moe_dsa": glm_moe_dsa, "olmo": olmo, "gpt_neox": gpt_neox, "gpt2": gpt2,
                   "gpt_bigcode": gpt_bigcode, "falcon": falcon, "hy_v3": hy_v3, "bamba": bamba}
# The common keys a family's FAMILY_SETTINGS reads itself (Nemotron-H's, one value a layer; Granite 4's and LFM2's KV
# heads, and Granite 4's MLP width under its own name) or its config has no field for (Qwen3.5-MoE has no dense MLP
# width, GPT-NeoX no KV heads, GPT-2 neither KV heads nor intermediate_size).
OWN_KEYS = {"nemotron_h": ("intermediate_size", "num_key_value_heads"), "qwen3_5_moe_text": ("intermediate_size",),
            "granitemoehybrid": ("intermediate_size", "num_key_value_heads"), "lfm2": ("num_key_value_heads",),
            "lfm2_moe": ("num_key_value_heads",), "deepseek_v3": ("num_key_value_heads",),
            "deepseek_v2": ("num_key_value_heads",), "youtu": ("num_key_value_heads",),
            "deepseek_v32": ("num_key_value_heads",), "glm_moe_dsa": ("num_key_value_heads",),
            "gpt_neox": ("num_key_value_heads",), "gpt2": ("intermediate_size", "num_key_value_heads"),
            "gpt_bigcode": ("intermediate_size", "num_key_value_heads"), "bamba": ("num_key_value_heads",),
            "falcon": ("intermediate_size", "num_key_value_heads")}


def ministral3_rope(config, meta: Metadata) -> None:
    """Ministral 3's YaRN as llama.cpp's mistral3 graph reads it (`export.ministral3_keys`): its betas, mscale 1 and
    mscale_all_dim from the log multiplier; and its query scaling past YaRN's original context (the temperature scale;
    none without the key, or without YaRN, where the original context is the whole context)."""
    rope = dict(config.rope_parameters)
    if rope.get("rope_type") == "yarn":
        rope.update(beta_fast=float(meta.get("rope.scaling.yarn_beta_fast", 32.0)),
                    beta_slow=float(meta.get("rope.scaling.yarn_beta_slow", 1.0)), mscale=1.0,
                    mscale_all_dim=float(meta.get("rope.scaling.yarn_log_multiplier", 0.0)))
    rope.setdefault("original_max_position_embeddings", config.max_position_embeddings)
    rope["llama_4_scaling_beta"] = float(meta.get("attention.temperature_scale", 0.0))
    config.rope_parameters = rope


def gpt_oss_rope(config, meta: Metadata) -> None:
    """GPT-OSS's YaRN with its correction range not rounded (`truncate` False, as GPT-OSS's configs have it; llama.cpp
    rounds it, which no key says: the file reads as the model written to it, `export_checks.YARN_UNROUNDED`)."""
    rope = dict(config.rope_parameters)
    if rope.get("rope_type") == "yarn":
        rope["truncate"] = False
    config.rope_parameters = rope


def xielu_scalar(meta: Metadata, name: str, layer: int, shape: tuple) -> torch.Tensor:
    """Apertus's xIELU scalar `name` of one layer, from the file's `xielu.NAME` array (one value a layer)."""
    field = meta.fields.get(f"xielu.{name}")
    values = field.contents() if field is not None else None
    if not isinstance(values, list) or len(values) <= layer:
        raise MinitronError(f"cannot read this apertus GGUF file: its xielu.{name} is missing or has no value for "
                            f"layer {layer}")
    return torch.tensor(float(values[layer]), dtype=torch.float32).reshape(shape)


def olmo3_rope(config, meta: Metadata) -> None:
    """OLMo 3 keeps RoPE's settings per layer type: llama.cpp gives the global layers the file's RoPE and its scaling,
    the sliding ones plain RoPE of the same base (`export_checks.check_olmo3`)."""
    full = dict(config.rope_parameters)
    config.rope_parameters = {"full_attention": full,
                              "sliding_attention": {"rope_type": "default", "rope_theta": full["rope_theta"]}}


def no_rope(config, meta: Metadata) -> None:
    """Nemotron-H's attention has no positions, GPT-2's and GPTBigCode's learned ones: no RoPE settings."""
    config.rope_parameters = None


def latent_rope(config, meta: Metadata) -> None:
    """Multi-head latent attention rotates qk_rope_head_dim channels of each head's keys (transformers' head_dim),
    not a part of the file's key length (the latent's, `export.key_value_lengths`); its YaRN's betas, and mscale and
    mscale_all_dim both the yarn_log_multiplier over 0.1 (as llama.cpp's deepseek2 graph reads it:
    `export_checks.check_latent`)."""
    config.head_dim = config.qk_rope_head_dim
    rope = {k: v for k, v in config.rope_parameters.items() if k != "partial_rotary_factor"}
    if rope.get("rope_type") == "yarn":
        scale = round(float(meta.get("rope.scaling.yarn_log_multiplier", 0.0)) / 0.1, 6)
        rope.update(beta_fast=float(meta.get("rope.scaling.yarn_beta_fast", 32.0)),
                    beta_slow=float(meta.get("rope.scaling.yarn_beta_slow", 1.0)), mscale=scale, mscale_all_dim=scale)
    config.rope_parameters = rope


def whole_head_rope(config, meta: Metadata) -> None:
    """GLM-4.5's RoPE over the whole head where the file rotates it all (a Solar Open's): transformers' GLM-4.5
    rotates half of each head unless told otherwise (`correct_config` writes the fraction only where it is not 1)."""
    config.rope_parameters = {"partial_rotary_factor": 1.0, **config.rope_parameters}


# What a family's config needs after `correct_config` has set its RoPE.
FAMILY_ROPE = {"ministral3": ministral3_rope, "olmo3": olmo3_rope, "nemotron_h": no_rope, "gpt2": no_rope,
               "gpt_bigcode": no_rope, "gpt_oss": gpt_oss_rope,
               "deepseek_v3": latent_rope, "deepseek_v2": latent_rope, "youtu": latent_rope,
               "deepseek_v32": latent_rope, "glm_moe_dsa": latent_rope, "glm4_moe": whole_head_rope}


def dequantized(tensor) -> np.ndarray:
    import gguf  # lazy: an extra (load.convert_gguf requires it first)

    return gguf.quants.dequantize(tensor.data, tensor.tensor_type)


def one_expert(stacked: dict[str, np.ndarray], tensor, expert: int, experts: int) -> np.ndarray:
    """Expert `expert` of a file's tensor stacked over the experts, dequantised once for all of them (kept in
    `stacked`, which the caller clears at the next tensor that is not an expert's)."""
    if tensor.name not in stacked:
        stacked[tensor.name] = dequantized(tensor)
    if stacked[tensor.name].shape[0] != experts:
        raise MinitronError(f"cannot read this GGUF file: its {tensor.name} holds {stacked[tensor.name].shape[0]} "
                            f"experts, and its keys say {experts}")
    return stacked[tensor.name][expert]


def read_weights(meta: Metadata, tensors: dict, shapes: dict[str, tuple], config):
    """Each parameter (name -> shape) from its GGUF tensor, one at a time: dequantised, its q/k rows back in Hugging
    Face's rotary layout where llama.cpp's graph interleaves them, norms stored as 1 + w back to w (Apertus's xIELU
    scalars from their keys). A missing tensor, one of another shape, or one left over (a part the config does not
    describe) is refused; a mixture of experts' stacked tensors are split into one an expert (Granite-MoE's gate and up
    tensors joined into its one)."""
    arch = gguf_arch(config)
    names = tensor_names(arch, config.num_hidden_layers)
    used = {name for name in tensors if name.startswith("rope_")}  # RoPE factors: read by correct_config
    stacked: dict[str, np.ndarray] = {}  # a layer's experts' tensors, dequantised once for all its experts
    for key, shape in shapes.items():
        if match := XIELU_TENSOR.fullmatch(key):
            yield key, xielu_scalar(meta, match[2], int(match[1]), shape)
            continue
        name, expert = gguf_name(names, key, config.model_type, num_experts(config))
        if name not in tensors:
            raise MinitronError(f"cannot read this {arch} GGUF file: it has no tensor {name} (the model's {key})")
        if gate_up := fused_gate_up(key):  # Granite-MoE's every expert's gate rows, then its up rows, from two tensors
            used.update(gate_up)
            data = np.concatenate([dequantized(tensors[n]) for n in gate_up], 1)
        elif oss := oss_in_gguf(key, config.model_type):  # GPT-OSS's experts: gate and up apart, transposed
            used.update(oss[0])
            data = oss_read(oss[1], [dequantized(tensors[n]) for n in oss[0]])
        elif experts := experts_in_gguf(key):  # 3D experts stored as held (Granite-MoE SWA's): gate's, then up's rows
            used.update(experts)
            data = np.concatenate([dequantized(tensors[n]) for n in experts], 1)
        elif mla := mla_in_gguf(key):  # multi-head latent attention's keys and values, apart
            used.update(mla)
            data = mla_read([dequantized(tensors[n]) for n in mla])
        elif qkvz := qkvz_in_gguf(key):  # Qwen3-Next's queries, keys and values, and z, apart
            used.update(qkvz)
            data = qkvz_read([dequantized(tensors[n]) for n in qkvz], config)
        elif mlp := granite_mlp_in_gguf(key, num_experts(config), arch):  # Granite 4's MLP: gate and up rows joined
            used.update(mlp)
            data = np.concatenate([dequantized(tensors[n]) for n in mlp], 0)
        elif mamba := mamba_in_gguf(key):  # Nemotron-H's and Granite 4's Mamba-2 tensors the converter writes otherwise
            data = mamba_read(mamba[1], dequantized(tensors[name]), shape)
        elif delta := delta_in_gguf(key):  # Qwen3.5's and Qwen3-Next's Gated DeltaNet's
            data = delta_stored(delta[1], dequantized(tensors[name]), config, back=True).reshape(shape)
        elif name.endswith(".shortconv.conv.weight"):  # LFM2's filters: (channels, taps) to (channels, 1, taps)
            data = dequantized(tensors[name])[:, None]
        elif name.endswith(".exp_probs_b.bias"):  # a router's steering bias (ERNIE 4.5's one row of experts)
            data = dequantized(tensors[name]).reshape(shape)
        elif expert is None:
            stacked.clear()
            data = dequantized(tensors[name])
        else:
            data = one_expert(stacked, tensors[name], expert, num_experts(config))
        if (transposed := arch_of(config).transposed) and re.search(transposed, key):  # (GPT-2's Conv1D weights)
            data = data.T
        if tuple(data.shape) != shape:
            raise MinitronError(f"cannot read this GGUF file: its {name} is {tuple(data.shape)}, and the model its "
                                f"keys describe has {key} of {shape}")
        if arch_of(config).qkv_grouped and f".{arch_of(config).qkv}." in key:  # (Falcon's; GPT-NeoX's, whose config
            # names no KV heads: every head its own)
            heads = config.num_attention_heads
            data = qkv_by_group(data, heads, getattr(config, "num_key_value_heads", None) or heads)
        if arch in INTERLEAVED_ROTARY and ".self_attn.q_proj." in key:
            data = halve_rotary(data, config.num_attention_heads, rotary_dims(config))
        elif arch in INTERLEAVED_ROTARY and ".self_attn.k_proj." in key:
            data = halve_rotary(data, config.num_key_value_heads, rotary_dims(config))
        if stored_plus_one(config.model_type, key):
            data = data - 1.0
        used.add(name)
        yield key, torch.from_numpy(np.array(data, dtype=np.float32))  # a copy: the reader's are read-only maps
    if set(tensors) - used:
        raise MinitronError(f"cannot read this GGUF file: its tensors {sorted(set(tensors) - used)[:3]} have no "
                            f"place in the {config.model_type} model its keys describe")
