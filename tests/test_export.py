"""GGUF export of every family minitron prunes: transformers' own GGUF loader reads the file back and gives the
Hugging Face model's logits, llama.cpp itself loads it and continues a prompt greedily as transformers does, the
metadata and the Ollama Modelfile say what they should."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from conftest import CHATML, WORDS, cli_error, load_benchmark, run_cli, save_tiny, tiny_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from minitron.chat.templates import TEMPLATES
from minitron.errors import MinitronError
from minitron.export import FAMILY_KEYS, PRE_TOKENIZERS, Exported, export, pre_tokenizer_name
from minitron.export_checks import LLAMA_CPP_HIDDEN_WIDE
from minitron.export_ollama import CHATML_GO, NEMOTRON_GO, modelfile
from minitron.export_quant import TYPES, ggml_library_path, ggml_quantize, tensor_type
from minitron.io import one_builder
from minitron.load import default_gguf, gguf_key, load_model, load_tokenizer, resolve_model, write_conversion
from minitron.shards import Checkpoint

T = gguf.GGMLQuantizationType
VOCAB = 320  # room for a byte-level BPE vocabulary (256 bytes + specials + merges) with unused rows after it
# (atol, rtol) of the reloaded model's logits (|logits| < 2) against the fp32 Hugging Face model. Measured worst
# errors: f16 1.2e-3, bf16 5e-3, q8_0 1.4e-2 (int8 blocks of 32 with one f16 scale), q4_0 0.33 (4 bits: these
# random weights lose about a tenth of their size to rounding); a wrong q/k rotary layout gives 0.49, Gemma 3 norms
# without the +1 or with transformers' own Gemma 3 settings 0.46. Against the same model with its weights rounded as
# the file stores them (benchmarks/llama_cpp_check.quantized_reference) every dtype reloads within ROUNDED.
TOLERANCE = {"f16": (2e-3, 1e-2), "bf16": (1e-2, 1e-2), "q8_0": (3e-2, 2e-2), "q4_0": (0.5, 0.1)}
ROUNDED = (1e-4, 1e-4)
# llama.cpp's picks: how far below transformers' top logit (of the rounded model) each may be. llama.cpp rounds
# activations to 8 bits in quantised products; measured worst: f16 0, bf16 0, q8_0 2.2e-3, q4_0 1.9e-3, q4_k_m and
# q6_k 1e-2 (on the larger models below).
LLAMA_CPP_ATOL = {"f16": 2e-3, "bf16": 1e-2, "q8_0": 3e-2, "q4_0": 3e-2, "q4_k_m": 3e-2, "q6_k": 3e-2}
SHARPEN = 8.0
TEXT = "the teacher prunes 123 heads\n  and the student keeps them!"
# a model whose rows split into k-quant blocks of 256 (the tiny ones fall back to 32-blocks); its attention is not
# sharpened: with 32-wide heads, x8 makes attention so peaked that 8-bit activations flip it
KQUANT_SIZES = dict(hidden_size=256, intermediate_size=512, head_dim=32, sharpen=1.0)
# Llama 3.1's RoPE scaling with an original context of 64: of the 8 frequencies of a 16-wide head, those whose
# wavelength exceeds 64 are divided by 8, those between 16 and 64 smoothed, the first kept.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
LINEAR_ROPE = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}
# EXAONE 4 as llama.cpp takes it: every layer global with RoPE (no window: the 1.2B), or the 32B's 64 layers, every
# 4th global (without RoPE) and the others sliding
EXAONE4_GLOBAL = dict(sliding_window=None, layer_types=["full_attention"] * 4)
EXAONE4_32B = dict(num_hidden_layers=64, sliding_window=8,
                   layer_types=(["sliding_attention"] * 3 + ["full_attention"]) * 16)
# OLMoE as released: as many KV heads as query heads (llama.cpp's olmoe graph builds its k norm hidden_size wide)
MHA = dict(num_key_value_heads=8)
# A router that picks its experts within groups (DeepSeek V3's 4 of 8; llama.cpp's graphs read the group keys: without
# them the tiny DeepSeek V3 and GLM-4.5 fall 0.39 and 0.35 short, by hand)
EXPERT_GROUPS = dict(n_group=2, topk_group=1)
DIRECT_QUERIES = dict(q_lora_rank=None)  # latent attention's queries from q_proj, without a latent (DeepSeek-V2-Lite's)
# transformers' Youtu zeroes the embedding row of its pad_token_id whenever it loads one (its _init_weights writes
# through .data), and a file's padding token is read as the pad token: the model its pad token's (0, the tokenizer's)
YOUTU_PAD = dict(pad_token_id=0)
# DeepSeek's YaRN (V2-Lite's mscale and mscale_all_dim; V3's are 1), from a 16-token original context: written without
# its yarn_log_multiplier the tiny DeepSeek V3 falls 0.50 short in llama.cpp, with mscale_all_dim unscaled 0.60
DEEPSEEK_YARN = {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0,
                                     "original_max_position_embeddings": 16, "beta_fast": 32.0, "beta_slow": 1.0,
                                     "mscale": 0.707, "mscale_all_dim": 0.707}}
# Every key picked by a DeepSeek V3.2's or GLM-5's indexer (index_topk past the sequence): llama.cpp's bf16 files
# round the activations and flip near-tied picks of these random models (with six picked, 0.15-0.37 short in three of
# four cases, V3.2's and GLM-5's, tied or not; f16 files 0 on an Intel Xeon, one pick of 16 on an AMD EPYC:
# `picks_flipped`); and DeepSeek V3.2's YaRN (mscale and mscale_all_dim 1, as released)
ALL_KEYS = {"index_topk": 64}
DEEPSEEK_V32_YARN = {"rope_parameters": {**DEEPSEEK_YARN["rope_parameters"], "mscale": 1.0, "mscale_all_dim": 1.0},
                     **ALL_KEYS}
# YaRN as the released OLMo 3 configs write it: the attention factor spelt out, 0.1 ln(factor) + 1 (what llama.cpp and
# transformers derive), and the betas at their defaults
OLMO3_YARN = {**YARN_ROPE, "attention_factor": 0.1 * math.log(4.0) + 1, "beta_fast": 32.0, "beta_slow": 1.0}
# Ministral 3's YaRN from an original context of 16, past which its queries are scaled up: by llama_4_scaling_beta
# 1.0 (the stock 0.1 moves these tiny models' picks too little to check that llama.cpp scales them as transformers)
MINISTRAL3_ROPE = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 16.0, "original_max_position_embeddings": 16,
                   "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                   "llama_4_scaling_beta": 1.0}


# Granite 4.0 Micro's kind: every layer attention, with RoPE (llama.cpp's granitehybrid graph switches RoPE on by
# `rope.scaling.finetuned`); its multipliers 1 and 1/sqrt(head size), since Granite's flatten what positions do in the
# tiny model (with them, q/k rows written not interleaved went unseen; so, they fall 0.15 short, measured)
GRANITE_MICRO = {"layer_types": ["full_attention"] * 4, "position_embedding_type": "rope", "embedding_multiplier": 1.0,
                 "residual_multiplier": 1.0, "attention_multiplier": 0.25, "logits_scaling": 1.0}
# Granite SWA's multipliers at 1 (Granite 3's flatten what positions and sinks do in the tiny model): with them, its
# second layer's RoPE written as on (no rope_pattern) falls 0.05 short in llama.cpp (14 of 16 picks), measured
GRANITE_SWASH = {"embedding_multiplier": 1.0, "residual_multiplier": 1.0, "attention_multiplier": 1.0,
                 "layer_rope_theta": [1e4, 0, 1e4, 1e4]}
# Nemotron 3 with a Mamba-2 layer, as released (llama.cpp fails to allocate a Nemotron-H's state without one)
NEMOTRON_3_MAMBA = {"layers_block_type": ["linear_attention", "moe", "full_attention", "moe"]}
# LFM2's MLP as its released configs give it: neurons derived from intermediate_size (2/3 of 144, a multiple of 32: 96)
LFM2_AUTO = {"block_auto_adjust_ff_dim": True, "intermediate_size": 144, "block_multiple_of": 32}


def scaled_rope(family: str, rope: dict) -> dict:
    """save_model's settings for a model whose (global) layers' RoPE is `rope`: Gemma 3's local layers keep theirs,
    OLMo 3's have plain RoPE of the same base (transformers' reading of an OLMo 3 config's `rope_scaling`)."""
    if family == "gemma3_text":
        rope = {"full_attention": {**rope, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    elif family == "olmo3":
        rope = {"full_attention": rope, "sliding_attention": {"rope_type": "default", "rope_theta": rope["rope_theta"]}}
    return {"rope_parameters": rope}


def byte_level_tokenizer(split: str | None = None):
    """A byte-level BPE (the benchmark's, `tiny_tokenizer`) trained here on a few words: 300 tokens, with a chat
    template."""
    fast = load_benchmark("llama_cpp_check").tiny_tokenizer(split, " ".join(WORDS))
    fast.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    return fast


def sentencepiece_tokenizer():
    """A sentencepiece-style BPE (Llama 2 / Mistral 7B style: `▁` for spaces, bos added, byte fallback)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def save_model(path, family: str, tokenizer, tie: bool = False, sharpen: float = SHARPEN, **sizes):
    """A tiny random model of `family` with `tokenizer`; Qwen, Nemotron, Phi-3 and Cohere keep head_dim as below,
    Cohere has no q/k norms (Command R: llama.cpp takes them only at 64 layers, Command R+'s) and Seed-OSS no o_proj
    bias (the released model has none; llama.cpp's graph neither)."""
    # transformers' GGUF loader does not read the head size for Qwen3: it takes the config default (128), so the
    # tiny model uses it. The llama.cpp that node-llama-cpp 3.22.1 ships builds some families' attention hidden_size
    # wide (Qwen2's, as transformers' loader takes it, too), so their heads x head size is the hidden size here.
    sizes = {"head_dim": 128 if family == "qwen3" else 8 if family in LLAMA_CPP_HIDDEN_WIDE else 16,
             **({"use_qk_norm": False} if family == "cohere" else {}),
             **({"attention_out_bias": False} if family == "seed_oss" else {}), **sizes}
    model = tiny_model(family, tie=tie, vocab_size=VOCAB, **sizes)
    llama_cpp_check().sharpen(model, sharpen)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def own_gemma3(path, tokenizer):
    """A tiny Gemma 3 whose settings llama.cpp does not assume: queries scaled by query_pre_attn_scalar 40 (not the
    head size 16; export folds the ratio into the q-norm), local layers' RoPE base 100 (not 10,000), window 5."""
    rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}
    model = tiny_model("gemma3_text", vocab_size=VOCAB, rope_parameters=rope)
    model.config.query_pre_attn_scalar, model.config.sliding_window = 40, 5
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.scaling = 40 ** -0.5
            layer.self_attn.config.sliding_window = 5
            layer.self_attn.sliding_window = 5 if layer.self_attn.is_sliding else None
            layer.self_attn.q_proj.weight.mul_(SHARPEN)
            layer.self_attn.k_proj.weight.mul_(SHARPEN)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def own_gemma2(path, tokenizer):
    """A tiny Gemma 2 whose queries are scaled by query_pre_attn_scalar 40, not llama.cpp's 1/sqrt(head size 16):
    export folds the ratio into q_proj (Gemma 2 has no q-norm)."""
    return save_model(path, "gemma2", tokenizer, tie=True, query_pre_attn_scalar=40)


def reload(path, config=None):
    """transformers' GGUF loader; `config`: the Hugging Face directory's own (its Gemma 3 reading misses the
    layer pattern, the local RoPE base and query_pre_attn_scalar; its Phi-3 reading the partial rotary factor)."""
    kwargs = {} if config is None else {"config": AutoConfig.from_pretrained(config)}
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                **kwargs).eval()


def assert_same_logits(model, gguf_model, tolerance):
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = model(ids).logits, gguf_model(ids).logits
    atol, rtol = tolerance
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("family,dtype,tie", [
    ("llama", "f16", False), ("llama", "bf16", True), ("llama", "q8_0", False), ("llama", "q4_0", False),
    ("mistral", "f16", False), ("qwen2", "f16", True), ("qwen2", "q8_0", False), ("qwen3", "f16", False),
    ("gemma2", "f16", True), ("gemma3_text", "f16", False), ("gemma3_text", "q4_0", True), ("nemotron", "f16", False),
    ("nemotron", "q8_0", True), ("phi3", "f16", False), ("phi3", "q8_0", True),
])
def test_export_reloads_with_the_same_logits(tmp_path, family, dtype, tie):
    tokenizer = byte_level_tokenizer()
    model = save_model(tmp_path / "hf", family, tokenizer, tie)
    out = export(str(tmp_path / "hf"), tmp_path / "out" / "model.gguf", dtype)
    assert out == Exported(tmp_path / "out" / "model.gguf", tmp_path / "out" / "model.Modelfile")
    assert sorted(p.name for p in out.gguf.parent.iterdir()) == ["model.Modelfile", "model.gguf"]
    gguf_model = reload(out.gguf, tmp_path / "hf" if family in ("gemma2", "gemma3_text", "phi3") else None)
    assert_same_logits(model, gguf_model, TOLERANCE[dtype])
    assert_same_logits(llama_cpp_check().quantized_reference(model, dtype), gguf_model, ROUNDED)
    reloaded = AutoTokenizer.from_pretrained(out.gguf.parent, gguf_file=out.gguf.name)
    assert reloaded(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def llama_cpp_check():
    """benchmarks/llama_cpp_check.py, which runs llama.cpp itself through node-llama-cpp's prebuilt build."""
    return load_benchmark("llama_cpp_check")


def test_llama_cpp_generates_as_transformers(tmp_path):
    """llama.cpp itself (node-llama-cpp's prebuilt CPU build; `make setup` installs it) loads the exports of every
    family, tokenises text as the Hugging Face tokenizer does, and continues a prompt greedily with the Hugging Face
    model's choices. (It refused every byte-level export while the pre-tokenizer was written as 'gpt2' instead of
    'gpt-2'.)

    Every token llama.cpp picks must be transformers' argmax after the same prefix, up to LLAMA_CPP_ATOL, from the
    model with its weights rounded as the file stores them: these random models' top two logits can be closer than
    llama.cpp's 8-bit activations in quantised products, so free-running continuations may part at a near tie
    without anything being wrong. Without the Llama q/k reordering the shortfall is 0.21 on the first case; without
    Gemma 3's +1 on norms 0.71, Nemotron's 0.41; with Gemma 3's layer pattern, window, local RoPE base or query scale
    left to llama.cpp's defaults 0.24, 0.82, 0.25 and 0.20; with Gemma 2's query scale left to llama.cpp 0.096; with
    Phi-3's LongRoPE factors swapped 0.24, its attention factor left out 0.013; Cohere 2's window written as 1000
    0.026 (llama.cpp refuses a file without it); without Llama 3.1's RoPE factors 0.13
    (Llama, Arcee), without the linear scaling keys 0.17 (Qwen3), 0.026 (Gemma 3: one global layer of four), without
    YaRN's 0.16 (Qwen3), 0.11 (SmolLM3); Ministral 3 without its query scaling (attention temperature) 0.083, without
    its YaRN attention factor (yarn_log_multiplier) 0.058; ERNIE 4.5's q/k reordered as Llama's (Hugging Face's ERNIE
    already rotates interleaved pairs) 0.17; OLMo 3 without its window and layer pattern (or its window 1000) 0.73,
    with YaRN on its sliding layers as well as its global ones (llama.cpp scales only the global ones) 0.065; Hunyuan
    with RoPE's base left unstretched by its NTK alpha 0.048; Apertus with its xIELU scalars at their initial values
    instead of the model's 0.021; EXAONE 4's 32B without its window key (llama.cpp's 4096 in place of 8) 0.63; a
    Qwen3-MoE without norm_topk_prob 0.0099 (llama.cpp renormalises the picked experts' weights whatever the file
    says: 0 against the same model with it); an OLMoE with norm_topk_prob (llama.cpp never renormalises) 0.44 on a
    model whose routing is near uniform; StableLM's RoPE written for the whole head instead of its quarter 0.22;
    Qwen3.5's Gated DeltaNet value heads left grouped by key head (llama.cpp tiles them) 0.022, its norms without the
    +1 0.73; GPT-OSS's experts' gate and up columns read as halves instead of in turn 0.74, a plain SwiGLU for its
    clamped one 0.58, its experts' biases left out 0.29, its sinks 0.013 (its experts and sinks scaled up: `sharpen`;
    its YaRN's unrounded correction range, which llama.cpp rounds, moves no pick: the reference rounds it); DeepSeek
    V3.2 with its indexer's top_k written as 64 (every key picked) 0.83 on the llama.cpp check's tiny model."""
    check = llama_cpp_check()
    if check.node_llama_cpp() is None:
        pytest.skip("llama.cpp is not installed: `make setup` installs node-llama-cpp (needs Node.js >= 20)")
    texts = [TEXT, "the 2024 teacher's  heads\n\n don't prune 12345 them"]
    cases = [("llama", None, "f16", False), ("qwen2", "qwen2", "q8_0", True), ("qwen3", None, "f16", False),
             ("llama", "llama-bpe", "bf16", True), ("llama", "tekken", "q8_0", False),
             ("mistral", "sentencepiece", "f16", False), ("gemma3_text", None, "f16", False),
             ("gemma3_text", "own", "q8_0", False), ("gemma3_text", "sentencepiece", "q4_0", True),
             ("gemma2", None, "f16", True), ("gemma2", "own", "q8_0", True), ("smollm3", "llama-bpe", "q8_0", False),
             ("granite", None, "f16", False), ("granite", "llama-bpe", "q8_0", True), ("arcee", None, "f16", False),
             ("nemotron", "llama-bpe", "f16", True), ("nemotron", None, "q4_0", False),
             ("llama", "kquant", "q4_k_m", False), ("gemma3_text", "kquant", "q4_k_m", True),
             ("nemotron", "kquant", "q6_k", False), ("phi3", None, "f16", True), ("phi3", "longrope", "q8_0", False),
             ("phi3", "kquant", "q4_k_m", False), ("llama", "llama3", "f16", False), ("arcee", "llama3", "q8_0", True),
             ("qwen3", "linear", "f16", False), ("gemma3_text", "linear", "f16", True), ("qwen3", "yarn", "f16", False),
             ("smollm3", "yarn", "q8_0", False), ("cohere", None, "f16", True), ("cohere", "llama-bpe", "q4_0", True),
             ("cohere2", None, "f16", True), ("cohere2", "llama-bpe", "q8_0", True), ("olmo2", None, "f16", False),
             ("olmo2", "llama-bpe", "q8_0", True), ("ministral3", None, "f16", False),
             ("ministral3", "tekken", "q8_0", True), ("ministral3", "ministral3", "f16", False),
             ("ernie4_5", None, "f16", False), ("ernie4_5", "llama-bpe", "q8_0", False), ("olmo3", None, "f16", False),
             ("olmo3", "llama-bpe", "q8_0", True), ("olmo3", "olmo3", "f16", False), ("gemma", None, "f16", True),
             ("gemma", "sentencepiece", "q8_0", True), ("seed_oss", None, "f16", False),
             ("seed_oss", "seed-coder", "q8_0", True), ("hunyuan_v1_dense", None, "f16", False),
             ("hunyuan_v1_dense", "llama-bpe", "q8_0", True), ("apertus", None, "f16", False),
             ("apertus", "llama3", "q8_0", True), ("glm4", None, "f16", False), ("glm4", "llama-bpe", "q8_0", True),
             ("exaone4", "global", "f16", False), ("exaone4", "global-llama3", "q8_0", True),
             ("exaone4", "32b", "f16", False), ("qwen3_moe", None, "f16", False),
             ("qwen3_moe", "llama-bpe", "q8_0", True), ("mixtral", None, "f16", False),
             ("mixtral", "sentencepiece", "q8_0", False), ("olmoe", "mha", "f16", False),
             ("olmoe", "mha", "q8_0", True), ("stablelm", None, "f16", False), ("stablelm", "llama-bpe", "q8_0", True),
             ("granitemoe", None, "f16", False), ("granitemoe", "llama-bpe", "q8_0", True),
             ("nemotron_h", None, "f16", False), ("nemotron_h", "llama-bpe", "q8_0", True),
             ("qwen3_5_text", None, "f16", False), ("qwen3_5_text", "qwen35", "q8_0", True),
             ("qwen3_5_moe_text", None, "f16", False), ("qwen3_5_moe_text", "llama-bpe", "q8_0", True),
             ("qwen3_next", None, "f16", False), ("qwen3_next", "qwen2", "q8_0", True),
             ("qwen2_moe", None, "f16", False), ("qwen2_moe", "qwen2", "q8_0", True), ("gpt_oss", None, "f16", False),
             ("gpt_oss", "gpt-4o", "q8_0", False), ("granitemoehybrid", None, "f16", False),
             ("granitemoehybrid", "llama-bpe", "q8_0", True), ("granitemoehybrid", "micro", "f16", False),
             ("granitemoehybrid_moe", None, "f16", False), ("granitemoehybrid_moe", "llama-bpe", "q8_0", True),
             ("lfm2", None, "f16", False), ("lfm2", "llama-bpe", "q8_0", True), ("lfm2", "auto", "f16", False),
             ("lfm2_moe", None, "f16", False), ("lfm2_moe", "llama-bpe", "bf16", True),
             ("glm4_moe", None, "f16", False), ("glm4_moe", "llama-bpe", "bf16", True),
             ("ernie4_5_moe", None, "f16", False), ("ernie4_5_moe", "llama-bpe", "bf16", True),
             ("dots1", "mha", "f16", False), ("dots1", "mha", "bf16", True), ("hunyuan_v1_moe", None, "f16", False),
             ("hunyuan_v1_moe", "llama-bpe", "bf16", True), ("deepseek_v3", "groups", "f16", False),
             ("deepseek_v3", "llama-bpe", "q8_0", True), ("glm4_moe_lite", None, "f16", False),
             ("deepseek_v2", "direct", "f16", False), ("deepseek_v3", "deepseek-yarn", "f16", False),
             ("youtu", "llama-bpe", "q8_0", True), ("sarvam_mla", None, "bf16", False),
             ("minimax_m2", None, "f16", False), ("minimax_m2", "llama-bpe", "q8_0", True),
             ("nemotron_h_moe", "mamba", "f16", False), ("nemotron_h_latent", "mamba", "bf16", False),
             ("exaone_moe", None, "f16", False), ("exaone_moe", "llama-bpe", "f16", True),
             ("granitemoeshared", None, "f16", False), ("granitemoeshared", "llama-bpe", "q8_0", True),
             ("deepseek_v32", None, "f16", False), ("deepseek_v32", "v32-yarn", "bf16", True),
             ("solar_open", None, "f16", False), ("solar_open", "llama-bpe", "q8_0", True),
             ("starcoder2", None, "f16", False), ("starcoder2", "llama-bpe", "q8_0", True),
             ("afmoe", None, "f16", False), ("afmoe", "llama-bpe", "bf16", True),
             ("glm_moe_dsa", None, "f16", False), ("glm_moe_dsa", "all-keys", "bf16", True),
             ("jais2", None, "f16", False), ("jais2", "llama-bpe", "q8_0", True),
             ("iquestcoder", "llama3", "f16", False), ("phi", None, "f16", False), ("phi", "llama-bpe", "q8_0", True),
             ("glm", None, "f16", False), ("glm", "llama-bpe", "q8_0", True),
             ("exaone", "llama3", "f16", False), ("exaone", "llama-bpe", "q8_0", True),
             ("internlm3", None, "f16", False), ("internlm3", "llama-bpe", "q8_0", True),
             ("olmo", None, "f16", False), ("olmo", "llama-bpe", "q8_0", True),
             ("gpt_neox", None, "f16", False), ("gpt_neox", "llama-bpe", "q8_0", True),
             ("gpt_neox", "sequential", "f16", False), ("gpt2", None, "f16", False),
             ("gpt2", "llama-bpe", "q8_0", True), ("gpt_bigcode", None, "f16", False),
             ("gpt_bigcode", "llama-bpe", "q8_0", True), ("falcon", None, "f16", False),
             ("falcon", "llama-bpe", "q8_0", True), ("falcon_7b", None, "f16", True),
             ("falcon_11b", "llama-bpe", "q8_0", False), ("hy_v3", None, "f16", False),
             ("hy_v3", "llama-bpe", "q8_0", True), ("bamba", None, "f16", False),
             ("bamba", "llama-bpe", "bf16", True), ("granite_swa", "swash", "f16", False),
             ("granite_swa", "llama-bpe", "q8_0", True), ("granitemoe_swa", "swash", "f16", False),
             ("granitemoe_swa", "swash-shared", "q8_0", True)]
    jobs, models = [], []
    for i, (family, pre, dtype, tie) in enumerate(cases):
        tokenizer = sentencepiece_tokenizer() if pre == "sentencepiece" else byte_level_tokenizer(
            PRE_TOKENIZERS.get(pre))
        if pre == "own":
            model = {"gemma2": own_gemma2, "gemma3_text": own_gemma3}[family](tmp_path / f"hf{i}", tokenizer)
        else:
            ropes = {"llama3": LLAMA3_ROPE, "linear": LINEAR_ROPE, "yarn": YARN_ROPE, "ministral3": MINISTRAL3_ROPE,
                     "olmo3": OLMO3_YARN}
            extra = {"kquant": KQUANT_SIZES, "sequential": {"use_parallel_residual": False},
                     "longrope": check.PHI3_LONGROPE, "global": EXAONE4_GLOBAL, "mha": MHA,
                     "groups": EXPERT_GROUPS, "deepseek-yarn": DEEPSEEK_YARN, "v32-yarn": DEEPSEEK_V32_YARN,
                     "all-keys": ALL_KEYS,
                     "global-llama3": {**EXAONE4_GLOBAL, **scaled_rope(family, LLAMA3_ROPE)}, "32b": EXAONE4_32B,
                     "micro": GRANITE_MICRO, "swash": GRANITE_SWASH,
                     "swash-shared": {**GRANITE_SWASH, "shared_intermediate_size": 64}, "auto": LFM2_AUTO,
                     "mamba": NEMOTRON_3_MAMBA,
                     **{name: scaled_rope(family, rope) for name, rope in ropes.items()}}.get(pre, {})
            model = save_model(tmp_path / f"hf{i}", family, tokenizer, tie, **extra)
        out = export(str(tmp_path / f"hf{i}"), tmp_path / f"{i}.gguf", dtype).gguf
        ids = tokenizer(TEXT)["input_ids"]
        jobs.append({"model": out, "ids": ids, "n": 16})
        models.append((family, pre, dtype, check.quantized_reference(model, dtype), ids))
        for text in texts:  # llama.cpp adds no bos here: compare the text's own tokens
            want = tokenizer(text, add_special_tokens=False)["input_ids"]
            jobs.append({"model": out, "text": text, "n": 0, "want": want})
    results = check.llama_cpp_greedy([{k: v for k, v in job.items() if k != "want"} for job in jobs])
    for job, result in zip(jobs, results, strict=True):
        if "want" in job:
            assert result["prompt"] == job["want"], (job["model"], job["text"])
    for (family, pre, dtype, model, ids), result in zip(models, results[::len(texts) + 1], strict=True):
        generated = result["generated"]
        assert result["prompt"] == ids and len(generated) == 16
        short = [s for s in check.shortfalls(model, ids, generated) if s > LLAMA_CPP_ATOL[dtype]]
        assert len(short) <= picks_flipped(model, ids), (family, pre, dtype, short)


def picks_flipped(model, ids: list[int]) -> int:
    """The picks of llama.cpp's that may fall short of the model's top logit: none, or one where a DeepSeek V3.2's or
    GLM-5's indexer picks the keys (index_topk within the sequence), whose near-tied picks the f16 activations of
    llama.cpp's CPU kernels flip on some CPUs (measured: the tiny DeepSeek V3.2's 6th of 16 picks 0.059 short on an AMD
    EPYC, none on an Intel Xeon; with its index_topk key written as 64, every key, 16 of 16 picks 0.03-0.76 short,
    GLM-5's 0.09-0.82)."""
    return int(getattr(model.config, "index_topk", 10**9) < len(ids) + 16)


def test_export_metadata(tmp_path, capsys):
    """The numbers llama.cpp reads (transformers' loader ignores some of them, so read them here), the file's
    identity from the model card, and the one line export prints."""
    tokenizer = byte_level_tokenizer()
    save_model(tmp_path / "hf", "llama", tokenizer)
    (tmp_path / "hf" / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-"
                                               "Instruct\ntags:\n- minitron\n---\n# A pruned model\n")
    out = export(str(tmp_path / "hf"), tmp_path / "model.gguf", "q8_0",
                 name="SmolLM2-135M-Instruct-minitron-67M").gguf
    size = out.stat().st_size / 1e6
    assert capsys.readouterr().out.splitlines()[-1] == (f"wrote {out} (q8_0, {size:.1f} MB) and "
                                                        f"{tmp_path / 'model.Modelfile'}")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "SmolLM2-135M-Instruct-minitron-67M"
    assert fields["general.license"] == "apache-2.0"
    assert fields["general.base_model.count"] == 1
    assert {k: fields[f"general.base_model.0.{k}"] for k in ["name", "organization", "repo_url"]} == {
        "name": "SmolLM2-135M-Instruct", "organization": "HuggingFaceTB",
        "repo_url": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert {k: fields[f"llama.{k}"] for k in ["context_length", "embedding_length", "block_count",
                                              "feed_forward_length", "attention.head_count",
                                              "attention.head_count_kv", "attention.key_length",
                                              "rope.dimension_count", "vocab_size"]} == {
        "context_length": 256, "embedding_length": 64, "block_count": 4, "feed_forward_length": 96,
        "attention.head_count": 8, "attention.head_count_kv": 2, "attention.key_length": 16,
        "rope.dimension_count": 16, "vocab_size": VOCAB}
    assert fields["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == VOCAB and tokens[300] == "[PAD300]"
    assert types[:3] == [gguf.TokenType.CONTROL] * 3 and types[300] == gguf.TokenType.UNUSED
    assert types[100] == gguf.TokenType.NORMAL
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    types_by_name = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types_by_name["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types_by_name["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    (tmp_path / "hf" / "README.md").unlink()  # no card: the directory's name, no licence or base model
    fields = gguf.GGUFReader(export(str(tmp_path / "hf"), tmp_path / "plain.gguf").gguf).fields
    assert fields["general.name"].contents() == "hf"
    assert "general.license" not in fields and "general.base_model.count" not in fields


def tensors(path) -> dict[str, np.ndarray]:
    return {t.name: gguf.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
            for t in gguf.GGUFReader(path).tensors}


def test_gemma3_and_nemotron_metadata(tmp_path):
    """What llama.cpp's Gemma 3 and Nemotron graphs read, and the weights as its converter writes them: 1 + w for
    the norms (Gemma's x * (1 + w), Nemotron's LayerNorm1P), Gemma's query scale folded into the q-norm."""
    model = own_gemma3(tmp_path / "gemma", byte_level_tokenizer())
    fields = {k: f.contents() for k, f in gguf.GGUFReader(export(str(tmp_path / "gemma"),
                                                                  tmp_path / "gemma.gguf").gguf).fields.items()}
    assert fields["general.architecture"] == "gemma3"
    assert {k: fields[f"gemma3.{k}"] for k in ["attention.sliding_window", "attention.sliding_window_pattern",
                                               "attention.key_length", "attention.value_length",
                                               "rope.dimension_count"]} == {
        "attention.sliding_window": 5, "attention.sliding_window_pattern": 4, "attention.key_length": 16,
        "attention.value_length": 16, "rope.dimension_count": 16}
    assert fields["gemma3.rope.freq_base"] == 1e6 and fields["gemma3.rope.freq_base_swa"] == 100.0
    assert "gemma3.final_logit_softcapping" not in fields
    weights = tensors(tmp_path / "gemma.gguf")
    hf = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(weights["blk.1.ffn_norm.weight"], hf["model.layers.1.pre_feedforward_layernorm.weight"]
                               + 1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(weights["blk.1.attn_q_norm.weight"],
                               (hf["model.layers.1.self_attn.q_norm.weight"] + 1) * np.sqrt(16 / 40), atol=1e-6)
    np.testing.assert_allclose(weights["blk.1.attn_k_norm.weight"], hf["model.layers.1.self_attn.k_norm.weight"] + 1,
                               atol=1e-6)
    model = save_model(tmp_path / "nemotron", "nemotron", byte_level_tokenizer(), tie=True)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(export(str(tmp_path / "nemotron"),
                                                                  tmp_path / "nemotron.gguf").gguf).fields.items()}
    assert fields["general.architecture"] == "nemotron"
    assert fields["nemotron.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert fields["nemotron.rope.dimension_count"] == 4  # partial_rotary_factor 0.5 of 8
    weights = tensors(tmp_path / "nemotron.gguf")
    hf = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(weights["output_norm.weight"], hf["model.norm.weight"] + 1, atol=1e-6)
    np.testing.assert_allclose(weights["output_norm.bias"], hf["model.norm.bias"], atol=1e-6)
    assert "blk.0.ffn_gate.weight" not in weights and weights["blk.0.ffn_up.weight"].shape == (96, 64)
    # llama.cpp's Nemotron graph has no tied head: the embedding is written out as the output too
    np.testing.assert_array_equal(weights["output.weight"], weights["token_embd.weight"])


def test_phi3_metadata(tmp_path):
    """What llama.cpp's Phi-3 graph reads: the rotated part of each head, LongRoPE's factors as tensors, its original
    context and attention factor; q/k/v and gate/up stay fused, as transformers keeps them."""
    model = save_model(tmp_path / "phi3", "phi3", byte_level_tokenizer(), **llama_cpp_check().PHI3_LONGROPE)
    out = export(str(tmp_path / "phi3"), tmp_path / "phi3.gguf").gguf
    fields = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    assert fields["general.architecture"] == "phi3"
    assert {k: fields[f"phi3.{k}"] for k in ["rope.dimension_count", "attention.key_length", "context_length",
                                             "rope.scaling.original_context_length"]} == {
        "rope.dimension_count": 6, "attention.key_length": 8, "context_length": 1024,
        "rope.scaling.original_context_length": 512}  # 0.75 of 8 channels rotated; contexts of the tiny model
    assert fields["phi3.rope.scaling.attn_factor"] == pytest.approx(np.sqrt(1 + np.log(2) / np.log(512)))
    weights = tensors(out)
    np.testing.assert_array_equal(weights["rope_factors_short.weight"], [1.0, 2.5, 4.0])
    np.testing.assert_array_equal(weights["rope_factors_long.weight"], [2.0, 5.0, 8.0])
    hf = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert weights["blk.0.attn_qkv.weight"].shape == (64 + 2 * 16, 64)  # 8 query heads and 2 KV heads of 8
    np.testing.assert_allclose(weights["blk.1.ffn_up.weight"], hf["model.layers.1.mlp.gate_up_proj.weight"],
                               atol=1e-3)  # gate then up, as llama.cpp's fused SwiGLU reads them (f16)


def test_cohere_metadata(tmp_path):
    """Command R's graph reads a LayerNorm epsilon and the logit scale (greedy tokens cannot tell a scale); a Command
    R+ shape (64 layers) carries its per-head q/k norms as 2-D f32 tensors, a row per head."""
    save_model(tmp_path / "cohere", "cohere", byte_level_tokenizer(), tie=True)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(export(str(tmp_path / "cohere"),
                                                                  tmp_path / "c.gguf").gguf).fields.items()}
    assert fields["general.architecture"] == "command-r" and fields["command-r.logit_scale"] == 0.25
    assert fields["command-r.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    save_model(tmp_path / "plus", "cohere", byte_level_tokenizer(), tie=True, num_hidden_layers=64, use_qk_norm=True)
    reader = gguf.GGUFReader(export(str(tmp_path / "plus"), tmp_path / "plus.gguf", "q8_0").gguf)
    norm = next(t for t in reader.tensors if t.name == "blk.63.attn_q_norm.weight")
    assert norm.tensor_type == T.F32 and list(norm.shape) == [8, 8]  # head size x heads, as llama.cpp reads it


def test_rope_scaling_metadata(tmp_path, capsys):
    """Llama 3.1's RoPE scaling as the per-frequency factors llama.cpp divides by (rope_freqs), computed here from
    its definition; linear scaling and YaRN as the rope.scaling keys; dynamic NTK scaling (InternLM3's) as plain RoPE
    of its own base, which it is within the file's context (the llama.cpp test runs such a file), with a warning."""
    save_model(tmp_path / "dynamic", "internlm3", byte_level_tokenizer())
    fields = {k: f.contents() for k, f in gguf.GGUFReader(export(str(tmp_path / "dynamic"),
                                                                  tmp_path / "dynamic.gguf").gguf).fields.items()}
    assert fields["llama.rope.freq_base"] == 5e7 and fields["llama.context_length"] == 256
    assert not any(".rope.scaling." in k for k in fields)
    assert "dynamic NTK RoPE stretches past max_position_embeddings (256 tokens)" in capsys.readouterr().out
    save_model(tmp_path / "llama3", "llama", byte_level_tokenizer(), rope_parameters=LLAMA3_ROPE)
    weights = tensors(export(str(tmp_path / "llama3"), tmp_path / "llama3.gguf").gguf)
    wavelengths = 2 * np.pi * 10000.0 ** (np.arange(0, 16, 2) / 16)
    smooth = np.clip((64 / wavelengths - 1) / (4 - 1), 0, 1)  # 1 below wavelength 16, 0 above 64
    np.testing.assert_allclose(weights["rope_freqs.weight"], 1 / ((1 - smooth) / 8 + smooth), rtol=1e-5)
    save_model(tmp_path / "linear", "qwen3", byte_level_tokenizer(), rope_parameters=LINEAR_ROPE)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(export(str(tmp_path / "linear"),
                                                                  tmp_path / "linear.gguf").gguf).fields.items()}
    assert fields["qwen3.rope.scaling.type"] == "linear" and fields["qwen3.rope.scaling.factor"] == 4.0
    save_model(tmp_path / "yarn", "qwen3", byte_level_tokenizer(), rope_parameters=YARN_ROPE)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(export(str(tmp_path / "yarn"),
                                                                  tmp_path / "yarn.gguf").gguf).fields.items()}
    assert {k: fields[f"qwen3.rope.scaling.{k}"] for k in ["type", "factor", "original_context_length"]} == {
        "type": "yarn", "factor": 4.0, "original_context_length": 64}


def test_weight_types():
    """Which type each tensor gets: pure gguf-py types; llama.cpp's k-quant mixes (Q6_K head, Q6_K attn_v and
    ffn_down on the use_more_bits layers); llama.cpp's fallbacks for rows that do not split into blocks."""
    q4_0, q4_k_m, q6_k = TYPES["q4_0"], TYPES["q4_k_m"], TYPES["q6_k"]
    assert tensor_type("blk.0.attn_q.weight", (64, 64), q4_0, 8, False) == T.Q4_0
    assert tensor_type("output.weight", (320, 64), q4_0, 8, False) == T.Q4_0  # pure, as the converter writes
    assert tensor_type("blk.0.attn_q.weight", (64, 48), q4_0, 8, False) == T.F16
    assert tensor_type("blk.0.attn_norm.weight", (64,), q4_0, 8, False) == T.F32
    assert tensor_type("output.weight", (320, 256), q4_k_m, 8, False) == T.Q6_K
    assert tensor_type("token_embd.weight", (320, 256), q4_k_m, 8, False) == T.Q4_K
    assert tensor_type("token_embd.weight", (320, 256), q4_k_m, 8, True) == T.Q6_K  # tied: it is the head
    v_types = [tensor_type(f"blk.{i}.attn_v.weight", (64, 256), q4_k_m, 8, False) for i in range(8)]
    assert v_types == [T.Q6_K, T.Q4_K, T.Q4_K, T.Q6_K, T.Q4_K, T.Q4_K, T.Q6_K, T.Q6_K]  # llama.cpp's use_more_bits
    assert tensor_type("blk.2.ffn_down.weight", (256, 512), q4_k_m, 8, False) == T.Q4_K
    assert tensor_type("blk.0.ffn_down.weight", (256, 512), q4_k_m, 8, False) == T.Q6_K
    assert tensor_type("blk.2.attn_q.weight", (256, 96), q4_k_m, 8, False) == T.Q5_0  # rows of 96: Q4_K -> Q5_0
    assert tensor_type("blk.2.attn_q.weight", (256, 96), q6_k, 8, False) == T.Q8_0
    assert tensor_type("blk.2.attn_q.weight", (256, 100), q6_k, 8, False) == T.F16
    assert tensor_type("blk.2.attn_qkv.weight", (256, 512), q4_k_m, 8, False) == T.Q5_K  # fused: a k-quant above
    assert tensor_type("blk.2.attn_qkv.weight", (256, 512), TYPES["q5_k_m"], 8, False) == T.Q6_K
    if ggml_library_path() is None:
        pytest.skip("llama.cpp's ggml library is not installed (`make llamacpp`)")
    rows = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    for qtype in [T.Q4_0, T.Q8_0]:  # llama.cpp's quantiser and gguf-py's write the same bytes
        np.testing.assert_array_equal(ggml_quantize(rows, qtype), gguf.quants.quantize(rows, qtype))
    for qtype, worst in [(T.Q4_K, 0.25), (T.Q6_K, 0.07)]:  # gguf-py reads llama.cpp's k-quants back
        assert np.abs(gguf.dequantize(ggml_quantize(rows, qtype), qtype) - rows).max() < worst


def go_render(template: str, messages: list[dict]) -> str:
    """The subset of Go's text/template the Modelfiles' ChatML and Nemotron templates use ({{- -}} trimming,
    range .Messages, if/else if eq .Role "x", .Role, .Content), to check they render as the Jinja templates do."""
    parts = re.split(r"({{-?\s*.*?\s*-?}})", template)
    for i, part in enumerate(parts):  # the trim markers eat the whitespace next to them
        if part.startswith("{{-"):
            parts[i - 1] = parts[i - 1].rstrip()
        if part.endswith("-}}") and i + 1 < len(parts):
            parts[i + 1] = parts[i + 1].lstrip()

    def run(i: int, message: dict | None, out: list[str], live: bool) -> int:
        """Render from parts[i] until an unmatched end/else; returns that index."""
        while i < len(parts):
            part = parts[i]
            action = part.strip("{}-").strip() if part.startswith("{{") else None
            if action is None:
                out.append(part if live else "")
            elif action in (".Role", ".Content"):
                out.append(message[action[1:].lower()] if live else "")
            elif action == "range .Messages":
                for m in (messages if live else [None]):
                    stop = run(i + 1, m, out, live)
                i = stop
            elif action.startswith("if "):
                taken, j = False, i
                while True:
                    cond = parts[j].strip("{}-").strip().removeprefix("else").strip().removeprefix("if").strip()
                    ok = live and not taken and cond.startswith("eq .Role") and message["role"] == cond.split('"')[1]
                    j = run(j + 1, message, out, ok)
                    taken = taken or ok
                    if parts[j].strip("{}-").strip() == "end":
                        break
                i = j
            elif action == "end" or action.startswith("else"):
                return i
            else:
                raise ValueError(action)
            i += 1
        return i

    out: list[str] = []
    run(0, None, out, True)
    return "".join(out)


def test_modelfile(tmp_path):
    """The Modelfile beside the GGUF: ChatML and Nemotron templates as Ollama's Go templates that render the same
    prompt as the Jinja ones, a default system prompt kept as SYSTEM, stop strings; other templates left to Ollama."""
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."},
                    {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Why?"}]
    for name, go in [("chatml", CHATML_GO), ("nemotron", NEMOTRON_GO)]:
        for messages in [conversation, conversation[1:]]:
            jinja = byte_level_tokenizer().apply_chat_template(messages, chat_template=TEMPLATES[name],
                                                                add_generation_prompt=True, tokenize=False)
            assert go_render(go, messages) == jinja, name
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = CHATML  # the tests' ChatML (conftest): the same layout as minitron's
    save_model(tmp_path / "hf", "llama", tokenizer)
    out = export(str(tmp_path / "hf"), tmp_path / "student.gguf", "q4_0")
    assert out.modelfile.read_text() == (
        "# Ollama: ollama create NAME -f student.Modelfile && ollama run NAME\n"
        "FROM ./student.gguf\n"
        "# the chatml chat format, as a Go template (without tools)\n"
        f'TEMPLATE """{CHATML_GO}"""\n'
        'PARAMETER stop "<|im_end|>"\n')
    smollm = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tokenizer.chat_template = smollm  # ChatML with a default system prompt, as SmolLM2's
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM"""\n' in modelfile("m.gguf", tokenizer)
    tokenizer.chat_template = TEMPLATES["nemotron"]
    assert (f'TEMPLATE """{NEMOTRON_GO}"""\nPARAMETER stop "<extra_id_1>"\n' in modelfile("m.gguf", tokenizer))
    text = modelfile("m.gguf", byte_level_tokenizer())  # a template of its own (roles left out)
    assert "TEMPLATE" not in text and "Ollama uses the template stored in the GGUF" in text
    assert text.endswith('PARAMETER stop "<|im_end|>"\n')
    text = modelfile("m.gguf", sentencepiece_tokenizer())  # no template, no chat tokens
    assert "TEMPLATE" not in text and "PARAMETER" not in text and "a completion model" in text


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "tekken"])
def test_pre_tokenizers(tmp_path, pre):
    """Llama 3, Qwen and Mistral NeMo split text their own ways: the file names the way, transformers rebuilds it."""
    tokenizer = byte_level_tokenizer(PRE_TOKENIZERS[pre])
    save_model(tmp_path / "hf", "llama", tokenizer)
    out = export(str(tmp_path / "hf"), tmp_path / "model.gguf").gguf
    assert gguf.GGUFReader(out).fields["tokenizer.ggml.pre"].contents() == pre
    text = "the 2024 teacher's  heads\n\n don't prune 12345 them"
    reloaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_pre_tokenizer_names(capsys):
    from tokenizers import Regex, pre_tokenizers

    digits = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel()])
    assert pre_tokenizer_name(json.loads(digits.__getstate__())) == "smollm"  # SmolLM's own tokenizer
    other = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\w+"), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(use_regex=False)])
    assert pre_tokenizer_name(json.loads(other.__getstate__())) == "default"
    assert "warning: unrecognised pre-tokenizer" in capsys.readouterr().out
    # Seed-OSS's tokenizer.json holds carriage return and line feed as themselves in its split: the same split
    seed = Regex(PRE_TOKENIZERS["seed-coder"].replace("\\r", "\r").replace("\\n", "\n"))
    seed_oss = pre_tokenizers.Sequence([pre_tokenizers.Split(seed, behavior="isolated"),
                                        pre_tokenizers.ByteLevel(use_regex=False)])
    state = json.loads(seed_oss.__getstate__())
    assert "\r\n" in state["pretokenizers"][0]["pattern"]["Regex"] and pre_tokenizer_name(state) == "seed-coder"


def test_sentencepiece_tokenizer(tmp_path, monkeypatch):
    """A sentencepiece-style vocabulary written and read back (by transformers, and as a teacher by minitron)."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    tokenizer = sentencepiece_tokenizer()
    model = save_model(tmp_path / "hf", "llama", tokenizer)
    out = export(str(tmp_path / "hf"), tmp_path / "model.gguf").gguf
    reader = gguf.GGUFReader(out)
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.add_space_prefix"].contents() is True
    assert reader.fields["tokenizer.ggml.add_bos_token"].contents() is True
    reloaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    text = "the teacher prunes heads and the student keeps them"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"] and tokenizer(text)["input_ids"][0] == 1
    assert load_tokenizer(resolve_model(str(out)))(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert_same_logits(model, reload(out), TOLERANCE["f16"])


def test_export_refuses_other_families_and_tokenizers(tmp_path):
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "config.json").write_text('{"model_type": "opt"}')
    with pytest.raises(MinitronError, match="cannot export 'opt' models to GGUF; export supports llama, mistral, "
                                            "ministral3, qwen2, qwen3, ernie4_5, seed_oss, hunyuan_v1_dense, smollm3, "
                                            "granite, gemma, gemma2, gemma3_text, arcee, nemotron, apertus, phi3, "
                                            "glm4, cohere, cohere2, olmo2, olmo3, exaone4, qwen3_moe, mixtral, "
                                            "olmoe, stablelm, granitemoe, nemotron_h, qwen3_5_text, "
                                            "qwen3_5_moe_text, qwen3_next, qwen2_moe, gpt_oss, granitemoehybrid, "
                                            "lfm2, "
                                            "lfm2_moe, glm4_moe, ernie4_5_moe, dots1, hunyuan_v1_moe, "
                                            "deepseek_v3, glm4_moe_lite, deepseek_v2, youtu, sarvam_mla, "
                                            "minimax_m2, exaone_moe, granitemoeshared, deepseek_v32, "
                                            "solar_open, starcoder2, afmoe, glm_moe_dsa, jais2, "
                                            "iquestcoder, phi, glm, exaone, internlm3, olmo, gpt_neox, gpt2, "
                                            "gpt_bigcode, falcon, hy_v3, bamba, granite_swa, granitemoe_swa$"):
        export(str(tmp_path / "opt"), tmp_path / "opt.gguf")
    save_tiny(tmp_path / "word-level")  # conftest's character-level WordLevel tokenizer
    with pytest.raises(MinitronError, match="cannot export a WordLevel tokenizer"):
        export(str(tmp_path / "word-level"), tmp_path / "w.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt", "word-level"]  # no file


# What llama.cpp's graphs cannot compute, refused in one line: (family, save_model's settings, the refusal).
REFUSED = [
    ("falcon", {"bias": True}, "a falcon model with biases or with its attention and MLP in turn"),
    ("granite_swa", {"layer_rope_theta": [1e4, 0, 5e5, 1e4]}, r"its layers' RoPE bases \(10000.0, 500000.0\) are not "
                                                              "its rope_theta"),
    ("falcon_7b", {"parallel_attn": False}, r"\(bias, parallel_attn false\): llama.cpp's falcon graph has no biases "
                                            "and runs the two in parallel"),
    ("phi", {"qk_layernorm": True}, r"phi model with q/k LayerNorms \(qk_layernorm\): llama.cpp's phi2 graph has none"),
    ("phi", {"hidden_act": "gelu"}, "phi model with activation 'gelu': llama.cpp's graph for it computes gelu_new"),
    ("seed_oss", {"attention_out_bias": True},
     r"Seed-OSS model with an o_proj bias \(attention_out_bias\): llama.cpp's seed_oss graph has none"),
    ("gemma", {"tie": False}, "a Gemma model whose lm_head is not tied to its embeddings: llama.cpp's Gemma graph"),
    ("qwen3", {"rope_parameters": LLAMA3_ROPE},
     "qwen3 model with rope_type 'llama3'; llama.cpp's graph for it computes default, linear, yarn, dynamic$"),
    ("llama", {"rope_parameters": {**YARN_ROPE, "beta_fast": 16}},
     "YaRN model with its own beta_fast: llama.cpp computes"),
    ("llama", {"rope_parameters": {**OLMO3_YARN, "attention_factor": 1.3}},  # not the derived 0.1 ln(4) + 1
     "YaRN model with its own attention_factor: llama.cpp computes"),
    ("gemma3_text", {"rope_parameters": {kind: LINEAR_ROPE for kind in ("full_attention", "sliding_attention")}},
     "rope_type 'linear' in its sliding layers; llama.cpp's graph for it computes default$"),
    ("cohere", {"tie": True, "use_qk_norm": True},  # below 64 layers
     "Command R graph takes q/k norms for models of 64 layers or more and none below, and this one has 4 layers with "
     "them"),
    ("cohere2", {"tie": True,  # layer 3 dropped from five
                 "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]},
     "Cohere 2 model: its layer pattern .* is not every 4th layer global"),
    ("phi3", {"head_dim": 16},  # heads pruned, hidden size kept
     r"Phi-3 model: its attention is 8 heads x 16 = 128 wide, and llama.cpp's Phi-3 graph builds it hidden_size "
     r"\(64\) wide"),
    ("olmo2", {"head_dim": 16}, r"OLMo 2 model: its attention is 8 heads x 16 = 128 wide"),  # its q-norm 128 wide
    ("ministral3", {"rope_parameters": {**MINISTRAL3_ROPE, "mscale": 0.707}},
     "Ministral 3 model whose YaRN is not mscale 1 with an mscale_all_dim"),
    ("ministral3", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "llama_4_scaling_beta": 0.1,
                                        "original_max_position_embeddings": 16}},
     r"Ministral 3 model that scales its queries \(llama_4_scaling_beta\) without YaRN"),
    ("olmo3", {"rope_parameters": {"full_attention": YARN_ROPE, "sliding_attention": YARN_ROPE}},
     "OLMo 3 model whose sliding layers' RoPE is .*'rope_type': 'yarn'.*: llama.cpp's OLMo 2 graph, which runs OLMo 3, "
     r"gives them plain RoPE with the global layers' base \(10000\)"),
    ("olmo3", {"rope_parameters": {"full_attention": YARN_ROPE,
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}}},
     "OLMo 3 model whose sliding layers' RoPE is .*'rope_theta': 500.0"),
    ("exaone4", {}, r"EXAONE 4 model of 4 layers with sliding ones \(window 8\): llama.cpp's EXAONE 4 graph takes "
                    "sliding layers only in a model of 64"),
    ("exaone4", {**EXAONE4_32B, "sliding_window": None, "layer_types": ["full_attention"] * 64},
     "EXAONE 4 model: llama.cpp's EXAONE 4 graph takes a model of 64 layers for the 32B"),
    ("qwen3_moe", {"norm_topk_prob": False}, "Qwen3-MoE model without norm_topk_prob: llama.cpp's qwen3moe graph "
                                             "always renormalises"),
    ("olmoe", {**MHA, "norm_topk_prob": True}, "OLMoE model with norm_topk_prob: llama.cpp's olmoe graph never"),
    ("olmoe", {}, r"OLMoE model with grouped-query attention \(8 query heads, 2 KV heads\): llama.cpp's olmoe graph "
                  "builds its k norm hidden_size wide"),
    ("dots1", {}, r"dots1 model with grouped-query attention \(8 query heads, 2 KV heads\): llama.cpp's dots1 "
                  "graph sizes k and v as q"),
    ("dots1", {**MHA, "layer_types": ["sliding_attention"] * 4, "sliding_window": 8},
     "dots1 model with sliding-window layers"),
    ("deepseek_v3", {"rope_interleave": False}, "deepseek_v3 model with rope_interleave false: llama.cpp's "
                                                "deepseek2 graph rotates interleaved pairs"),
    ("deepseek_v3", {"num_hidden_layers": 27}, "deepseek_v3 model of 27 layers whose queries come through a latent "
                                               r"\(q_lora_rank\): llama.cpp's deepseek2 graph takes"),
    ("deepseek_v3", {"rope_parameters": {**DEEPSEEK_YARN["rope_parameters"], "mscale": 1.0}},
     "deepseek_v3 model whose YaRN has mscale 1.0 and mscale_all_dim 0.707 apart"),
    ("deepseek_v32", DEEPSEEK_YARN, "deepseek_v32 model whose YaRN has mscale 0.707: llama.cpp's deepseek32 graph "
                                    "computes mscale 1"),
    ("deepseek_v32", {"index_head_dim": 16}, "deepseek_v32 model whose indexer heads are 16 channels wide: "
                                             "llama.cpp's deepseek32 graph rotates them by a Hadamard matrix"),
    ("afmoe", {"mup_enabled": False}, "AFMoE model with mup_enabled false: llama.cpp's afmoe graph scales"),
    ("afmoe", {"layer_types": ["sliding_attention", "full_attention"] * 2},
     r"AFMoE model: its layer pattern .* is not every 4th layer global \(without RoPE\)"),
    ("deepseek_v2", {"topk_method": "group_limited_greedy", **EXPERT_GROUPS},
     "deepseek_v2 model whose router picks its experts within the groups of the best"),
    ("glm4_moe_lite", {"mlp_layer_types": ["sparse", "dense", "sparse", "sparse"]},
     r"glm4_moe_lite model with dense layers \[1\] among its mixture-of-experts ones: llama.cpp's graph for it takes "
     "its first layers dense only"),
]


@pytest.mark.parametrize("family,settings,refusal", REFUSED)
def test_export_refuses_what_llama_cpp_cannot_run(tmp_path, family, settings, refusal):
    save_model(tmp_path / "hf", family, byte_level_tokenizer(), **settings)
    with pytest.raises(MinitronError, match=refusal):
        export(str(tmp_path / "hf"), tmp_path / "m.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no file


# The settings of released checkpoints that export's checks read (their config.json, sizes left at the defaults):
# OLMo 3 7B / 32B (YaRN on the global layers, its attention factor spelt out), Hunyuan 7B (NTK alpha as `rope_scaling`
# of type dynamic), Gemma 7B (hidden_act "gelu", which transformers reads as the tanh GELU), Seed-OSS 36B, GLM-4 9B
# 0414, Apertus 8B (Llama 3.1's RoPE, xIELU), Qwen3-30B-A3B, Mixtral 8x7B, OLMoE-1B-7B, Granite 3.0 1B-A400M, StableLM 2
# 1.6B, Nemotron-H 8B, Qwen3.5 9B and Qwen3.5-35B-A3B (their language models), Qwen1.5-MoE-A2.7B, GPT-OSS 20B.
RELEASED = {
    "olmo3": dict(rope_theta=500000, sliding_window=4096, max_position_embeddings=65536,
                  rope_scaling={"attention_factor": 1.2079441541679836, "beta_fast": 32.0, "beta_slow": 1.0,
                                "factor": 8.0, "original_max_position_embeddings": 8192, "rope_type": "yarn"}),
    "hunyuan_v1_dense": dict(head_dim=128, rope_theta=10000, use_qk_norm=True, tie_word_embeddings=True,
                             rope_scaling={"type": "dynamic", "alpha": 1000, "factor": 1}),
    "gemma": dict(hidden_act="gelu", head_dim=256, tie_word_embeddings=True),
    "seed_oss": dict(attention_bias=True, attention_out_bias=False, mlp_bias=False, rope_theta=10000000.0),
    "glm4": dict(attention_bias=True, partial_rotary_factor=0.5, rope_theta=10000.0),
    "exaone4": dict(num_hidden_layers=64, sliding_window=4096, sliding_window_pattern=4, rope_theta=1000000,
                    rope_scaling={"factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    "apertus": dict(hidden_act="xielu", rope_theta=12000000,
                    rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    "qwen3_moe": dict(num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
                      head_dim=128, rope_theta=1000000.0, mlp_only_layers=[], decoder_sparse_step=1),
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2, rope_theta=1000000.0, sliding_window=None),
    "olmoe": dict(num_experts=64, num_experts_per_tok=8, num_attention_heads=16, num_key_value_heads=16,
                  hidden_size=2048, intermediate_size=1024, norm_topk_prob=False, clip_qkv=None),
    "granitemoe": dict(hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, intermediate_size=512,
                       num_local_experts=32, num_experts_per_tok=8, embedding_multiplier=12.0, residual_multiplier=0.22,
                       attention_multiplier=0.015625, logits_scaling=6.0, tie_word_embeddings=True),
    "stablelm": dict(hidden_size=2048, num_attention_heads=32, num_key_value_heads=32, intermediate_size=5632,
                     use_qkv_bias=True, qk_layernorm=False, use_parallel_residual=False, tie_word_embeddings=False,
                     partial_rotary_factor=0.25, layer_norm_eps=1e-5),
    "nemotron_h": dict(hybrid_override_pattern="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-", hidden_size=4096,
                       intermediate_size=21504, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                       mamba_num_heads=128, mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4,
                       mlp_hidden_act="relu2", use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5),
    "qwen3_5_text": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=16,
                         num_key_value_heads=4, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=32,
                         linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel_dim=4,
                         hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
                                          "mrope_section": [11, 11, 10], "mrope_interleaved": True},
                         layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 8),
    "qwen3_5_moe_text": dict(hidden_size=2048, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=2,
                             head_dim=256, num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
                             shared_expert_intermediate_size=512, linear_num_key_heads=16, linear_num_value_heads=32,
                             linear_key_head_dim=128, linear_value_head_dim=128,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000000,
                                              "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10],
                                              "mrope_interleaved": True},
                             layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 10),
    "qwen3_next": dict(hidden_size=2048, intermediate_size=5120, num_hidden_layers=48, num_attention_heads=16,
                       num_key_value_heads=2, head_dim=256, num_experts=512, num_experts_per_tok=10,
                       moe_intermediate_size=512, shared_expert_intermediate_size=512, norm_topk_prob=True,
                       linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
                       linear_value_head_dim=128, linear_conv_kernel_dim=4, hidden_act="silu", mlp_only_layers=[],
                       decoder_sparse_step=1, full_attention_interval=4, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25}),
    "minimax_m2": dict(hidden_size=3072, intermediate_size=1536, num_hidden_layers=62, num_attention_heads=48,
                       num_key_value_heads=8, head_dim=128, num_local_experts=256, num_experts_per_tok=8,
                       rotary_dim=64, vocab_size=200064, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 5000000}),
    "qwen2_moe": dict(hidden_size=2048, num_attention_heads=16, num_key_value_heads=16, intermediate_size=5632,
                      moe_intermediate_size=1408, shared_expert_intermediate_size=5632, num_experts=60,
                      num_experts_per_tok=4, norm_topk_prob=False, qkv_bias=True, mlp_only_layers=[],
                      decoder_sparse_step=1),
    "gpt_oss": dict(hidden_size=2880, intermediate_size=2880, num_hidden_layers=24, num_attention_heads=64,
                    num_key_value_heads=8, head_dim=64, num_local_experts=32, num_experts_per_tok=4, sliding_window=128,
                    swiglu_limit=7.0, attention_bias=True, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "yarn", "rope_theta": 150000, "factor": 32.0, "beta_fast": 32.0,
                                     "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096}),
    "starcoder2": dict(hidden_size=6144, intermediate_size=24576, num_hidden_layers=40, num_attention_heads=48,
                       num_key_value_heads=4, sliding_window=4096, max_position_embeddings=16384, use_bias=True,
                       tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 100000}),
    "solar_open": {},  # (transformers' defaults are Solar-Open-100B's)
    "afmoe": dict(mup_enabled=True, route_scale=2.826),  # (transformers' defaults are Trinity Mini's sizes)
    "glm_moe_dsa": {},  # (transformers' defaults are GLM-5's)
    "deepseek_v32": dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000, "factor": 40.0, "beta_fast": 32.0,
                                          "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                                          "original_max_position_embeddings": 4096}),
    "exaone": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,  # 3.5 7.8B
                   num_key_value_heads=8, max_position_embeddings=32768, tie_word_embeddings=False,
                   rope_parameters={"rope_type": "llama3", "rope_theta": 1000000.0, "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192}),
    "glm": dict(attention_bias=True, num_key_value_heads=2),
    "olmo": dict(clip_qkv=8.0, max_position_embeddings=4096),  # OLMo 1.7 7B (transformers' defaults are its sizes)
    "internlm3": dict(rope_parameters={"rope_type": "dynamic", "factor": 6.0, "rope_theta": 50000000.0}),  # (its
    # sizes are transformers' defaults)  # glm-4-9b-chat-hf (transformers' defaults are its sizes)
    "phi": dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,  # Phi-2
                hidden_act="gelu_new", resid_pdrop=0.1, qk_layernorm=False, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4}),
    "gpt_neox": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,  # Pythia
                     max_position_embeddings=2048, vocab_size=50304, hidden_act="gelu",  # 1.4B
                     use_parallel_residual=True,
                     tie_word_embeddings=False,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257, n_inner=None,  # GPT-2 (124M)
                 activation_function="gelu_new"),
    "gpt_bigcode": dict(n_embd=6144, n_layer=40, n_head=48, n_positions=8192, vocab_size=49152,  # StarCoder (15B)
                        n_inner=24576, activation_function="gelu_pytorch_tanh", multi_query=True),
    "falcon": dict(hidden_size=4544, num_hidden_layers=32, num_attention_heads=71, vocab_size=65024,  # Falcon-7B
                   multi_query=True, parallel_attn=True, bias=False, new_decoder_architecture=False),
    "hy_v3": {},  # (transformers' defaults are Hy3-preview's)
    "bamba": dict(attn_layer_indices=[9, 18, 27]),  # Bamba-9B (transformers' defaults are its sizes)
    "granite_swa": {},  # (transformers' defaults are Granite-Swash 2B's)
    "granitemoe_swa": {},  # (transformers' defaults: no shared expert, as Granite-Swash 3B-A600M's)
}


@pytest.mark.parametrize("family", RELEASED)
def test_the_released_models_settings_export(family):
    """A released model's own settings pass export's checks (an OLMo 3 did not: its YaRN, which transformers and
    llama.cpp give the global layers only, was refused as a sliding RoPE of its own, and its attention factor as one
    llama.cpp does not derive), and Hunyuan's RoPE base is written as the one its alpha makes, theta *
    alpha^(d / (d - 2))."""
    from minitron.export_checks import export_problem, rope_theta

    config = AutoConfig.for_model(family, **RELEASED[family])
    assert export_problem(config) is None
    if family == "hunyuan_v1_dense":
        assert rope_theta(config) == pytest.approx(10000 * 1000 ** (128 / 126))


def test_export_refuses_what_a_pruned_config_broke(tmp_path):
    """Layers dropped out of a pattern llama.cpp assumes, another MLP activation, an untied head where the graph has
    none: the saved config changed after the model was written."""
    tied_gemma2 = {"layer_types": ["sliding_attention", "full_attention", "full_attention", "sliding_attention"],
                   "tie_word_embeddings": True}
    for name, family, change, refusal in [
            ("g3", "gemma3_text", {"layer_types": ["sliding_attention", "full_attention", "sliding_attention",
                                                   "sliding_attention"]}, "layer pattern .* is not periodic"),
            ("g2", "gemma2", tied_gemma2, "layer pattern .* is not local and global layers in turn"),
            ("g2-untied", "gemma2", {"tie_word_embeddings": False}, "Gemma 2 model whose lm_head is not tied"),
            ("n", "nemotron", {"hidden_act": "gelu"}, "activation 'gelu': llama.cpp's graph for it computes relu2"),
            ("s", "smollm3", {"no_rope_layers": [1, 1, 0, 1]},  # layer 0 dropped from five
             r"SmolLM3 model: its layers with RoPE \(\[1, 1, 0, 1\], 0: none\) are not all but every 4th")]:
        save_model(tmp_path / name, family, byte_level_tokenizer(), tie=family == "gemma2")
        config = json.loads((tmp_path / name / "config.json").read_text())
        (tmp_path / name / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(MinitronError, match=refusal):
            export(str(tmp_path / name), tmp_path / f"{name}.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g2", "g2-untied", "g3", "n", "s"]  # no file


def test_a_mixture_of_experts_is_written_stacked_over_its_experts(tmp_path):
    """A layer's experts as one tensor a linear (experts, rows, columns), its router in f32 as llama.cpp's converter
    writes it, and the expert numbers llama.cpp builds its graph from; no k-quant mix, whose choices differ for
    experts."""
    save_model(tmp_path / "hf", "qwen3_moe", byte_level_tokenizer())
    reader = gguf.GGUFReader(export(str(tmp_path / "hf"), tmp_path / "m.gguf", "q8_0").gguf)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert {k: fields[f"qwen3moe.{k}"] for k in ("expert_count", "expert_used_count",
                                                  "expert_feed_forward_length")} == {
        "expert_count": 6, "expert_used_count": 2, "expert_feed_forward_length": 96}
    tensors = {t.name: t for t in reader.tensors}
    assert [int(n) for n in tensors["blk.0.ffn_gate_exps.weight"].shape] == [64, 96, 6]  # GGUF lists dims inner first
    assert [int(n) for n in tensors["blk.3.ffn_down_exps.weight"].shape] == [96, 64, 6]
    assert tensors["blk.0.ffn_gate_inp.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.0.ffn_up_exps.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    save_model(tmp_path / "mixtral", "mixtral", byte_level_tokenizer())
    with pytest.raises(MinitronError, match="cannot export a mixture of experts as q4_k_m: llama.cpp's k-quant mixes"):
        export(str(tmp_path / "mixtral"), tmp_path / "x.gguf", "q4_k_m")
    assert not (tmp_path / "x.gguf").exists()


def test_old_checkpoints_buffers_are_left_out_as_transformers_drops_them(tmp_path):
    """Pythia's files hold buffers transformers drops on load (each layer's causal mask, attention.bias, and
    masked_bias; older files of any family, rotary_emb.inv_freq a layer): export leaves them out, as llama.cpp's
    converter does, and writes the file it writes without them (they have no GGUF name: refused before)."""
    from safetensors.torch import load_file, save_file

    save_model(tmp_path / "neox", "gpt_neox", byte_level_tokenizer())
    clean = export(str(tmp_path / "neox"), tmp_path / "clean.gguf").gguf
    stored = load_file(tmp_path / "neox" / "model.safetensors")
    for i in range(4):
        stored[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
        stored[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        stored[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.ones(2)
    save_file(stored, tmp_path / "neox" / "model.safetensors", metadata={"format": "pt"})
    old = export(str(tmp_path / "neox"), tmp_path / "old.gguf").gguf
    assert old.read_bytes() == clean.read_bytes()


def test_export_keeps_an_existing_file(tmp_path):
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")
    with pytest.raises(MinitronError, match="already exists"):
        export(str(tmp_path / "hf"), out)
    with pytest.raises(MinitronError, match="--dtype 'q4' is not a GGUF export type"):
        export(str(tmp_path / "hf"), out, "q4", overwrite=True)
    assert out.read_bytes() == b"old"
    out.with_suffix(".Modelfile").write_text("mine")  # the Modelfile beside it is kept as well
    out.unlink()
    with pytest.raises(MinitronError, match="model.Modelfile already exists"):
        export(str(tmp_path / "hf"), out)
    assert not out.exists() and out.with_suffix(".Modelfile").read_text() == "mine"
    export(str(tmp_path / "hf"), out, overwrite=True)
    assert out.read_bytes()[:4] == b"GGUF" and out.with_suffix(".Modelfile").read_text().startswith("# Ollama")


def test_export_command(tmp_path, capsys):
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    run_cli("export", "--model", tmp_path / "hf", "--out", tmp_path / "m.gguf", "--dtype", "q4_0", "--name", "tiny")
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"wrote {tmp_path / 'm.gguf'} (q4_0, ")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["general.file_type"].parts[-1][0] == gguf.LlamaFileType.MOSTLY_Q4_0
    assert reader.fields["general.name"].contents() == "tiny" and (tmp_path / "m.Modelfile").is_file()
    err = cli_error(capsys, "export", "--model", tmp_path / "hf", "--out", tmp_path / "m.gguf")
    assert "already exists" in err


def test_a_gguf_converts_once_whatever_its_path(tmp_path, monkeypatch):
    """A GGUF model is dequantised into the cache once per content: a copy elsewhere (another path and time, as in
    another checkout's virtual environment) loads the same conversion; another file gets its own."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    first = export(str(tmp_path / "hf"), tmp_path / "a" / "m.gguf", "f16").gguf
    converted = resolve_model(first)
    made = (converted / "model.safetensors").stat().st_mtime_ns
    copy = tmp_path / "b" / "m.gguf"
    copy.parent.mkdir()
    shutil.copyfile(first, copy)
    assert copy.stat().st_mtime_ns != first.stat().st_mtime_ns
    assert resolve_model(copy) == converted and (converted / "model.safetensors").stat().st_mtime_ns == made
    other = export(str(tmp_path / "hf"), tmp_path / "c" / "m.gguf", "q8_0").gguf
    assert resolve_model(other) != converted and len(list((tmp_path / "cache" / "models").iterdir())) == 2


def test_a_process_waits_for_another_converting_the_same_gguf(tmp_path, monkeypatch):
    """Two processes wanting one GGUF's conversion at once (two runs on the default teacher, the test suite's
    workers): the second waits for the first, then loads its conversion instead of failing or converting again."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    path = export(str(tmp_path / "hf"), tmp_path / "m.gguf", "f16").gguf
    out = tmp_path / "cache" / "models" / f"m-{gguf_key(path)}"
    code = "import sys; from minitron.load import resolve_model; print(resolve_model(sys.argv[1]))"
    with one_builder(out):  # this process converts it
        other = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        first = other.stdout.readline()  # the other process is at the lock
        assert first == f"waiting for another process to finish building {out}\n", first + other.communicate()[0]
        write_conversion(path, gguf_key(path), out)
    made = (out / "model.safetensors").stat().st_mtime_ns
    rest = other.communicate(timeout=120)[0]
    assert other.returncode == 0 and rest == f"{out}\n"  # no second conversion
    assert (out / "model.safetensors").stat().st_mtime_ns == made and resolve_model(path) == out


@pytest.mark.parametrize("family,rope,dtype,tie", [
    ("llama", None, "f16", False), ("llama", "llama3", "q8_0", False), ("qwen2", None, "f16", True),
    ("qwen3", "yarn", "f16", False), ("gemma2", None, "f16", True), ("gemma2", "own", "q8_0", True),
    ("gemma3_text", "linear", "f16", False), ("gemma3_text", "own", "q4_0", True), ("nemotron", None, "f16", False),
    ("nemotron", None, "bf16", True), ("phi3", None, "f16", True), ("phi3", "longrope", "f16", False),
    ("ministral3", "ministral3", "f16", False), ("ministral3", "ministral3", "q8_0", True),
    ("ernie4_5", None, "f16", False), ("smollm3", None, "f16", True), ("granite", None, "f16", False),
    ("granite", None, "q4_0", False), ("arcee", None, "f16", False), ("cohere", None, "f16", True),
    ("cohere2", None, "bf16", True), ("olmo2", None, "f16", False), ("olmo2", None, "q8_0", True),
    ("olmo3", None, "f16", False), ("olmo3", None, "q8_0", True), ("olmo3", "yarn", "f16", False),
    ("gemma", None, "f16", True), ("seed_oss", None, "f16", False), ("seed_oss", None, "q8_0", True),
    ("hunyuan_v1_dense", None, "f16", False), ("hunyuan_v1_dense", None, "q4_0", True), ("apertus", None, "f16", False),
    ("apertus", "llama3", "q8_0", True), ("glm4", None, "f16", False), ("glm4", None, "q4_0", True),
    ("exaone4", "global", "f16", False), ("exaone4", "32b", "f16", True),
    ("gemma", None, "q4_0", True), ("qwen3_moe", None, "f16", False), ("qwen3_moe", None, "q8_0", True),
    ("mixtral", None, "bf16", False), ("mixtral", None, "q4_0", True), ("olmoe", "mha", "f16", False),
    ("olmoe", "mha", "q8_0", True), ("stablelm", None, "f16", False), ("stablelm", None, "q8_0", True),
    ("granitemoe", None, "f16", False), ("granitemoe", None, "q4_0", True), ("nemotron_h", None, "f16", False),
    ("nemotron_h", None, "q8_0", True), ("qwen3_5_text", None, "f16", False), ("qwen3_5_text", None, "q8_0", True),
    ("qwen3_5_moe_text", None, "f16", False), ("qwen3_5_moe_text", None, "q8_0", True),
    ("qwen3_next", None, "f16", False), ("qwen3_next", None, "q8_0", True),
    ("qwen2_moe", None, "f16", False), ("qwen2_moe", None, "q8_0", True), ("gpt_oss", None, "f16", False),
    ("gpt_oss", None, "q8_0", False), ("granitemoehybrid", None, "f16", False),
    ("granitemoehybrid", None, "q8_0", True), ("granitemoehybrid_moe", None, "f16", False),
    ("granitemoehybrid_moe", None, "q8_0", True), ("lfm2", None, "f16", False), ("lfm2", "auto", "q8_0", True),
    ("lfm2_moe", None, "f16", False), ("lfm2_moe", None, "f16", True), ("glm4_moe", None, "f16", False),
    ("glm4_moe", None, "f16", True), ("ernie4_5_moe", None, "f16", False), ("dots1", "mha", "f16", False),
    ("dots1", "mha", "f16", True), ("hunyuan_v1_moe", None, "f16", False), ("hunyuan_v1_moe", None, "f16", True),
    ("deepseek_v3", "groups", "f16", False), ("deepseek_v3", "direct", "f16", True),
    ("glm4_moe_lite", None, "f16", True), ("deepseek_v2", "direct", "f16", False),
    ("deepseek_v2", "direct", "f16", True), ("deepseek_v3", "deepseek-yarn", "f16", False),
    ("youtu", "youtu-pad", "f16", True), ("sarvam_mla", "groups", "f16", False), ("minimax_m2", None, "f16", False),
    ("minimax_m2", None, "f16", True), ("nemotron_h_moe", "mamba", "f16", False),
    ("nemotron_h_latent", "mamba", "f16", False), ("exaone_moe", None, "f16", False), ("exaone_moe", None, "f16", True),
    ("granitemoeshared", None, "f16", False), ("granitemoeshared", None, "q8_0", True),
    ("deepseek_v32", None, "f16", False), ("deepseek_v32", "v32-yarn", "f16", True), ("solar_open", None, "f16", False),
    ("solar_open", None, "f16", True), ("starcoder2", None, "f16", False), ("starcoder2", None, "q8_0", True),
    ("afmoe", None, "f16", False), ("afmoe", None, "f16", True), ("glm_moe_dsa", None, "f16", False),
    ("glm_moe_dsa", None, "f16", True), ("jais2", None, "f16", False), ("jais2", None, "q8_0", True),
    ("iquestcoder", None, "f16", False), ("phi", None, "f16", False), ("phi", None, "q8_0", True),
    ("glm", None, "f16", False), ("glm", None, "q4_0", True), ("exaone", "llama3", "f16", False),
    ("exaone", None, "q8_0", True), ("internlm3", None, "f16", False), ("internlm3", None, "q8_0", True),
    ("olmo", None, "f16", False), ("olmo", None, "q8_0", True), ("gpt_neox", None, "f16", False),
    ("gpt_neox", None, "q8_0", True), ("gpt2", None, "f16", False), ("gpt2", None, "q8_0", True),
    ("gpt_bigcode", None, "f16", False), ("gpt_bigcode", None, "q8_0", True), ("falcon", None, "f16", False),
    ("falcon", None, "q8_0", True), ("falcon_7b", None, "f16", True), ("falcon_11b", None, "f16", False),
    ("hy_v3", None, "f16", False), ("hy_v3", None, "q8_0", True), ("bamba", None, "f16", False),
    ("bamba", None, "q8_0", True), ("granite_swa", None, "f16", False), ("granite_swa", None, "q8_0", True),
    ("granitemoe_swa", None, "f16", False),
])
def test_a_gguf_teacher_converts_to_the_model_it_holds(tmp_path, monkeypatch, family, rope, dtype, tie):
    """minitron's own export of every family read back as a teacher (`load.convert_gguf`, `gguf_read`) is the model
    exported, to the file's rounding (equal to the model with its weights rounded as the file stores them), and its
    tokenizer encodes as the model's. What each reading needs, measured by leaving it out: before gguf_config (when
    transformers' loader read these), Gemma 2 0.61 off, Gemma 3 0.46, Phi-3 0.49 (its rotary fraction), Llama 3.1's
    RoPE 0.33, YaRN 0.20, Gemma 3's linear scaling 0.48, LongRoPE 0.51 (0.07 with Phi-3's default original
    context); q/k back from the interleaved layout 0.45-0.55 (Arcee, SmolLM3, Ministral 3), Granite's multipliers
    0.59, Command R's q/k norms 0.19, Cohere 2's layer pattern 0.17; without Ministral 3's YaRN settings its model
    does not run. A Gemma 3 with its own query scale, local RoPE base and window, and a Gemma 2 with its own query
    scale, like the plain ones."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    tokenizer = byte_level_tokenizer()
    if rope == "own":
        model = {"gemma2": own_gemma2, "gemma3_text": own_gemma3}[family](tmp_path / "hf", tokenizer)
    else:
        extra = {"llama3": scaled_rope(family, LLAMA3_ROPE), "yarn": scaled_rope(family, YARN_ROPE),
                 "linear": scaled_rope(family, LINEAR_ROPE), "longrope": llama_cpp_check().PHI3_LONGROPE,
                 "ministral3": {"rope_parameters": MINISTRAL3_ROPE}, "global": EXAONE4_GLOBAL,
                 "32b": EXAONE4_32B, "mha": MHA, "auto": LFM2_AUTO, "groups": EXPERT_GROUPS,
                 "direct": DIRECT_QUERIES, "deepseek-yarn": DEEPSEEK_YARN, "youtu-pad": YOUTU_PAD,
                 "v32-yarn": DEEPSEEK_V32_YARN,
                 "mamba": NEMOTRON_3_MAMBA}.get(rope, {})
        model = save_model(tmp_path / "hf", family, tokenizer, tie, **extra)
    out = export(str(tmp_path / "hf"), tmp_path / "m.gguf", dtype).gguf
    converted = load_model(str(out))
    if getattr(model.config, "index_topk", 64) >= 24:  # (rounded weights move a DeepSeek V3.2's or GLM-5's near-tied
        assert_same_logits(model, converted, TOLERANCE[dtype])  # picks of 6 keys: such a file is the rounded model)
    if dtype in ("f16", "bf16"):  # the weights kept as the file stores them (exact, half the disk of fp32; routers, a
        # shared expert's gate, Mamba-2's and LFM2's convolutions, GPT-OSS's experts' biases and latent attention's
        # kv_b_proj f32)
        stored = {spec.dtype for name, spec in Checkpoint.open(resolve_model(str(out))).specs.items()
                  if len(spec.shape) > 1
                  and not name.endswith((".gate.weight", ".gate.wg.weight", ".router.layer.weight", ".router.weight",
                                         ".conv1d.weight", ".conv.conv.weight", ".shared_expert_gate.weight", "_bias",
                                         ".kv_b_proj.weight"))}
        assert stored == {torch.float16 if dtype == "f16" else torch.bfloat16}
    if rope != "own":  # an own query scale is folded into the weights before they are rounded; the reference rounds
        assert_same_logits(llama_cpp_check().quantized_reference(model, dtype), converted, ROUNDED)  # them unfolded
    assert load_tokenizer(resolve_model(str(out)))(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def test_a_gguf_that_is_not_the_model_its_keys_describe_is_refused(tmp_path, monkeypatch):
    """minitron's own reading refuses a file with a tensor missing, one left over (a bias its family's config does
    not have) or a key its family needs, in one line and with nothing in the cache."""
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    for case, edit in [("missing", lambda w: w.pop("model.layers.0.mlp.up_proj.weight")),
                       ("left over", lambda w: w.update({"model.layers.0.self_attn.o_proj.bias": torch.ones(64)}))]:
        hf = tmp_path / case
        save_model(hf, "granite", byte_level_tokenizer())
        weights = load_file(hf / "model.safetensors")
        edit(weights)
        save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
        out = export(str(hf), tmp_path / f"{case}.gguf", "f16").gguf
        with pytest.raises(MinitronError, match="no tensor blk.0.ffn_up.weight" if case == "missing" else
                           r"tensors \['blk.0.attn_output.bias'\] have no place in the granite model"):
            load_model(str(out))
    monkeypatch.setitem(FAMILY_KEYS, "granite", lambda writer, config: None)  # no multipliers
    out = export(str(tmp_path / "missing"), tmp_path / "keys.gguf", "f16").gguf
    with pytest.raises(MinitronError, match="its granite.embedding_scale is missing"):
        load_model(str(out))
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


@pytest.mark.slow
def test_minitron_reads_a_file_of_llama_cpps_converter_as_transformers_does(tmp_path, monkeypatch):
    """minitron's reading checked on a file it did not write, against transformers' own GGUF loader: the default
    teacher, written by llama.cpp's own converter in Q4_1, converts to transformers' config and, bitwise, its
    weights, and its tokenizer encodes as transformers' does."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    path = default_gguf()
    ours = load_model(str(path))
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "rope_parameters", "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id",
              "pad_token_id", "max_position_embeddings", "attention_bias", "mlp_bias")
    assert {f: getattr(ours.config, f) for f in fields} == {f: getattr(theirs.config, f) for f in fields}
    # the same float32 (which the model computes with); minitron writes it as the original config did, 1e-05
    assert ours.config.rms_norm_eps == 1e-5 and np.float32(theirs.config.rms_norm_eps) == np.float32(1e-5)
    weights = ours.state_dict()
    assert weights.keys() == theirs.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in theirs.state_dict().items())
    text = "What is the capital of France? <|im_start|>user\n  12345 don't<|im_end|>"
    assert (load_tokenizer(resolve_model(str(path)))(text)["input_ids"]
            == AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)(text)["input_ids"])


@pytest.mark.slow
def test_default_teacher(tmp_path):
    """SmolLM2-135M-Instruct to f16 GGUF, checked three ways (one export, as the export is the slow part)."""
    out, recipe = export("default", tmp_path / "smollm2.gguf", "f16")
    assert out.stat().st_size > 250e6  # 135M parameters in f16
    # SmolLM2's template is ChatML with a default system prompt: Ollama gets both
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in recipe.read_text()
    matches_llama_cpps_own_conversion(out)
    transformers_reads_it_back(out)
    if llama_cpp_check().node_llama_cpp() is not None:  # test_llama_cpp_generates_as_transformers skips without it
        llama_cpp_replies_as_transformers(out)


def matches_llama_cpps_own_conversion(out):
    """The default teacher ships as a GGUF that llama.cpp's converter wrote (Q4_1). Exported from its Hugging Face
    conversion, every tensor must come back in the same layout (q/k rotary order included) and the same values up
    to f16 rounding, with the same tokenizer and the same architecture numbers."""
    from minitron.load import default_gguf

    ours, theirs = gguf.GGUFReader(out), gguf.GGUFReader(default_gguf())
    for key in ["tokens", "token_type", "merges", "bos_token_id", "eos_token_id", "unknown_token_id",
                "padding_token_id", "add_bos_token"]:
        assert ours.fields[f"tokenizer.ggml.{key}"].contents() == theirs.fields[f"tokenizer.ggml.{key}"].contents()
    for key in ["tokenizer.chat_template", "llama.context_length", "llama.embedding_length", "llama.block_count",
                "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                "llama.rope.dimension_count", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                "llama.vocab_size"]:
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key
    mine = {t.name: t for t in ours.tensors}
    assert sorted(mine) == sorted(t.name for t in theirs.tensors)
    for t in theirs.tensors:
        want = gguf.dequantize(t.data, t.tensor_type)
        got = gguf.dequantize(mine[t.name].data, mine[t.name].tensor_type)
        assert got.shape == want.shape, t.name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max(), err_msg=t.name)


def transformers_reads_it_back(out):
    """transformers' GGUF loader gives the same chat prompt, token ids, logits and greedy reply."""
    from minitron.load import load_model, load_tokenizer

    model, tokenizer = load_model("default"), load_tokenizer("default")
    gguf_model = reload(out)
    gguf_tokenizer = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert gguf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == prompt
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert gguf_tokenizer(prompt, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        expected, actual = model(ids).logits, gguf_model(ids).logits
    torch.testing.assert_close(actual, expected, atol=5e-2, rtol=1e-2)  # f16 weights; logits span about ±38
    generate = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    reply = model.generate(ids, **generate)
    assert gguf_model.generate(ids, **generate).tolist() == reply.tolist()
    assert "Paris" in tokenizer.decode(reply[0, ids.shape[1]:])


def llama_cpp_replies_as_transformers(out):
    """llama.cpp itself tokenises the chat prompt as transformers does and gives the same greedy reply (measured:
    the same 136 tokens over benchmarks/llama_cpp_check.py's three prompts)."""
    from minitron.load import load_model, load_tokenizer

    model, tokenizer = load_model("default"), load_tokenizer("default")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt)["input_ids"]
    reply = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    [result] = llama_cpp_check().llama_cpp_greedy([{"model": out, "text": prompt, "n": len(reply)}])
    assert result["prompt"] == ids and result["generated"] == reply
    assert tokenizer.decode(reply) == "The capital of France is Paris.<|im_end|>"


def test_export_names_the_model_as_its_card_does(tmp_path):
    """Without --name, general.name is the name minitron's card gave the model (derived from teacher and size)."""
    from minitron.card import write_model_card

    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    write_model_card(tmp_path / "hf", teacher="acme/Tiny-1B")
    name = gguf.GGUFReader(export(str(tmp_path / "hf"), tmp_path / "m.gguf").gguf).fields["general.name"].contents()
    assert re.fullmatch(r"Tiny-1B-minitron-\d+K", name)
