"""A GGUF file's RoPE and attention settings, as llama.cpp reads them: the head size, the rotated part of each head,
RoPE scaling (linear, YaRN, Llama 3.1's per-frequency factors, Phi-3's LongRoPE), and Gemma's layer pattern, local
RoPE base and query scale. `gguf_read` sets them on the config it reads from the file's other keys (transformers' own
GGUF loader leaves them out: with it a Gemma, a Phi-4-mini or a Llama 3.2 file converted to a different model,
silently); what has no Hugging Face equivalent is refused in one line.

Each key is the one `minitron.export` writes and llama.cpp reads.
"""
from __future__ import annotations

import math

import numpy as np

from minitron.arch import head_dim, pin_head_dim
from minitron.errors import MinitronError

# Gemma (by Hugging Face model type): the layer count at which llama.cpp takes a model for the 27B and scales its
# queries by 1/sqrt(hidden/heads), not 1/sqrt(head size); export folds a model's own scale into its weights by it.
GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3_text": 62}
GEMMA_ARCHES = ("gemma2", "gemma3")  # llama.cpp's names of the Gemma graphs


def rope_parameters(config, layer_type: str = "full_attention") -> dict:
    """The RoPE settings of one kind of layer (Gemma 3 keeps one set per layer type) or of every layer."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return rope[layer_type] if isinstance(rope.get(layer_type), dict) else rope


def rotary_dims(config) -> int:
    """The channels of each head that RoPE rotates: all, or a part (Nemotron's, Phi-4-mini's, Bamba's
    partial_rotary_factor)."""
    partial = rope_parameters(config).get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    return int(head_dim(config) * partial)


def gemma_query_size(config) -> int:
    """The size whose 1/sqrt llama.cpp scales a Gemma's queries by: hidden/heads at the 27B's layer count, else the
    head size (transformers: `query_pre_attn_scalar`, which export folds into the weights as its ratio to this)."""
    if config.num_hidden_layers == GEMMA_27B_LAYERS[config.model_type]:
        return config.hidden_size // config.num_attention_heads
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
GEMMA3_PERIOD = 6  # llama.cpp's default sliding-window pattern of Gemma 3 (every sixth layer global)


class Metadata:
    """A GGUF file's keys and its small tensors (the RoPE factors), read once."""

    def __init__(self, reader):
        self.arch = reader.fields["general.architecture"].contents()
        self.fields = reader.fields
        self.tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors
                        if t.name.startswith("rope_")}

    def get(self, key: str, default=None):
        field = self.fields.get(f"{self.arch}.{key}")
        return field.contents() if field is not None else default


def correct_config(config, meta: Metadata) -> None:
    """Set on `config` (read from the file's common keys) its head size, RoPE, window and Gemma's settings."""
    head = meta.get("attention.key_length")
    if head:
        pin_head_dim(config, int(head))
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = {"rope_type": "default", "rope_theta": float(meta.get("rope.freq_base", 10000.0))}
    dims = meta.get("rope.dimension_count")
    if dims and int(dims) != head:
        rope["partial_rotary_factor"] = int(dims) / head
    rope.update(rope_scaling(meta, head, rope))
    if "original_max_position_embeddings" in rope and hasattr(config, "original_max_position_embeddings"):
        config.original_max_position_embeddings = rope["original_max_position_embeddings"]  # Phi-3 reads this one
    if meta.arch in GEMMA_ARCHES:
        gemma(config, meta, rope)
    else:
        config.rope_parameters = rope
    if meta.get("attention.sliding_window") and hasattr(config, "sliding_window"):
        config.sliding_window = int(meta.get("attention.sliding_window"))


def rope_scaling(meta: Metadata, head: int, rope: dict) -> dict:
    """The RoPE scaling entries of `rope_parameters` the file carries: linear and YaRN as keys, Llama 3.1's as
    per-frequency factors (`llama3`), Phi-3's LongRoPE as short and long factors."""
    kind, factor = meta.get("rope.scaling.type"), meta.get("rope.scaling.factor")
    original = meta.get("rope.scaling.original_context_length")
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        return {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)}
    if kind not in (None, "none"):
        raise MinitronError(f"cannot convert a GGUF file with RoPE scaling {kind!r}: transformers has no equivalent")
    if "rope_factors_short.weight" in meta.tensors:
        return longrope(meta, original)
    if "rope_freqs.weight" in meta.tensors:
        dims = int(rope.get("partial_rotary_factor", 1.0) * head)
        return llama3(meta.tensors["rope_freqs.weight"], rope["rope_theta"], dims)
    return {}


def longrope(meta: Metadata, original) -> dict:
    """Phi-3's LongRoPE: its factors, its original context and (where it is not the one transformers derives from
    the context's growth) its attention factor."""
    if not original:
        raise MinitronError("cannot convert this GGUF file: LongRoPE factors without rope.scaling."
                            "original_context_length")
    out = {"rope_type": "longrope", "short_factor": meta.tensors["rope_factors_short.weight"].tolist(),
           "long_factor": meta.tensors["rope_factors_long.weight"].tolist(),
           "original_max_position_embeddings": int(original)}
    attention = meta.get("rope.scaling.attn_factor")
    growth = meta.get("context_length", original) / original
    derived = math.sqrt(1 + math.log(growth) / math.log(original)) if growth > 1 else 1.0
    if attention is not None and abs(attention - derived) > 1e-4:
        out["attention_factor"] = float(attention)
    return out


def llama3(factors: np.ndarray, theta: float, dims: int) -> dict:
    """Llama 3.1's RoPE scaling that gives these per-frequency factors (1 for the high frequencies, `factor` for the
    low, smoothed between, with Llama 3.1's low and high frequency factors 1 and 4), or a refusal."""
    low, high = 1.0, 4.0
    wavelengths = 2 * math.pi * theta ** (np.arange(0, dims, 2) / dims)
    factor = float(factors.max())
    smooth = (1 / factors - 1 / factor) / (1 - 1 / factor) if factor > 1 else np.zeros_like(factors)
    between = (factors > 1 + 1e-6) & (factors < factor - 1e-6)
    if between.any():  # each smoothed frequency gives the original context: (s (high - low) + low) x wavelength
        original = float(np.median((smooth[between] * (high - low) + low) * wavelengths[between]))
    else:  # any context between the last unscaled wavelength x high and the first scaled one
        kept, scaled = wavelengths[factors <= 1 + 1e-6], wavelengths[factors >= factor - 1e-6]
        original = math.sqrt(high * (kept.max() if kept.size else 1.0) * (scaled.min() if scaled.size else 1.0))
    s = np.clip((original / wavelengths - low) / (high - low), 0.0, 1.0)  # 1: kept, 0: divided by the factor
    expected = 1 / ((1 - s) / factor + s)
    if not np.allclose(expected, factors, rtol=1e-3):
        raise MinitronError("cannot convert this GGUF file: its RoPE frequency factors (rope_freqs) are not Llama "
                            "3.1's, which is the only per-frequency scaling transformers has")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": int(round(original))}


def gemma(config, meta: Metadata, rope: dict) -> None:
    """Gemma's query scale as llama.cpp computes it (export folds a model's own scale into its weights), and Gemma 3's
    layer pattern and local RoPE base; their RoPE."""
    config.query_pre_attn_scalar = gemma_query_size(config)
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if meta.get(key) is not None:
            setattr(config, key, float(meta.get(key)))
    if meta.arch == "gemma2":
        config.rope_parameters = rope
        return
    period = int(meta.get("attention.sliding_window_pattern", GEMMA3_PERIOD))
    config.layer_types = ["sliding_attention" if i % period < period - 1 else "full_attention"
                          for i in range(config.num_hidden_layers)]
    local = {"rope_type": "default", "rope_theta": float(meta.get("rope.freq_base_swa", 10000.0))}
    config.rope_parameters = {"full_attention": rope, "sliding_attention": local}
