"""How a Hugging Face model's tensors sit in a GGUF file of llama.cpp's graphs, both ways: the graph each family is
written as, and the layouts llama.cpp's converter changes (q/k rows of the graphs that rotate interleaved pairs, norms
stored as 1 + w, a head written out where a graph has no tied one), and what some graphs fix in their source.
`minitron.export` writes by it, `gguf_read` reads by it.
"""
from __future__ import annotations

import re

import numpy as np

from minitron.arch import FUSED_DELTA, DeltaRows, arch_of

# The llama.cpp graph each Hugging Face model type is written as, by the graph's name (Mistral as llama.cpp's "llama",
# as its own converter does), and read back from (`gguf_read.READ_AS`).
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "ministral3": "mistral3", "qwen2": "qwen2", "qwen3": "qwen3",
             "ernie4_5": "ernie4_5",  # Hugging Face's ERNIE already rotates interleaved pairs, as llama.cpp
             "seed_oss": "seed_oss", "hunyuan_v1_dense": "hunyuan-dense", "smollm3": "smollm3", "granite": "granite",
             "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "arcee": "arcee", "nemotron": "nemotron",
             "apertus": "apertus", "phi3": "phi3", "glm4": "glm4", "cohere": "command-r", "cohere2": "cohere2",
             "olmo2": "olmo2",
             "olmo3": "olmo2",  # OLMo 3: OLMo 2's graph with its window and layer pattern, as llama.cpp's converter
             "exaone4": "exaone4", "qwen3_moe": "qwen3moe",
             "mixtral": "llama",  # Mixtral: Llama's graph with experts, as llama.cpp's converter writes it
             "olmoe": "olmoe", "stablelm": "stablelm", "granitemoe": "granitemoe", "nemotron_h": "nemotron_h",
             "qwen3_5_text": "qwen35", "qwen3_5_moe_text": "qwen35moe", "qwen3_next": "qwen3next",
             "qwen2_moe": "qwen2moe", "gpt_oss": "gpt-oss",
             "granitemoehybrid": "granitehybrid", "lfm2": "lfm2", "lfm2_moe": "lfm2moe",
             "glm4_moe": "glm4moe", "ernie4_5_moe": "ernie4_5-moe", "dots1": "dots1", "hunyuan_v1_moe": "hunyuan-moe",
             "deepseek_v3": "deepseek2", "glm4_moe_lite": "deepseek2", "deepseek_v2": "deepseek2", "youtu": "deepseek2",
             "sarvam_mla": "deepseek2", "minimax_m2": "minimax-m2", "exaone_moe": "exaone-moe",
             "granitemoeshared": "granitemoe",  # (Granite-MoE's graph with a shared expert, as llama.cpp's converter)
             "deepseek_v32": "deepseek32",
             "solar_open": "glm4moe",  # (GLM-4.5's graph without dense layers, as llama.cpp's converter writes it)
             "starcoder2": "starcoder2", "afmoe": "afmoe", "glm_moe_dsa": "glm-dsa",
             "jais2": "jais2", "iquestcoder": "llama",  # (IQuest-Coder: Llama's, as llama.cpp's converter)
             "phi": "phi2", "glm": "chatglm", "exaone": "exaone",
             "internlm3": "llama",  # (InternLM3: Llama's, as llama.cpp's converter)
             "olmo": "olmo", "gpt_neox": "gptneox", "gpt2": "gpt2", "gpt_bigcode": "starcoder", "falcon": "falcon",
             "hy_v3": "hy_v3", "bamba": "granitehybrid",  # (Bamba: Granite 4's graph, as llama.cpp's converter)
             "granite_swa": "granite_swa",
             "granitemoe_swa": "granite_swa"}  # (Granite-MoE SWA: Granite SWA's graph, as llama.cpp's converter)


def gguf_arch(config) -> str:
    """The llama.cpp graph a model is written as (`GGUF_ARCH`; a Nemotron-H with experts, Nemotron 3's, as
    `nemotron_h_moe`)."""
    if config.model_type == "nemotron_h" and arch_of(config).moe:
        return "nemotron_h_moe"
    return GGUF_ARCH[config.model_type]


# Families whose norms are LayerNorms: their config's epsilon field (or the epsilon itself where transformers fixes
# it: OLMo 1's), written as `attention.layer_norm_epsilon` (the others: RMSNorm, rms_norm_eps).
LAYER_NORM_EPS = {"cohere": "layer_norm_eps", "cohere2": "layer_norm_eps", "nemotron": "norm_eps",
                  "stablelm": "layer_norm_eps", "starcoder2": "norm_epsilon", "jais2": "layer_norm_eps",
                  "phi": "layer_norm_eps", "olmo": 1e-5, "gpt_neox": "layer_norm_eps", "gpt2": "layer_norm_epsilon",
                  "gpt_bigcode": "layer_norm_epsilon", "falcon": "layer_norm_epsilon"}
# Families whose RMSNorms' epsilon is not the config's rms_norm_eps: its field (Nemotron-H's every norm's).
RMS_NORM_EPS = {"nemotron_h": "layer_norm_epsilon", "lfm2": "norm_eps", "lfm2_moe": "norm_eps"}
# Graphs that need an output tensor even when the Hugging Face model ties it to the embedding.
OUTPUT_REQUIRED = ("nemotron", "olmo2", "apertus", "olmoe", "stablelm", "qwen2moe", "gpt-oss", "dots1", "minimax-m2",
                   "exaone-moe", "phi2", "gptneox")
# Families whose norms compute x * (1 + w): llama.cpp's converter stores 1 + w (its graphs multiply by the weight); of
# Qwen3.5's and Qwen3-Next's, all but its Gated DeltaNet's gated norm (`stored_plus_one`).
NORM_PLUS_ONE = ("gemma", "gemma2", "gemma3_text", "nemotron", "qwen3_5_text", "qwen3_5_moe_text", "qwen3_next")
# Graphs that rotate q/k in Llama's interleaved layout (the converter permutes Hugging Face's halves into it).
INTERLEAVED_ROTARY = ("llama", "mistral3", "smollm3", "granite", "arcee", "olmo", "granitehybrid", "granite_swa")
# Apertus's xIELU activation: its scalars of each layer (Hugging Face's `model.layers.N.mlp.act_fn.NAME`, as stored),
# which llama.cpp's converter writes as one array key each, `xielu.NAME`, a value a layer, not as tensors.
XIELU = ("alpha_p", "alpha_n", "beta", "eps")
XIELU_TENSOR = re.compile(r"model\.layers\.(\d+)\.mlp\.act_fn\.(alpha_p|alpha_n|beta|eps)")
# A mixture of experts' stored tensors, one an expert and linear (`arch.stored_as`), which a GGUF file holds stacked
# over the experts, one tensor a layer and linear: (layer, block, expert, linear).
EXPERT_TENSOR = re.compile(r"(?:model|backbone)\.layers\.(\d+)\.(\w+)\.experts\.(\d+)\.(\w+)\.weight")


# Nemotron-H's and Granite 4's Mamba-2 tensors that llama.cpp's converter writes otherwise (`mamba_in_gguf`).
MAMBA_TENSOR = re.compile(r"(?:backbone\.layers\.(\d+)\.mixer|model\.layers\.(\d+)\.mamba)\."
                          r"(A_log|D|dt_bias|conv1d\.weight|norm\.weight)")


def mamba_in_gguf(key: str) -> tuple[str, str] | None:
    """The GGUF tensor of a Mamba-2 tensor (Nemotron-H's, Granite 4's) that llama.cpp's converter writes otherwise
    (`mamba_stored`), and which part it is (`A_log`, `D`, `dt_bias`, `conv1d.weight`, `norm.weight`); None for any other
    tensor."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if (m := MAMBA_TENSOR.fullmatch(key)) is None:
        return None
    T = gguf.MODEL_TENSOR
    kind, suffix = {"A_log": (T.SSM_A, ""), "D": (T.SSM_D, ""), "dt_bias": (T.SSM_DT, ".bias"),
                    "conv1d.weight": (T.SSM_CONV1D, ".weight"), "norm.weight": (T.SSM_NORM, ".weight")}[m[3]]
    return gguf.TENSOR_NAMES[kind].format(bid=int(m[1] or m[2])) + suffix, m[3]


def mamba_stored(part: str, data: np.ndarray, groups: int) -> np.ndarray:
    """A Mamba-2 tensor (`mamba_in_gguf`'s part) as llama.cpp's Mamba-2 graph reads it: A as -exp(A_log) and D as a
    column each (heads, 1), conv1d's weight without its channel axis (channels, kernel), the gated norm's weight a row
    a group (`n_groups`)."""
    if part == "A_log":
        return -np.exp(data)[:, None]
    if part == "D":
        return data[:, None]
    if part == "conv1d.weight":
        return data.reshape(data.shape[0], -1)
    return data.reshape(groups, -1) if part == "norm.weight" else data


def mamba_read(part: str, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `mamba_stored`: the Hugging Face tensor of `shape`."""
    return (np.log(-data) if part == "A_log" else data).reshape(shape)


def stored_plus_one(model_type: str, key: str) -> bool:
    """Whether a GGUF file stores the Hugging Face tensor `key` as 1 + w (a norm of a `NORM_PLUS_ONE` family)."""
    return model_type in NORM_PLUS_ONE and key.endswith("norm.weight") and ".linear_attn." not in key


# Qwen3.5's and Qwen3-Next's Gated DeltaNet tensors that llama.cpp's converter writes otherwise (`delta_stored`;
# Qwen3-Next's in_proj_qkvz, `qkvz_in_gguf`; its in_proj_ba is written as it is).
DELTA_TENSOR = re.compile(r"model\.layers\.(\d+)\.linear_attn\.(A_log|dt_bias|conv1d\.weight|in_proj_qkv\.weight|"
                          r"in_proj_z\.weight|in_proj_b\.weight|in_proj_a\.weight|out_proj\.weight)")


def delta_in_gguf(key: str) -> tuple[str, str] | None:
    """The GGUF tensor of a Gated DeltaNet tensor that llama.cpp's converter writes otherwise, and which part it is;
    None for any other tensor."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if (m := DELTA_TENSOR.fullmatch(key)) is None:
        return None
    T = gguf.MODEL_TENSOR
    kind, suffix = {"A_log": (T.SSM_A, ""), "dt_bias": (T.SSM_DT, ".bias"), "conv1d.weight": (T.SSM_CONV1D, ".weight"),
                    "in_proj_qkv.weight": (T.ATTN_QKV, ".weight"), "in_proj_z.weight": (T.ATTN_GATE, ".weight"),
                    "in_proj_b.weight": (T.SSM_BETA, ".weight"), "in_proj_a.weight": (T.SSM_ALPHA, ".weight"),
                    "out_proj.weight": (T.SSM_OUT, ".weight")}[m[2]]
    return gguf.TENSOR_NAMES[kind].format(bid=int(m[1])) + suffix, m[2]


def tiled(data: np.ndarray, axis: int, groups: int, per_group: int, head: int) -> np.ndarray:
    """Heads along `axis` (`head` entries each) from grouped, `per_group` a group, to tiled over the `groups` (the
    first head of every group, then the second of every group, ...); with groups and per_group swapped, back."""
    shape = data.shape
    split = data.reshape(*shape[:axis], groups, per_group, head, *shape[axis + 1:])
    return np.swapaxes(split, axis, axis + 1).reshape(shape)


def delta_stored(part: str, data: np.ndarray, config, back: bool = False) -> np.ndarray:
    """A Gated DeltaNet tensor (`delta_in_gguf`'s part) as llama.cpp's qwen35 graph reads it: its value heads tiled over
    the key heads (llama.cpp broadcasts each key head to its value heads that way), not grouped by key head as
    transformers holds them (its qwen3next graph reads them grouped: Qwen3-Next's are not tiled); A as -exp(A_log);
    conv1d's weight without its channel axis. `back`: the inverse, to a tensor of the Hugging Face model's layout
    (reshape it to the parameter's shape)."""
    k, v, d = config.linear_num_key_heads, config.linear_num_value_heads, config.linear_value_head_dim
    order = (1, v) if config.model_type in FUSED_DELTA else (v // k, k) if back else (k, v // k)  # (1, v): as they are
    keys = 2 * k * config.linear_key_head_dim  # in_proj_qkv's rows and conv1d's channels: queries, keys, then values
    if part == "A_log":
        data = np.log(-data) if back else -np.exp(data)
    if part in ("in_proj_qkv.weight", "conv1d.weight"):
        data = data.reshape(data.shape[0], -1)
        return np.concatenate([data[:keys], tiled(data[keys:], 0, *order, d)])
    if part == "out_proj.weight":
        return tiled(data, 1, *order, d)
    return tiled(data, 0, *order, d if part == "in_proj_z.weight" else 1)


QKVZ_TENSOR = re.compile(r"model\.layers\.(\d+)\.linear_attn\.in_proj_qkvz\.weight")


def qkvz_in_gguf(key: str) -> tuple[str, str] | None:
    """The GGUF tensors (queries, keys and values; z) Qwen3-Next's fused in_proj_qkvz is written as, else None."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if (m := QKVZ_TENSOR.fullmatch(key)) is None:
        return None
    return tuple(gguf.TENSOR_NAMES[kind].format(bid=int(m[1])) + ".weight"
                 for kind in (gguf.MODEL_TENSOR.ATTN_QKV, gguf.MODEL_TENSOR.ATTN_GATE))


def qkvz_stored(data: np.ndarray, config) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3-Next's in_proj_qkvz as llama.cpp's converter writes it: the rows of in_proj_qkv (queries, keys, values),
    then those of in_proj_z, apart (`DeltaRows.fused_order`)."""
    rows = DeltaRows.of_config(config)
    order = rows.fused_order()[0].numpy()
    return data[order[:rows.qkv_rows]], data[order[rows.qkv_rows:]]


def qkvz_read(parts: list[np.ndarray], config) -> np.ndarray:
    """Qwen3-Next's in_proj_qkvz from its GGUF tensors (`qkvz_stored`'s inverse)."""
    order = DeltaRows.of_config(config).fused_order()[0].numpy()
    return np.concatenate(parts)[np.argsort(order)]


# Granite-MoE's checkpoints store each layer's gate and up rows of every expert in one tensor, which a GGUF file holds
# as two (`fused_gate_up`).
GATE_UP_FUSED = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.input_linear\.weight")


def fused_gate_up(key: str) -> tuple[str, ...] | None:
    """The GGUF tensors (gate, up) a stored tensor of every expert's gate and up rows splits into, else None."""
    m = GATE_UP_FUSED.fullmatch(key)
    return experts_in_gguf(f"model.layers.{m[1]}.block_sparse_moe.experts.gate_up_proj") if m else None


# GPT-OSS's experts, stored as held in memory (`arch.OSS_EXPERTS`), which llama.cpp's converter writes otherwise
# (`oss_stored`): gate and up apart, each weight transposed to (experts, rows, columns), their biases.
OSS_TENSOR = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(_bias)?")


def oss_in_gguf(key: str, model_type: str) -> tuple[tuple[str, ...], str] | None:
    """The GGUF tensors a GPT-OSS experts' tensor is written as (gate's and up's, or down's), and which one it is;
    None for any other tensor (other families' experts have the same names in memory, in another layout)."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if model_type != "gpt_oss" or (m := OSS_TENSOR.fullmatch(key)) is None:
        return None
    T, suffix = gguf.MODEL_TENSOR, ".bias" if m[3] else ".weight"
    kinds = (T.FFN_GATE_EXP, T.FFN_UP_EXP) if m[2] == "gate_up_proj" else (T.FFN_DOWN_EXP,)
    return tuple(gguf.TENSOR_NAMES[kind].format(bid=int(m[1])) + suffix for kind in kinds), m[2] + (m[3] or "")


def oss_stored(part: str, data: np.ndarray) -> list[np.ndarray]:
    """A GPT-OSS experts' tensor (`oss_in_gguf`'s part) as llama.cpp's gpt-oss graph reads it: gate's and up's columns
    (in turn) apart, the weights transposed to (experts, rows, columns)."""
    if part == "gate_up_proj":
        data = data.swapaxes(1, 2)  # (experts, 2 x neurons, hidden)
        return [np.ascontiguousarray(data[:, 0::2]), np.ascontiguousarray(data[:, 1::2])]
    if part == "gate_up_proj_bias":
        return [np.ascontiguousarray(data[:, 0::2]), np.ascontiguousarray(data[:, 1::2])]
    return [np.ascontiguousarray(data.swapaxes(1, 2) if part == "down_proj" else data)]


def oss_read(part: str, stored: list[np.ndarray]) -> np.ndarray:
    """The inverse of `oss_stored`: the Hugging Face tensor."""
    if part == "down_proj":
        return stored[0].swapaxes(1, 2)
    if part == "down_proj_bias":
        return stored[0]
    gate, up = stored
    pairs = np.stack([gate, up], axis=2).reshape(gate.shape[0], 2 * gate.shape[1], *gate.shape[2:])  # in turn
    return pairs.swapaxes(1, 2) if part == "gate_up_proj" else pairs


# Multi-head latent attention's kv_b_proj (each head's keys' unrotated channels, then its values, from the latent),
# which llama.cpp's converter writes as two tensors, the keys' transposed (`mla_stored`): its deepseek2 graph
# multiplies the queries into the latent by them and the values out of it.
MLA_KV_B = re.compile(r"model\.layers\.(\d+)\.self_attn\.kv_b_proj\.weight")


def mla_in_gguf(key: str) -> tuple[str, str] | None:
    """The GGUF tensors (keys', values') a multi-head latent attention's kv_b_proj is written as; None for any other
    tensor."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if (m := MLA_KV_B.fullmatch(key)) is None:
        return None
    return tuple(f"{gguf.TENSOR_NAMES[kind].format(bid=int(m[1]))}.weight"
                 for kind in (gguf.MODEL_TENSOR.ATTN_K_B, gguf.MODEL_TENSOR.ATTN_V_B))


def mla_stored(data: np.ndarray, config) -> list[np.ndarray]:
    """kv_b_proj's rows (heads x (unrotated key channels + value channels), latent) as llama.cpp's graph reads them:
    the keys' (heads, latent, key channels), the values' (heads, value channels, latent)."""
    heads, nope = config.num_attention_heads, config.qk_nope_head_dim
    per_head = data.reshape(heads, nope + config.v_head_dim, data.shape[-1])
    return [np.ascontiguousarray(per_head[:, :nope].swapaxes(1, 2)), np.ascontiguousarray(per_head[:, nope:])]


def mla_read(stored: list[np.ndarray]) -> np.ndarray:
    """The inverse of `mla_stored`: kv_b_proj's weight."""
    keys, values = stored
    return np.concatenate([keys.swapaxes(1, 2), values], 1).reshape(-1, values.shape[-1])


# Granite 4's MLP (`shared_mlp`: its gate and up rows in one input_linear), which llama.cpp's converter writes as a
# dense model's three tensors, or with experts beside it as a shared expert's (`granite_mlp_in_gguf`).
GRANITE_MLP = re.compile(r"model\.layers\.(\d+)\.shared_mlp\.(input_linear|output_linear)\.weight")


# Graphs that read a shared expert's gate and up rows as one tensor, `ffn_up_shexp` (SwiGLU of its two halves)
SHEXP_FUSED = ("granite_swa",)


def granite_mlp_in_gguf(key: str, experts: int, graph: str = "") -> tuple[str, ...] | None:
    """The GGUF tensors a Granite 4's MLP tensor (or Granite-MoE's shared expert's) is written as: input_linear's gate
    and up halves (one tensor in the `SHEXP_FUSED` graphs), or output_linear as the down projection (a shared
    expert's where the model has `experts`); None for any other tensor."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if (m := GRANITE_MLP.fullmatch(key)) is None:
        return None
    T = gguf.MODEL_TENSOR
    gate_up = ((T.FFN_UP_SHEXP,) if graph in SHEXP_FUSED else (T.FFN_GATE_SHEXP, T.FFN_UP_SHEXP)) if experts \
        else (T.FFN_GATE, T.FFN_UP)
    kinds = gate_up if m[2] == "input_linear" else (T.FFN_DOWN_SHEXP if experts else T.FFN_DOWN,)
    return tuple(f"{gguf.TENSOR_NAMES[kind].format(bid=int(m[1]))}.weight" for kind in kinds)


def experts_in_gguf(key: str) -> tuple[str, ...] | None:
    """The GGUF tensors transformers' 3D experts' tensor `key` (`...experts.gate_up_proj`: gate and up rows; ungated
    experts' `...experts.up_proj`; `...experts.down_proj`) is written as, in the order of its rows; None for any other
    tensor."""
    import gguf  # lazy: an extra, and CLI start-up speed

    if (m := re.fullmatch(r"model\.layers\.(\d+)\.\w+\.experts\.(gate_up_proj|up_proj|down_proj)", key)) is None:
        return None
    T = gguf.MODEL_TENSOR
    kinds = {"gate_up_proj": (T.FFN_GATE_EXP, T.FFN_UP_EXP), "up_proj": (T.FFN_UP_EXP,),
             "down_proj": (T.FFN_DOWN_EXP,)}[m[2]]
    return tuple(f"{gguf.TENSOR_NAMES[kind].format(bid=int(m[1]))}.weight" for kind in kinds)


def stacked_key(layer: int, block: str, linear: str) -> str:
    """The Hugging Face name gguf-py maps to a layer's stacked experts' tensor of one linear (`ffn_gate_exps`; Nemotron
    3's experts, in its `mixer`, under the `mlp` name llama.cpp's converter merges them to)."""
    return f"model.layers.{layer}.{'mlp' if block == 'mixer' else block}.experts.{linear}.weight"


# What some graphs fix in llama.cpp's source, which no GGUF key carries (export refuses a model that differs,
# `export_checks`; reading a file takes it): Command R+'s q/k norms at this many layers or more, none below;
# Cohere 2's every n-th layer global (no RoPE, no window); SmolLM3's every n-th layer without RoPE.
COMMAND_R_PLUS_LAYERS = 64
COHERE2_GLOBAL_STEP = 4
SMOLLM3_NO_ROPE_STEP = 4
AFMOE_GLOBAL_STEP = 4  # AFMoE's every 4th layer global and without RoPE, the others sliding with it


def global_every(step: int, layers: int) -> list[str]:
    """The layer kinds of a graph that makes every `step`-th layer global and the others sliding (Cohere 2's, AFMoE's),
    as transformers' `layer_types` names them."""
    return ["full_attention" if (i + 1) % step == 0 else "sliding_attention" for i in range(layers)]


# EXAONE 4's sliding layers exactly at this many layers (the 32B's), every 4th global (and without RoPE); none below
# or above, every layer global with RoPE; the window 4096 unless the file says otherwise.
EXAONE4_HYBRID_LAYERS, EXAONE4_GLOBAL_STEP, EXAONE4_WINDOW = 64, 4, 4096


# Graphs that gguf-py (0.19, the newest on PyPI) does not know, and the graph whose tensors they have, by the same names
# (DeepSeek V3.2's: GLM-5's, the latent attention, experts and indexer of both; Hy3's: dots.llm1's, q/k norms, dense
# layers, experts with the bias that steers their picks and a shared expert; Granite SWA's: MiMo-V2's, Llama's layer
# with attention sinks).
TENSORS_AS = {"deepseek32": "glm-dsa", "hy_v3": "dots1", "granite_swa": "mimo2"}
# Graphs that read the bias steering a router's picks as `exp_probs_b` itself, with no `.bias` (Hy3's)
BARE_PROBS_B = ("hy_v3",)


def tensor_names(arch: str, layers: int):
    """gguf-py's map of Hugging Face tensor names to this graph's (`.get_name(key, try_suffixes=...)`)."""
    import gguf  # lazy: an extra, and CLI start-up speed

    by_name = {name: member for member, name in gguf.MODEL_ARCH_NAMES.items()}
    names = gguf.get_tensor_name_map(by_name[TENSORS_AS.get(arch, arch)], layers)
    names.graph = arch  # (for the names one graph gives otherwise: `gguf_tensor`)
    return names


def gguf_tensor(names, key: str) -> str | None:
    """The GGUF tensor a Hugging Face tensor is written as, by gguf-py's map (`tensor_names`; some graphs' stacked
    experts it knows without the `model.` prefix, as llama.cpp's converter names them: LFM2-MoE's); GPT-OSS's sinks
    with the `.weight` and LFM2-MoE's expert_bias with the `.bias` llama.cpp's converter gives them (GLM-4.5's and
    ERNIE 4.5's e_score_correction_bias it renames e_score_correction.bias, which gguf-py maps; Hy3's graph reads it
    with no suffix, `BARE_PROBS_B`); an untied head as `output.weight` where gguf-py's list of the graph's tensors
    leaves it out (LFM2-MoE's, whose graph reads it); Granite-MoE SWA's router by Mixtral's name for it."""
    if key.endswith(".e_score_correction_bias"):
        key = key.removesuffix("_bias") + ".bias"
    if key.endswith(".block_sparse_moe.router.weight"):  # (Granite-MoE SWA's router, stored as held: Mixtral's name)
        key = key.replace(".router.", ".gate.")
    name = names.get_name(key, try_suffixes=(".weight", ".bias")) or \
        names.get_name(key.removeprefix("model."), try_suffixes=(".weight", ".bias"))
    if name is None and key == "lm_head.weight":
        return "output.weight"
    if name is not None and key.endswith(".self_attn.sinks"):
        return f"{name}.weight"
    if name is not None and key.endswith(".expert_bias"):
        name = f"{name}.bias"
    if name is not None and name.endswith(".exp_probs_b.bias") and getattr(names, "graph", None) in BARE_PROBS_B:
        return name.removesuffix(".bias")
    return name


def qkv_by_kind(w: np.ndarray, heads: int, groups: int) -> np.ndarray:
    """q/k/v rows (or biases) fused group by group (`Arch.qkv_grouped`: each of `groups` KV groups' query heads, then
    its key and its value head: Falcon's; GPT-NeoX's, a group a head), as llama.cpp's converters write them: every
    query row, then every key row, then every value row."""
    g = w.reshape(groups, heads // groups + 2, -1, *w.shape[1:])
    return np.concatenate([g[:, :-2].reshape(-1, *w.shape[1:]), g[:, -2].reshape(-1, *w.shape[1:]),
                           g[:, -1].reshape(-1, *w.shape[1:])])


def qkv_by_group(w: np.ndarray, heads: int, groups: int) -> np.ndarray:
    """The inverse of `qkv_by_kind`: the rows group by group."""
    dim = w.shape[0] // (heads + 2 * groups)
    q, k, v = np.split(w, [heads * dim, (heads + groups) * dim])
    parts = [q.reshape(groups, heads // groups, dim, *w.shape[1:]), k.reshape(groups, 1, dim, *w.shape[1:]),
             v.reshape(groups, 1, dim, *w.shape[1:])]
    return np.concatenate(parts, axis=1).reshape(w.shape)


def interleave_rotary(w: np.ndarray, heads: int, rotated: int | None = None) -> np.ndarray:
    """Reorder each head's q/k output rows from Hugging Face's rotary layout (first half, second half)
    to llama.cpp's Llama layout (pairs side by side), as llama.cpp's own converter does; where RoPE turns only the
    first `rotated` rows of a head (Bamba's half), those alone."""
    return _rotary_rows(w, heads, rotated, interleave=True)


def halve_rotary(w: np.ndarray, heads: int, rotated: int | None = None) -> np.ndarray:
    """Each head's q/k rows from llama.cpp's interleaved layout back to Hugging Face's (first half, second half): the
    inverse of `interleave_rotary`."""
    return _rotary_rows(w, heads, rotated, interleave=False)


def _rotary_rows(w: np.ndarray, heads: int, rotated: int | None, interleave: bool) -> np.ndarray:
    h = w.reshape(heads, -1, *w.shape[1:])
    rot = rotated or h.shape[1]
    turned = h[:, :rot].reshape(heads, *((2, rot // 2) if interleave else (rot // 2, 2)), *w.shape[1:])
    turned = turned.swapaxes(1, 2).reshape(heads, rot, *w.shape[1:])
    return np.concatenate([turned, h[:, rot:]], axis=1).reshape(w.shape)
