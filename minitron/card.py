"""Model cards: a README.md with the Hub's YAML front matter in a model directory minitron wrote.

Everything in the card is read from files: the model's config and safetensors headers, pruning.json
(written by `prune`), train_config.json and metrics.jsonl (written by `distill`), the teacher's own
card or GGUF metadata for its licence, and the figures the caller measured.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml
from safetensors import safe_open

from huggingface_hub import ModelCardData

from minitron.errors import MinitronError
from minitron.export_checks import EXPORTABLE, export_problem
from minitron.io import read_json, read_jsonl, write_atomic
from minitron.load import (DEFAULT_MODEL, HUB_GGUF, HUB_ID, converted_license, gguf_file, load_config,
                           resolve_model)
from minitron.record import RECORD

DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model 'default' is a quantised copy of
MINITRON_SUFFIX = re.compile(r"-(minitron-[0-9.]+[KMB]|corrected)$")  # what `derived_name` appends


def write_model_card(out: Path, teacher: str | None = None, run: Path | None = None,
                     metrics: dict[str, float] | None = None, license: str | None = None,
                     name: str | None = None, eval_results: list | None = None) -> Path:
    """Write README.md, a Hugging Face model card, into a model directory written by minitron.

    Args:
        out: The model directory (a Hugging Face checkpoint) to describe; README.md is written there.
        teacher: The model it was made from ('default', a Hub id, a directory or a .gguf file);
            default: the teacher named in train_config.json or pruning.json.
        run: The distillation run directory holding train_config.json and metrics.jsonl; default: `out`'s
            parent when it has them (distill writes the student to RUN/student), else `out`.
        metrics: Measured figures to report, by name, e.g. {"validation loss": 2.31, "perplexity": 10.1}.
        eval_results: The same figures as huggingface_hub `EvalResult`s: the card's `model-index`, which the Hub
            shows and searches.
        license: The licence to declare; default: the teacher's (from its README.md front matter or
            GGUF metadata).
        name: The model's name in the card (its title, and the GGUF's name on export); default: one derived from
            the teacher and the size (`derived_name`: SmolLM2-135M-Instruct-minitron-67M).

    Returns:
        The path of the written README.md.
    """
    out = Path(out)
    if not (out / "config.json").is_file():
        raise MinitronError(f"{out} has no config.json; give the model directory to write a model card into")
    if run is None:  # distill writes RUN/student; compress links RUN/student to RUN/distill/student
        parent = out.resolve().parent
        run = parent if (parent / "train_config.json").is_file() else out
    training = read_json(Path(run) / "train_config.json")  # the resolved TrainConfig
    ran = ((read_json(Path(run) / RECORD) or {}).get("distill") or {}).get("outputs") or {}  # plan, processes
    history = read_records(Path(run) / "metrics.jsonl")
    pruning = read_json(out / "pruning.json")
    if pruning is None and training is not None:  # a distilled student: its record is in the model it started from
        pruning = read_json(Path(training["student"]) / "pruning.json")
    teacher = teacher or (training or {}).get("teacher") or (pruning or {}).get("teacher")
    distilled = bool(training and training.get("teacher"))
    tags = ["minitron"] + ["pruned"] * (pruning is not None) + ["distilled"] * distilled
    header = ModelCardData(base_model=hub_id(teacher), library_name="transformers",
                           license=license or teacher_license(teacher), pipeline_tag="text-generation", tags=tags,
                           model_name=name, eval_results=eval_results or None)
    config = json.loads((out / "config.json").read_text())
    params = stored_params(out)
    figures = {"parameters": f"{params:,}", **training_figures(history), **(metrics or {})}
    name = name or derived_name(teacher, params)
    header.model_name = name
    sections = [summary(name, config, teacher, pruning, training), pruning_section(pruning, teacher),
                training_section(training, ran, history), figures_section(figures),
                usage_section(name, exportable(out, config))]
    text = "---\n" + header.to_yaml() + "\n---\n\n"
    text += "\n\n".join(s for s in sections if s) + "\n"
    write_atomic(out / "README.md", text)
    return out / "README.md"


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL file (metrics.jsonl), or none when there is no such file."""
    return [record for _, record in read_jsonl(path)] if path.is_file() else []


def hub_id(spec: str | None) -> str | None:
    """The Hub id a model spec stands for: 'default', 'org/name', or a Hub cache snapshot; None otherwise."""
    if not spec:
        return None
    if spec == DEFAULT_MODEL:
        return DEFAULT_HUB_ID
    cached = re.search(r"models--([^/]+)--([^/]+)/snapshots/", str(spec))
    if cached:
        return f"{cached[1]}/{cached[2]}"
    if not Path(spec).exists() and HUB_ID.fullmatch(spec):
        return spec.partition("@")[0]  # org/name[@revision]
    if not Path(spec).exists() and (gguf := HUB_GGUF.fullmatch(spec)):
        return gguf[1]  # org/name[@revision]/FILE.gguf
    return None


def base_name(spec: str | None) -> str:
    """A model's own name without its organisation or a minitron suffix: SmolLM2-135M-Instruct."""
    from_hub = None if str(spec).endswith(".gguf") else hub_id(spec)  # a GGUF file (local or a Hub's): its own name
    name = (from_hub or (Path(str(spec)).name if spec else "model")).rsplit("/", 1)[-1]
    return MINITRON_SUFFIX.sub("", name.removesuffix(".gguf")) or "model"


def derived_name(teacher: str | None, params: int) -> str:
    """A student's name from its teacher and its size: SmolLM2-135M-Instruct-minitron-67M (or -8.4B)."""
    size = (f"{params / 1e9:.1f}B" if params >= 1e9 else f"{round(params / 1e6)}M" if params >= 1e6 else
            f"{max(1, round(params / 1e3))}K")
    return f"{base_name(teacher)}-minitron-{size}"


def card_name(model_dir: Path) -> str | None:
    """The name a minitron model card gives its model (its title), or None for a directory without one."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if "minitron" not in text.partition("\n---\n")[0]:  # not a card minitron wrote (tags: minitron)
        return None
    title = re.search(r"^# (.+)$", text, re.M)
    return title[1].strip() if title else None


def name_of(spec: str | None) -> str:
    """How the card names a model: its Hub id, else its file or directory name (no local paths)."""
    return hub_id(spec) or (Path(spec).name if spec else "an unrecorded model")


def teacher_license(teacher: str | None) -> str | None:
    """The teacher's licence: its README.md front matter (directories, Hub ids) or general.license (GGUF files, on
    this machine or in a Hub repository); None where the teacher cannot be found."""
    if not teacher:
        return None
    try:
        source = gguf_file(teacher)
        if source is not None:
            return converted_license(source)
        resolved = resolve_model(teacher)  # a directory or a Hub id (whose snapshot has the card)
    except MinitronError:
        return None
    card = resolved / "README.md"
    if card.is_file():
        match = re.match(r"---\n(.*?)\n---", card.read_text(), re.S)
        if match:
            return (yaml.safe_load(match[1]) or {}).get("license")
    return None


def teacher_config(teacher: str | None) -> dict | None:
    """The teacher's config.json, when the teacher is on this machine (None for a Hub id not downloaded)."""
    try:
        path = resolve_model(teacher) if teacher else None
    except MinitronError:
        return None
    return read_json(path / "config.json") if path is not None else None


def stored_params(out: Path) -> int:
    """Parameters in the safetensors files, read from their headers (tied embeddings are stored once)."""
    total = 0
    for file in out.glob("*.safetensors"):
        with safe_open(file, framework="pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return total


def training_figures(history: list[dict]) -> dict[str, str]:
    """The last training loss and the last validation loss (with its perplexity) in metrics.jsonl."""
    figures = {}
    if history:
        figures["final training loss"] = f"{history[-1]['loss']:.4f} (step {history[-1]['step']})"
    validated = [r for r in history if "val_loss" in r]
    if validated:
        val = validated[-1]["val_loss"]
        figures["validation loss"] = f"{val:.4f} (step {validated[-1]['step']})"
        figures["validation perplexity"] = f"{math.exp(val):.2f}"
    return figures


def summary(name: str, config: dict, teacher: str | None, pruning: dict | None, training: dict | None) -> str:
    steps = (["pruned"] if pruning else []) + (["distilled"] if training and training.get("teacher")
                                                 else ["trained"] if training else [])
    made = f"{' and '.join(steps)} from" if steps else "made from"
    return (f"# {name}\n\n{name} is a {config.get('model_type', 'decoder')} language model {made} "
            f"{name_of(teacher)} with minitron, which follows the recipe of NVIDIA's Minitron models "
            f"(structured pruning of the teacher's width and depth, then knowledge distillation from the "
            f"teacher). It is an ordinary Hugging Face checkpoint.")


def pruning_section(pruning: dict | None, teacher: str | None) -> str:
    if pruning is None:
        return ""
    before, after = pruning["params_before"], pruning["params_after"]
    teacher_sizes = teacher_config(teacher)
    sizes = ", ".join(f"{k} {teacher_sizes[k]} → {v}" if teacher_sizes and teacher_sizes.get(k, v) != v
                      else f"{k} {v}" for k, v in pruning["target"].items())
    how = pruning["prune"]
    lines = [f"- parameters: {before:,} → {after:,} ({after / before:.1%} of the teacher)",
             f"- sizes: {sizes}",
             f"- width importance: {how['criterion']} (aggregated by {how['seq_agg']} over the sequence, "
             f"{how['batch_agg']} over the batch)"]
    if pruning["dropped_layers"]:
        why = "given explicitly" if how["drop_layers"] else how["layer_criterion"]
        lines.append(f"- dropped layers: {pruning['dropped_layers']} (chosen by {why})")
    calibration = pruning.get("calibration") or {}
    if calibration:
        lines.append("- calibration: " + ", ".join(f"{k}={Path(str(v)).name if k == 'data' else v}"
                                                   for k, v in calibration.items()))
    return "## How it was made\n\n### Pruning\n\n" + "\n".join(lines)


def training_section(cfg: dict | None, ran: dict, history: list[dict]) -> str:
    """What train_config.json (`cfg`) and the run's record (`ran`: its plan and processes) say of the training."""
    if cfg is None:
        return ""
    plan = ran.get("plan", {})
    lines = [f"- teacher: {name_of(cfg.get('teacher'))}" if cfg.get("teacher") else "- no teacher "
             "(conventional training on the data's next tokens)",
             f"- loss: {cfg.get('loss')}"
             + (f" + {cfg['hidden_loss']} hidden-state loss at layers {cfg['layer_pairs']}" if cfg.get("hidden_loss")
                else ""),
             f"- data: {name_of(cfg.get('data')) if cfg.get('data') else 'the default corpus'}",
             f"- tokens: {history[-1]['tokens']:,} in {history[-1]['step']} steps" if history
             else f"- tokens: {cfg['tokens']:,} planned",
             f"- sequence length {cfg['seq_len']}, {cfg['global_batch_tokens']:,} tokens per step, "
             f"learning rate {cfg['lr']:g} → {cfg['min_lr']:g} (cosine, {plan.get('warmup_steps', '?')} "
             f"warm-up steps), "
             f"{ran.get('world_size', 1)} process(es)"]
    title = "Distillation" if cfg.get("teacher") else "Training"
    return f"### {title}\n\n" + "\n".join(lines)


def figures_section(figures: dict) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items())
    return "## Figures\n\n| measure | value |\n|---|---|\n" + rows


def exportable(out: Path, config: dict) -> bool:
    """Whether `minitron export` writes this model: its family, and its shape by export's own checks (a Gemma 2 whose
    layers were dropped out of their pattern is not)."""
    return config.get("model_type") in EXPORTABLE and export_problem(load_config(out)) is None


def usage_section(name: str, export: bool) -> str:
    text = ("## How to use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{name}")  # this directory, or its Hub id\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n'
            'inputs = tokenizer("The capital of France is", return_tensors="pt")\n'
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20)[0]))\n```")
    if export:
        text += (f"\n\nFor llama.cpp, Ollama or LM Studio, export it to GGUF:\n\n"
                 f"```\nminitron export --model {name} --out {name}.gguf --dtype q8_0\n```")
    return text
