"""GGUF export: a Hugging Face directory (Llama, Mistral, Qwen2, Qwen3) as one .gguf file for llama.cpp,
Ollama and LM Studio.

The `gguf` package (llama.cpp's own Python writer) writes the format: its tensor-name maps, its Q8_0
quantiser and its metadata keys. This module decides what goes in: the architecture numbers llama.cpp
reads, the tokenizer, and the weights (with llama.cpp's rotary layout for q/k in the Llama family).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch
from safetensors import safe_open

from minitron.arch import head_dim
from minitron.io import atomic_file, refuse_existing_file
from minitron.errors import MinitronError
from minitron.load import load_config, load_tokenizer, resolve_model
from minitron.shards import require_safetensors

ExportDtype = Literal["f16", "bf16", "q8_0"]

# Hugging Face model_type -> llama.cpp architecture. Mistral is llama.cpp's "llama" (as its own converter does).
GGUF_ARCH = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "mistral": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
}
# --dtype -> (general.file_type, the type of 2-D weights); 1-D tensors (norms, biases) stay F32.
FILE_TYPES = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
# The split regexes of common byte-level BPE tokenizers, by the name llama.cpp gives them (tokenizer.ggml.pre).
PRE_TOKENIZERS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+",
    "tekken": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"  # Mistral NeMo
              r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
              r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def export(model: str, out: Path, dtype: ExportDtype = "f16", overwrite: bool = False) -> Path:
    """Export a Hugging Face model directory to one GGUF file for llama.cpp, Ollama and LM Studio.

    Args:
        model: The model to export: a Hugging Face directory written by minitron (or any stock
            Llama, Mistral, Qwen2 or Qwen3 checkpoint), a .gguf file or 'default'.
        out: The .gguf file to write (written to a temporary sibling, then renamed into place).
        dtype: Weight type of the 2-D tensors: f16, bf16 or q8_0 (8-bit blocks of 32; a tensor whose
            rows are not a multiple of 32 stays f16). Norms and biases stay f32.
        overwrite: Replace `out` if it already exists.

    Returns:
        The path of the written file.
    """
    out = Path(out)
    refuse_existing_file(out, overwrite)
    if dtype not in FILE_TYPES:
        raise MinitronError(f"--dtype {dtype!r} is not a GGUF export type; use one of {', '.join(FILE_TYPES)}")
    path = resolve_model(model)
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except json.JSONDecodeError:
        raise MinitronError(f"{path / 'config.json'} is not valid JSON; is {path} a complete model "
                            f"directory?") from None
    if model_type not in GGUF_ARCH:
        raise MinitronError(f"cannot export {model_type!r} models to GGUF; export supports "
                            f"{', '.join(GGUF_ARCH)}")
    config = load_config(path)
    require_safetensors(path)  # no weights (or only a pickle): refused, not a GGUF without tensors
    check_exportable(config)
    arch = GGUF_ARCH[model_type]
    with atomic_file(out) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        try:
            add_architecture(writer, config, name=path.name, file_type=FILE_TYPES[dtype][0])
            add_tokenizer(writer, load_tokenizer(path), config.vocab_size)
            add_weights(writer, path, config, arch, FILE_TYPES[dtype][1])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file(progress=True)
        finally:
            writer.close()
    return out


def check_exportable(config) -> None:
    """Refuse what llama.cpp's Llama/Qwen graphs cannot run, naming it."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise MinitronError(f"cannot export a model with rope_type {rope['rope_type']!r} yet; "
                            f"GGUF export supports plain RoPE only")


def rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def add_architecture(writer: gguf.GGUFWriter, config, name: str, file_type: gguf.LlamaFileType) -> None:
    """The numbers llama.cpp builds its graph from (`{arch}.*` keys) and the file's identity."""
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


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
    splits = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    for name, regex in PRE_TOKENIZERS.items():
        if splits == [regex]:
            return name
    print(f"warning: unrecognised pre-tokenizer {json.dumps(pre_tokenizer)[:120]}; llama.cpp will split text "
          f"its default way, which may tokenize digits and whitespace differently", flush=True)
    return "default"


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


def add_weights(writer: gguf.GGUFWriter, path: Path, config, arch: gguf.MODEL_ARCH,
                qtype: gguf.GGMLQuantizationType) -> None:
    """Every tensor of the safetensors files under its GGUF name, in `qtype` (1-D tensors in f32)."""
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    llama_rotary = arch == gguf.MODEL_ARCH.LLAMA
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                if key == "lm_head.weight" and config.tie_word_embeddings:
                    continue  # llama.cpp reuses token_embd when there is no output tensor
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise MinitronError(f"{file.name}: tensor {key} has no GGUF name in llama.cpp's "
                                        f"{gguf.MODEL_ARCH_NAMES[arch]} architecture")
                data = f.get_tensor(key).to(torch.float32).numpy()
                if llama_rotary and ".self_attn.q_proj." in key:
                    data = interleave_rotary(data, config.num_attention_heads)
                elif llama_rotary and ".self_attn.k_proj." in key:
                    data = interleave_rotary(data, config.num_key_value_heads)
                array, raw_dtype = encode(data, qtype)
                writer.add_tensor(name, array, raw_dtype=raw_dtype)


def interleave_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's q/k output rows from Hugging Face's rotary layout (first half, second half)
    to llama.cpp's Llama layout (pairs side by side), as llama.cpp's own converter does."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType):
    """(array, raw GGUF type) for `GGUFWriter.add_tensor`: f32 for 1-D tensors; Q8_0 needs rows of 32k values."""
    if data.ndim == 1:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        qtype = gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(data, qtype), qtype
