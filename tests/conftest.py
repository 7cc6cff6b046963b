"""Tiny random models of every supported family, built in the test (no downloads)."""
from __future__ import annotations

import pytest
import torch
from transformers import (AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, MistralConfig, NemotronConfig,
                          Qwen2Config, Qwen3Config)

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text", "nemotron"]
SIZES = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256)


def tiny_config(family: str, tie: bool = False, **overrides):
    sizes = {**SIZES, "tie_word_embeddings": tie, **overrides}
    if family == "llama":
        return LlamaConfig(**sizes)
    if family == "mistral":
        return MistralConfig(**sizes, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**sizes)
    if family == "qwen3":
        return Qwen3Config(**sizes)
    if family == "gemma3_text":
        return Gemma3TextConfig(**sizes, sliding_window=8, query_pre_attn_scalar=16,
                                layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                                             "full_attention"][: sizes["num_hidden_layers"]])
    if family == "nemotron":
        return NemotronConfig(**sizes, hidden_act="relu2", partial_rotary_factor=0.5)
    raise ValueError(family)


def tiny_model(family: str, tie: bool = False, seed: int = 0, **overrides):
    """A random tiny model in eval mode; norms get random weights so that pruning them matters."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, tie, **overrides), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param
