"""Does llama.cpp itself continue a prompt as transformers does, from minitron's GGUF export? (issue 20 item 5,
issue 30 item A)

    python benchmarks/llama_cpp_check.py [--model default] [--dtypes f16 q8_0] [--tokens 64] [--work runs/llama_cpp]
    python benchmarks/llama_cpp_check.py --tiny [--dtypes f16 q8_0 q4_0 q4_k_m] [--tokens 16] [--json FILE]

Exports --model to each dtype, then for a few chat prompts compares llama.cpp's greedy continuation (token ids)
with transformers' greedy generation from the Hugging Face model in fp32, and prints a Markdown table: whether
llama.cpp tokenised the chat prompt as the Hugging Face tokenizer does, how many generated tokens agree before the
first difference, and the worst shortfall: how far below its own top logit the Hugging Face model puts llama.cpp's
pick, after llama.cpp's prefix (0 when every pick is transformers' argmax; small when a near tie tipped), both
against the fp32 model and against the same model with its weights rounded as the file stores them
(`quantized_reference`): what is left then is llama.cpp's own arithmetic (it rounds activations to 8 bits in
quantised products).

--tiny does the same for a tiny random model of every family minitron exports (Llama, Mistral, Ministral 3, Qwen2,
Qwen3, ERNIE 4.5, Seed-OSS, Hunyuan, SmolLM3, Granite, Gemma, Gemma 2, Gemma 3, Arcee, Nemotron, Apertus, Phi-3, GLM-4,
Cohere, Cohere 2, OLMo 2, OLMo 3, EXAONE 4 (the 1.2B's kind), Qwen3-MoE, Mixtral, OLMoE, Granite-MoE, StableLM 2; a
byte-level BPE trained here), from a text prompt; --json writes its table's JSON. A mixture of experts is not exported
in the k-quant mixes (export refuses them: llama.cpp's mixes pick other types for experts).
llama.cpp runs through node-llama-cpp's prebuilt CPU build (`make setup` installs it into the virtual environment;
NODE_LLAMA_CPP names another copy of the package); nothing is compiled.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import copy

import gguf
import torch

from minitron.arch import (arch_of, as_linears, decoder_layers, is_sparse, moe_block, moe_weights, num_experts,
                           stored_as, tied)
from minitron.export import PRE_TOKENIZERS, export
from minitron.export_checks import LLAMA_CPP_HIDDEN_WIDE, yarn_unrounded
from minitron.export_quant import TYPES, encode, tensor_type
from minitron.gguf_layout import (OUTPUT_REQUIRED, experts_in_gguf, gguf_arch, granite_mlp_in_gguf, gguf_tensor,
                                  mla_in_gguf, mla_read, mla_stored, oss_in_gguf, oss_read, oss_stored, tensor_names)
from minitron.load import load_model, load_tokenizer

SCRIPT = Path(__file__).resolve().with_name("llama_cpp_greedy.mjs")
PROMPTS = ["What is the capital of France?", "Write a short poem about the sea.",
           "Explain in two sentences why the sky is blue."]
FAMILIES = ["llama", "mistral", "ministral3", "qwen2", "qwen3", "ernie4_5", "seed_oss", "hunyuan_v1_dense", "smollm3",
            "granite", "gemma", "gemma2", "gemma3_text", "arcee", "nemotron", "apertus", "phi3", "glm4", "cohere",
            "cohere2", "olmo2", "olmo3", "exaone4", "qwen3_moe", "mixtral", "olmoe", "granitemoe", "stablelm",
            "nemotron_h", "qwen3_5_text", "qwen3_5_moe_text", "qwen3_next", "qwen2_moe", "gpt_oss", "granitemoehybrid",
            "lfm2", "lfm2_moe", "glm4_moe", "ernie4_5_moe", "dots1", "hunyuan_v1_moe", "deepseek_v3",
            "glm4_moe_lite", "deepseek_v2", "youtu", "sarvam_mla", "minimax_m2", "nemotron_h_moe",
            "nemotron_h_latent", "exaone_moe", "granitemoeshared", "deepseek_v32",
            "solar_open", "starcoder2", "afmoe", "glm_moe_dsa", "jais2", "iquestcoder", "phi", "glm", "exaone",
            "internlm3", "olmo", "gpt_neox", "gpt2", "gpt_bigcode", "falcon", "falcon_7b", "falcon_11b", "hy_v3",
            "bamba", "granite_swa", "granitemoe_swa", "granitemoe_swa_shared"]
TINY_TEXT = "the teacher prunes 123 heads\n  and the student keeps them while the model distils"


def node_llama_cpp() -> Path | None:
    """node-llama-cpp's package folder (with its prebuilt llama.cpp), or None when it or Node.js is missing."""
    package = Path(os.environ.get("NODE_LLAMA_CPP") or Path(sys.prefix) / "node" / "node_modules" / "node-llama-cpp")
    return package if shutil.which("node") and (package / "dist" / "index.js").is_file() else None


def llama_cpp_greedy(jobs: list[dict]) -> list[dict]:
    """Run llama_cpp_greedy.mjs: jobs [{"model", "ids" or "text", "n"}] -> [{"prompt": ids, "generated": ids}]."""
    package = node_llama_cpp()
    if package is None:
        raise RuntimeError("llama.cpp is not installed: `make setup` installs node-llama-cpp (needs Node.js >= 20)")
    jobs = [{**job, "model": str(job["model"])} for job in jobs]
    with tempfile.TemporaryDirectory() as tmp:  # (a file, not stdin: Node reads a pipe of over 64 KB unblocked and
        listed = Path(tmp) / "jobs.json"        # fails with EAGAIN when the rest has not arrived yet)
        listed.write_text(json.dumps(jobs))
        run = subprocess.run(["node", str(SCRIPT), str(package), str(listed)], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"llama.cpp failed: {run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def quantized_reference(model, dtype: str):
    """A copy of `model` whose 2-D weights are rounded exactly as `export(..., dtype)` stores them (same types,
    same fallbacks, same quantisers), for telling the file's rounding from llama.cpp's arithmetic; a YaRN that leaves
    its correction range unrounded rounded, as llama.cpp computes it (GPT-OSS's, `export_checks.YARN_UNROUNDED`)."""
    model = copy.deepcopy(model)
    config = model.config
    if yarn_unrounded(config):
        config.rope_parameters = {**config.rope_parameters, "truncate": True}
        model.model.rotary_emb = type(model.model.rotary_emb)(config)
    arch = gguf_arch(config)
    names = tensor_names(arch, config.num_hidden_layers)
    shared = tied(config) and arch not in OUTPUT_REQUIRED
    family, experts = arch_of(config), num_experts(config)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if oss := oss_in_gguf(key, config.model_type):  # GPT-OSS's experts: gate and up apart, transposed,
                # each in its GGUF tensor's type
                parts = oss_stored(oss[1], p.detach().float().numpy())
                p.copy_(torch.from_numpy(oss_read(oss[1], [rounded(torch.from_numpy(part), name, dtype,
                                                                   config.num_hidden_layers, shared).numpy()
                                                           for part, name in zip(parts, oss[0])])))
            elif mlp := granite_mlp_in_gguf(key, experts, arch):  # Granite 4's gate and up halves (or down), each in
                # its GGUF type
                p.copy_(torch.cat([rounded(w, name, dtype, config.num_hidden_layers, shared)
                                   for w, name in zip(p.chunk(len(mlp), dim=0), mlp)], dim=0))
            elif mla := mla_in_gguf(key):  # latent attention's keys and values apart, each in its type
                parts = mla_stored(p.detach().float().numpy(), config)
                p.copy_(torch.from_numpy(mla_read([rounded(torch.from_numpy(part), name, dtype,
                                                           config.num_hidden_layers, shared).numpy()
                                                   for part, name in zip(parts, mla)])))
            elif p.ndim == 2:  # under the name a checkpoint stores it by (Granite-MoE's router.layer)
                stored = stored_as(key, family, experts)
                name = gguf_tensor(names, stored.names[0][0] if stored else key)
                p.copy_(rounded(p, name, dtype, config.num_hidden_layers, shared))
            elif gguf_names := experts_in_gguf(key):  # a mixture of experts' gate and up rows (or down), each in its
                # GGUF tensor's type (Mamba-2's 3-D convolution stays f32)
                p.copy_(torch.cat([rounded(w, name, dtype, config.num_hidden_layers, shared)
                                   for w, name in zip(p.chunk(len(gguf_names), dim=1), gguf_names)], dim=1))
    return model


def rounded(p: torch.Tensor, name: str, dtype: str, layers: int, tied: bool) -> torch.Tensor:
    """`p` as the GGUF tensor `name` stores it in an export of `dtype`."""
    qtype = tensor_type(name, tuple(p.shape), TYPES[dtype], layers, tied)
    w = p.detach().float().numpy()
    return torch.from_numpy(gguf.quants.dequantize(encode(w, qtype), qtype).reshape(w.shape))


def router_gap(model, ids: list[int]) -> float:
    """A mixture of experts' closest routing call over `ids`: the smallest gap, at any token and layer, between the
    router's score of the last expert it picks and of the best one it leaves (its probability; a router steered by a
    bias picks by its sigmoid plus the bias, LFM2-MoE's and GLM-4.5's, or its probability plus the bias, ERNIE 4.5's),
    which llama.cpp's 8-bit activations in quantised products can swap."""
    k, gaps = model.config.num_experts_per_tok, []

    def hook(module, args, out):
        logits = out[0].float()
        if (statics := getattr(module, "moe_statics", None)) is not None:  # ERNIE 4.5's
            scores = logits.softmax(-1) + statics.e_score_correction_bias
        else:
            bias = args[1] if len(args) > 1 else getattr(module, "e_score_correction_bias", None)  # (LFM2-MoE's; GLM's)
            scores = logits.softmax(-1) if bias is None else logits.sigmoid() + bias
        scores = scores.sort(-1, descending=True).values
        gaps.append(float((scores[:, k - 1] - scores[:, k]).min()))
    arch = arch_of(model.config)
    routers = [moe_weights(moe_block(layer, arch), arch) for layer in decoder_layers(model) if is_sparse(layer, arch)]
    handles = [(w.router if w.gate is None else w.gate).register_forward_hook(hook) for w in routers]  # (Hunyuan's
    # gate routes)
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in handles:
        h.remove()
    return min(gaps)


def shortfall(model, ids: list[int], generated: list[int]) -> float:
    """How far below its top logit `model` puts each of llama.cpp's picks after llama.cpp's prefix (the worst)."""
    return max(shortfalls(model, ids, generated), default=0.0)


def shortfalls(model, ids: list[int], generated: list[int]) -> list[float]:
    """How far below its top logit `model` puts each of llama.cpp's picks after llama.cpp's prefix, pick by pick."""
    if not generated:
        return []
    with torch.no_grad():
        logits = model(torch.tensor([ids + generated])).logits[0, len(ids) - 1:-1]
    return (logits.max(-1).values - logits[torch.arange(len(generated)), torch.tensor(generated)]).tolist()


def tiny_tokenizer(split: str | None = None, text: str = TINY_TEXT):
    """A byte-level BPE (GPT-2 / Llama 3 / Qwen style; 300 tokens) trained on `text` (the prompt's words): GPT-2's
    split, or the regex `split` first (as Llama 3 and Qwen do)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                              use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")


# Phi-4-mini's RoPE in small: LongRoPE (per-frequency factors, an attention factor from the context's growth) on three
# quarters of each head. transformers takes the short factors for sequences within the original context, llama.cpp
# for contexts within it (padded to 256 tokens: so the original context here is 512).
PHI3_LONGROPE = dict(max_position_embeddings=1024, original_max_position_embeddings=512,
                     rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                      "short_factor": [1.0, 2.5, 4.0], "long_factor": [2.0, 5.0, 8.0]})


ROUTER_SCALE = 16.0  # LFM2-MoE's routers (their steering bias by half of it): see `sharpen`


def sharpen(model, factor: float) -> None:
    """Scale every layer's query and key rows by `factor` (fused or not), so that a wrong q/k layout changes the
    logits well beyond rounding; GPT-OSS's experts by `factor` too and its sinks by 2.5 x `factor` (a wrong layout of
    its experts shows by 0.74, a plain SwiGLU for its clamped one by 0.58, zeroed expert biases by 0.29, zeroed sinks
    by 0.013; unscaled, only the biases did); LFM2's short convolutions' filters by `factor` and their in_proj by 6 (its
    filters' taps written reversed show by 0.52, zeroed by 0.56; unscaled, neither did); LFM2-MoE's and GLM-4.5's
    experts by `factor`, their routers by ROUTER_SCALE and the bias that steers their picks by half of it (LFM2-MoE's:
    a softmax router written for its sigmoid one shows by 0.46, the bias zeroed by 0.89; unscaled, by 0 and 0.009)."""
    from minitron.arch import Rows, arch_of, attention_of, attention_rows, conv_of

    arch = arch_of(model.config)
    with torch.no_grad():
        for conv in filter(None, map(conv_of, decoder_layers(model))):
            conv.conv.weight.mul_(factor)
            conv.in_proj.weight.mul_(6.0)
        for layer in filter(lambda layer: is_sparse(layer, arch), decoder_layers(model)):
            w = moe_weights(moe_block(layer, arch), arch)
            steer = getattr(w.block, w.block_bias) if w.block is not None else \
                getattr(w.router, "e_score_correction_bias", None)
            steer = w.statics.e_score_correction_bias if w.statics is not None else steer  # (ERNIE 4.5's)
            glm = w.block is None and steer is not None  # (by `factor`, its experts' output hides their scale)
            # (AFMoE's, whose router routes itself, unscaled: the norm after its MLP hides their weights' scale
            # wherever they outweigh its shared expert, route_scale written as 1 falling 0 short; unscaled, 0.10)
            if (arch.oss_experts or steer is not None) and w.gate is None:  # GPT-OSS's, LFM2-MoE's, MiniMax-M2's,
                # GLM-4.5's experts
                for param in (getattr(w.experts, w.inputs), w.experts.down_proj):
                    param.mul_(factor / 2 if glm else factor)
            if steer is not None:  # LFM2-MoE's, MiniMax-M2's, GLM-4.5's and ERNIE 4.5's router and the bias that steers
                # its picks
                w.router.weight.mul_(ROUTER_SCALE)
                steer.mul_(ROUTER_SCALE / 2)
        for layer in filter(attention_of, decoder_layers(model)):  # a hybrid's layers with attention
            query, (key, *_) = attention_rows(layer, arch)
            if arch.mla:  # the rotated key every head shares, from kv_a_proj's last rows (the latent is normed)
                key = Rows(layer.self_attn.kv_a_proj_with_mqa)
            for rows in (query, key):  # (GPT-NeoX's rows head by head)
                rows.linear.weight[rows.rows(torch.arange(len(rows.of(rows.linear.weight))))] *= factor
            if hasattr(attention_of(layer), "sinks"):  # (GPT-OSS's, Granite SWA's)
                attention_of(layer).sinks.mul_(2.5 * factor)


# The tiny DeepSeek's, GLM-4.7-Flash's and Youtu-LLM's layers: multi-head latent attention (a KV head for each query
# head; transformers' head_dim is the rotated channels), and GLM-4.5's mixture of experts, the first layer dense
LATENT = dict(num_key_value_heads=8, head_dim=8, q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=8,
              qk_nope_head_dim=16, v_head_dim=16, pad_token_id=None, bos_token_id=None, eos_token_id=None)
LATENT_MOE = dict(LATENT, n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=96,
                  intermediate_size=80, routed_scaling_factor=2.5, norm_topk_prob=True, n_group=1, topk_group=1)
# DeepSeek V3.2's and GLM-5's: those layers, the dense one listed by kind, with an indexer that picks six keys of each
# query's (past its sixth token its attention depends on the picks); its heads 64 wide, as llama.cpp rotates them by a
# Hadamard matrix of 64 rows at least, and 16 of them, as conftest's `INDEXER`, so that no key scores exactly 0
INDEXED_MOE = dict(LATENT_MOE, mlp_layer_types=["dense", "sparse", "sparse", "sparse"], index_n_heads=16,
                   index_head_dim=64, index_topk=6)
# The tiny Nemotron-H's layers: Mamba-2, attention, MLP, Mamba-2 (eight Mamba-2 heads of 8 in two groups).
NEMOTRON_H_LAYERS = ["linear_attention", "full_attention", "mlp", "linear_attention"]
# Nemotron 3's kind (`nemotron_h_moe`, a Nemotron-H with experts): Mamba-2, experts, attention, experts
NEMOTRON_3 = dict(layers_block_type=["linear_attention", "moe", "full_attention", "moe"], n_routed_experts=6,
                  num_experts_per_tok=2, moe_intermediate_size=96, moe_shared_expert_intermediate_size=64,
                  routed_scaling_factor=2.5)
# Falcon's settings under its own names (its head size is hidden_size / heads: 8 here): the tiny falcon (Falcon-40B's
# layer), falcon_7b and falcon_11b (`tiny_model`)
FALCON = dict(ffn_hidden_size=96, num_kv_heads=2, bos_token_id=None, eos_token_id=None)
# The tiny families that are a model type's variant (`nemotron_h_latent`: Nemotron 3 Super's kind, its experts behind
# a latent of 32 channels; Falcon's layouts)
# Granite SWA's multipliers at 1, not Granite 3's, which leave positions moving the tiny model's logits by 1e-3: with
# its second layer without RoPE, RoPE there moves 9 of its 16 greedy tokens in transformers, its sinks zeroed 8;
# Granite-MoE SWA's, with six experts, two a token
GRANITE_SWASH = dict(embedding_multiplier=1.0, residual_multiplier=1.0, attention_multiplier=1.0, logits_scaling=8.0,
                     sliding_window=8, layer_rope_theta=[1e4, 0, 1e4, 1e4], pad_token_id=None, bos_token_id=None,
                     eos_token_id=None)
GRANITE_MOE_SWASH = dict(GRANITE_SWASH, num_local_experts=6, num_experts_per_tok=2)
MODEL_TYPES = {"nemotron_h_moe": "nemotron_h", "nemotron_h_latent": "nemotron_h", "falcon_7b": "falcon",
               "falcon_11b": "falcon", "granitemoe_swa_shared": "granitemoe_swa"}


def tiny_model(family: str, seed: int = 0):
    """A random model of `family` (4 layers, hidden 64, 8 heads of 16, 2 KV heads; 8 wide for the families whose
    attention the llama.cpp node-llama-cpp 3.22.1 ships builds hidden_size wide, `LLAMA_CPP_HIDDEN_WIDE`),
    norms randomised, attention sharpened so that a wrong q/k layout shows."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2,
                 head_dim=8 if family in LLAMA_CPP_HIDDEN_WIDE else 16,
                 max_position_embeddings=256)
    extra = {"mistral": dict(sliding_window=None), "smollm3": dict(no_rope_layers=[1, 1, 1, 0], pad_token_id=None,
                                                                 bos_token_id=None, eos_token_id=None),
             "nemotron": dict(hidden_act="relu2", partial_rotary_factor=0.5),
             "arcee": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "apertus": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "glm4": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "glm": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "exaone": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "olmo": dict(clip_qkv=1.0, pad_token_id=None, bos_token_id=None,  # (q, k and v clipped here: without
                          eos_token_id=None),  # the clamp_kqv key the tiny model falls 0.16 short)
             "internlm3": dict(rope_parameters={"rope_type": "dynamic", "factor": 6.0, "rope_theta": 50000000.0},
                               pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "exaone4": dict(sliding_window=None, layer_types=["full_attention"] * 4, pad_token_id=None,
                             bos_token_id=None, eos_token_id=None),  # the 1.2B's kind: llama.cpp's hybrid is 64 layers
             "hy_v3": dict(num_experts=6, num_experts_per_tok=2, num_shared_experts=1, moe_intermediate_size=96,
                           intermediate_size=80, mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                           router_scaling_factor=2.5, pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "exaone_moe": dict(num_experts=6, num_experts_per_tok=2, num_shared_experts=1, moe_intermediate_size=96,
                                intermediate_size=80, mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                                sliding_window=8, routed_scaling_factor=2.5,
                                layer_types=["sliding_attention"] * 3 + ["full_attention"], pad_token_id=None,
                                bos_token_id=None, eos_token_id=None),
             "granite": dict(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.1,
                             logits_scaling=8.0),
             "granite_swa": GRANITE_SWASH, "granitemoe_swa": GRANITE_MOE_SWASH,
             "granitemoe_swa_shared": dict(GRANITE_MOE_SWASH, shared_intermediate_size=64),
             "gemma": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "hunyuan_v1_dense": dict(rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                                                       "rope_theta": 10000.0}, pad_token_id=None, bos_token_id=None,
                                      eos_token_id=None),
             "seed_oss": dict(attention_out_bias=False, attention_dropout=0.0, residual_dropout=0.0, pad_token_id=None,
                              bos_token_id=None, eos_token_id=None),
             "gemma2": dict(sliding_window=8, query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
                            final_logit_softcapping=30.0, layer_types=["sliding_attention", "full_attention"] * 2),
             "gemma3_text": dict(sliding_window=8, query_pre_attn_scalar=16,
                                 layer_types=["sliding_attention"] * 3 + ["full_attention"]),
             "phi3": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None, **PHI3_LONGROPE),
             "cohere": dict(logit_scale=0.25, tie_word_embeddings=True, pad_token_id=None,
                            bos_token_id=None, eos_token_id=None),
             "cohere2": dict(logit_scale=0.25, tie_word_embeddings=True, sliding_window=8, pad_token_id=None,
                             bos_token_id=None, eos_token_id=None,
                             layer_types=["sliding_attention"] * 3 + ["full_attention"]),
             "olmo2": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "ernie4_5": dict(tie_word_embeddings=False, pad_token_id=None, bos_token_id=None,
                              eos_token_id=None),
             "qwen3_moe": dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=96, norm_topk_prob=True,
                               pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "mixtral": dict(num_local_experts=6, num_experts_per_tok=2),
             "minimax_m2": dict(num_local_experts=6, num_experts_per_tok=2,
                                rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                 "partial_rotary_factor": 0.5},
                                pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "olmoe": dict(num_experts=6, num_experts_per_tok=2, num_key_value_heads=8, pad_token_id=None,
                           bos_token_id=None, eos_token_id=None),
             "stablelm": dict(use_qkv_bias=True, head_dim=8),
             "starcoder2": dict(head_dim=8, pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "jais2": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "phi": dict(pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "gpt_neox": dict(num_key_value_heads=8, pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "gpt2": dict(n_inner=96, bos_token_id=None, eos_token_id=None),
             "gpt_bigcode": dict(n_inner=96, multi_query=True, bos_token_id=None, eos_token_id=None),
             "bamba": dict(attn_layer_indices=[1, 3], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
                           mamba_d_state=16, mamba_chunk_size=8, pad_token_id=None, bos_token_id=None,
                           eos_token_id=None),  # (Mamba-2 and attention in turn, RoPE on half of each head)
             "falcon": dict(FALCON, new_decoder_architecture=True),  # Falcon-40B's: a LayerNorm each, 2 KV groups
             "falcon_7b": dict(FALCON, multi_query=True),  # Falcon-7B's: one LayerNorm, one KV head
             "falcon_11b": dict(FALCON, new_decoder_architecture=True, num_ln_in_parallel_attn=1),  # Falcon2-11B's
             "afmoe": dict(num_experts=6, num_experts_per_tok=2, num_shared_experts=1, num_dense_layers=1,
                           moe_intermediate_size=96, intermediate_size=80, route_scale=2.5, mup_enabled=True,
                           sliding_window=8, pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "granitemoe": dict(num_local_experts=6, num_experts_per_tok=2, embedding_multiplier=12.0,
                                residual_multiplier=0.22, attention_multiplier=0.1, logits_scaling=8.0),
             "granitemoeshared": dict(num_local_experts=6, num_experts_per_tok=2, embedding_multiplier=12.0,
                                      residual_multiplier=0.22, attention_multiplier=0.1, logits_scaling=8.0,
                                      shared_intermediate_size=64),
             "nemotron_h": dict(layers_block_type=NEMOTRON_H_LAYERS, mamba_num_heads=8, mamba_head_dim=8, n_groups=2,
                                ssm_state_size=16, chunk_size=8, pad_token_id=None, bos_token_id=None,
                                eos_token_id=None),
             "nemotron_h_moe": dict(NEMOTRON_3, mamba_num_heads=8, mamba_head_dim=8, n_groups=2, ssm_state_size=16,
                                    chunk_size=8, pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "nemotron_h_latent": dict(NEMOTRON_3, moe_latent_size=32, mamba_num_heads=8, mamba_head_dim=8, n_groups=2,
                                       ssm_state_size=16, chunk_size=8, pad_token_id=None, bos_token_id=None,
                                       eos_token_id=None),
             "qwen3_5_text": dict(layer_types=["linear_attention", "linear_attention", "linear_attention",
                                               "full_attention"], linear_num_key_heads=2, linear_num_value_heads=4,
                                  linear_key_head_dim=8, linear_value_head_dim=8),
             "qwen3_5_moe_text": dict(layer_types=["linear_attention", "linear_attention", "linear_attention",
                                                   "full_attention"], linear_num_key_heads=2, linear_num_value_heads=4,
                                      linear_key_head_dim=8, linear_value_head_dim=8, num_experts=6,
                                      num_experts_per_tok=2, moe_intermediate_size=96,
                                      shared_expert_intermediate_size=64),
             "qwen3_next": dict(layer_types=["linear_attention", "linear_attention", "linear_attention",
                                             "full_attention"], linear_num_key_heads=2, linear_num_value_heads=4,
                                linear_key_head_dim=8, linear_value_head_dim=8, num_experts=6, num_experts_per_tok=2,
                                moe_intermediate_size=96, shared_expert_intermediate_size=64, mlp_only_layers=[]),
             "qwen2_moe": dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=96,
                               shared_expert_intermediate_size=64, mlp_only_layers=[]),
             "gpt_oss": dict(num_local_experts=6, num_experts_per_tok=2, sliding_window=8,
                             layer_types=["sliding_attention", "full_attention"] * 2,
                             rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 16.0,
                                              "original_max_position_embeddings": 16, "beta_fast": 32.0,
                                              "beta_slow": 1.0, "truncate": False}),
             "granitemoehybrid": dict(layer_types=["linear_attention", "full_attention"] * 2, num_local_experts=0,
                                      shared_intermediate_size=96, mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
                                      mamba_d_state=16, mamba_chunk_size=8, position_embedding_type="nope",
                                      embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.1,
                                      logits_scaling=8.0, pad_token_id=None, bos_token_id=None,
                                      eos_token_id=None),
             "lfm2": dict(layer_types=["conv", "full_attention"] * 2, block_auto_adjust_ff_dim=False,
                          tie_word_embeddings=False,  # (tied, this tiny one repeats one token whatever its filters)
                          pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "lfm2_moe": dict(layer_types=["conv", "full_attention"] * 2, tie_word_embeddings=False, num_experts=6,
                              num_experts_per_tok=2, num_dense_layers=1, moe_intermediate_size=96, intermediate_size=80,
                              pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "glm4_moe": dict(n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                              moe_intermediate_size=96, intermediate_size=80, attention_bias=True, use_qk_norm=True,
                              routed_scaling_factor=2.5, num_nextn_predict_layers=0, pad_token_id=None,
                              bos_token_id=None, eos_token_id=None),
             "solar_open": dict(n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=96,
                                routed_scaling_factor=2.5, pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "dots1": dict(num_key_value_heads=8,  # (llama.cpp's dots1 graph gives every query head its own)
                           n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                           moe_intermediate_size=96, intermediate_size=80, routed_scaling_factor=2.5,
                           norm_topk_prob=True, sliding_window=None, pad_token_id=None, bos_token_id=None,
                           eos_token_id=None),
             "hunyuan_v1_moe": dict(rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                                                     "rope_theta": 10000.0}, num_experts=6, moe_topk=2,
                                    pad_token_id=None, bos_token_id=None, eos_token_id=None),
             "deepseek_v3": dict(LATENT_MOE, first_k_dense_replace=1),
             "sarvam_mla": dict(LATENT_MOE, first_k_dense_replace=1),
             "glm4_moe_lite": dict(LATENT_MOE, mlp_layer_types=["dense", "sparse", "sparse", "sparse"]),
             "deepseek_v32": INDEXED_MOE, "glm_moe_dsa": INDEXED_MOE,
             "deepseek_v2": dict(LATENT_MOE, first_k_dense_replace=1, topk_method="greedy"),
             "youtu": dict(LATENT, tie_word_embeddings=True,
                           initializer_range=0.02),  # (the others' weight scale: its own makes logits 6x wider)
             "ernie4_5_moe": dict(moe_num_experts=6, moe_k=2, moe_num_shared_experts=1, moe_layer_start_index=1,
                                  moe_intermediate_size=96, intermediate_size=80, tie_word_embeddings=False,
                                  pad_token_id=None, bos_token_id=None, eos_token_id=None)}.get(family, {})
    torch.manual_seed(seed)
    if family.startswith("falcon"):  # (its config's own names for the neurons and KV heads, its head size derived)
        sizes = {k: v for k, v in sizes.items() if k not in ("head_dim", "intermediate_size", "num_key_value_heads")}
    config = AutoConfig.for_model(MODEL_TYPES.get(family, family), **{**sizes, **extra})
    model = as_linears(AutoModelForCausalLM.from_config(config, dtype=torch.float32))  # (GPT-2's Conv1D as linears)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or ".act_fn." in name or "sinks" in name or "bias" in name and family == "gpt_oss"
                    or ".ln_" in name and family.startswith("falcon")):  # (Apertus's xIELU scalars, GPT-OSS's sinks
                p.add_(0.1 * torch.randn_like(p))  # and biases, Falcon's ln_attn, ln_mlp and ln_f too)
            elif "bias" in name and family in ("phi", "gpt_neox", "gpt2", "gpt_bigcode"):  # Phi-2's (and others')
                # biases at the weights' scale (at 0.1 they outweigh the embeddings: every token continues alike),
                # lm_head's 0.05: zeroed in the file, 1 token of 16 agrees (0.005 short); q/k rows written
                # interleaved, 1 (0.015); at 0.02 or 0.1 one of them agrees 16
                p.add_((0.05 if name == "lm_head.bias" else 0.02) * torch.randn_like(p))
        for name, b in [*model.named_buffers(), *model.named_parameters()]:  # the bias on a router's picks:
            if name.endswith((".expert_bias", ".e_score_correction_bias")):  # LFM2-MoE's, GLM-4.5's, ERNIE 4.5's
                b.add_(0.1 * torch.randn_like(b))
    sharpen(model, 8.0)
    return model.eval()


# The tiny files' general.name: llama.cpp gives the special tokens of a model named like Phi-3 ("phi3", "phi-3") Phi-3's
# attributes, looking up "</s>" and "<unk>", which the tiny byte-level vocabulary lacks (it fails to load then).
TINY_NAME = "tiny"


def tiny_families(dtypes: list[str], tokens: int, work: Path, families: list[str] = FAMILIES,
                  out: Path | None = None) -> dict:
    """The --tiny check: every family x dtype, llama.cpp's greedy tokens against transformers', printed as it goes
    and written to `out` (a JSON that `table` renders into docs/export.md). (Qwen2 gets Qwen2's pre-tokenizer: the
    llama.cpp node-llama-cpp 3.22.1 ships splits a qwen2 file's text Qwen2's way.)"""
    print("| family | dtype | prompt ids as HF | agreeing tokens (of %d) | worst shortfall (fp32) | "
          "worst shortfall (file's rounding) |" % tokens)
    print("|---|---|---|---|---|---|")
    saved = {"tokens": tokens, "dtypes": dtypes, "prompt_tokens": None, "families": {}}
    for family in families:
        model = tiny_model(family)
        model.save_pretrained(work / family)
        tiny_tokenizer(PRE_TOKENIZERS["qwen2"] if family == "qwen2" else None).save_pretrained(work / family)
        tokenizer = load_tokenizer(str(work / family))  # as read back: transformers gives Qwen3.5-MoE its own class
        ids = tokenizer(TINY_TEXT)["input_ids"]
        with torch.no_grad():
            reply = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        exported = [d for d in dtypes if not (TYPES[d].ggml and arch_of(model.config).moe)]  # export refuses those
        outs = [export(str(work / family), work / f"{family}-{dtype}.gguf", dtype, overwrite=True, name=TINY_NAME).gguf
                for dtype in exported]
        results = llama_cpp_greedy([{"model": out, "ids": ids, "n": tokens} for out in outs]
                                   + [{"model": outs[0], "text": TINY_TEXT, "n": 0}])
        prompt_ok = results[-1]["prompt"] == tokenizer(TINY_TEXT, add_special_tokens=False)["input_ids"]
        saved["prompt_tokens"] = saved["prompt_tokens"] or len(ids)  # the GPT-2 split's (Qwen3.5-MoE's splits digits)
        for dtype, result in zip(exported, results):
            generated = result["generated"]
            reference = quantized_reference(model, dtype)
            cell = {"prompt_as_hf": prompt_ok, "agreeing": agreement(reply, generated),
                    "shortfall_fp32": shortfall(model, ids, generated),
                    "shortfall_file": shortfall(reference, ids, generated)}
            if getattr(model.config, "index_topk", None):  # (sparse attention: an indexer picks the keys)
                cell["picks_keys"] = True
            elif arch_of(model.config).moe:
                cell["router_gap"] = router_gap(reference, ids + generated)
            saved["families"].setdefault(family, {})[dtype] = cell
            print(f"| {family} | {dtype} | {prompt_ok} | {cell['agreeing']} | {cell['shortfall_fp32']:.4f} | "
                  f"{cell['shortfall_file']:.4f} |", flush=True)
    if out is not None:
        out.write_text(json.dumps(saved, indent=1) + "\n")
    return saved


def small(x: float) -> str:
    """A shortfall as the table shows it: 0, or two significant digits (9.4e-4)."""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def table(saved: dict) -> str:
    """The --tiny JSON as docs/export.md shows it: each family x dtype, the tokens agreeing with transformers' fp32
    greedy continuation / the worst shortfall against the file's rounding."""
    dtypes = saved["dtypes"]
    lines = ["| family | " + " | ".join(dtypes) + " |", "|---" * (len(dtypes) + 1) + "|"]
    for family, cells in saved["families"].items():
        lines.append(f"| {family} | " + " | ".join(f"{cells[d]['agreeing']} / {small(cells[d]['shortfall_file'])}"
                                                   if d in cells else "refused" for d in dtypes) + " |")
    same = [f for f, cells in saved["families"].items() if all(c["prompt_as_hf"] for c in cells.values())]
    worst = max(c["shortfall_file"] for cells in saved["families"].values() for c in cells.values())
    lines += ["", f"{saved['tokens']} greedy tokens from a {saved['prompt_tokens']}-token prompt; llama.cpp tokenised "
              f"the prompt to the Hugging Face ids for {len(same)} of the {len(saved['families'])} families, and "
              f"every token it picked is transformers' argmax on the rounded weights to within {small(worst)}."]
    moe = [(family, d, c) for family, cells in saved["families"].items() for d, c in cells.items() if "router_gap" in c]
    if moe:
        family, d, c = max(moe, key=lambda cell: cell[2]["shortfall_file"])
        lines[-1] += (f" The largest shortfall of a mixture of experts, {family} {d}'s {small(c['shortfall_file'])}, "
                      f"comes where its router makes a close call: the last expert it picks and the best one it leaves "
                      f"differ by {small(c['router_gap'])} in routing score at some token, which llama.cpp's "
                      "8-bit activations in quantised products can swap.")
    picking = [(family, d, c) for family, cells in saved["families"].items() for d, c in cells.items()
               if c.get("picks_keys")]
    if picking:
        family, d, c = max(picking, key=lambda cell: cell[2]["shortfall_file"])
        names = ", ".join(dict.fromkeys(f for f, _, _ in picking))
        lines[-1] += (f" Of sparse attention ({names}), whose indexer picks six keys of each query's here, the "
                      f"largest, {family} {d}'s {small(c['shortfall_file'])}, comes where llama.cpp's rounded "
                      "activations move a near-tied pick.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtypes", nargs="+", default=["f16", "q8_0"])
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per prompt (fewer if the model stops)")
    ap.add_argument("--work", type=Path, default=Path("runs/llama_cpp"))
    ap.add_argument("--tiny", action="store_true", help="tiny random models of every family instead of --model")
    ap.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES, help="with --tiny: these only")
    ap.add_argument("--json", type=Path, help="with --tiny: write the results here (docs/llama_cpp_tiny.json)")
    args = ap.parse_args(argv)
    if args.tiny:
        tiny_families(args.dtypes, args.tokens, args.work, args.families, args.json)
        return

    model, tokenizer = load_model(args.model).float().eval(), load_tokenizer(args.model)
    references = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text)["input_ids"]
        with torch.no_grad():
            reply = model.generate(torch.tensor([ids]), max_new_tokens=args.tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        references.append((prompt, text, ids, reply))

    print("| dtype | prompt | prompt ids as HF | HF tokens | agreeing tokens | worst shortfall | worst shortfall "
          "(file's rounding) | llama.cpp's reply (if different) |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        start = time.time()
        out = export(args.model, args.work / f"model-{dtype}.gguf", dtype, overwrite=True).gguf
        print(f"<!-- {dtype}: exported in {time.time() - start:.1f} s, {out.stat().st_size / 1e6:.0f} MB -->",
              flush=True)
        results = llama_cpp_greedy([{"model": out, "text": text, "n": len(reply)}
                                    for _, text, _, reply in references])
        rounded = quantized_reference(model, dtype)
        for (prompt, _, ids, reply), result in zip(references, results):
            generated = result["generated"]
            agree = agreement(reply, generated)
            worst, worst_rounded = shortfall(model, ids, generated), shortfall(rounded, ids, generated)
            theirs = "" if agree == len(reply) else json.dumps(tokenizer.decode(generated))
            print(f"| {dtype} | {prompt} | {result['prompt'] == ids} | {len(reply)} | {agree} | {worst:.3f} | "
                  f"{worst_rounded:.3f} | "
                  f"{theirs} |", flush=True)
    print(f"\nThe Hugging Face model's replies: {json.dumps([tokenizer.decode(r) for *_, r in references])}")


if __name__ == "__main__":
    main()
