"""Tiny random models of every supported family, built in the test (no downloads)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import (ApertusConfig, ArceeConfig, AutoModelForCausalLM, Cohere2Config, CohereConfig,
                          Ernie4_5Config, Exaone4Config, Gemma2Config, Gemma3TextConfig, GemmaConfig, Glm4Config,
                          GraniteConfig, GraniteMoeConfig, HunYuanDenseV1Config, LlamaConfig, Ministral3Config,
                          MistralConfig, MixtralConfig, NemotronConfig, Olmo2Config, Olmo3Config, OlmoeConfig,
                          NemotronHConfig, Phi3Config, Qwen2Config, Qwen3Config, Qwen3MoeConfig, SeedOssConfig,
                          SmolLM3Config, StableLmConfig)

from minitron.arch import arch_of, as_linears, head_dim

FAMILIES = ["llama", "mistral", "ministral3", "qwen2", "qwen3", "ernie4_5", "seed_oss", "hunyuan_v1_dense", "smollm3",
            "granite", "gemma", "gemma2", "gemma3_text", "arcee", "nemotron", "apertus", "phi3", "glm4", "cohere",
            "cohere2", "olmo2", "olmo3", "exaone4", "qwen3_moe", "mixtral", "olmoe", "granitemoe", "stablelm",
            "nemotron_h", "qwen3_5_text", "qwen3_5_moe_text", "qwen3_next", "qwen2_moe", "gpt_oss", "granitemoehybrid",
            "lfm2", "lfm2_moe", "glm4_moe", "ernie4_5_moe", "dots1", "hunyuan_v1_moe", "deepseek_v3",
            "glm4_moe_lite", "deepseek_v2", "youtu", "sarvam_mla", "minimax_m2", "nemotron_h_moe", "nemotron_h_latent",
            "exaone_moe", "granitemoeshared", "deepseek_v32", "solar_open",
            "starcoder2", "afmoe", "glm_moe_dsa", "jais2", "iquestcoder", "phi", "glm", "exaone", "internlm3", "olmo",
            "gpt_neox", "opt", "gpt2", "gpt_bigcode", "gptj", "falcon", "ministral", "cwm", "helium", "hy_v3",
            "vaultgemma", "bamba", "gpt_neo", "granite_swa", "granitemoe_swa"]
# Falcon's layouts beside the 40B's ("falcon", in FAMILIES): Falcon-7B's, Falcon2-11B's, and one with its blocks in turn
FALCON_LAYOUTS = ["falcon_7b", "falcon_11b", "falcon_in_turn"]
SIZES = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256)


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs two workers), the cores shared out: each worker, and what it starts,
    computes on its own share, since threads beyond the cores make torch crawl."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def tiny_config(family: str, tie: bool = False, **overrides):
    sizes = {**SIZES, "tie_word_embeddings": tie, **overrides}
    if family == "llama":
        return LlamaConfig(**sizes)
    if family == "mistral":
        return MistralConfig(**sizes, sliding_window=None)
    if family == "ministral3":  # YaRN from a 16-token original context, past which queries are scaled up
        rope = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 16.0, "original_max_position_embeddings": 16,
                "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}
        return Ministral3Config(**{"rope_parameters": rope, **sizes}, sliding_window=None, pad_token_id=None,
                                bos_token_id=None, eos_token_id=None)
    if family == "qwen2":
        return Qwen2Config(**sizes)
    if family == "qwen3":
        return Qwen3Config(**sizes)
    if family == "ernie4_5":  # RoPE on interleaved pairs, as ERNIE-4.5-0.3B
        return Ernie4_5Config(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "seed_oss":  # q/k/v and o_proj biases; the released dropout left out (tests compare outputs)
        return SeedOssConfig(**{"attention_out_bias": True, **sizes}, attention_dropout=0.0, residual_dropout=0.0,
                             pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "hunyuan_v1_dense":  # per-head q/k norms after RoPE; NTK-alpha RoPE, as Hunyuan-7B
        rope = {"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10000.0}
        return HunYuanDenseV1Config(**{"rope_parameters": rope, **sizes}, pad_token_id=None, bos_token_id=None,
                                    eos_token_id=None)
    if family == "smollm3":  # every fourth layer without RoPE, as in SmolLM3-3B
        return SmolLM3Config(**sizes, no_rope_layers=[int((i + 1) % 4 != 0) for i in range(sizes["num_hidden_layers"])],
                             pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "granite":  # every multiplier away from 1, as Granite 3's are
        return GraniteConfig(**{"embedding_multiplier": 12.0, "residual_multiplier": 0.22, "attention_multiplier": 0.1,
                                "logits_scaling": 8.0, **sizes})
    if family == "granite_swa":  # Granite's multipliers; three of four layers sliding (the first global), a sink a
        # head, the second layer without RoPE (layer_rope_theta 0)
        from transformers import GraniteSWAConfig
        return GraniteSWAConfig(**{"embedding_multiplier": 12.0, "residual_multiplier": 0.22,
                                   "attention_multiplier": 0.1, "logits_scaling": 8.0, "sliding_window": 8,
                                   "layer_rope_theta": [1e4, 0, 1e4, 1e4], **sizes},
                                pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "gemma":  # GeGLU, (1 + w) norms, scaled embeddings, as Gemma 2B and 7B
        return GemmaConfig(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family in ("gemma2", "vaultgemma"):  # local and global layers in turn, both soft-caps (VaultGemma: Gemma 2's
        # layer without the norms after each block)
        from transformers import VaultGemmaConfig

        turns = ["sliding_attention", "full_attention"] * sizes["num_hidden_layers"]
        return {"gemma2": Gemma2Config, "vaultgemma": VaultGemmaConfig}[family](
            **{"sliding_window": 8, "query_pre_attn_scalar": 16, "attn_logit_softcapping": 50.0,
               "final_logit_softcapping": 30.0, **sizes, "layer_types": turns[:sizes["num_hidden_layers"]]})
    if family == "gemma3_text":
        return Gemma3TextConfig(**sizes, sliding_window=8, query_pre_attn_scalar=16,
                                layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                                             "full_attention"][: sizes["num_hidden_layers"]])
    if family == "arcee":
        return ArceeConfig(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "nemotron":
        return NemotronConfig(**sizes, hidden_act="relu2", partial_rotary_factor=0.5)
    if family == "apertus":  # its own norm names, per-head q/k norms, a non-gated xIELU MLP
        return ApertusConfig(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "phi3":  # q/k/v and gate/up fused; RoPE on three quarters of each head, as in Phi-4-mini
        rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}
        return Phi3Config(**{"rope_parameters": rope, **sizes}, pad_token_id=None, bos_token_id=None,
                          eos_token_id=None)
    if family == "glm":  # gate/up fused, q/k/v biases; RoPE on interleaved pairs of half of each head (GLM-4-9B's)
        from transformers import GlmConfig

        return GlmConfig(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "glm4":  # gate/up fused, q/k/v biases, four norms; RoPE on interleaved pairs of half of each head
        return Glm4Config(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "cohere":  # per-head q/k LayerNorms (Command R+), logits scaled
        return CohereConfig(**{"use_qk_norm": True, "logit_scale": 0.25, **sizes}, pad_token_id=None,
                            bos_token_id=None, eos_token_id=None)
    if family == "cohere2":  # three sliding layers with RoPE, then a global one without, as Command R7B
        turns = ["sliding_attention"] * 3 + ["full_attention"]
        turns = (turns * sizes["num_hidden_layers"])[:sizes["num_hidden_layers"]]
        return Cohere2Config(**{"logit_scale": 0.25, "sliding_window": 8, "layer_types": turns, **sizes},
                             pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "olmo2":  # norms after attention and the MLP, q/k norms over the whole projection
        return Olmo2Config(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "olmo3":  # OLMo 2's layer; three sliding layers, then a global one
        turns = (["sliding_attention"] * 3 + ["full_attention"]) * sizes["num_hidden_layers"]
        return Olmo3Config(**{"sliding_window": 8, "layer_types": turns[:sizes["num_hidden_layers"]], **sizes},
                           pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "exaone4":  # OLMo 2's layer, per-head q/k norms; three sliding layers, then a global one without RoPE
        turns = (["sliding_attention"] * 3 + ["full_attention"]) * sizes["num_hidden_layers"]
        return Exaone4Config(**{"sliding_window": 8, "layer_types": turns[:sizes["num_hidden_layers"]], **sizes},
                             pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "qwen3_moe":  # six experts, two a token, per-head q/k norms, as Qwen3-30B-A3B (expert width: SIZES';
        # dense layers', where a test lists some in mlp_only_layers: 80)
        return Qwen3MoeConfig(**{"num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": True,
                                 "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                                 **sizes},
                              pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "mixtral":  # six experts, two a token (intermediate_size: each expert's neurons)
        return MixtralConfig(**{"num_local_experts": 6, "num_experts_per_tok": 2, **sizes}, pad_token_id=None,
                             bos_token_id=None, eos_token_id=None)
    if family == "minimax_m2":  # six experts, two a token, picked by a sigmoid router steered by the block's bias; q/k
        # norms over the whole projection; RoPE on half of each head (MiniMax-M2's rotary_dim 64 of 128)
        from transformers import MiniMaxM2Config

        rope = {"rope_type": "default", "rope_theta": 5e6, "partial_rotary_factor": 0.5}
        return MiniMaxM2Config(**{"num_local_experts": 6, "num_experts_per_tok": 2, "rope_parameters": rope, **sizes},
                               pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "stablelm":  # LayerNorms with biases, q/k/v biases, RoPE on a quarter of each head, as StableLM 2
        return StableLmConfig(**{"use_qkv_bias": True, **sizes, "head_dim": sizes["hidden_size"] //
                                 sizes["num_attention_heads"]}, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "afmoe":  # Arcee Trinity's layers: three sliding with RoPE, one global without; the first with an
        # MLP of 80 neurons, the others with six experts, two a token, and a shared one as wide as one of them; muP's
        # embedding scale
        from transformers import AfmoeConfig

        experts = {"num_experts": 6, "num_experts_per_tok": 2, "num_shared_experts": 1, "num_dense_layers": 1,
                   "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                   "route_scale": 2.5, "mup_enabled": True, "sliding_window": 8}
        return AfmoeConfig(**{**experts, **sizes}, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family in ("ministral", "cwm"):  # Ministral-8B's sliding and global layers (in turn here); CWM's, three of four
        # sliding, Llama 3.1's RoPE
        from transformers import CwmConfig, MinistralConfig

        turns = (["sliding_attention", "full_attention"] if family == "ministral" else
                 ["full_attention"] + ["sliding_attention"] * 3) * sizes["num_hidden_layers"]
        ids = dict(pad_token_id=None, eos_token_id=None, bos_token_id=None if family == "ministral" else 0)  # (CWM's
        return {"ministral": MinistralConfig, "cwm": CwmConfig}[family](  # bos_token_id is a required number)
            **{"sliding_window": 8, "layer_types": turns[:sizes["num_hidden_layers"]], **sizes}, **ids)
    if family == "helium":  # Llama's layer, RoPE on interleaved pairs, o_proj hidden_size wide (Helium-1's)
        from transformers import HeliumConfig

        return HeliumConfig(**{**sizes, "head_dim": sizes["hidden_size"] // sizes["num_attention_heads"]},
                            pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "iquestcoder":  # Llama's model under a config of its own (transformers builds Llama's)
        from transformers import IQuestCoderConfig

        return IQuestCoderConfig(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "olmo":  # LayerNorms without weights; q/k/v clipped at 8, as OLMo 1.7's; its head size hidden_size /
        # heads (no head_dim)
        from transformers import OlmoConfig

        return OlmoConfig(**{k: v for k, v in sizes.items() if k != "head_dim"}, clip_qkv=8.0, pad_token_id=None,
                          bos_token_id=None, eos_token_id=None)
    if family == "internlm3":  # Llama's model under a config of its own, dynamic NTK RoPE as InternLM3-8B's
        from transformers import InternLM3Config

        rope = {"rope_type": "dynamic", "factor": 6.0, "rope_theta": 50000000.0}
        return InternLM3Config(**{"rope_parameters": rope, **sizes}, pad_token_id=None, bos_token_id=None,
                               eos_token_id=None)
    if family == "exaone":  # Llama's model under a config of its own, saved under EXAONE 3's names (transformer.h...)
        from transformers import ExaoneConfig

        return ExaoneConfig(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "jais2":  # Llama's layer with LayerNorms, biases on every linear and a squared-ReLU MLP, as Jais 2's
        from transformers import Jais2Config

        return Jais2Config(**sizes, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "opt":  # OPT-125M's layer: learned positions, LayerNorms before each block, a ReLU MLP in the layer
        # itself, biases on every linear, as many KV heads as heads (minitron's loader gives its config that number);
        # the released dropout left out (tests compare outputs)
        from transformers import OPTConfig

        return OPTConfig(**{k: v for k, v in sizes.items() if k not in ("head_dim", "intermediate_size",
                                                                           "num_key_value_heads")},
                         ffn_dim=sizes["intermediate_size"], word_embed_proj_dim=sizes["hidden_size"],
                         num_key_value_heads=sizes["num_attention_heads"], dropout=0.0, pad_token_id=None,
                         bos_token_id=None, eos_token_id=None)
    if family == "gpt_neo":  # GPT-Neo's layer: learned positions, q, k and v apart, global and local (window 8) layers
        # in turn, no num_key_value_heads (minitron's loader gives it the heads'); the released dropout left out
        from transformers import GPTNeoConfig

        layers = sizes["num_hidden_layers"]
        return GPTNeoConfig(**{k: v for k, v in sizes.items() if k not in ("head_dim", "num_key_value_heads")},
                            num_key_value_heads=sizes["num_attention_heads"], window_size=8,
                            attention_types=[[["global", "local"], layers // 2]] + [[["global"], layers % 2]],
                            bos_token_id=None, eos_token_id=None)
    if family == "gptj":  # GPT-J-6B's layer: attention and a GELU MLP in parallel behind one LayerNorm, RoPE on half of
        # each head (its pairs interleaved), biases on the MLP and lm_head; the released dropout left out
        from transformers import GPTJConfig

        return GPTJConfig(**gpt2_sizes(sizes), rotary_dim=4, num_key_value_heads=sizes["num_attention_heads"],
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    if family.startswith("falcon"):  # Falcon-40B's layer: attention and a GELU MLP in parallel behind a LayerNorm
        # each, q/k/v fused KV group by KV group, no biases, RoPE on every channel, its head size hidden_size / heads;
        # Falcon-7B's: one LayerNorm in front of both, multi-query attention; Falcon2-11B's: one LayerNorm, KV groups;
        # in turn: a LayerNorm in front of each block, every head its own keys and values, biases on every linear
        from transformers import FalconConfig

        kv = {"falcon": dict(new_decoder_architecture=True, num_kv_heads=sizes["num_key_value_heads"]),
              "falcon_7b": dict(multi_query=True),
              "falcon_11b": dict(new_decoder_architecture=True, num_kv_heads=sizes["num_key_value_heads"],
                                 num_ln_in_parallel_attn=1),
              "falcon_in_turn": dict(parallel_attn=False, multi_query=False, bias=True)}[family]
        return FalconConfig(**{**kv, **{k: v for k, v in sizes.items() if k not in ("head_dim", "intermediate_size",
                                                                                    "num_key_value_heads")}},
                            ffn_hidden_size=sizes["intermediate_size"], bos_token_id=None, eos_token_id=None)
    if family == "gpt_bigcode":  # StarCoder's layer: GPT-2's in linears with multi-query attention (one KV head)
        from transformers import GPTBigCodeConfig

        return GPTBigCodeConfig(**gpt2_sizes(sizes), multi_query=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                bos_token_id=None, eos_token_id=None)
    if family == "gpt2":  # GPT-2's layer: learned positions, LayerNorms before each block, q/k/v fused in c_attn, a
        # GELU MLP, biases on every linear, Conv1D weights (minitron's loader holds them as linears: `tiny_model`); the
        # released dropout left out (tests compare outputs)
        from transformers import GPT2Config

        return GPT2Config(**gpt2_sizes(sizes), num_key_value_heads=sizes["num_attention_heads"], resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    if family == "gpt_neox":  # Pythia's layer: attention and a GELU MLP in parallel behind a LayerNorm each, q/k/v
        # fused head by head, biases on every linear, RoPE on a quarter of each head; num_key_value_heads, which its
        # config lacks, as minitron's loader gives it (`as_built`)
        from transformers import GPTNeoXConfig

        heads = sizes["num_attention_heads"]
        return GPTNeoXConfig(**{k: v for k, v in sizes.items() if k not in ("head_dim", "num_key_value_heads")},
                             num_key_value_heads=heads, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "phi":  # Phi-2's layer: attention and a GELU MLP in parallel behind one LayerNorm, biases on every
        # linear (lm_head's too), RoPE on half of each head, its head size hidden_size / heads (no head_dim)
        from transformers import PhiConfig

        return PhiConfig(**{k: v for k, v in sizes.items() if k != "head_dim"}, pad_token_id=None, bos_token_id=None,
                         eos_token_id=None)
    if family == "starcoder2":  # biases on every linear, LayerNorms with biases, a GELU MLP, its head size hidden_size
        # / heads, as StarCoder2's; the released dropout left out (tests compare outputs)
        from transformers import Starcoder2Config

        return Starcoder2Config(**{**sizes, "head_dim": sizes["hidden_size"] // sizes["num_attention_heads"]},
                                pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "granitemoeshared":  # Granite-MoE's (below) with a shared expert of 64 neurons beside the experts
        from transformers import GraniteMoeSharedConfig

        granitemoe = tiny_config("granitemoe", tie, **overrides).to_dict()
        granitemoe.pop("model_type")
        return GraniteMoeSharedConfig(**{**granitemoe, "shared_intermediate_size": 64, **overrides})
    if family == "granitemoe_swa":  # Granite-MoE's (below) with Granite SWA's attention (sliding layers, sinks, the
        # second layer without RoPE); no shared expert, as transformers' default
        from transformers import GraniteMoeSWAConfig

        granitemoe = tiny_config("granitemoe", tie, **overrides).to_dict()
        granitemoe.pop("model_type")
        return GraniteMoeSWAConfig(**{**granitemoe, "sliding_window": 8, "layer_rope_theta": [1e4, 0, 1e4, 1e4],
                                      **overrides})
    if family == "granitemoe":  # six experts, two a token, Granite's multipliers (as Granite 3.0 1B-A400M's, but 1)
        return GraniteMoeConfig(**{"num_local_experts": 6, "num_experts_per_tok": 2, "embedding_multiplier": 12.0,
                                   "residual_multiplier": 0.22, "attention_multiplier": 0.1, "logits_scaling": 8.0,
                                   **sizes}, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "olmoe":  # six experts, two a token; attention hidden_size wide (q/k norms sized by it)
        return OlmoeConfig(**{"num_experts": 6, "num_experts_per_tok": 2, **sizes,
                              "head_dim": sizes["hidden_size"] // sizes["num_attention_heads"]},
                           pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "nemotron_h_latent":  # Nemotron 3 Super's kind: Nemotron 3's experts behind a latent of 32 channels
        return tiny_config("nemotron_h_moe", tie, moe_latent_size=32, **overrides)
    if family in ("nemotron_h", "nemotron_h_moe"):  # Mamba-2, attention, MLP, attention; eight Mamba heads in two
        # groups (the layers that tests drop leave an attention layer: transformers runs no Nemotron-H without one); or
        # (Nemotron 3 Nano's kind: `nemotron_h_moe`) attention, attention, experts, experts (whatever layers the tests
        # drop, the first stays one with a cache, as transformers needs): six squared-ReLU experts, two a token, picked
        # by a sigmoid router steered by its bias, renormalised and scaled, and a shared expert of 64 neurons
        kinds = ["linear_attention", "full_attention", "mlp", "full_attention"] * sizes["num_hidden_layers"]
        if family == "nemotron_h_moe":
            kinds = ["full_attention", "full_attention", "moe", "moe"] * sizes["num_hidden_layers"]
            sizes = {"n_routed_experts": 6, "num_experts_per_tok": 2, "moe_shared_expert_intermediate_size": 64,
                     "moe_intermediate_size": sizes["intermediate_size"], "routed_scaling_factor": 2.5, **sizes}
        kinds = sizes.pop("layers_block_type", kinds[:sizes["num_hidden_layers"]])  # (a test's own layers)
        return NemotronHConfig(**{"mamba_num_heads": 8, "mamba_head_dim": 8, "n_groups": 2, "ssm_state_size": 16,
                                  "chunk_size": 8, **sizes, "layers_block_type": kinds},
                               pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "qwen3_5_text":  # Gated DeltaNet, gated attention in turn; four value heads for two key heads
        from transformers.models.qwen3_5 import Qwen3_5TextConfig

        kinds = ["linear_attention", "full_attention"] * sizes["num_hidden_layers"]
        return Qwen3_5TextConfig(**{"linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
                                    "linear_value_head_dim": 8, **sizes,
                                    "layer_types": kinds[:sizes["num_hidden_layers"]]})
    if family == "qwen2_moe":  # six experts, two a token, and a shared expert of 64 neurons; q/k/v biases
        from transformers import Qwen2MoeConfig

        return Qwen2MoeConfig(**{"num_experts": 6, "num_experts_per_tok": 2, "shared_expert_intermediate_size": 64,
                                 "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                                 "mlp_only_layers": [], "decoder_sparse_step": 1, **sizes})  # (80: dense layers')
    if family == "qwen3_5_moe_text":  # Qwen3.5's layers; six experts, two a token, and a shared expert of 64 neurons
        from transformers.models.qwen3_5_moe import Qwen3_5MoeTextConfig

        kinds = ["linear_attention", "full_attention"] * sizes["num_hidden_layers"]
        return Qwen3_5MoeTextConfig(**{"num_experts": 6, "num_experts_per_tok": 2,
                                       "shared_expert_intermediate_size": 64,
                                       "moe_intermediate_size": sizes.pop("intermediate_size"),
                                       "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                                       "linear_key_head_dim": 8, "linear_value_head_dim": 8, **sizes,
                                       "layer_types": kinds[:sizes["num_hidden_layers"]]})
    if family == "qwen3_next":  # Qwen3.5-MoE's layers (six experts, two a token, a shared expert of 64 neurons), its
        # Gated DeltaNet's input projections fused: four value heads for two key heads
        from transformers import Qwen3NextConfig

        kinds = ["linear_attention", "full_attention"] * sizes["num_hidden_layers"]
        return Qwen3NextConfig(**{"num_experts": 6, "num_experts_per_tok": 2, "shared_expert_intermediate_size": 64,
                                  "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                                  "mlp_only_layers": [], "decoder_sparse_step": 1, "linear_num_key_heads": 2,
                                  "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
                                  **sizes, "layer_types": kinds[:sizes["num_hidden_layers"]]})
    if family == "gpt_oss":  # six experts, two a token; biases, sinks; a sliding layer, then a global one; YaRN from a
        # 16-token original context
        from transformers import GptOssConfig

        rope = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 16.0, "original_max_position_embeddings": 16,
                "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False}
        turns = ["sliding_attention", "full_attention"] * sizes["num_hidden_layers"]
        return GptOssConfig(**{"num_local_experts": 6, "num_experts_per_tok": 2, "sliding_window": 8,
                               "rope_parameters": rope, **sizes, "layer_types": turns[:sizes["num_hidden_layers"]]})
    if family in ("granitemoehybrid", "granitemoehybrid_moe"):  # Granite 4.0 H: Mamba-2, attention in turn, no
        # positions, Granite's multipliers; Mamba-2 mixers 2 x hidden_size wide, eight heads of 16 in two groups; no
        # experts (H-Micro), or six, two a token, beside a 64-neuron MLP (H-Tiny: `granitemoehybrid_moe`)
        from transformers import GraniteMoeHybridConfig

        if family == "granitemoehybrid_moe":
            sizes = {"num_local_experts": 6, "num_experts_per_tok": 2, "shared_intermediate_size": 64, **sizes}

        kinds = ["linear_attention", "full_attention"] * sizes["num_hidden_layers"]
        return GraniteMoeHybridConfig(**{"num_local_experts": 0,
                                         "shared_intermediate_size": sizes["intermediate_size"],
                                         "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 2,
                                         "mamba_d_state": 16, "mamba_chunk_size": 8, "position_embedding_type": "nope",
                                         "embedding_multiplier": 12.0, "residual_multiplier": 0.22,
                                         "attention_multiplier": 0.1, "logits_scaling": 8.0, **sizes,
                                         "layer_types": kinds[:sizes["num_hidden_layers"]]},
                                      pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "bamba":  # Granite 4's hybrid without its multipliers: Mamba-2 and attention in turn (attention
        # layers listed by index), RoPE on half of each head
        from transformers import BambaConfig

        return BambaConfig(**{"mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 2, "mamba_d_state": 16,
                              "mamba_chunk_size": 8, **sizes,
                              "attn_layer_indices": list(range(1, sizes["num_hidden_layers"], 2))},
                           pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "lfm2":  # short convolutions and attention in turn; attention hidden_size wide (llama.cpp's); the
        # MLP's neurons as written (`as_built`: block_auto_adjust_ff_dim derives the released models' own)
        from transformers import Lfm2Config

        kinds = ["conv", "full_attention"] * sizes["num_hidden_layers"]
        return Lfm2Config(**{"block_auto_adjust_ff_dim": False, "layer_types": kinds[:sizes["num_hidden_layers"]],
                             **sizes, "head_dim": sizes["hidden_size"] // sizes["num_attention_heads"]},
                          pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "lfm2_moe":  # LFM2's layers: the first with an MLP of 80 neurons, the others with six experts, two a
        # token, picked by a sigmoid router steered by a bias (as LFM2-8B-A1B's first two)
        from transformers import Lfm2MoeConfig

        kinds = ["conv", "full_attention"] * sizes["num_hidden_layers"]
        return Lfm2MoeConfig(**{"num_experts": 6, "num_experts_per_tok": 2, "num_dense_layers": 1,
                                "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                                "layer_types": kinds[:sizes["num_hidden_layers"]], **sizes,
                                "head_dim": sizes["hidden_size"] // sizes["num_attention_heads"]},
                             pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "hy_v3":  # Hy3's kind: the first layer with an MLP of 80 neurons, the others with six experts, two a
        # token, picked by a sigmoid router steered by the block's bias, renormalised and scaled, and a shared expert
        # as wide as one of them; per-head q/k norms
        from transformers import HYV3Config

        layers = sizes["num_hidden_layers"]
        return HYV3Config(**{"num_experts": 6, "num_experts_per_tok": 2, "num_shared_experts": 1,
                             "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                             "mlp_layer_types": ["dense"] + ["sparse"] * (layers - 1), **sizes},
                          pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "exaone_moe":  # K-EXAONE's kind: the first layer with an MLP of 80 neurons, the others with six
        # experts, two a token, picked by a sigmoid router steered by a bias, renormalised and scaled, and a shared
        # expert as wide as one of them; three sliding layers (window 8) with RoPE, then a global one without
        from transformers import ExaoneMoeConfig

        layers = sizes["num_hidden_layers"]
        kinds = (["sliding_attention"] * 3 + ["full_attention"]) * layers
        return ExaoneMoeConfig(**{"num_experts": 6, "num_experts_per_tok": 2, "num_shared_experts": 1,
                                  "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                                  "mlp_layer_types": ["dense"] + ["sparse"] * (layers - 1), "sliding_window": 8,
                                  "layer_types": kinds[:layers], "routed_scaling_factor": 2.5, **sizes},
                               pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "glm4_moe":  # the first layer with an MLP of 80 neurons, the others with six experts, two a token,
        # picked by a sigmoid router steered by a bias, their weights renormalised and scaled, and a shared expert as
        # wide as one of them; q/k/v biases, per-head q/k norms, RoPE on half of each head (as GLM-4.5's first layers)
        from transformers import Glm4MoeConfig

        return Glm4MoeConfig(**{"n_routed_experts": 6, "num_experts_per_tok": 2, "n_shared_experts": 1,
                                "first_k_dense_replace": 1, "moe_intermediate_size": sizes.pop("intermediate_size"),
                                "intermediate_size": 80, "attention_bias": True, "use_qk_norm": True,
                                "routed_scaling_factor": 2.5, "num_nextn_predict_layers": 0, **sizes},
                             pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "dots1":  # GLM-4.5's mixture of experts (the first layer dense, a shared expert as wide as one of
        # six experts), per-head q/k norms, full RoPE, full attention (as dots.llm1's)
        from transformers import Dots1Config

        experts = {"n_routed_experts": 6, "num_experts_per_tok": 2, "n_shared_experts": 1, "first_k_dense_replace": 1,
                   "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                   "routed_scaling_factor": 2.5, "norm_topk_prob": True, "sliding_window": None}
        return Dots1Config(**{**experts, **sizes}, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "solar_open":  # GLM-4.5's mixture of experts in every layer (six experts, two a token, a shared one as
        # wide as one of them) behind Llama's attention
        from transformers import SolarOpenConfig

        experts = {"n_routed_experts": 6, "num_experts_per_tok": 2, "n_shared_experts": 1,
                   "moe_intermediate_size": sizes.pop("intermediate_size"), "routed_scaling_factor": 2.5}
        return SolarOpenConfig(**{**experts, **sizes}, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "hunyuan_v1_moe":  # Hunyuan dense's attention and RoPE (NTK alpha), six experts, two a token, and a
        # shared expert as wide as one of them, in every layer (as Hunyuan-A13B's)
        from transformers import HunYuanMoEV1Config

        rope = {"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10000.0}
        return HunYuanMoEV1Config(**{"num_experts": 6, "moe_topk": 2, "rope_parameters": rope, **sizes},
                                  pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family == "ernie4_5_moe":  # ERNIE 4.5's layers: the first with an MLP of 80 neurons, the others with six
        # experts, two a token, picked by a softmax steered by a bias, and a shared expert as wide as one of them
        from transformers import Ernie4_5_MoeConfig

        experts = {"moe_num_experts": 6, "moe_k": 2, "moe_num_shared_experts": 1, "moe_layer_start_index": 1,
                   "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80}
        return Ernie4_5_MoeConfig(**{**experts, **sizes}, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if family in ("deepseek_v3", "glm4_moe_lite", "deepseek_v2", "sarvam_mla", "deepseek_v32", "glm_moe_dsa"):
        # GLM-4.5's mixture of experts (the first layer dense, a shared expert as wide as one of six experts) with
        # multi-head latent attention (`LATENT`); GLM-4.7-Flash's dense layer by its kind (mlp_layer_types); DeepSeek
        # V2's softmax router, its picks greedy; Sarvam-105B's config of its own; DeepSeek V3.2's and GLM-5's indexer
        # (`INDEXER`)
        from transformers import (DeepseekV2Config, DeepseekV3Config, DeepseekV32Config, Glm4MoeLiteConfig,
                                  GlmMoeDsaConfig, SarvamMLAConfig)

        layers, indexed = sizes["num_hidden_layers"], family in ("deepseek_v32", "glm_moe_dsa")
        dense = {"mlp_layer_types": ["dense"] + ["sparse"] * (layers - 1)} if family == "glm4_moe_lite" or indexed \
            else {"first_k_dense_replace": 1, **({"topk_method": "greedy"} if family == "deepseek_v2" else {})}
        dense.update(INDEXER if indexed else {})
        experts = {"n_routed_experts": 6, "num_experts_per_tok": 2, "n_shared_experts": 1, **dense,
                   "moe_intermediate_size": sizes.pop("intermediate_size"), "intermediate_size": 80,
                   "routed_scaling_factor": 2.5, "norm_topk_prob": True, "n_group": 1, "topk_group": 1}
        config = {"deepseek_v3": DeepseekV3Config, "deepseek_v2": DeepseekV2Config, "sarvam_mla": SarvamMLAConfig,
                  "glm4_moe_lite": Glm4MoeLiteConfig, "deepseek_v32": DeepseekV32Config,
                  "glm_moe_dsa": GlmMoeDsaConfig}[family]
        return config(**{**experts, **latent(sizes, overrides)}, pad_token_id=None, bos_token_id=None,
                      eos_token_id=None)
    if family == "youtu":  # multi-head latent attention (`LATENT`) and a SwiGLU MLP in every layer, as Youtu-LLM 2B;
        # weights of the others' scale (its own initialisation scales them by 2 / sqrt(5 x hidden): logits 6x wider)
        from transformers import YoutuConfig

        return YoutuConfig(**{"initializer_range": 0.02, "pad_token_id": None, "bos_token_id": None,
                              "eos_token_id": None, **latent(sizes, overrides)})
    raise ValueError(family)


# Multi-head latent attention's tiny sizes: queries through a latent of 24, keys and values from one of 32 and a rotated
# key of 8 every head shares, 12 unrotated key channels and 16 value channels a head
LATENT = {"q_lora_rank": 24, "kv_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 12, "v_head_dim": 16}
# DeepSeek Sparse Attention's lightning indexer: 16 heads of 64 channels (the first 8 rotated; llama.cpp rotates them by
# a Hadamard matrix of 64 rows at least) pick the 6 keys each query attends to, so that past its sixth token a query's
# attention depends on the indexer's picks. (With four heads, a key every head's ReLU zeroes scores exactly 0, and
# transformers and llama.cpp break such ties apart: 0.69 short on llama.cpp's check, measured.)
INDEXER = {"index_n_heads": 16, "index_head_dim": 64, "index_topk": 6}


def gpt2_sizes(sizes: dict) -> dict:
    """`sizes` under GPT-2's config names (GPTBigCode's too), the others as given."""
    names = dict(vocab_size="vocab_size", n_positions="max_position_embeddings", n_embd="hidden_size",
                 n_layer="num_hidden_layers", n_head="num_attention_heads", n_inner="intermediate_size",
                 tie_word_embeddings="tie_word_embeddings")
    own = {k: v for k, v in sizes.items() if k not in (*names.values(), "head_dim", "num_key_value_heads")}
    return {**{name: sizes[size] for name, size in names.items()}, **own}


def latent(sizes: dict, overrides: dict) -> dict:
    """`sizes` for a family of multi-head latent attention: `LATENT`'s, as many KV heads as query heads unless
    `overrides` sets them, and no head_dim (transformers' is the rotated channels; GLM-4.7-Flash's config names them
    so)."""
    kept = {k: v for k, v in sizes.items() if k != "head_dim" and (k != "num_key_value_heads" or k in overrides)}
    return {**LATENT, "num_key_value_heads": sizes["num_attention_heads"], **kept}


def own_names(config, sizes: dict) -> dict:
    """`sizes` with intermediate_size and num_experts under the family's names (Qwen3-MoE's moe_intermediate_size,
    Granite-MoE's num_local_experts), for a family whose attention is hidden_size wide (OLMoE) hidden_size as
    wide as the target's heads, and where every head has its own keys and values (multi-head latent attention,
    GPT-NeoX's) no KV heads (they are the query heads)."""
    arch, own = arch_of(config), config.num_key_value_heads == config.num_attention_heads
    names = {"intermediate_size": arch.mlp_size, "num_experts": arch.experts_size}
    sizes = {names.get(k, k): v for k, v in sizes.items() if not (own and k == "num_key_value_heads")}
    if arch.attention_is_hidden and "hidden_size" in sizes:
        sizes["hidden_size"] = sizes.get("num_attention_heads", config.num_attention_heads) * head_dim(config)
    return sizes


def tiny_model(family: str, tie: bool = False, seed: int = 0, **overrides):
    """A random tiny model in eval mode; norms (and Apertus's xIELU scalars; GPT-OSS's, Phi-2's, GPT-NeoX's, OPT's,
    GPT-2's, GPTBigCode's and GPT-J's biases, lm_head's among them, as llama_cpp_check's) get random weights so that
    pruning (and carrying) them matters."""
    torch.manual_seed(seed)
    model = as_linears(AutoModelForCausalLM.from_config(tiny_config(family, tie, **overrides), dtype=torch.float32))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or ".act_fn." in name or "sinks" in name or "bias" in name and family == "gpt_oss"
                    or ".ln_" in name and family.startswith("falcon")):  # (Falcon's ln_attn, ln_mlp, ln_f)
                p.add_(0.1 * torch.randn_like(p))
            elif "bias" in name and family in ("phi", "gpt_neox", "opt", "gpt2", "gpt_bigcode", "gptj",
                                               "falcon_in_turn", "gpt_neo"):
                p.add_((0.05 if name == "lm_head.bias" else 0.02) * torch.randn_like(p))
        for name, b in [*model.named_buffers(), *model.named_parameters()]:  # the bias on a router's picks:
            if name.endswith((".expert_bias", ".e_score_correction_bias")):  # LFM2-MoE's, GLM-4.5's, ERNIE 4.5's
                b.add_(0.1 * torch.randn_like(b))
    return model.eval()


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer():
    """A character-level tokenizer of 100 tokens (printable ASCII, newline, ChatML specials)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(i) for i in range(32, 127)] + ["\n"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def save_tiny(path, family: str = "llama", tie: bool = False, seed: int = 0, **overrides):
    """Save a tiny model with the tiny tokenizer as an ordinary Hugging Face directory."""
    from transformers import GenerationConfig

    model = tiny_model(family, tie, seed, **overrides)
    tok = tiny_tokenizer()
    model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(path)
    return path


WORDS = ("the model prunes heads and neurons while the teacher distils knowledge into a smaller student "
         "network that keeps most of its quality on held out text").split()


def write_corpus(path, docs: int = 40, words: int = 120, seed: int = 0):
    """A directory of small text documents (`*.txt`) with some structure to learn."""
    import random

    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        start = rng.randrange(len(WORDS))
        text = " ".join(WORDS[(start + i) % len(WORDS)] if rng.random() < 0.8 else rng.choice(WORDS)
                        for i in range(words))
        (path / f"doc{d:03d}.txt").write_text(text + "\n")
    return path


def load_benchmark(name: str):
    """benchmarks/NAME.py as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_cli(*args):
    """`minitron ARGS...` in this process; arguments may be paths or numbers."""
    from minitron.cli import main

    main([str(a) for a in args])


def cli_error(capsys, *args) -> str:
    """Run a command that must fail: a non-zero exit, no traceback, and one `minitron...error:` line, printed last."""
    with pytest.raises(SystemExit) as e:
        run_cli(*args)
    assert e.value.code in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("minitron") and "error: " in line]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    return lines[0]


@pytest.fixture
def tiny_dir(tmp_path):
    return save_tiny(tmp_path / "tiny-llama")


def build_tiny_data(tmp_path, model_dir, docs: int = 40, words: int = 120, name: str = "data"):
    """Token data (train/val) from `write_corpus` documents, made with `model_dir`'s tokenizer."""
    from minitron.data import build_data

    return build_data(source=[str(write_corpus(tmp_path / f"{name}-text", docs, words))], out=tmp_path / name,
                      tokenizer=str(model_dir), glob="*.txt", dev_fraction=0.2, test_fraction=0.2)


@pytest.fixture
def tiny_data(tmp_path, tiny_dir):
    return build_tiny_data(tmp_path, tiny_dir)


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models run fastest on one thread (two threads crawl on a busy machine); subprocesses get one too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def die_after_checkpoint(monkeypatch):
    """Make the trainer stop (KeyboardInterrupt) right after writing its next checkpoint, as a kill would; call the
    returned function to let it run normally again."""
    from minitron.distill import loop  # the module whose save_checkpoint the trainer calls

    real_save = loop.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(loop, "save_checkpoint", real_save)
