"""The weight types of a GGUF export: which type each tensor is written in, and who quantises it.

gguf-py (llama.cpp's own Python package) quantises Q8_0, Q5_1, Q5_0, Q4_1 and Q4_0 itself; those exports are
"pure", as llama.cpp's converter writes its `--outtype q8_0`: every 2-D weight in the one type. gguf-py cannot
write the k-quants (it only dequantises Q4_K, Q5_K and Q6_K), so for those this module calls llama.cpp's own C
quantiser, `ggml_quantize_chunk` in the `libggml-base.so` that node-llama-cpp's prebuilt CPU build ships (npm
package `@node-llama-cpp/linux-x64`, installed by `make llamacpp`), through ctypes, and picks each tensor's type by
the main rules of llama.cpp's `llama-quantize` mixes: the output matrix (or the tied embedding) in Q6_K, and in
the `_m` mixes attn_v and ffn_down of the layers `use_more_bits` names in Q6_K too, and a fused attn_qkv (Phi-3) one
k-quant above the mix's. Without that library the k-quant types are refused by name.

A tensor whose rows do not split into whole blocks falls back as llama.cpp does: Q4_K to Q5_0, Q5_K to Q5_1,
Q6_K to Q8_0 (blocks of 32 instead of 256), and anything else (or a row that is not a multiple of 32) to F16.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import gguf
import numpy as np

from minitron.errors import MinitronError

T = gguf.GGMLQuantizationType
F = gguf.LlamaFileType

ExportDtype = Literal["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q5_1", "q5_0", "q4_1", "q4_0"]


@dataclass(frozen=True)
class WeightType:
    """One `dtype` choice: the file type it declares, the type of its 2-D weights, and llama.cpp's mix rules."""

    file_type: gguf.LlamaFileType
    qtype: gguf.GGMLQuantizationType
    ggml: bool = False  # quantised by llama.cpp's ggml library (the k-quants), not by gguf-py
    more_bits: bool = False  # a `_m` mix: attn_v and ffn_down of the use_more_bits layers in Q6_K


TYPES: dict[str, WeightType] = {
    "f16": WeightType(F.MOSTLY_F16, T.F16),
    "bf16": WeightType(F.MOSTLY_BF16, T.BF16),
    "q8_0": WeightType(F.MOSTLY_Q8_0, T.Q8_0),
    "q6_k": WeightType(F.MOSTLY_Q6_K, T.Q6_K, ggml=True),
    "q5_k_m": WeightType(F.MOSTLY_Q5_K_M, T.Q5_K, ggml=True, more_bits=True),
    "q4_k_m": WeightType(F.MOSTLY_Q4_K_M, T.Q4_K, ggml=True, more_bits=True),
    "q5_1": WeightType(F.MOSTLY_Q5_1, T.Q5_1),
    "q5_0": WeightType(F.MOSTLY_Q5_0, T.Q5_0),
    "q4_1": WeightType(F.MOSTLY_Q4_1, T.Q4_1),
    "q4_0": WeightType(F.MOSTLY_Q4_0, T.Q4_0),
}
# The `_m` mixes' type for a fused attn_qkv (llama-quant.cpp): one k-quant above the mix's own.
FUSED_QKV = {T.Q4_K: T.Q5_K, T.Q5_K: T.Q6_K}
# llama.cpp's fallback for rows that are not a multiple of 256 (llama-quant.cpp, tensor_type_fallback)
K_FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
GGML_LIBRARY = "libggml-base.so"


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v and ffn_down get Q6_K in the Q4_K_M and Q5_K_M mixes."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_type(name: str, shape: tuple[int, ...], wt: WeightType, layers: int,
                tied: bool) -> gguf.GGMLQuantizationType:
    """The type of the GGUF tensor `name` (its numpy shape, rows last): f32 for norms (Cohere's q/k norms are 2-D, a row
    per head), biases (GPT-OSS's experts' are 2-D), a mixture of experts' routers (and its shared expert's gate) and
    Mamba-2's A, D and convolution and LFM2's short convolutions' filters (as llama.cpp's converter writes them); and
    multi-head latent attention's keys and values from the latent (`attn_k_b`, `attn_v_b`, 3-D), which llama.cpp's
    converter writes in the file's type: on a CPU with AMX, llama.cpp holds f16 and q8_0 ones whose rows fit its tiles
    in its AMX buffer, and then stops at its first graph with keys of 16 or 32 channels (an assertion in
    ggml_backend_sched: its kernel takes no permuted queries) and computes wrong values from q8_0 ones (a shortfall of
    0.62 on the tiny DeepSeek V3; measured with the llama.cpp that node-llama-cpp 3.22.1 ships). In f32 they run
    everywhere (64 MiB a layer of the 671B, 32 more than in f16)."""
    if len(shape) == 1 or name.endswith((".bias", "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight",
                                         ".attn_k_b.weight", ".attn_v_b.weight")):
        return T.F32
    if re.fullmatch(r"blk\.\d+\.(ssm_a|ssm_d|ssm_conv1d\.weight|shortconv\.conv\.weight)", name):  # llama.cpp's
        # kernels read them in f32
        return T.F32
    qtype = wt.qtype
    if wt.ggml and (name == "output.weight" or (tied and name == "token_embd.weight")):
        qtype = T.Q6_K if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0 else T.Q8_0
    elif wt.more_bits and (m := re.fullmatch(r"blk\.(\d+)\.(attn_v|ffn_down)\.weight", name)):
        if use_more_bits(int(m.group(1)), layers):
            qtype = T.Q6_K
    elif wt.more_bits and re.fullmatch(r"blk\.\d+\.attn_qkv\.weight", name):
        qtype = FUSED_QKV[qtype]
    row = shape[-1]
    if row % gguf.GGML_QUANT_SIZES[qtype][0]:
        qtype = K_FALLBACK.get(qtype, T.F16)
        if row % gguf.GGML_QUANT_SIZES[qtype][0]:
            qtype = T.F16
    return qtype


def encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """`data` (float32, rows last) in `qtype`, as `GGUFWriter.add_tensor(..., raw_dtype=qtype)` takes it."""
    if qtype == T.F32:
        return data.astype(np.float32)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return ggml_quantize(data, qtype)
    return gguf.quants.quantize(data, qtype)


def ggml_library_path() -> Path | None:
    """Where llama.cpp's libggml-base.so is: $MINITRON_GGML_LIB, else in node-llama-cpp's prebuilt CPU build in
    this environment ($NODE_LLAMA_CPP names another node-llama-cpp package folder, as for the llama.cpp check)."""
    if os.environ.get("MINITRON_GGML_LIB"):
        return Path(os.environ["MINITRON_GGML_LIB"])
    package = Path(os.environ.get("NODE_LLAMA_CPP") or Path(sys.prefix) / "node" / "node_modules" / "node-llama-cpp")
    path = package.parent / "@node-llama-cpp" / "linux-x64" / "bins" / "linux-x64" / GGML_LIBRARY
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def ggml_library() -> ctypes.CDLL:
    path = ggml_library_path()
    if path is None:
        raise MinitronError("the k-quant types (q4_k_m, q5_k_m, q6_k) are quantised by llama.cpp's own ggml library, "
                            "which is not installed: `make llamacpp` installs node-llama-cpp's prebuilt llama.cpp "
                            "(needs Node.js >= 20), or set MINITRON_GGML_LIB to a libggml-base.so; q8_0, q5_0, "
                            "q5_1, q4_0 and q4_1 need nothing more")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise MinitronError(f"cannot load llama.cpp's ggml library {path}: {e}") from None
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def ggml_quantize(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Rows of `data` quantised by ggml_quantize_chunk (no importance matrix), as uint8 rows of whole blocks.
    The caller has checked that rows split into blocks: ggml aborts the process on a partial one."""
    lib = ggml_library()
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows = np.ascontiguousarray(data.reshape(-1, data.shape[-1]), dtype=np.float32)
    if rows.shape[1] % block or lib.ggml_row_size(int(qtype), rows.shape[1]) != rows.shape[1] // block * size:
        raise MinitronError(f"cannot quantise rows of {rows.shape[1]} values to {qtype.name}")
    out = np.empty((rows.shape[0], rows.shape[1] // block * size), dtype=np.uint8)
    written = lib.ggml_quantize_chunk(int(qtype), rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1],
                                      None)
    if written != out.nbytes:
        raise MinitronError(f"llama.cpp's quantiser wrote {written} bytes for {out.nbytes} of {qtype.name}")
    return out.reshape(*data.shape[:-1], out.shape[-1])
