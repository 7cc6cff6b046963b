"""One adapter per Hugging Face family: where the norms, attention and MLP projections,
embeddings and lm_head live, and how the config names its sizes.

All supported families share transformers' layout (`model.model.embed_tokens`, `.layers[i].self_attn.
{q,k,v,o}_proj`, `.mlp.{gate,up,down}_proj`, `model.model.norm`, `model.lm_head`; GPT-NeoX's decoder is
`model.gpt_neox`, its parts named its own way: `Arch.decoder`); they differ in
which norms a decoder layer has, whether the MLP is gated, and whether projections are fused (Phi-3's
`qkv_proj` and `gate_up_proj`, GLM-4's `gate_up_proj`): the unit kinds' rows of a projection are `Rows`, so that
code that ranks or slices heads and neurons does not care; multi-head latent attention (DeepSeek V2 and V3,
GLM-4.7-Flash, Youtu-LLM: `Arch.mla`) has a head's rows in q_proj or q_b_proj and in kv_b_proj, behind latents every
head shares (`HeadDims` says how many a head has in each). A mixture of experts (Qwen3-MoE, Mixtral, OLMoE,
Granite-MoE, GPT-OSS) has a router and every expert's weights in two 3D tensors in place of the MLP's linears
(`MoEWeights`; where each holds experts, hidden channels and neurons: `ExpertParam`), which checkpoints store as one
linear per expert or under names of their own (`stored_as`). A hybrid's layers differ in kind, as `config.layer_types`
names them: Nemotron-H has one `mixer` a layer behind one norm, Mamba-2 (`linear_attention`), attention
(`full_attention`) or a squared-ReLU MLP (`mlp`); Granite 4 has a Mamba-2 (`mamba`) or attention in each layer, and an
MLP (`shared_mlp`) in every one; Qwen3.5 and Qwen3-Next have a Gated DeltaNet (`linear_attn`) or gated attention in
each layer, and an MLP or experts in every one; LFM2 has a gated short convolution (`conv`) or attention in each layer,
and an MLP (`feed_forward`) in every one. `attention_of`, `mlp_of`, `mamba_of`, `delta_of` and `conv_of` give a layer's
parts, None where it has no such part; a family's own names for them are its `Arch`'s (`MambaNames`, `SharedNames`, the
MLP's linears).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from minitron.errors import MinitronError


@dataclass(frozen=True)
class MambaNames:
    """A Mamba-2 hybrid's config names for its mixers' heads, each head's channels, the head groups (a group's heads
    share its B and C), the state size and the convolution's width (Nemotron-H's by default)."""

    heads: str = "mamba_num_heads"
    head_dim: str = "mamba_head_dim"
    groups: str = "n_groups"
    state: str = "ssm_state_size"
    conv: str = "conv_kernel"


GRANITE_MAMBA = MambaNames("mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_d_conv")


@dataclass(frozen=True)
class SharedNames:
    """Where a mixture of experts' shared expert is and what its parts and size are called: Qwen's (the default) in
    the block as `shared_expert`, gate_proj and up_proj apart, its output gated by the block's `shared_expert_gate`;
    Granite 4's (`GRANITE_SHARED`) in the layer as `shared_mlp`, its gate and up rows fused in `input_linear`,
    ungated; GLM-4.5's (`GLM_SHARED`) in the block as `shared_experts`, ungated, as wide as `count` experts
    (`shared_width`)."""

    module: str = "shared_expert"
    in_layer: bool = False  # in the decoder layer, beside the block (else in the block)
    fused: str | None = None  # its one gate-and-up linear (None: gate_proj and up_proj)
    down: str = "down_proj"
    gate: str | None = "shared_expert_gate"  # the block's one-row gate of its output (None: ungated)
    size: str | None = "shared_expert_intermediate_size"  # the config's name of its neurons (None: `count`'s)
    # Where it has no size of its own, the config's name of the number of experts whose neurons it has (None: one,
    # Hunyuan's): its width is that many times each routed expert's, and follows it
    count: str | None = None


GRANITE_SHARED = SharedNames("shared_mlp", True, "input_linear", "output_linear", None, "shared_intermediate_size")
GLM_SHARED = SharedNames("shared_experts", gate=None, size=None, count="n_shared_experts")
# Nemotron 3's, in the block as `shared_experts`, ungated, of its own size (squared-ReLU: up_proj and down_proj only)
NEMOTRON_SHARED = SharedNames("shared_experts", gate=None, size="moe_shared_expert_intermediate_size")
ERNIE_SHARED = replace(GLM_SHARED, count="moe_num_shared_experts")  # ERNIE 4.5's, the same under its name
NUM_SHARED = replace(GLM_SHARED, count="num_shared_experts")  # K-EXAONE's and AFMoE's, the same under theirs
HUNYUAN_SHARED = SharedNames("shared_mlp", gate=None, size=None)  # Hunyuan-A13B's, as wide as one routed expert


@dataclass(frozen=True)
class Arch:
    model_type: str  # config.model_type this adapter serves
    norms: tuple[str, ...]  # decoder-layer norms whose weight spans the hidden_size channels
    gated_mlp: bool = True  # MLP has gate_proj beside up_proj (SwiGLU/GeGLU); False: squared-ReLU up/down only
    scaled_embedding: bool = False  # embeddings are multiplied by sqrt(hidden_size) (Gemma)
    fused_qkv: bool = False  # q, k and v rows in one qkv_proj (Phi-3)
    fused_mlp: bool = False  # gate and up rows in one gate_up_proj (Phi-3, GLM-4)
    mlp_fused: str = "gate_up_proj"  # the fused gate-and-up linear's name (Granite 4's input_linear)
    mlp_gate: str = "gate_proj"  # the MLP's gate and up linears' names, where apart (LFM2's w1 and w3)
    mlp_up: str = "up_proj"
    mlp_down: str = "down_proj"  # the MLP's output linear's name (Granite 4's output_linear, LFM2's w2)
    # The norms whose per-norm scores are summed into the hidden-channel score (None: all of `norms`): those in front
    # of attention and the MLP (NVIDIA's implementation), or where a family has none in front (OLMo 2), those of
    # what each block adds to the residual
    score_norms: tuple[str, ...] | None = None
    # Each layer's MLP is a sparse mixture of experts (`MoEWeights`): a router (`mlp.gate`) and the experts' weights as
    # 3D tensors, `mlp.experts.gate_up_proj` (experts, 2 x neurons, hidden) and `.down_proj` (experts, hidden, neurons)
    moe: bool = False
    mlp_size: str = "intermediate_size"  # the config's name of each MLP's (each expert's) neurons
    experts_size: str = "num_experts"  # the config's name of a mixture of experts' number of experts
    moe_block: str = "mlp"  # the decoder layer's mixture-of-experts block (Granite-MoE: block_sparse_moe)
    router: str = "gate"  # the block's router (Granite-MoE: router)
    # How checkpoints name a mixture of experts: the block, and each expert's gate, up and down linears (transformers
    # joins them into its 3D tensors when it loads one and splits them when it saves), or, where a checkpoint stores
    # the 3D tensors themselves, the names of the router, gate-and-up and down tensors in the layer (`stored_fused`)
    stored_moe: tuple[str, str | None, str, str] = ("mlp", "gate_proj", "up_proj", "down_proj")  # (gate: None ungated)
    stored_fused: tuple[str, str, str] | None = None
    # Beside the routed experts, one shared expert every token runs (a gated MLP of shared_expert_intermediate_size
    # neurons, `block.shared_expert`), its output scaled by the sigmoid of `block.shared_expert_gate` (Qwen3.5-MoE)
    shared_expert: bool = False
    shared_names: SharedNames = SharedNames()  # where it is and its parts' names (Granite 4's `GRANITE_SHARED`)
    # The config's name of the number of leading layers whose MLP is dense, of intermediate_size neurons, before the
    # mixture-of-experts ones (LFM2-MoE's num_dense_layers, GLM-4.5's first_k_dense_replace); Qwen-MoE's are listed in
    # mlp_only_layers (`dense_layers`)
    dense_first: str | None = None
    # The config's per-layer list of MLP kinds, "dense" or "sparse" (GLM-4.7-Flash's mlp_layer_types), where it names
    # its dense layers so (`dense_layers`)
    dense_kinds: str | None = None
    # The experts as GPT-OSS holds them (`OSS_EXPERTS`): gate_up_proj (experts, hidden, 2 x neurons) with gate and up
    # columns in turn, down_proj (experts, neurons, hidden), each with a bias, a router with a bias, and the clamped
    # SwiGLU of the experts' own `_apply_gate`
    oss_experts: bool = False
    # transformers sizes this family's attention by hidden_size (OLMoE's q/k norms, StableLM's head size as hidden_size
    # / heads), so a model of it keeps num_attention_heads x head_dim == hidden_size: heads and hidden channels are
    # pruned together
    attention_is_hidden: bool = False
    # A hybrid's recurrent layers, beside its attention ones (`config.layer_types`): "mamba" (Nemotron-H's Mamba-2, each
    # decoder layer one `mixer` behind one norm, MLP layers apart), "delta" (Qwen3.5's Gated DeltaNet, `linear_attn`,
    # each layer with its MLP) or "conv" (LFM2's gated short convolution, `conv`, hidden_size channels wide: they
    # follow the hidden size); None: every layer has attention and an MLP
    mixer: str | None = None
    mamba_names: MambaNames = MambaNames()  # a Mamba-2 hybrid's config names (Granite 4's `GRANITE_MAMBA`)
    # Its Mamba-2 mixers are config.mamba_expand x hidden_size wide (Granite 4: transformers sizes them so), so their
    # heads x head channels follow the hidden size: a target's hidden_size sets the heads
    mamba_expand: bool = False
    gated_query: bool = False  # q_proj holds each head's queries, then its output gate's rows (Qwen3.5)
    # Multi-head latent attention (DeepSeek V2, V3; `attention_rows`, `HeadDims`): each head's queries from q_proj, or
    # from q_b_proj after a low-rank latent (q_a_proj, q_a_layernorm), and its keys' unrotated channels and its values
    # from kv_b_proj, after a latent every head shares (kv_a_proj_with_mqa's first kv_lora_rank rows, kv_a_layernorm);
    # the latent's last rows are one rotated key all heads share. Each head has its own keys and values (the KV heads
    # follow the query heads); the latents are kept whole
    mla: bool = False
    ties: bool = True  # the family honours tie_word_embeddings (transformers never ties a Nemotron-H's)
    # Its decoder layers return their indexer's picks beside their output, which the model hands the next layer
    # (GLM-5's `prev_topk_indices`, for layers that reuse them; minitron takes models whose every layer picks its own)
    picks_carried: bool = False
    layer_pair: bool = False  # its decoder layers return (output, attention weights), the model reading the first
    # (Falcon's, Bamba's)
    decoder: str = "model"  # the decoder's path in the model (GPT-NeoX's gpt_neox, OPT's model.decoder)
    layers: str = "layers"  # the decoder's list of layers (GPT-2's h)
    embeddings: str = "embed_tokens"  # the token embeddings' name in the decoder (`model.model.NAME`)
    final_norm: str = "norm"  # the final norm's name in the decoder
    stored_prefix: str | None = None  # what checkpoints name the decoder (None: `decoder`'s; Nemotron-H's backbone.)
    qkv: str = "qkv_proj"  # the attention's one linear of q, k and v rows, where fused (GPT-2's c_attn)
    # q, k and v rows fused in one linear group by group: each KV group's query heads, then its key head and its value
    # head (Falcon's query_key_value; GPT-NeoX's, a group for each head: `attention_rows`)
    qkv_grouped: bool = False
    positions: str | None = None  # learned position embeddings in the decoder, hidden_size wide (OPT's embed_positions)
    # Config sizes that are the hidden size under another name, which follow it (OPT's word_embed_proj_dim)
    hidden_aliases: tuple[str, ...] = ()
    multi_head: bool = False  # its attention has no KV heads of its own (OPT's: no num_key_value_heads in its config)
    kv_aliases: tuple[str, ...] = ()  # config sizes that are the KV heads under another name (Falcon's num_kv_heads)
    # The stored weights of its linears that transformers holds as Conv1D, (in, out) (GPT-2's), a regular expression:
    # minitron holds them as linears (`as_linears`), whose state dict keeps the stored layout (`Conv1DLinear`)
    transposed: str | None = None
    # Parts of in-memory names that checkpoints store under others, (regular expression, replacement) applied in turn
    # (ERNIE 4.5's router statistics; EXAONE 3's every name, `stored_as`)
    stored_renames: tuple[tuple[str, str], ...] = ()

    @property
    def hidden_norms(self) -> tuple[str, ...]:
        return self.score_norms or self.norms

    @property
    def layer_returns_tuple(self) -> bool:
        """Whether its decoder layers return a tuple, whose first item the model hands the next layer (Falcon's output
        and attention weights, GLM-5's output and picks)."""
        return self.layer_pair or self.picks_carried

    @property
    def own_kv(self) -> bool:
        """Whether every attention head has its own keys and values, whatever the config says (multi-head latent
        attention's, GPT-NeoX's, OPT's): the KV heads are the query heads."""
        return self.mla or self.kv_implied

    @property
    def kv_implied(self) -> bool:
        """Whether its config names no KV heads, every head having its own (GPT-NeoX's, OPT's): `as_built` gives it
        num_key_value_heads."""
        return self.multi_head

    @property
    def hybrid(self) -> bool:
        """Whether its layers differ in kind (`mixer`)."""
        return self.mixer is not None


_PRE_POST = ("input_layernorm", "post_attention_layernorm")
# EXAONE 3's checkpoints' names of Llama's tensors (transformers renames them when it loads one and back when it saves)
EXAONE_STORED = ((r"^model\.embed_tokens\.", "transformer.wte."), (r"^model\.norm\.", "transformer.ln_f."),
                 (r"^model\.layers\.", "transformer.h."), (r"\.self_attn\.o_proj\.", ".attn.attention.out_proj."),
                 (r"\.self_attn\.", ".attn.attention."), (r"\.input_layernorm\.", ".ln_1."),
                 (r"\.post_attention_layernorm\.", ".ln_2."), (r"\.mlp\.gate_proj\.", ".mlp.c_fc_0."),
                 (r"\.mlp\.up_proj\.", ".mlp.c_fc_1."), (r"\.mlp\.down_proj\.", ".mlp.c_proj."))
_GEMMA = _PRE_POST + ("pre_feedforward_layernorm", "post_feedforward_layernorm")  # a norm on each side of each block
_GEMMA_FRONT = ("input_layernorm", "pre_feedforward_layernorm")  # Gemma's norms in front of attention and the MLP
_POST = ("post_attention_layernorm", "post_feedforward_layernorm")  # a norm on each block's output only (OLMo 2, 3)
_AFMOE = ("input_layernorm", "post_attention_layernorm", "pre_mlp_layernorm", "post_mlp_layernorm")  # (Gemma 2's four)
_MIXTRAL_STORED = ("block_sparse_moe", "w1", "w3", "w2")  # Mixtral's checkpoints' names of its experts (MiniMax-M2's)
# GLM-4.5's mixture of experts (and dots.llm1's, DeepSeek's): n_routed_experts of moe_intermediate_size neurons, a
# shared expert as wide as n_shared_experts of them (`GLM_SHARED`), the first first_k_dense_replace layers dense
_GLM_MOE = dict(moe=True, mlp_size="moe_intermediate_size", experts_size="n_routed_experts", shared_expert=True,
                shared_names=GLM_SHARED, dense_first="first_k_dense_replace")
# DeepSeek V3's layers, their dense layers listed by kind (mlp_layer_types): GLM-4.7-Flash's, DeepSeek V3.2's, GLM-5's
_LATENT_MOE = dict(_GLM_MOE, dense_first=None, dense_kinds="mlp_layer_types", mla=True)
FAMILIES: dict[str, Arch] = {a.model_type: a for a in [
    Arch("llama", _PRE_POST),
    Arch("mistral", _PRE_POST),
    Arch("iquestcoder", _PRE_POST),  # IQuest-Coder-V1 (40B; Instruct, Loop): Llama's model under a config of its own
    # InternLM3 (internlm3: 8B Instruct): Llama's model under a config of its own, dynamic NTK RoPE (which changes
    # nothing within max_position_embeddings)
    Arch("internlm3", _PRE_POST),
    # EXAONE 3 (exaone: 3.0 7.8B; 3.5 2.4B, 7.8B, 32B; EXAONE Deep): Llama's model under a config of its own, its
    # checkpoints naming every tensor their own way (GPT-2's transformer.h..., `EXAONE_STORED`)
    Arch("exaone", _PRE_POST, stored_renames=EXAONE_STORED),
    # Ministral 3 (3B, 8B, 14B; the language model of its multimodal checkpoints): Mistral's layout, YaRN, and queries
    # scaled up with the position past YaRN's original context (llama_4_scaling_beta)
    Arch("ministral3", _PRE_POST),
    # Ministral (ministral: Ministral-8B-Instruct-2410): Mistral's layout with sliding and global layers (layer_types);
    # CWM (cwm: Code World Model 32B): Llama's, three of four layers sliding, Llama 3.1's RoPE; llama.cpp runs neither
    Arch("ministral", _PRE_POST),
    Arch("cwm", _PRE_POST),
    # Helium (helium: Helium-1 2B, Kyutai's): Llama's layout, RoPE on interleaved pairs, o_proj hidden_size wide;
    # llama.cpp runs no Helium
    Arch("helium", _PRE_POST, attention_is_hidden=True),
    Arch("qwen2", _PRE_POST),
    Arch("ernie4_5", _PRE_POST),  # ERNIE 4.5 (dense: 0.3B): Llama's layout, RoPE on interleaved pairs, tied embeddings
    Arch("qwen3", _PRE_POST),
    Arch("seed_oss", _PRE_POST),  # Seed-OSS (36B): Llama's layout; q/k/v biases (and an o_proj one if set)
    # Hunyuan dense (0.5B-7B): Llama's layout with per-head q/k norms after RoPE, RoPE's base stretched by NTK-alpha
    Arch("hunyuan_v1_dense", _PRE_POST),
    Arch("smollm3", _PRE_POST),  # Llama's layout; every fourth layer without RoPE (no_rope_layers)
    Arch("granite", _PRE_POST),  # Llama's layout; embeddings, residuals, attention and logits scaled (`LogitHead`)
    # Granite SWA (granite_swa: Granite-Swash): Granite's layer with sliding and global layers (layer_types), a learned
    # attention sink a query head (as GPT-OSS's) and a RoPE base a layer (layer_rope_theta; 0: no RoPE)
    Arch("granite_swa", _PRE_POST),
    # Gemma (2B, 7B, CodeGemma): Llama's layout with a GeGLU MLP, RMSNorms of x * (1 + w), embeddings scaled by
    # sqrt(hidden_size), tied
    Arch("gemma", _PRE_POST, scaled_embedding=True),
    # Gemma 2, 3: post_attention_layernorm normalises the attention output before the residual add; the norm in front
    # of the MLP is pre_feedforward_layernorm (the choice measured in docs/pruning_criteria.md)
    Arch("gemma2", _GEMMA, scaled_embedding=True, score_norms=_GEMMA_FRONT),
    Arch("gemma3_text", _GEMMA, scaled_embedding=True, score_norms=_GEMMA_FRONT),
    # VaultGemma (vaultgemma: VaultGemma 1B): Gemma 2's layer without the norms after each block; llama.cpp runs none
    Arch("vaultgemma", _GEMMA_FRONT, scaled_embedding=True),
    Arch("arcee", _PRE_POST, gated_mlp=False),  # Llama's layout with Nemotron's squared-ReLU MLP (AFM-4.5B)
    # Jais 2 (8B, 70B; Chat): Arcee's layer with LayerNorms and biases on every linear
    Arch("jais2", _PRE_POST, gated_mlp=False),
    Arch("nemotron", _PRE_POST, gated_mlp=False),
    # Apertus (8B, 70B): Llama's layout with norms of its own names, per-head q/k norms and a non-gated MLP whose xIELU
    # activation has two trained scalars a layer
    Arch("apertus", ("attention_layernorm", "feedforward_layernorm"), gated_mlp=False),
    # StableLM 2 (1.6B, 3B, Zephyr): LayerNorms with biases, q/k/v biases, RoPE on a quarter of each head; transformers
    # takes its head size as hidden_size / heads
    Arch("stablelm", _PRE_POST, attention_is_hidden=True),
    # StarCoder2 (3B, 7B, 15B; StarCoder2-Instruct): Mistral's attention (one window in every layer) with biases on
    # every linear, LayerNorms with biases, a non-gated GELU MLP (c_fc, c_proj); transformers takes its head size as
    # hidden_size / heads
    Arch("starcoder2", _PRE_POST, gated_mlp=False, mlp_up="c_fc", mlp_down="c_proj", attention_is_hidden=True),
    Arch("phi3", _PRE_POST, fused_qkv=True, fused_mlp=True),  # q/k/v and gate/up fused; Phi-3, Phi-3.5, Phi-4-mini
    # GLM (glm: GLM-4-9B, GLM-4-9B-Chat as glm-4-9b-chat-hf, GLM-Edge): Llama's layout with gate/up fused and q/k/v
    # biases, RoPE on interleaved pairs of half of each head
    Arch("glm", _PRE_POST, fused_mlp=True),
    # GLM-4 (9B, 32B; 0414 and Z1): gate/up fused, q/k/v biases, a norm on each side of attention and of the MLP (those
    # in front score the hidden channels), RoPE on interleaved pairs of half of each head
    Arch("glm4", ("input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm", "post_mlp_layernorm"),
         fused_mlp=True, score_norms=("input_layernorm", "post_attention_layernorm")),
    # Command R, Aya: one LayerNorm in front of attention and the MLP, run in parallel; logits multiplied by logit_scale
    # Phi-2 (phi: Phi-1, Phi-1.5, Phi-2): Cohere's parallel layer with LayerNorms and biases on every linear (lm_head's
    # too), a non-gated GELU MLP (fc1, fc2), RoPE on part of each head; transformers takes its head size as hidden_size
    # / heads
    Arch("phi", ("input_layernorm",), gated_mlp=False, mlp_up="fc1", mlp_down="fc2", attention_is_hidden=True,
         final_norm="final_layernorm"),
    Arch("cohere", ("input_layernorm",)),
    # Command R7B, Command A: Cohere's layer; sliding layers with RoPE, global ones without
    Arch("cohere2", ("input_layernorm",)),
    # OLMo 2: no norm in front of attention or the MLP, an RMSNorm on each one's output before the residual add;
    # q/k RMSNorms over the whole projection (every head together)
    Arch("olmo2", _POST),
    # OLMo 1 (olmo: 1B, 7B, 1.7-7B): Llama's layout with LayerNorms that have no weights (only their width is sliced),
    # q/k/v clipped (clip_qkv); transformers takes its head size as hidden_size / heads
    Arch("olmo", _PRE_POST, attention_is_hidden=True),
    Arch("olmo3", _POST),  # OLMo 2's layer; sliding and global layers
    # GPT-NeoX (gpt_neox: Pythia 14M-12B, GPT-NeoX-20B, Dolly v2, RedPajama-INCITE): LayerNorms with biases, attention
    # and a GELU MLP in parallel behind one each (or in turn: use_parallel_residual), q/k/v fused head by head
    # (`qkv_grouped`, a group a head), biases on every linear, RoPE on a quarter of each head, no num_key_value_heads
    # (every head its own: `as_built`); the decoder is gpt_neox, lm_head stored as embed_out
    Arch("gpt_neox", _PRE_POST, gated_mlp=False, mlp_up="dense_h_to_4h", mlp_down="dense_4h_to_h",
         attention_is_hidden=True, fused_qkv=True, qkv="query_key_value", qkv_grouped=True, multi_head=True,
         decoder="gpt_neox", embeddings="embed_in", final_norm="final_layer_norm",
         stored_renames=((r"^lm_head\.", "embed_out."),)),
    # OPT (opt: 125M, 1.3B, 2.7B, 6.7B, 13B, 30B, 66B; Galactica; not the 350M, whose norms follow each block and whose
    # embeddings are projected): its decoder model.decoder, learned position embeddings hidden_size wide
    # (embed_positions), LayerNorms with biases, the ReLU MLP's fc1 and fc2 in the layer itself, biases on every linear,
    # no num_key_value_heads (`multi_head`); its released files name the decoder decoder. (transformers reads both)
    Arch("opt", ("self_attn_layer_norm", "final_layer_norm"), gated_mlp=False, mlp_up="fc1", mlp_down="fc2",
         mlp_size="ffn_dim", attention_is_hidden=True, decoder="model.decoder", final_norm="final_layer_norm",
         positions="embed_positions", hidden_aliases=("word_embed_proj_dim",), multi_head=True,
         stored_renames=((r"^model\.decoder\.", "decoder."),)),
    # GPT-2 (gpt2: 124M-1.5B, DistilGPT2, DialoGPT, Cerebras-GPT): its decoder transformer, layers h, learned position
    # embeddings hidden_size wide (wpe), LayerNorms with biases, q/k/v fused in c_attn (queries, keys, values), a GELU
    # MLP (c_fc, c_proj), biases on every linear, Conv1D weights stored (in, out) (`transposed`), no
    # num_key_value_heads, n_inner neurons (None in released configs: 4 x hidden_size, `as_built`); its released files
    # name the decoder's tensors without a prefix (transformers reads both)
    Arch("gpt2", ("ln_1", "ln_2"), gated_mlp=False, mlp_up="c_fc", mlp_down="c_proj", mlp_size="n_inner",
         attention_is_hidden=True, fused_qkv=True, qkv="c_attn", decoder="transformer", layers="h", embeddings="wte",
         final_norm="ln_f", positions="wpe", multi_head=True, transposed=r"\.(c_attn|c_proj|c_fc)\.weight$",
         stored_renames=((r"^transformer\.", ""),)),
    # GPT-J (gptj: GPT-J-6B, GPT-JT, and its fine-tunes): GPT-2's names (decoder transformer, layers h, wte, ln_f) with
    # attention and a GELU MLP (fc_in, fc_out, with biases) in parallel behind one LayerNorm, q, k and v apart without
    # biases, RoPE on rotary_dim channels of each head (its pairs interleaved), lm_head with a bias, no
    # num_key_value_heads; transformers takes its head size as hidden_size / heads; llama.cpp runs no GPT-J
    Arch("gptj", ("ln_1",), gated_mlp=False, mlp_up="fc_in", mlp_down="fc_out", mlp_size="n_inner",
         attention_is_hidden=True, decoder="transformer", layers="h", embeddings="wte", final_norm="ln_f",
         multi_head=True),
    # GPT-Neo (gpt_neo: 125M, 1.3B, 2.7B): GPT-2's names and learned positions with q, k and v apart (attn.attention),
    # an out_proj with a bias, a GELU MLP of intermediate_size neurons (None in released configs: 4 x hidden_size),
    # global and local (windowed) layers (attention_types, `per_layer_lists`), no num_key_value_heads, no scaling of
    # the attention logits; transformers takes its head size as hidden_size / heads; llama.cpp runs no GPT-Neo
    Arch("gpt_neo", ("ln_1", "ln_2"), gated_mlp=False, mlp_up="c_fc", mlp_down="c_proj", attention_is_hidden=True,
         decoder="transformer", layers="h", embeddings="wte", final_norm="ln_f", positions="wpe", multi_head=True,
         layer_pair=True),
    # GPTBigCode (gpt_bigcode: StarCoder, StarCoderBase 1B-15B, SantaCoder, WizardCoder, OctoCoder): GPT-2's layout
    # (decoder transformer, layers h, learned positions, LayerNorms with biases, a GELU MLP of n_inner neurons, biases
    # on every linear) in linears, with multi-query attention: c_attn's queries, then one key head and one value head
    # (`multi_query`; multi-head ones are refused)
    Arch("gpt_bigcode", ("ln_1", "ln_2"), gated_mlp=False, mlp_up="c_fc", mlp_down="c_proj", mlp_size="n_inner",
         attention_is_hidden=True, fused_qkv=True, qkv="c_attn", decoder="transformer", layers="h", embeddings="wte",
         final_norm="ln_f", positions="wpe"),
    # Falcon (falcon: Falcon-7B, 40B, 180B, Falcon2-11B, and their instruct models): GPT-2's names (decoder transformer,
    # layers h, ln_f) with word_embeddings, attention (`self_attention`) and a GELU MLP (dense_h_to_4h, dense_4h_to_h)
    # in parallel behind a LayerNorm each (the 40B's and 180B's ln_attn and ln_mlp) or one (the 7B's and 11B's
    # input_layernorm), or in turn (`falcon_arch`); q/k/v fused group by group in query_key_value (`qkv_grouped`: the
    # 40B's 8 KV groups, the 7B's one, multi_query), its KV heads also its config's num_kv_heads, RoPE on every
    # channel, no biases (or on every linear: bias); transformers takes its head size as hidden_size / heads (a
    # read-only head_dim, `head_dim_derived`). ALiBi ones (Falcon-RW) are refused
    Arch("falcon", ("ln_attn", "ln_mlp"), gated_mlp=False, mlp_up="dense_h_to_4h", mlp_down="dense_4h_to_h",
         mlp_size="ffn_hidden_size", attention_is_hidden=True, fused_qkv=True, qkv="query_key_value",
         qkv_grouped=True, decoder="transformer", layers="h", embeddings="word_embeddings", final_norm="ln_f",
         kv_aliases=("num_kv_heads",), layer_pair=True),
    # EXAONE 4 (1.2B, 32B): OLMo 2's layer with per-head q/k norms; with a window, sliding layers with RoPE and global
    # ones without (the 32B: three of four slide), without one every layer global with RoPE (the 1.2B)
    Arch("exaone4", _POST),
    # GLM-4.5 (Air: 106B-A12B; 355B-A32B; GLM-4.6, 4.7): the first first_k_dense_replace layers with an MLP, the
    # others with a mixture of experts: 128 or 160 routed experts (a sigmoid router whose picks a per-expert bias
    # steers, `e_score_correction_bias`, within groups of them) and a shared expert as wide as n_shared_experts of
    # them (`GLM_SHARED`); q/k/v biases, per-head q/k norms where set, RoPE on half of each head; its multi-token
    # prediction layers, which transformers does not build, are left out (`as_built`)
    Arch("glm4_moe", _PRE_POST, **_GLM_MOE),
    # DeepSeek V3 (671B-A37B; R1, V3.1; Moonlight-16B-A3B): GLM-4.5's mixture of experts (`GLM_SHARED`, the router's
    # own steering bias, within groups, dense layers first) with multi-head latent attention (`Arch.mla`); its
    # multi-token prediction layer is not read
    Arch("deepseek_v3", _PRE_POST, **_GLM_MOE, mla=True),
    # Sarvam-105B (sarvam_mla): DeepSeek V3's layers under a config of its own (transformers builds DeepSeek V3's model)
    Arch("sarvam_mla", _PRE_POST, **_GLM_MOE, mla=True),
    # Youtu-LLM (youtu: 2B; tied embeddings): multi-head latent attention (DeepSeek V3's), a SwiGLU MLP in every layer
    Arch("youtu", _PRE_POST, mla=True),
    # DeepSeek V2 (236B-A21B, V2.5, Coder-V2; V2-Lite and Coder-V2-Lite 16B-A2.4B, without a query latent): DeepSeek
    # V3's layers with a softmax router, neither steered nor renormalised (greedy, or group_limited_greedy: within the
    # groups of the best experts)
    Arch("deepseek_v2", _PRE_POST, **_GLM_MOE, mla=True),
    # GLM-4.7-Flash (glm4_moe_lite: 30B-A3B): DeepSeek V3's layers (multi-head latent attention, GLM-4.5's mixture of
    # experts) with its dense layers listed by kind (mlp_layer_types)
    Arch("glm4_moe_lite", _PRE_POST, **_LATENT_MOE),
    # DeepSeek V3.2 (deepseek_v32: 671B-A37B; V3.2-Exp, V3.2-Speciale): GLM-4.7-Flash's layers, each attention with a
    # lightning indexer that picks the index_topk keys every query attends to (`indexer_inputs`: its key and head
    # weights read the hidden channels, its queries the query latent, which is kept whole)
    Arch("deepseek_v32", _PRE_POST, **_LATENT_MOE),
    # GLM-5 (glm_moe_dsa: 744B-A40B; GLM-5.1): DeepSeek V3.2's layers, the indexer rotating interleaved pairs, each
    # layer's picks handed on to the next (`Arch.picks_carried`: GLM-5.2's layers that reuse them are refused)
    Arch("glm_moe_dsa", _PRE_POST, **_LATENT_MOE, picks_carried=True),
    # K-EXAONE (exaone_moe: 236B-A23B): Llama's layout with per-head q/k norms, three sliding layers with RoPE to one
    # global without, and GLM-4.5's mixture of experts (its shared expert as wide as num_shared_experts routed ones, its
    # dense layers listed by kind, mlp_layer_types); the router's bias is stored beside the gate, not in it
    Arch("exaone_moe", _PRE_POST, **dict(_GLM_MOE, experts_size="num_experts", dense_first=None,
                                         dense_kinds="mlp_layer_types", shared_names=NUM_SHARED),
         stored_renames=((r"\.mlp\.gate\.e_score_correction_bias", ".mlp.e_score_correction_bias"),)),
    # Hy3 (hy_v3: Tencent's Hy3-preview): K-EXAONE's mixture of experts (its router's steering bias in the block, as
    # MiniMax-M2's, `BLOCK_BIASES`; a shared expert as wide as num_shared_experts routed ones; dense layers listed by
    # kind) with per-head q/k norms; its checkpoints name the router mlp.router.gate, the bias mlp.expert_bias and the
    # shared expert mlp.shared_mlp; its multi-token prediction layers, stored after the decoder's, are not read
    Arch("hy_v3", _PRE_POST, **dict(_GLM_MOE, experts_size="num_experts", dense_first=None,
                                    dense_kinds="mlp_layer_types", shared_names=NUM_SHARED),
         stored_renames=((r"\.mlp\.gate\.weight$", ".mlp.router.gate.weight"),
                         (r"\.mlp\.e_score_correction_bias$", ".mlp.expert_bias"),
                         (r"\.mlp\.shared_experts\.", ".mlp.shared_mlp."))),
    # Solar Open (solar_open: 100B-A12B): GLM-4.5's mixture of experts in every layer (`GLM_SHARED`, the router's own
    # steering bias; no dense layers) with Llama's attention
    Arch("solar_open", _PRE_POST, **dict(_GLM_MOE, dense_first=None)),
    # dots.llm1 (dots1: 142B-A14B): GLM-4.5's mixture of experts (`GLM_SHARED`, the router's own steering bias) with
    # per-head q/k norms and RoPE on every channel
    Arch("dots1", _PRE_POST, **_GLM_MOE),
    # ERNIE 4.5 MoE (21B-A3B, 300B-A47B; not the VL ones, whose experts are split by modality): ERNIE 4.5's layers,
    # the first moe_layer_start_index with an MLP, the others with a mixture of experts (a softmax router whose picks
    # a per-expert bias steers, `moe_statics.e_score_correction_bias`) and a shared expert as wide as
    # moe_num_shared_experts of them (`ERNIE_SHARED`); its multi-token prediction layers are not read
    Arch("ernie4_5_moe", _PRE_POST, moe=True, mlp_size="moe_intermediate_size", experts_size="moe_num_experts",
         shared_expert=True, shared_names=ERNIE_SHARED, dense_first="moe_layer_start_index",
         stored_renames=((r"\.mlp\.gate\.moe_statics\.", ".mlp.moe_statics."),)),
    # Hunyuan MoE (A13B): Hunyuan dense's attention (per-head q/k norms after RoPE, NTK-alpha RoPE), a mixture of
    # experts in every layer, its router's weights in the gate's `wg` (`moe_weights`), and a shared expert as wide as
    # one routed expert (`HUNYUAN_SHARED`: transformers builds both intermediate_size wide)
    Arch("hunyuan_v1_moe", _PRE_POST, moe=True, shared_expert=True, shared_names=HUNYUAN_SHARED),
    # Mixtures of experts, a router and top-k experts in place of every layer's MLP: Qwen3-MoE (30B-A3B, 235B-A22B,
    # Coder; every layer sparse), Mixtral (8x7B, 8x22B) and OLMoE (1B-7B: q/k norms over the whole projection, sized
    # by hidden_size)
    Arch("qwen3_moe", _PRE_POST, moe=True, mlp_size="moe_intermediate_size"),
    Arch("mixtral", _PRE_POST, moe=True, stored_moe=_MIXTRAL_STORED),
    # MiniMax-M2 (230B-A10B; M2.1, M2.5): Mixtral's layout, 256 experts a layer picked by a sigmoid router that a
    # per-expert bias in the block steers (`BLOCK_BIASES`), their weights renormalised; q/k RMSNorms over the whole
    # projection (sliced with the heads), RoPE on half of each head
    Arch("minimax_m2", _PRE_POST, moe=True, experts_size="num_local_experts", stored_moe=_MIXTRAL_STORED,
         stored_renames=((r"\.mlp\.e_score_correction_bias", ".block_sparse_moe.e_score_correction_bias"),)),
    Arch("olmoe", _PRE_POST, moe=True, attention_is_hidden=True),
    # Granite-MoE (Granite 3.0 / 3.1 1B-A400M, 3B-A800M): Granite's multipliers, a softmax over the top-k router logits,
    # the experts stored as 3D tensors
    Arch("granitemoe", _PRE_POST, moe=True, experts_size="num_local_experts", moe_block="block_sparse_moe",
         router="router", stored_fused=("block_sparse_moe.router.layer.weight", "block_sparse_moe.input_linear.weight",
                                        "block_sparse_moe.output_linear.weight")),
    # Nemotron-H (8B, 47B, 56B; Nemotron Nano 2 9B and 12B v2): a hybrid of Mamba-2, attention without positions and
    # squared-ReLU MLP layers, one mixer each; the 4B and Nano 9B v2 are NVIDIA's Minitron prunes of the 8B and 12B
    Arch("nemotron_h", ("norm",), gated_mlp=False, mixer="mamba", ties=False, embeddings="embeddings",
         final_norm="norm_f", stored_prefix="backbone."),
    # Qwen3.5 (dense: 0.8B-27B; the language model of its multimodal checkpoints): three Gated DeltaNet layers to one of
    # gated attention (each head's output times the sigmoid of its gate rows, per-head q/k norms, RoPE on a quarter of
    # each head), a SwiGLU MLP in every layer, norms of x * (1 + w)
    Arch("qwen3_5_text", _PRE_POST, mixer="delta", gated_query=True),
    # Qwen2-MoE (Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B): Qwen2's attention (q/k/v biases), 60-64 routed experts and a
    # shared expert in every layer (dense layers among them, `mlp_only_layers`, are refused)
    Arch("qwen2_moe", _PRE_POST, moe=True, mlp_size="moe_intermediate_size", shared_expert=True),
    # Qwen3.5-MoE (35B-A3B, 122B-A10B, 397B-A17B): Qwen3.5's layers with a mixture of experts in place of each MLP,
    # 256 routed experts and one shared expert
    Arch("qwen3_5_moe_text", _PRE_POST, mixer="delta", gated_query=True, moe=True, mlp_size="moe_intermediate_size",
         shared_expert=True),
    # Qwen3-Next (80B-A3B Instruct and Thinking): Qwen3.5-MoE's layers (512 experts, 10 a token, a shared expert;
    # dense layers listed in mlp_only_layers) before Qwen3.5, its Gated DeltaNet's four input projections fused into two
    # (`DeltaRows.fused`)
    Arch("qwen3_next", _PRE_POST, mixer="delta", gated_query=True, moe=True, mlp_size="moe_intermediate_size",
         shared_expert=True),
    # GPT-OSS (20B, 120B): 32 or 128 experts a layer with biases, gate and up columns in turn and a clamped SwiGLU
    # (`OSS_EXPERTS`), a router with a bias; attention with biases and a learned sink logit a head; sliding and global
    # layers in turn; YaRN
    Arch("gpt_oss", _PRE_POST, moe=True, experts_size="num_local_experts", router="router", oss_experts=True,
         stored_fused=("mlp.router.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj")),
    # Granite 4.0 H (dense: H-350M, H-1B, H-Micro; the non-hybrid Micro too): a hybrid of Mamba-2 and attention (without
    # positions in the released ones) layers, each with a SwiGLU MLP (`shared_mlp`, its gate and up rows fused in
    # `input_linear`), Granite's multipliers; its Mamba-2 mixers mamba_expand x hidden_size wide
    Arch("granitemoehybrid", _PRE_POST, fused_mlp=True, mlp_size="shared_intermediate_size", mlp_fused="input_linear",
         mlp_down="output_linear", mixer="mamba", mamba_names=GRANITE_MAMBA, mamba_expand=True),
    # Bamba (bamba: Bamba-9B, v2): Granite 4's hybrid without its multipliers, each layer's SwiGLU MLP `feed_forward`
    # behind pre_ff_layernorm, RoPE on half of each head in its attention layers, which its config lists by index
    # (attn_layer_indices: its layer_types follow them), the final norm final_layernorm
    Arch("bamba", ("input_layernorm", "pre_ff_layernorm"), mixer="mamba", mamba_names=GRANITE_MAMBA,
         mamba_expand=True, final_norm="final_layernorm", layer_pair=True),
    # LFM2 (350M, 700M, 1.2B, 2.6B; LFM2.5): a hybrid of gated short convolutions (`ShortConv`) and attention with
    # per-head q/k norms, each layer with a SwiGLU MLP (`feed_forward`: w1, w3, w2); the final norm is named
    # embedding_norm; llama.cpp sizes its attention by hidden_size (heads and hidden channels are pruned together)
    Arch("lfm2", ("operator_norm", "ffn_norm"), mlp_gate="w1", mlp_up="w3", mlp_down="w2", mixer="conv",
         attention_is_hidden=True, final_norm="embedding_norm"),
    # LFM2-MoE (8B-A1B, 24B-A2B): LFM2's layers, the first num_dense_layers with its MLP, the others with a mixture of
    # experts (`feed_forward`: a sigmoid router whose picks a per-expert bias steers, `expert_bias`)
    Arch("lfm2_moe", ("operator_norm", "ffn_norm"), mlp_gate="w1", mlp_up="w3", mlp_down="w2", mixer="conv",
         attention_is_hidden=True, final_norm="embedding_norm", moe=True, mlp_size="moe_intermediate_size",
         moe_block="feed_forward", stored_moe=("feed_forward", "w1", "w3", "w2"), dense_first="num_dense_layers"),
]}
# AFMoE (Arcee Trinity Nano 6B-A1B, Mini 26B-A3B, Large 400B-A13B): a norm on each side of attention and of the
# MLP, attention with per-head q/k norms and an output gate of its own (`attention_gate`), three sliding layers with
# RoPE to one global without; its first num_dense_layers with an MLP, the others with a mixture of experts (a sigmoid
# router, `router.gate`, whose picks the block's expert_bias steers; a shared expert as wide as num_shared_experts
# routed ones); embeddings scaled by sqrt(hidden_size) where mup_enabled (read from the config at every forward)
FAMILIES["afmoe"] = Arch("afmoe", _AFMOE, score_norms=("input_layernorm", "pre_mlp_layernorm"), **dict(
    _GLM_MOE, experts_size="num_experts", dense_first="num_dense_layers", router="router",
    shared_names=NUM_SHARED))
# Granite-MoE with a shared expert (granitemoeshared): Granite-MoE's layers with an MLP beside the experts
# (`shared_mlp`, its gate and up rows fused in `input_linear`, shared_intermediate_size neurons), run on every token as
# Granite 4's (`GRANITE_SHARED`)
FAMILIES["granitemoeshared"] = replace(FAMILIES["granitemoe"], model_type="granitemoeshared", shared_expert=True,
                                       shared_names=GRANITE_SHARED)
# Granite-MoE SWA (granitemoe_swa: Granite-Swash 3B-A600M): those layers with Granite SWA's attention (sliding and
# global layers, a sink a query head, a RoPE base a layer); a shared expert only where shared_intermediate_size is set
# (none by default: `GRANITE_MOE_SWA_UNSHARED`); its checkpoints store the experts' 3D tensors by their own names
# (transformers renames no Granite-MoE tensor of it)
FAMILIES["granitemoe_swa"] = replace(FAMILIES["granitemoeshared"], model_type="granitemoe_swa", stored_fused=(
    "block_sparse_moe.router.weight", "block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"))
GRANITE_MOE_SWA_UNSHARED = replace(FAMILIES["granitemoe_swa"], shared_expert=False)
# Granite 4.0 H-Tiny and H-Small: Granite 4's layers with a mixture of experts (Granite-MoE's: a router, the experts
# stored as 3D tensors) beside each layer's MLP, which becomes its always-on shared expert (`GRANITE_SHARED`)
GRANITE_MOE_HYBRID = replace(FAMILIES["granitemoehybrid"], moe=True, mlp_size="intermediate_size",
                             experts_size="num_local_experts", moe_block="block_sparse_moe", router="router",
                             stored_fused=FAMILIES["granitemoe"].stored_fused, shared_expert=True,
                             shared_names=GRANITE_SHARED)
# Nemotron 3 (Nano 30B-A3B): Nemotron-H's layers with mixture-of-experts layers (`moe`) in place of the MLP ones: 128
# squared-ReLU experts without a gate (`PLAIN_EXPERTS`: up_proj and down_proj), 6 a token, picked by a sigmoid router
# steered by its own bias, their weights renormalised and scaled, and an ungated shared expert (`NEMOTRON_SHARED`)
NEMOTRON_H_MOE = replace(FAMILIES["nemotron_h"], moe=True, mlp_size="moe_intermediate_size",
                         experts_size="n_routed_experts", moe_block="mixer", shared_expert=True,
                         shared_names=NEMOTRON_SHARED, stored_moe=("mixer", None, "up_proj", "down_proj"))
# Falcon-7B's and Falcon2-11B's layer: attention and the MLP in parallel behind one LayerNorm; a Falcon's with the
# two in turn, a LayerNorm in front of each (parallel_attn false)
FALCON_ONE_NORM = replace(FAMILIES["falcon"], norms=("input_layernorm",))
FALCON_IN_TURN = replace(FAMILIES["falcon"], norms=_PRE_POST)
# Config lists with one entry per decoder layer (attention kinds; SmolLM3's layers with and without RoPE; Granite SWA's
# RoPE bases): removing layers removes their entries.
PER_LAYER = ("layer_types", "no_rope_layers", "mlp_layer_types", "layer_rope_theta")
# Config lists of a hybrid's attention layers by index (LFM2's full_attn_idxs; Bamba's attn_layer_indices, from which
# its layer_types follow): removing layers renumbers them
ATTENTION_INDICES = ("full_attn_idxs", "attn_layer_indices")


@dataclass(frozen=True)
class LogitHead:
    """What a family does to lm_head's output before the softmax: Granite divides the logits by its
    `logits_scaling`, Cohere multiplies them by its `logit_scale`, Gemma soft-caps them at `final_logit_softcapping`
    (tanh(x / cap) * cap). Every loss computed from hidden states and lm_head (the chunked distillation losses, the
    teacher cache, the removal losses) applies it, as the model's own forward does."""

    scale: float = 1.0  # the logits are divided by it
    softcap: float | None = None

    @classmethod
    def of(cls, config) -> "LogitHead":
        divide = float(getattr(config, "logits_scaling", None) or 1.0)  # Granite
        multiply = float(getattr(config, "logit_scale", None) or 1.0)  # Cohere
        return cls(divide / multiply, getattr(config, "final_logit_softcapping", None) or None)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits / self.scale
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits


# The sizes a target may change (Hugging Face config names; `prunable_sizes` gives a family's own).
PRUNABLE_SIZES = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                  "num_hidden_layers")
# A hybrid's recurrent layers' sizes a target may change too: Mamba-2's heads (the same number in each of its groups,
# whose B and C every head of the group shares) and the channels of each head (by the family's names,
# `Arch.mamba_names`); Gated DeltaNet's key heads and value heads (the same number for each key head, as query heads for
# KV heads)
DELTA_SIZES = ("linear_num_key_heads", "linear_num_value_heads")
FUSED_DELTA = ("qwen3_next",)  # families whose Gated DeltaNet fuses its input projections (`DeltaRows.fused`)


def mixer_sizes(arch: Arch) -> tuple[str, ...]:
    """A hybrid's recurrent layers' sizes a target may set, by its config's names (none for other models)."""
    if arch.mixer == "mamba":
        return arch.mamba_names.heads, arch.mamba_names.head_dim
    return DELTA_SIZES if arch.mixer == "delta" else ()


# `config.layer_types`' names of a hybrid's layer kinds (the recurrent ones: Mamba-2's, Gated DeltaNet's)
RECURRENT, ATTENTION, MLP, MOE = "linear_attention", "full_attention", "mlp", "moe"


def prunable_sizes(config) -> tuple[str, ...]:
    """The sizes a target may change for this family, by the config's names: hidden_size, the MLP's (each expert's)
    neurons (`Arch.mlp_size`), query and KV heads, layers, and for a mixture of experts their number
    (`Arch.experts_size`) and its shared expert's neurons, of a hybrid its recurrent layers' heads (`mixer_sizes`)."""
    arch = arch_of(config)
    return ("hidden_size", arch.mlp_size, *PRUNABLE_SIZES[2:], *((arch.experts_size,) if arch.moe else ()),
            *((arch.shared_names.size,) if arch.shared_expert and arch.shared_names.size else ()), *mixer_sizes(arch),
            *((DENSE_SIZE,) if dense_layers(config) else ()))


def shared_width(config, sizes: dict[str, int] | None = None) -> int:
    """A mixture of experts' shared expert's neurons (0: none) in the config, or in a target's resolved `sizes` (by
    the config's names): its own size, or n_shared_experts x each routed expert's neurons where it follows them
    (`SharedNames.count`: GLM-4.5's; one expert's, Hunyuan's)."""
    arch = arch_of(config)
    if not arch.shared_expert:
        return 0
    names, sizes = arch.shared_names, sizes or {}
    if names.size:
        return sizes.get(names.size, getattr(config, names.size))
    count = getattr(config, names.count) if names.count else 1
    return count * sizes.get(arch.mlp_size, getattr(config, arch.mlp_size))


def layers_differ(config) -> bool:
    """Whether the model's layers differ in kind, and so in cost: a hybrid's, a mixture of experts' with dense layers
    (`dense_layers`); a model of fewer layers then depends on which go."""
    return arch_of(config).hybrid or bool(dense_layers(config))


# The config's name of the neurons of a mixture of experts' dense layers (`dense_layers`)
DENSE_SIZE = "intermediate_size"


def dense_layers(config) -> list[int]:
    """The layers of a mixture of experts whose MLP is dense (DENSE_SIZE neurons): LFM2-MoE's first num_dense_layers
    and GLM-4.5's first_k_dense_replace (`Arch.dense_first`), GLM-4.7-Flash's "dense" in mlp_layer_types
    (`Arch.dense_kinds`), Qwen-MoE's mlp_only_layers; none for other models."""
    arch = arch_of(config)
    if not arch.moe:
        return []
    if arch.dense_first:
        return list(range(getattr(config, arch.dense_first)))
    if arch.dense_kinds:
        return [i for i, kind in enumerate(getattr(config, arch.dense_kinds)) if kind == "dense"]
    return sorted(getattr(config, "mlp_only_layers", None) or [])


def tied_mamba_heads(config, hidden: int) -> int | None:
    """The Mamba-2 heads of a family whose mixers are mamba_expand x hidden_size wide (`Arch.mamba_expand`) at hidden
    size `hidden`, their channels kept; None where the width does not split into whole heads."""
    names = arch_of(config).mamba_names
    width, head_dim = config.mamba_expand * hidden, getattr(config, names.head_dim)
    return width // head_dim if width % head_dim == 0 else None


def num_experts(config) -> int:
    """A mixture of experts' number of experts (0 for a dense model)."""
    arch = arch_of(config)
    return getattr(config, arch.experts_size) if arch.moe else 0


def expert_groups(config) -> int:
    """The groups a mixture of experts' router picks its experts within (GLM-4.5's and DeepSeek V3's n_group, DeepSeek
    V2's with its group_limited_greedy; 1: none). Each keeps as many experts, the best of its own
    (`prune.select_heads`)."""
    if getattr(config, "topk_method", None) == "greedy":  # (DeepSeek V2's, which ignores its n_group)
        return 1
    return getattr(config, "n_group", None) or 1


def least_experts(config) -> int:
    """The fewest experts a mixture of experts keeps: every token's num_experts_per_tok, and where its router picks
    them within groups (`expert_groups`), enough a group for its score (DeepSeek V3's two best experts', V2's best) and
    a token's in the topk_group groups it picks."""
    groups = expert_groups(config)
    if groups == 1:
        return config.num_experts_per_tok
    scored = 1 if getattr(config, "topk_method", None) == "group_limited_greedy" else 2
    return groups * max(scored, -(-config.num_experts_per_tok // config.topk_group))


def width_sizes(config) -> tuple[str, ...]:
    """The sizes pruned by width importance (all but the layers)."""
    return tuple(k for k in prunable_sizes(config) if k != "num_hidden_layers")


def arch_of(config) -> Arch:
    """The adapter for a config, or a clear refusal naming the supported families."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        names = ", ".join(getattr(config, "architectures", None) or []) or "unknown class"
        raise MinitronError(f"architecture {model_type!r} ({names}) is not supported; "
                            f"supported model types: {', '.join(sorted(FAMILIES))}")
    if model_type == "opt" and (not config.do_layer_norm_before or config.word_embed_proj_dim != config.hidden_size
                                or config._remove_final_layer_norm):
        raise MinitronError("this opt model normalises after each block or projects its embeddings "
                            "(do_layer_norm_before false, word_embed_proj_dim other than hidden_size: OPT-350M's); "
                            "minitron prunes the OPT models that normalise before each block")
    if model_type == "gpt2" and (config.add_cross_attention or config.scale_attn_by_inverse_layer_idx):
        raise MinitronError("this gpt2 model has cross-attention or scales each layer's attention by its index "
                            "(add_cross_attention, scale_attn_by_inverse_layer_idx); minitron prunes GPT-2 models "
                            "without either")
    if model_type == "gptj" and not config.rotary_dim:
        raise MinitronError("this gptj model rotates no set number of channels (rotary_dim unset: transformers then "
                            "sizes its rotary table by hidden_size); minitron prunes GPT-J models with a rotary_dim")
    if model_type == "gpt_bigcode" and (not config.multi_query or config.add_cross_attention):
        raise MinitronError("this gpt_bigcode model has multi-head attention or cross-attention (multi_query false, "
                            "add_cross_attention); minitron prunes GPTBigCode models of multi-query attention "
                            "(StarCoder's, SantaCoder's)")
    if model_type == "stablelm" and (config.qk_layernorm or config.use_parallel_residual):  # (Phi-2's q/k LayerNorms,
        # where set, are one per layer, every head's: pruned heads leave them)
        raise MinitronError(f"this {model_type} model has per-head q/k LayerNorms or a parallel residual (StableLM 2 "
                            "12B's); minitron prunes StableLM 2 1.6B and 3B")
    if model_type == "ernie4_5_moe" and (config.moe_layer_interval != 1 or
                                         config.moe_layer_end_index < config.num_hidden_layers - 1):
        raise MinitronError(f"this ernie4_5_moe model has a mixture of experts in one of every "
                            f"{config.moe_layer_interval} layers or not up to its last (moe_layer_interval, "
                            "moe_layer_end_index); minitron prunes those with dense layers first only")
    if model_type == "hunyuan_v1_moe" and any(isinstance(v := getattr(config, k), list) and len(set(v)) > 1
                                              for k in ("num_experts", "moe_topk")):
        raise MinitronError("this hunyuan_v1_moe model has a number of experts or experts a token of its own in each "
                            "layer (a list of several); minitron prunes those with one for every layer")
    if (getattr(config, "decoder_sparse_step", None) or 1) != 1:
        raise MinitronError(f"this {model_type} model has a mixture of experts in one of every "
                            f"{config.decoder_sparse_step} layers only (decoder_sparse_step); minitron prunes models "
                            "whose dense layers are listed (mlp_only_layers)")
    if model_type == "glm_moe_dsa" and "shared" in (getattr(config, "indexer_types", None) or []):
        raise MinitronError("this glm_moe_dsa model has layers that reuse an earlier layer's indexer picks "
                            "(indexer_types 'shared', GLM-5.2's); minitron prunes those whose every layer picks its "
                            "own (GLM-5, 5.1)")
    if model_type == "nemotron_h":
        return nemotron_h_arch(config)
    if model_type == "falcon":
        return falcon_arch(config)
    if model_type == "granitemoehybrid" and getattr(config, "num_local_experts", 0):
        return GRANITE_MOE_HYBRID
    if model_type == "granitemoe_swa" and not config.shared_intermediate_size:
        return GRANITE_MOE_SWA_UNSHARED
    return FAMILIES[model_type]


def nemotron_h_arch(config) -> Arch:
    """Nemotron-H's adapter, or Nemotron 3's where its layers are mixtures of experts (`NEMOTRON_H_MOE`; Super's behind
    a latent projection, `moe_latent`); one with both MLP and mixture-of-experts layers is refused in one line."""
    kinds = set(config.layer_types)
    if other := kinds - {RECURRENT, ATTENTION, MLP, MOE}:
        raise MinitronError(f"this nemotron_h model has {', '.join(sorted(other))} layers; minitron prunes Nemotron-H "
                            "models of Mamba-2, attention, MLP and mixture-of-experts layers")
    if MOE not in kinds:
        return FAMILIES["nemotron_h"]
    if MLP in kinds:
        raise MinitronError("this nemotron_h model has both MLP and mixture-of-experts layers; minitron prunes "
                            "Nemotron-H models with one of the two kinds")
    return NEMOTRON_H_MOE


def falcon_arch(config) -> Arch:
    """Falcon's adapter for its layer's LayerNorms: one each in front of attention and the MLP, run in parallel
    (new_decoder_architecture with num_ln_in_parallel_attn 2 or unset: Falcon-40B's, 180B's), one in front of both
    (Falcon-7B's, Falcon2-11B's: `FALCON_ONE_NORM`) or two with the blocks in turn (parallel_attn false:
    `FALCON_IN_TURN`). One with ALiBi position biases (Falcon-RW's) is refused in one line: its slopes are given by the
    number of heads, so pruning heads would change the kept heads' biases."""
    if config.alibi:
        raise MinitronError("this falcon model adds ALiBi position biases (alibi: Falcon-RW's), whose slopes follow "
                            "the number of heads; minitron prunes the Falcon models with RoPE (Falcon-7B, 40B, 180B, "
                            "Falcon2-11B)")
    if not config.parallel_attn:
        if config.new_decoder_architecture:  # (transformers' layer then reads norms it never built)
            raise MinitronError("this falcon model has new_decoder_architecture without parallel_attn, which "
                                "transformers cannot run; minitron prunes the Falcon models it runs")
        return FALCON_IN_TURN
    two = config.new_decoder_architecture and config.num_ln_in_parallel_attn in (None, 2)
    return FAMILIES["falcon"] if two else FALCON_ONE_NORM


def tied(config) -> bool:
    """Whether lm_head is the token embeddings: the config says so and the family honours it (transformers never ties
    a Nemotron-H's, whatever its config says)."""
    return bool(config.tie_word_embeddings) and arch_of(config).ties


def heads_own_kv(config) -> bool:
    """Whether every attention head of this model has its own keys and values, so that its KV heads are its query
    heads: its family's always do (`Arch.own_kv`: multi-head latent attention, GPT-NeoX), or the model has as many KV
    heads as query heads (multi-head attention: Phi-2's, StableLM 2 1.6B's, OLMo 1's, OLMoE's)."""
    return arch_of(config).own_kv or config.num_key_value_heads == config.num_attention_heads


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def derived(config, name: str) -> bool:
    """Whether a config's setting is computed from others, never stored (a read-only property, under the name its
    attribute_map gives it too: FalconConfig's head_dim, Bamba's layer_types)."""
    name = (getattr(config, "attribute_map", None) or {}).get(name, name)
    return isinstance(getattr(type(config), name, None), property)


def head_dim_derived(config) -> bool:
    """Whether the config's head_dim is hidden_size / heads, computed (FalconConfig's): its heads and hidden channels
    are pruned together (`Arch.attention_is_hidden`), which keeps it what it was."""
    return derived(config, "head_dim")


def pin_head_dim(config, dim: int) -> None:
    """Store each head's size in the config, so that it no longer follows hidden_size / heads (a config that computes
    it, `head_dim_derived`: nothing to store)."""
    if not head_dim_derived(config):
        config.head_dim = dim


def set_kv_heads(config, heads: int) -> None:
    """Set the config's KV heads, under its family's other names for them too (`Arch.kv_aliases`)."""
    config.num_key_value_heads = heads
    for name in arch_of(config).kv_aliases:
        setattr(config, name, heads)


def per_layer_lists(config, kept: list[int]) -> dict[str, list]:
    """The config's per-layer lists (`PER_LAYER`, those it has and stores) for the decoder layers `kept`, in order, its
    attention layers' indices where it lists them so (`ATTENTION_INDICES`), GPT-Neo's kinds of layer (global, local),
    and which of them a mixture of experts has dense (`dense_layers`)."""
    lists = {name: [getattr(config, name)[i] for i in kept] for name in PER_LAYER
             if getattr(config, name, None) is not None and not derived(config, name)}
    for name in ATTENTION_INDICES:
        if getattr(config, name, None) is not None:
            lists[name] = [j for j, i in enumerate(kept) if i in set(getattr(config, name))]
    if config.model_type == "gpt_neo":  # its layers' kinds, and the runs of them it stores (read back into the list)
        lists["attention_layers"] = [config.attention_layers[i] for i in kept]
        lists["attention_types"] = [[[kind], 1] for kind in lists["attention_layers"]]
    dense = set() if arch_of(config).dense_kinds else set(dense_layers(config))  # (GLM-4.7-Flash's: in PER_LAYER)
    if dense:  # the dense layers kept: LFM2-MoE's stay first, Qwen-MoE's renumbered
        name = arch_of(config).dense_first
        lists.update({name: sum(i in dense for i in kept)} if name else
                     {"mlp_only_layers": [j for j, i in enumerate(kept) if i in dense]})
    return lists


# Widths in released configs that transformers does not read, by family, which a pruned model's config would hold
# stale: LFM2's older names for widths it reads under others (hidden_size, num_attention_heads), Hunyuan-A13B's
# per-layer lists (it builds the experts and the one shared expert intermediate_size wide)
_LFM2_UNREAD = ("block_dim", "conv_dim", "conv_dim_out", "num_heads")
UNREAD_WIDTHS = {"lfm2": _LFM2_UNREAD, "lfm2_moe": _LFM2_UNREAD,
                 "hunyuan_v1_moe": ("moe_intermediate_size", "num_shared_expert")}


def implied_sizes(config) -> dict[str, int]:
    """The sizes a family's config leaves out, which transformers derives (`as_built` says them): GPT-NeoX's, OPT's and
    GPT-2's and GPT-J's KV heads (every head its own), GPTBigCode's one (multi-query attention, whatever a config's
    num_key_value_heads says: transformers builds one), GPT-2's, GPT-J's and GPTBigCode's neurons where n_inner is None
    (4 x hidden_size), GPT-Neo's where intermediate_size is."""
    arch = arch_of(config)
    sizes = {"num_key_value_heads": config.num_attention_heads} if arch.kv_implied else {}
    if config.model_type == "gpt_bigcode":
        sizes["num_key_value_heads"] = 1
    four_x = arch.mlp_size == "n_inner" or config.model_type == "gpt_neo"  # (None: 4 x hidden_size)
    if four_x and getattr(config, arch.mlp_size) is None and isinstance(config.hidden_size, int):  # (of the wrong
        sizes[arch.mlp_size] = 4 * config.hidden_size  # type: refused by `directory_config`)
    return sizes


def as_built(config):
    """The config with the sizes transformers derives when it builds a model written as the sizes it builds: LFM2's
    MLP neurons, which its block_auto_adjust_ff_dim takes as 2/3 of intermediate_size times block_ffn_dim_multiplier,
    rounded up to a multiple of block_multiple_of (a pruned model's neurons are whatever they are). The model is the
    same; its config then reads as every other family's does. Widths transformers does not read are left out, so
    that no pruned model's config holds a stale copy (`UNREAD_WIDTHS`). Hunyuan-A13B's experts and experts a token,
    which its released config lists once a layer, the same for each, are that one number (a list of several is
    refused by `arch_of`). GLM-4.5's and ERNIE 4.5's multi-token prediction layers, stored beside its decoder layers,
    are not built by transformers: minitron reads neither them nor their count (num_nextn_predict_layers, 0 in the
    configs it writes). GPT-NeoX's and OPT's configs have no num_key_value_heads (every head has its own keys and
    values): they get num_attention_heads, as every multi-head attention's config says it (transformers reads
    neither). GPT-2's and GPTBigCode's released configs leave their neurons (n_inner) None, 4 x hidden_size: they
    are said."""
    for name, value in implied_sizes(config).items():
        setattr(config, name, value)
    if getattr(config, "num_nextn_predict_layers", None):  # (GLM-4.5's, ERNIE 4.5's)
        config.num_nextn_predict_layers = 0
    for name in UNREAD_WIDTHS.get(config.model_type, ()):
        if hasattr(config, name):
            delattr(config, name)
    for name in ("num_experts", "moe_topk") if config.model_type == "hunyuan_v1_moe" else ():
        if isinstance(value := getattr(config, name), list):
            setattr(config, name, value[0])
    if getattr(config, "block_auto_adjust_ff_dim", False):
        neurons = int(2 * config.intermediate_size / 3)
        if config.block_ffn_dim_multiplier is not None:
            neurons = int(config.block_ffn_dim_multiplier * neurons)
            neurons = config.block_multiple_of * -(-neurons // config.block_multiple_of)
        config.intermediate_size, config.block_auto_adjust_ff_dim = neurons, False
    return config


class Conv1DLinear(nn.Linear):
    """A linear in place of transformers' Conv1D (GPT-2's), whose weight it holds as every linear's, (out, in), and
    whose state dict holds as Conv1D stores it, (in, out): `state_dict`, `load_state_dict`, `save_pretrained` and the
    streamed reader and writer see a checkpoint's layout, everything that slices or scores weights a linear's. Within
    `held_layout`, the state dict is the weights as held (torch.distributed.checkpoint's traffic between processes and
    to the training checkpoints, which match a module's state dict to its parameters, shard by shard)."""

    stored_layout = True  # whether state dicts hold the stored (in, out) layout (`held_layout` turns it off)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if Conv1DLinear.stored_layout:
            weight = destination[prefix + "weight"]
            destination[prefix + "weight"] = weight.t() if keep_vars else weight.t().contiguous()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if Conv1DLinear.stored_layout and (name := prefix + "weight") in state_dict:
            state_dict[name] = state_dict[name].t().contiguous()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@contextmanager
def held_layout() -> Iterator[None]:
    """State dicts of `Conv1DLinear`s in the layout their weights are held in, (out, in), inside."""
    Conv1DLinear.stored_layout = False
    try:
        yield
    finally:
        Conv1DLinear.stored_layout = True


def as_linears(model: nn.Module) -> nn.Module:
    """The model with its Conv1D modules, where its family has them (`Arch.transposed`: GPT-2's), replaced by
    `Conv1DLinear`s holding the same weights (on the meta device, a skeleton's, too), in place: what minitron slices
    and scores are linears. Every model minitron loads or builds is so (`load.load_model`, `lazy.skeleton`)."""
    family = FAMILIES.get(getattr(model.config, "model_type", None))  # (refusing a model is `arch_of`'s)
    if family is None or not family.transposed:
        return model
    from transformers.pytorch_utils import Conv1D  # lazy: CLI start-up speed

    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            linear = Conv1DLinear(module.nx, module.nf, bias=module.bias is not None, device="meta")
            linear.weight = nn.Parameter(module.weight.t().contiguous(), requires_grad=module.weight.requires_grad)
            linear.bias = module.bias
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, linear)
    return model


def decoder(model: nn.Module) -> nn.Module:
    """The model's decoder (`model.model`; GPT-NeoX's `model.gpt_neox`, OPT's `model.model.decoder`): embeddings,
    layers, final norm."""
    return model.get_submodule(arch_of(model.config).decoder)


def embeddings(model: nn.Module) -> list[nn.Embedding]:
    """Every hidden_size-wide embedding of the decoder: the tokens', then the learned positions' where the family has
    them (OPT's, `Arch.positions`)."""
    name = arch_of(model.config).positions
    return [embedding(model), *([getattr(decoder(model), name)] if name else [])]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return getattr(decoder(model), arch_of(model.config).layers)


def embedding(model: nn.Module) -> nn.Embedding:
    return getattr(decoder(model), arch_of(model.config).embeddings)


def final_norm(model: nn.Module) -> nn.Module:
    return getattr(decoder(model), arch_of(model.config).final_norm)


def _mixer(layer: nn.Module, kind: str) -> nn.Module | None:
    return getattr(layer, "mixer", None) if getattr(layer, "block_type", None) == kind else None


def attention_of(layer: nn.Module) -> nn.Module | None:
    """A decoder layer's attention (GPT-NeoX's `attention`, GPT-2's `attn`, Falcon's `self_attention`, GPT-Neo's
    `attn.attention`, in a wrapper; None: a hybrid's layer of another kind)."""
    name = next((n for n in ("self_attn", "attention", "attn", "self_attention") if hasattr(layer, n)), None)
    if name is None:
        return _mixer(layer, ATTENTION)
    attn = getattr(layer, name)
    inner = getattr(attn, "attention", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "q_proj") else attn


def mlp_of(layer: nn.Module) -> nn.Module | None:
    """A decoder layer's `mlp` (a dense MLP; a mixture of experts' block where the family names it so: `moe_block` finds
    every family's; Granite 4's `shared_mlp`, LFM2's `feed_forward`; OPT's linears are the layer's own: the layer),
    None for a hybrid's layer of another kind."""
    if hasattr(layer, "mlp"):
        return layer.mlp
    if hasattr(layer, "feed_forward"):
        return layer.feed_forward
    if isinstance(getattr(layer, "fc1", None), nn.Linear):  # (OPT's, in the layer itself)
        return layer
    return layer.shared_mlp if hasattr(layer, "shared_mlp") else _mixer(layer, MLP)


def is_sparse(layer: nn.Module, arch: Arch) -> bool:
    """Whether a decoder layer's MLP is a mixture of experts (a model with dense layers among them, `dense_layers`, has
    a dense MLP there)."""
    return arch.moe and hasattr(getattr(layer, arch.moe_block, None), "experts")


def mlp_down(mlp: nn.Module, arch: Arch) -> nn.Linear:
    """A dense MLP's output linear (`down_proj`; Granite 4's `output_linear`)."""
    return getattr(mlp, arch.mlp_down)


def mamba_of(layer: nn.Module) -> nn.Module | None:
    """A hybrid decoder layer's Mamba-2 mixer (None: any other layer): Nemotron-H's `mixer`, Granite 4's `mamba`."""
    return layer.mamba if hasattr(layer, "mamba") else _mixer(layer, RECURRENT)


def shared_expert_of(layer: nn.Module, arch: Arch) -> nn.Module | None:
    """A mixture of experts' shared expert (None: a family without one, a dense layer): in the block, or in the layer
    (Granite 4)."""
    names = arch.shared_names
    if not arch.shared_expert or not (names.in_layer or is_sparse(layer, arch)):
        return None
    return getattr(layer if names.in_layer else moe_block(layer, arch), names.module)


def shared_rows(layer: nn.Module, arch: Arch) -> list[Rows]:
    """The rows of a shared expert's neurons: its gate's and up's (the two halves of a fused input_linear), or its up's
    where it has no gate (Nemotron 3's)."""
    shared, names = shared_expert_of(layer, arch), arch.shared_names
    return halves(getattr(shared, names.fused)) if names.fused else [Rows(l) for l in shared_linears(shared, arch)]


def shared_linears(shared: nn.Module, arch: Arch) -> list[nn.Linear]:
    """A shared expert's linears that read its input: its fused gate-and-up one, its gate and up, or its up alone
    where it has no gate (Nemotron 3's)."""
    if arch.shared_names.fused:
        return [getattr(shared, arch.shared_names.fused)]
    return [shared.gate_proj, shared.up_proj] if arch.gated_mlp else [shared.up_proj]


def shared_down(layer: nn.Module, arch: Arch) -> nn.Linear:
    """A shared expert's output linear."""
    return getattr(shared_expert_of(layer, arch), arch.shared_names.down)


def delta_of(layer: nn.Module) -> nn.Module | None:
    """A hybrid decoder layer's Gated DeltaNet (None: any other layer)."""
    return getattr(layer, "linear_attn", None)


def conv_of(layer: nn.Module) -> nn.Module | None:
    """A hybrid decoder layer's gated short convolution (LFM2's `conv`; None: any other layer): in_proj's rows are
    its B, C and x gates (hidden_size channels each), conv its depthwise filter of B * x, out_proj's columns C times
    the filter's output."""
    return getattr(layer, "conv", None)


def attention_out(attn: nn.Module) -> nn.Linear:
    """An attention's output projection (`o_proj`; LFM2's `out_proj`, Phi-2's `dense`, GPT-2's `c_proj`)."""
    return next(getattr(attn, name) for name in ("o_proj", "out_proj", "dense", "c_proj") if hasattr(attn, name))


@dataclass(frozen=True)
class HeadDims:
    """One attention head's rows in the query projection (its queries, and where the family gates each head's output,
    `Arch.gated_query`, its gate's rows after them), its rows in each key and value projection (multi-head latent
    attention's one kv_b_proj: its keys' unrotated channels, then its values) and its o_proj columns."""

    query: int
    kv: int
    out: int


def head_dims(config) -> HeadDims:
    """Each attention head's rows and columns in its projections (`HeadDims`)."""
    arch = arch_of(config)
    if arch.mla:
        return HeadDims(config.qk_nope_head_dim + config.qk_rope_head_dim, config.qk_nope_head_dim + config.v_head_dim,
                        config.v_head_dim)
    dim = head_dim(config)
    return HeadDims(2 * dim if arch.gated_query else dim, dim, dim)


def layer_norms(layer: nn.Module, arch: Arch) -> list[nn.Module]:
    return [getattr(layer, name) for name in arch.norms]


@dataclass(frozen=True)
class Rows:
    """The rows of one unit kind in a projection: `count` rows from `start` of `linear` (all of them when it is not
    fused). Row `start + i` belongs to unit i (a neuron, or a channel of a head). Where the kinds are fused head by
    group (`Arch.qkv_grouped`), every `period` rows hold `count` of this kind from `start` on: unit i's row is
    `start + (i // count) * period + i % count`."""

    linear: nn.Linear
    start: int = 0
    count: int | None = None  # None: to the last row
    period: int | None = None  # None: one block of rows

    def of(self, t: torch.Tensor) -> torch.Tensor:
        """This block of a tensor shaped like the weight's rows (the weight, its bias, their scores)."""
        if self.period:
            return t.unflatten(0, (-1, self.period))[:, self.start:self.start + self.count].flatten(0, 1)
        return t[self.start:] if self.count is None else t[self.start:self.start + self.count]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The linear's rows of units `index`."""
        if self.period:
            return self.start + index // self.count * self.period + index % self.count
        return self.start + index


def attention_inputs(layer: nn.Module, arch: Arch) -> list[nn.Linear]:
    """The linears that read the attention's (normed) input: q, k and v, or Phi-3's one qkv_proj (GPT-NeoX's
    query_key_value, GPT-2's c_attn; none without attention)."""
    attn = attention_of(layer)
    if attn is None:
        return []
    if arch.mla:  # (queries through a latent, or not)
        return [attn.q_proj if attn.q_a_proj is None else attn.q_a_proj, attn.kv_a_proj_with_mqa, *indexer_inputs(attn)]
    gate = attention_gate(attn)
    if arch.fused_qkv:
        return [getattr(attn, arch.qkv)]
    return [attn.q_proj, attn.k_proj, attn.v_proj, *([gate] if gate else [])]


def attention_gate(attn: nn.Module) -> nn.Linear | None:
    """An attention's output gate of its own (AFMoE's `gate_proj`: a row for each channel of each head's output, whose
    sigmoid multiplies it before o_proj; its rows go with the heads); None elsewhere (Qwen3.5 gates in q_proj's rows,
    `Arch.gated_query`)."""
    gate = getattr(attn, "gate_proj", None)
    return gate if isinstance(gate, nn.Linear) else None


def indexer_inputs(attn: nn.Module) -> list[nn.Linear]:
    """The linears of DeepSeek Sparse Attention's lightning indexer that read the attention's input (DeepSeek V3.2's:
    its one key head, `wk`, and its heads' weights, `weights_proj`; its queries, `wq_b`, read the query latent); none
    without an indexer."""
    indexer = getattr(attn, "indexer", None)
    return [] if indexer is None else [indexer.wk, indexer.weights_proj]


def mlp_inputs(layer: nn.Module, arch: Arch) -> list[nn.Linear]:
    """The linears that read a dense MLP's (normed) input: gate and up, up alone, or Phi-3's one gate_up_proj (none:
    no dense MLP)."""
    mlp = None if is_sparse(layer, arch) else mlp_of(layer)
    if mlp is None:
        return []
    if arch.fused_mlp:
        return [getattr(mlp, arch.mlp_fused)]
    return [getattr(mlp, arch.mlp_gate), getattr(mlp, arch.mlp_up)] if arch.gated_mlp else [getattr(mlp, arch.mlp_up)]


def neuron_rows(layer: nn.Module, arch: Arch) -> list[Rows]:
    """The MLP input rows of its neurons: gate's and up's (the two halves of a fused gate_up_proj), or up's."""
    if arch.fused_mlp:
        return halves(getattr(mlp_of(layer), arch.mlp_fused))
    return [Rows(linear) for linear in mlp_inputs(layer, arch)]


def halves(fused: nn.Linear) -> list[Rows]:
    """The gate's and up's rows of a linear that holds both, the gate's first (Phi-3's gate_up_proj)."""
    half = fused.out_features // 2
    return [Rows(fused, 0, half), Rows(fused, half, half)]


def attention_rows(layer: nn.Module, arch: Arch) -> tuple[Rows, list[Rows]]:
    """The query rows, and the key and value rows, of a layer's attention (heads of `HeadDims` rows each); a fused
    qkv_proj holds the queries first (as many rows as o_proj has input columns), then keys, then values, or those of
    each KV group in turn (`Arch.qkv_grouped`); multi-head latent attention's heads are q_proj's (q_b_proj's) and
    kv_b_proj's rows."""
    attn = attention_of(layer)
    if arch.mla:
        return Rows(attn.q_proj if attn.q_a_proj is None else attn.q_b_proj), [Rows(attn.kv_b_proj)]
    if not arch.fused_qkv:
        return Rows(attn.q_proj), [Rows(attn.k_proj), Rows(attn.v_proj)]
    qkv = getattr(attn, arch.qkv)
    q = attention_out(attn).in_features
    kv = (qkv.out_features - q) // 2
    if arch.qkv_grouped:  # (Falcon's; GPT-NeoX's head_size)
        groups = kv // (attn.head_size if hasattr(attn, "head_size") else attn.head_dim)
        period = qkv.out_features // groups
        return Rows(qkv, 0, q // groups, period), [Rows(qkv, (q + i * kv) // groups, kv // groups, period)
                                                   for i in (0, 1)]
    return Rows(qkv, 0, q), [Rows(qkv, q, kv), Rows(qkv, q + kv, kv)]


def mixer_inputs(layer: nn.Module) -> list[nn.Linear]:
    """The linears that read a hybrid's recurrent layer's (normed) input: Mamba-2's in_proj, Gated DeltaNet's four,
    a short convolution's in_proj."""
    mamba, delta, conv = mamba_of(layer), delta_of(layer), conv_of(layer)
    if mamba is not None or conv is not None:
        return [(mamba or conv).in_proj]
    return [getattr(delta, name) for name in DeltaRows.of(delta).inputs] if delta is not None else []


def shared_inputs(layer: nn.Module, arch: Arch) -> list[nn.Linear]:
    """The linears that read a mixture of experts' input for its shared expert: the expert's gate and up (up alone
    where it has no gate), and its gate's one row (none without a shared expert)."""
    names, shared = arch.shared_names, shared_expert_of(layer, arch)
    if shared is None:
        return []
    return shared_linears(shared, arch) + ([getattr(moe_block(layer, arch), names.gate)] if names.gate else [])


def latent_projections(block: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    """A mixture-of-experts block's projections into and out of the latent its experts work in (Nemotron 3 Super's
    fc1_latent_proj and fc2_latent_proj: the experts' rows and columns are latent channels, not hidden ones); None where
    its experts read and write the hidden channels (transformers' Nemotron-H holds identities there)."""
    down = getattr(block, "fc1_latent_proj", None)
    return (down, block.fc2_latent_proj) if isinstance(down, nn.Linear) else None


def moe_latent(layer: nn.Module, arch: Arch) -> tuple[nn.Linear, nn.Linear] | None:
    """A decoder layer's `latent_projections` (None: a dense layer, or experts without a latent)."""
    return latent_projections(moe_block(layer, arch)) if is_sparse(layer, arch) else None


def residual_readers(layer: nn.Module, arch: Arch) -> list[nn.Linear]:
    """Linears that read the (normed) residual stream: their input columns are hidden channels."""
    latent = moe_latent(layer, arch)
    return [*attention_inputs(layer, arch), *mlp_inputs(layer, arch), *shared_inputs(layer, arch),  # MoE: `moe_weights`
            *mixer_inputs(layer), *(latent[:1] if latent else [])]


def residual_writers(layer: nn.Module, arch: Arch) -> list[nn.Linear]:
    """Linears that write into the residual stream: their output rows are hidden channels."""
    attn = attention_of(layer)
    parts = ((None if is_sparse(layer, arch) else mlp_of(layer), arch.mlp_down), (shared_expert_of(layer, arch),
             arch.shared_names.down), (mamba_of(layer), "out_proj"), (delta_of(layer), "out_proj"),
             (conv_of(layer), "out_proj"))
    latent = moe_latent(layer, arch)
    return [*([attention_out(attn)] if attn is not None else []),
            *(getattr(module, name) for module, name in parts if module is not None), *(latent[1:] if latent else [])]


@dataclass(frozen=True)
class MambaRows:
    """Where a Mamba-2 mixer's heads live: in_proj's rows are the gate z (heads x head_dim), the scan's input x (heads
    x head_dim), B and C (n_groups x ssm_state_size each; shared by a group's heads) and each head's time step dt;
    conv1d's channels are x, B and C; dt_bias, A_log and D hold one entry a head, the gated norm and out_proj's columns
    heads x head_dim."""

    heads: int
    head_dim: int
    bc: int  # B's and C's rows together: 2 x n_groups x ssm_state_size

    @classmethod
    def of(cls, mamba: nn.Module) -> "MambaRows":
        return cls(mamba.num_heads, mamba.head_dim, 2 * mamba.n_groups * mamba.ssm_state_size)

    def channels(self, heads: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """The x (and z) rows of channels `channels` of each of heads `heads`."""
        return head_rows(heads, self.head_dim, channels)

    def in_proj(self, heads: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """The in_proj rows kept with them: z, x, every B and C row, dt."""
        inner, x = self.heads * self.head_dim, self.channels(heads, channels)
        return torch.cat([x, inner + x, 2 * inner + torch.arange(self.bc), 2 * inner + self.bc + heads])

    def conv(self, heads: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """The conv1d channels kept with them: x, every B and C channel."""
        inner = self.heads * self.head_dim
        return torch.cat([self.channels(heads, channels), inner + torch.arange(self.bc)])


def head_rows(heads: torch.Tensor, dim: int, channels: torch.Tensor | None = None) -> torch.Tensor:
    """The rows of heads `heads` (their channels `channels`, default all) in a projection of heads of `dim` rows."""
    channels = torch.arange(dim) if channels is None else channels
    return (heads[:, None] * dim + channels[None, :]).flatten()


@dataclass(frozen=True)
class DeltaRows:
    """Where a Gated DeltaNet's heads live: in_proj_qkv's rows (and conv1d's channels) are the queries and keys (key
    heads x head_k_dim each), then the values (value heads x head_v_dim); in_proj_z's rows and out_proj's columns are
    the value heads' channels, in_proj_b's and in_proj_a's rows, dt_bias and A_log one a value head. Value head i reads
    key head i // (value heads / key heads). Qwen3-Next fuses the four projections into two (`fused`): in_proj_qkvz
    holds, key head by key head, its queries, its keys, its value heads' values and their z rows; in_proj_ba, key head
    by key head, its value heads' b rows, then their a rows (`fused_order`)."""

    k_heads: int
    v_heads: int
    dk: int
    dv: int
    fused: bool = False

    @classmethod
    def of(cls, delta: nn.Module) -> "DeltaRows":
        return cls(delta.num_k_heads, delta.num_v_heads, delta.head_k_dim, delta.head_v_dim,
                   hasattr(delta, "in_proj_qkvz"))

    @classmethod
    def of_config(cls, config) -> "DeltaRows":
        return cls(config.linear_num_key_heads, config.linear_num_value_heads, config.linear_key_head_dim,
                   config.linear_value_head_dim, config.model_type in FUSED_DELTA)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The names of the linears that read the layer's (normed) input."""
        return ("in_proj_qkvz", "in_proj_ba") if self.fused else ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a")

    @property
    def qkv_rows(self) -> int:
        """in_proj_qkv's rows (conv1d's channels): queries, keys and values."""
        return 2 * self.k_heads * self.dk + self.v_heads * self.dv

    def qkv(self, v_heads: torch.Tensor, k_heads: torch.Tensor) -> torch.Tensor:
        """The in_proj_qkv rows (conv1d channels) of key heads `k_heads` and value heads `v_heads`."""
        keys = self.k_heads * self.dk
        k = head_rows(k_heads, self.dk)
        return torch.cat([k, keys + k, 2 * keys + head_rows(v_heads, self.dv)])

    def values(self, v_heads: torch.Tensor) -> torch.Tensor:
        """The in_proj_z rows (out_proj columns) of value heads `v_heads`."""
        return head_rows(v_heads, self.dv)

    def fused_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """in_proj_qkvz's rows in the order of in_proj_qkv's rows and then in_proj_z's, and in_proj_ba's in the order
        of in_proj_b's and then in_proj_a's (`fused`): `fused[order]` is the two unfused ones one after the other."""
        per_key = self.v_heads // self.k_heads  # value heads a key head
        block = torch.arange(self.k_heads)[:, None] * (2 * self.dk + 2 * per_key * self.dv)
        starts = (0, self.dk, 2 * self.dk, 2 * self.dk + per_key * self.dv)  # q, k, v, z in a key head's block
        widths = (self.dk, self.dk, per_key * self.dv, per_key * self.dv)
        qkvz = torch.cat([(block + start + torch.arange(width)).flatten() for start, width in zip(starts, widths)])
        ba = torch.arange(2 * self.v_heads).view(self.k_heads, 2, per_key).transpose(0, 1).flatten()
        return qkvz, ba

    def kept_inputs(self, v_heads: torch.Tensor, k_heads: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each input linear (`inputs`) and its rows kept with key heads `k_heads` and value heads `v_heads` (the same
        number for each kept key head, listed key head by key head), in the layout of the model they leave."""
        qkv, values = self.qkv(v_heads, k_heads), self.values(v_heads)
        if not self.fused:
            return list(zip(self.inputs, (qkv, values, v_heads, v_heads)))
        kept = replace(self, k_heads=len(k_heads), v_heads=len(v_heads))
        unfused = (torch.cat([qkv, self.qkv_rows + values]),
                   torch.cat([v_heads, self.v_heads + v_heads]))
        # rows of the teacher's fused linear, in the unfused order, then placed in the fused order of the kept sizes
        return [(name, order[rows][torch.argsort(kept_order)]) for name, order, rows, kept_order in
                zip(self.inputs, self.fused_order(), unfused, kept.fused_order())]


@dataclass(frozen=True)
class ExpertParam:
    """Where a parameter of a mixture of experts' block holds its experts, hidden channels and each expert's neurons
    (dims; None: it has none of them), and how its neuron dim holds the gate's and up's: "halves" (the gate's, then
    up's), "pairs" (the gate's and up's in turn) or "one" (down's neurons)."""

    module: str  # "router" or "experts"
    name: str
    experts: int = 0
    hidden: int | None = None
    neurons: int | None = None
    gated: str = "one"


# Every family's experts but GPT-OSS's: the router's rows (experts, hidden), the experts' gate and up rows (experts,
# 2 x neurons, hidden: gate first) and down columns (experts, hidden, neurons)
ROW_EXPERTS = (ExpertParam("router", "weight", hidden=1),
               ExpertParam("experts", "gate_up_proj", hidden=2, neurons=1, gated="halves"),
               ExpertParam("experts", "down_proj", hidden=1, neurons=2))
def experts_input(gated: bool) -> str:
    """The name of a mixture of experts' 3D tensor that reads the experts' input: gate_up_proj, or up_proj where they
    have no gate (`Arch.gated_mlp` False, Nemotron 3's)."""
    return "gate_up_proj" if gated else "up_proj"


# Squared-ReLU experts without a gate (Nemotron 3's: `Arch.gated_mlp` False): up rows (experts, neurons, hidden)
PLAIN_EXPERTS = (ExpertParam("router", "weight", hidden=1), ExpertParam("experts", "up_proj", hidden=2, neurons=1),
                 ExpertParam("experts", "down_proj", hidden=1, neurons=2))
# The same behind a latent projection (Nemotron 3 Super's, `moe_latent`): the experts hold latent channels, not hidden
LATENT_EXPERTS = tuple(replace(p, hidden=None) if p.module == "experts" else p for p in PLAIN_EXPERTS)
# GPT-OSS's (`Arch.oss_experts`): the transposes, gate and up columns in turn, and biases
OSS_EXPERTS = (ExpertParam("router", "weight", hidden=1), ExpertParam("router", "bias"),
               ExpertParam("experts", "gate_up_proj", hidden=1, neurons=2, gated="pairs"),
               ExpertParam("experts", "gate_up_proj_bias", neurons=1, gated="pairs"),
               ExpertParam("experts", "down_proj", hidden=2, neurons=1),
               ExpertParam("experts", "down_proj_bias", hidden=1))
# A per-expert bias that steers the router's picks, where there is one: the block's (LFM2-MoE's `expert_bias`
# buffer, MiniMax-M2's `e_score_correction_bias`: `BLOCK_BIASES`, which the block hands its router), the router's own
# (GLM-4.5's `e_score_correction_bias`, which the router adds itself) or its statistics' (ERNIE 4.5's
# `moe_statics.e_score_correction_bias`, one row of the experts)
BLOCK_BIASES = ("expert_bias", "e_score_correction_bias")
# Where a router holds its weights in a linear of its own and routes itself: the linear's name (Hunyuan's `wg`,
# AFMoE's `gate`)
ROUTER_LINEARS = ("wg", "gate")
ROUTER_BIAS = ExpertParam("router", "e_score_correction_bias")
STATICS_BIAS = ExpertParam("statics", "e_score_correction_bias", experts=1)


@dataclass(frozen=True)
class MoEWeights:
    """A sparse MoE block's router and experts, every expert's weights in one tensor (`params` says where their
    experts, hidden channels and neurons are); `gate_up` and `down` read them as most families hold them."""

    router: nn.Module  # holds `weight`
    experts: nn.Module  # holds `gate_up_proj` (or, ungated, `up_proj`) and `down_proj`
    oss: bool = False  # GPT-OSS's layout (`Arch.oss_experts`)
    block: nn.Module | None = None  # the block, where it holds a bias for the router's picks (`BLOCK_BIASES`)
    gate: nn.Module | None = None  # what routes, where the router's weights are a linear of it (`ROUTER_LINEARS`)
    block_bias: str = "expert_bias"  # the block's bias's name (`BLOCK_BIASES`)
    gated: bool = True  # the experts have a gate (False: up_proj alone, `PLAIN_EXPERTS`)
    latent: tuple[nn.Linear, nn.Linear] | None = None  # the projections into and out of the experts' latent

    @property
    def params(self) -> tuple[ExpertParam, ...]:
        steered = (ExpertParam("block", self.block_bias),) if self.block is not None else tuple(
            p for p, holder in ((ROUTER_BIAS, self.router), (STATICS_BIAS, self.statics)) if hasattr(holder, p.name))
        experts = OSS_EXPERTS if self.oss else ROW_EXPERTS if self.gated else \
            LATENT_EXPERTS if self.latent else PLAIN_EXPERTS
        return experts + steered

    @property
    def inputs(self) -> str:
        return experts_input(self.gated)

    @property
    def statics(self) -> nn.Module | None:
        """ERNIE 4.5's router's statistics, which hold the bias its picks are steered by (`STATICS_BIAS`)."""
        return getattr(self.router, "moe_statics", None)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The router on tokens x (tokens, hidden): (logits, the picked experts' weights, the picked experts), as the
        block routes them (with its bias for the picks, where it has one)."""
        if self.block is None:
            return (self.router if self.gate is None else self.gate)(x)
        bias = getattr(self.block, self.block_bias)
        return self.router(x, bias) if self.gate is None else self.gate(x[None], bias)  # (AFMoE's takes a batch)

    def gate_up_of(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like the experts' input tensor (`inputs`; the weight, or its gradient times it) as (experts,
        2 x neurons, hidden), the gate's rows first, or (experts, neurons, hidden) where ungated."""
        return torch.cat([t[..., 0::2], t[..., 1::2]], -1).transpose(1, 2) if self.oss else t

    def down_of(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like down_proj as (experts, hidden, neurons)."""
        return t.transpose(1, 2) if self.oss else t

    @property
    def gate_up(self) -> torch.Tensor:
        return self.gate_up_of(getattr(self.experts, self.inputs))

    @property
    def down(self) -> torch.Tensor:
        return self.down_of(self.experts.down_proj)

    @property
    def neurons(self) -> int:
        return self.experts.down_proj.shape[1 if self.oss else 2]

    def expert(self, e: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert e on tokens x (tokens, hidden): its neurons' activations (down_proj's input, fp32) and its output
        before the routing weight (fp32; behind a latent, projected out of it, without the projection's bias, which
        the block adds once)."""
        if self.latent:
            a, out = replace(self, latent=None).expert(e, F.linear(x, self.latent[0].weight, self.latent[0].bias))
            return a, F.linear(out, self.latent[1].weight.float())
        ex = self.experts
        if self.oss:
            a = ex._apply_gate((x @ ex.gate_up_proj[e] + ex.gate_up_proj_bias[e]).float())
            return a, (a.to(ex.down_proj.dtype) @ ex.down_proj[e] + ex.down_proj_bias[e]).float()
        if not self.gated:
            a = ex.act_fn(F.linear(x, ex.up_proj[e]).float())
            return a, F.linear(a.to(ex.down_proj.dtype), ex.down_proj[e]).float()
        gate, up = F.linear(x, ex.gate_up_proj[e]).float().chunk(2, dim=-1)
        a = ex.act_fn(gate) * up
        return a, F.linear(a.to(ex.down_proj.dtype), ex.down_proj[e]).float()


def moe_block(layer: nn.Module, arch: Arch) -> nn.Module:
    return getattr(layer, arch.moe_block)


def moe_weights(block: nn.Module, arch: Arch) -> MoEWeights:
    """The weights of a mixture-of-experts block (`moe_block`)."""
    bias = next((name for name in BLOCK_BIASES if getattr(block, name, None) is not None), None)
    router = getattr(block, arch.router)
    linear = next((getattr(router, name) for name in ROUTER_LINEARS if isinstance(getattr(router, name, None),
                                                                                 nn.Linear)), None)
    return MoEWeights(router if linear is None else linear, block.experts, arch.oss_experts,
                      block if bias else None, None if linear is None else router, bias or "expert_bias",
                      arch.gated_mlp, latent_projections(block))


@dataclass(frozen=True)
class StoredAs:
    """How a checkpoint stores one state-dict entry of a mixture of experts: under another name (`stacked` False, one
    name: a router, or Granite-MoE's 3D tensors), or a 3D experts' tensor as, for each expert, the tensors whose rows it
    joins (gate and up; down)."""

    names: tuple[tuple[str, ...], ...]
    stacked: bool

    def all(self) -> list[str]:
        return [n for names in self.names for n in names]

    def join(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.stacked:
            return tensors[self.names[0][0]]
        return torch.stack([torch.cat([tensors[n] for n in names]) for names in self.names])

    def split(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.stacked:
            return {self.names[0][0]: t}
        return {n: part for names, rows in zip(self.names, t) for n, part in zip(names, rows.chunk(len(names)))}

    def shapes(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Each stored tensor's shape, for an entry of `shape`."""
        if not self.stacked:
            return {self.names[0][0]: tuple(shape)}
        rows = shape[1] // len(self.names[0])
        return {n: (rows, *shape[2:]) for n in self.all()}


def stored_as(name: str, arch: Arch, experts: int) -> StoredAs | None:
    """How a checkpoint stores the state-dict entry `name` (None: as itself, under its name): `moe_stored_as`, under the
    name the checkpoint gives the decoder (Nemotron-H's backbone.)."""
    stored = moe_stored_as(name, arch, experts)
    prefix = arch.decoder + "."
    if arch.stored_prefix is None or not name.startswith(prefix):
        return stored
    names = stored.names if stored else ((name,),)
    return StoredAs(tuple(tuple(arch.stored_prefix + n.removeprefix(prefix) for n in group) for group in names),
                    stacked=bool(stored and stored.stacked))


def moe_stored_as(name: str, arch: Arch, experts: int) -> StoredAs | None:
    """How a checkpoint stores the state-dict entry `name` under the decoder's in-memory name (`model.`): renamed
    (`Arch.stored_renames`), or a mixture of experts' tensor as its family stores it (None: as itself)."""
    renamed = name
    for pattern, stored in arch.stored_renames:
        renamed = re.sub(pattern, stored, renamed)
    if renamed != name:
        return StoredAs(((renamed,),), stacked=False)
    parts = (f"{arch.router}.weight", f"experts.{experts_input(arch.gated_mlp)}", "experts.down_proj")
    m = re.fullmatch(rf"(model\.layers\.\d+\.){arch.moe_block}\.({'|'.join(map(re.escape, parts))})", name) \
        if arch.moe else None
    if m is None:
        return None
    if arch.stored_fused:  # the 3D tensors themselves, under other names
        return StoredAs(((m[1] + dict(zip(parts, arch.stored_fused))[m[2]],),), stacked=False)
    block, gate, up, down = arch.stored_moe
    prefix = f"{m[1]}{block}."
    if m[2] == parts[0]:
        return StoredAs(((prefix + m[2],),), stacked=False)
    linears = (down,) if m[2] == parts[2] else (gate, up) if gate else (up,)
    return StoredAs(tuple(tuple(f"{prefix}experts.{e}.{linear}.weight" for linear in linears)
                          for e in range(experts)), stacked=True)


def count_params(model: nn.Module) -> int:
    """Parameters counted once each (tied embeddings count once), as `transformers` reports them."""
    return sum(p.numel() for p in model.parameters())
