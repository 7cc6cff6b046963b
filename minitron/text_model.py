"""The language model inside a multimodal checkpoint (Gemma 3 4B-27B, PaliGemma, Mistral Small 3.1, EXAONE 4.5, LLaVA,
...), as a text-only Hugging Face directory that the rest of minitron prunes, distils and exports like any other.

A multimodal directory's config holds its language model's config as `text_config`; its weights hold that model
under a prefix (`language_model.model.` and `language_model.lm_head.` as transformers saves them, or
`model.language_model.` and `lm_head.`), beside the vision tower and the projector, which a text model does not
use. `extract_language_model` copies the language model's tensors one at a time under the text model's own names
into a cached directory (once per checkpoint content), with its config, tokenizer, chat template, generation
config and card; `load.resolve_model` does it for any spec that names such a directory.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from minitron.arch import arch_of, as_built, implied_sizes, prunable_sizes
from minitron.errors import MinitronError, whole_number
from minitron.io import atomic_dir, build_once, write_json
from minitron.shards import INDEX, SINGLE, Checkpoint, SafetensorsWriter, TensorSpec

# Where a multimodal checkpoint keeps its language model's decoder ("model." of a text checkpoint) and its head.
DECODER_PREFIXES = ("language_model.model.", "model.language_model.")
HEAD_PREFIXES = ("language_model.lm_head.", "lm_head.")  # (its weight, and its bias where it has one: Phi-2's)
# Files of a multimodal directory that a text-only one keeps as they are (the chat template is the processor's).
KEPT_FILES = ("generation_config.json", "chat_template.jinja", "chat_template.json", "README.md")
_EXTRACTED: dict[tuple[Path, Path], Path] = {}  # (checkpoint, cache) -> its copy, so a process fingerprints it once


def has_weights(path: Path) -> bool:
    """Whether a directory holds safetensors weights (a config alone plans a pruning: `prune --dry-run`)."""
    return (path / SINGLE).is_file() or (path / INDEX).is_file()


def written_config(path: Path) -> dict:
    """A Hugging Face directory's config.json as written; {} when it is missing, not JSON or not an object
    (load_config says what is wrong with it)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def is_multimodal(path: Path) -> bool:
    """Whether a Hugging Face directory's config wraps a language model (`text_config`) with other modalities."""
    return isinstance(written_config(path).get("text_config"), dict)


def extract_language_model(path: Path, cache: Path) -> Path:
    """The language model of the multimodal checkpoint `path` as a text-only directory under `cache`, written once
    per checkpoint content (its fingerprint) and found again after."""
    known = _EXTRACTED.get((path, cache))
    if known is not None and (known / "minitron_source.json").is_file():
        return known
    checkpoint = Checkpoint.open(path)
    out = cache / f"{path.name}-text-{checkpoint.fingerprint()}"
    build_once(out, (out / "minitron_source.json").is_file, lambda: write_language_model(path, checkpoint, out))
    _EXTRACTED[path, cache] = out
    return out


def write_language_model(path: Path, checkpoint: Checkpoint, out: Path) -> None:
    """`extract_language_model`'s copy: tensors renamed one at a time, config, tokenizer and the kept files."""
    from transformers import AutoModelForCausalLM  # lazy: CLI start-up speed

    config = text_config(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    config.architectures = [type(model).__name__]
    names = tensor_names(checkpoint, model, path)
    dtype = next(checkpoint.specs[source].dtype for source in names.values() if source is not None)
    zeros = {name: torch.zeros(p.shape, dtype=dtype) for name, p in model.named_parameters() if names[name] is None}
    specs = {name: checkpoint.specs[source] if source else TensorSpec(dtype, tuple(zeros[name].shape))
             for name, source in names.items()}
    print(f"extracting the language model of {path} (once; cached in {out})", flush=True)
    with atomic_dir(out, owned=True) as tmp:
        with SafetensorsWriter(tmp, specs) as writer:
            for name, source in names.items():
                writer.write(name, zeros[name] if source is None else checkpoint.read([source])[source])
        config.save_pretrained(tmp)
        save_tokenizer(path, tmp)
        for kept in KEPT_FILES:
            if (path / kept).is_file():
                shutil.copyfile(path / kept, tmp / kept)
        write_json(tmp / "minitron_source.json", {"multimodal": str(path), "model_type": config.model_type})


def directory_config(path: Path):
    """The config of a Hugging Face directory (of its language model, where it is multimodal), as built
    (`arch.as_built`); refuses unsupported architectures and sizes that are no positive whole numbers."""
    from transformers import AutoConfig  # lazy: CLI start-up speed (transformers' classes take seconds to import)

    if is_multimodal(path):  # (its weights, if any, are read through the text-only copy `load.resolve_model` makes)
        config = text_config(path)
    else:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        except Exception as e:  # bad JSON, unknown model types, fields of the wrong type (strict dataclass checks)
            problem = " ".join(str(e).split())[:200] or type(e).__name__
            raise MinitronError(f"cannot read {path / 'config.json'}: {problem}") from None
        arch_of(config)
    implied = implied_sizes(config)  # (sizes the config leaves out: `as_built` says them)
    for name in prunable_sizes(config) + ("vocab_size",):  # every size a model has must be a positive whole number
        if name not in implied:
            whole_number(getattr(config, name, None), f"{path / 'config.json'}: {name}")
    return as_built(config)


def text_config(path: Path):
    """The language model's config, tied as the multimodal model ties it (its own `tie_word_embeddings` is the one
    the wrapper's forward honours), or a refusal naming the families minitron supports."""
    from transformers import AutoConfig  # lazy: CLI start-up speed

    try:
        wrapper = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # unknown model types, bad fields
        raise MinitronError(f"cannot read {path / 'config.json'}: {' '.join(str(e).split())[:200]}") from None
    config = wrapper.get_text_config(decoder=True)
    try:
        arch_of(config)
    except MinitronError as e:
        raise MinitronError(f"{path} is a multimodal {wrapper.model_type} model; its language model: {e}") from None
    config.tie_word_embeddings = bool(getattr(wrapper, "tie_word_embeddings", config.tie_word_embeddings))
    return config


def tensor_names(checkpoint: Checkpoint, model: torch.nn.Module, path: Path) -> dict[str, str | None]:
    """Each tensor of the text `model` (its parameters, a tied head once) -> its name in the multimodal
    checkpoint; None for a head's bias the wrapper's head lacks (transformers' LLaVA around Phi-2 computes its logits
    without one: the text model's is zero)."""
    prefix = next((p for p in DECODER_PREFIXES if f"{p}embed_tokens.weight" in checkpoint.specs), None)
    if prefix is None:
        raise MinitronError(f"{path} holds no language model embeddings under {' or '.join(DECODER_PREFIXES)}: "
                            "not a multimodal checkpoint minitron can take apart")
    head = next((p for p in HEAD_PREFIXES if f"{p}weight" in checkpoint.specs), None)
    names = {}
    for name, _ in model.named_parameters():
        if name.startswith("lm_head."):
            names[name] = None if head is None else head + name.removeprefix("lm_head.")
        else:
            names[name] = prefix + name.removeprefix("model.")
    if "lm_head.bias" in names and names["lm_head.bias"] not in checkpoint.specs:
        names["lm_head.bias"] = None
    checkpoint.require([n for n in names.values() if n is not None])
    if names.get("lm_head.weight", "tied") is None:
        raise MinitronError(f"{path} has no lm_head ({' or '.join(p + 'weight' for p in HEAD_PREFIXES)}) although its "
                            "config does not tie it to the embeddings: corrupt or incomplete checkpoint")
    return names


def save_tokenizer(path: Path, out: Path) -> None:
    """The tokenizer of the multimodal directory, with its chat template (a processor keeps it apart)."""
    from transformers import AutoTokenizer  # lazy: CLI start-up speed

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:
        raise MinitronError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0][:160]}") from None
    if tokenizer.chat_template is None and (path / "chat_template.json").is_file():
        tokenizer.chat_template = json.loads((path / "chat_template.json").read_text()).get("chat_template")
    tokenizer.save_pretrained(out)
