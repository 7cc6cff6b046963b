"""Evaluation: the LM loss on held-out tokens of a split (test by default; windows spread over every document), on
general English that no training corpus of minitron's holds (the out-of-domain text), the KL divergence from a
teacher, greedy generation speed, and benchmark tasks through lm-evaluation-harness (minitron/tasks). Every mean
comes with a 95% interval over the windows (the unit of measurement).

    minitron eval --model runs/distill/student --data DATA --teacher default --out runs/distill/eval.json
    minitron eval --model runs/distill/student --tasks mc_piqa,kjv --limit 100 --no-loss --no-speed
    minitron eval --model runs/distill/student --tasks mc_piqa --limit 500 --baseline teacher_eval.json ...
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

import torch
from torch import nn
from tqdm.auto import tqdm

from minitron.arch import count_params
from minitron.data import (EVAL_TOKENS, SEQ_LEN, TokenData, Windows, default_data, spread_starts, tokenizer_identity,
                           windows_of)
from minitron.errors import MinitronError, whole_number, refuse_marked
from minitron.io import atomic_file, refuse_existing_file, write_json
from minitron.load import cache_dir, check_seq_len, load_config, load_model, load_tokenizer, pick_device
from minitron.numerics import autocast, label_weights, windows_in_batches
from minitron.tasks import check_tasks, ood_documents, paired_benchmarks, run_tasks
from minitron.stats import ratio_ci


@torch.no_grad()
def generation_speed(model: torch.nn.Module, tokenizer, prompt: str = "The history of computing",
                     new_tokens: int = 64, batch_size: int = 1, repeats: int = 1) -> float:
    """Tokens per second of greedy generation (new tokens of all sequences / wall time), after a
    short warm-up; EOS is suppressed so every run generates exactly `new_tokens` tokens."""
    device = next(model.parameters()).device
    inputs = tokenizer([prompt] * batch_size, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(do_sample=False, pad_token_id=pad)
    with autocast(device):
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, **kwargs)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        _sync(device)
    generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch_size * repeats
    return generated / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eval_only(default=None):
    """A field that `minitron eval` alone reads: a command that measures models itself (compress) decides it and
    refuses it in its `eval` section."""
    return field(default=default, metadata={"eval_only": True})


@dataclass(frozen=True)
class EvalConfig:
    """LM loss and perplexity on held-out tokens (windows spread over every document of a split, the same for every
    model) and on out-of-domain English, KL divergence from a teacher, the speed of greedy generation, and standard
    benchmark tasks through lm-evaluation-harness.

    The flags of `minitron eval` are its fields. `compress` takes it as its `eval` section (`--eval.tokens`, an
    `eval:` section in YAML) for what it measures its three models on: tokens, ood, tasks, limit and include_path; it
    decides the rest itself."""

    # --- what is measured (compress: its models, its data's test split, --prune.seq-len)
    model: str = eval_only("default")
    """model to evaluate ('default', a Hugging Face directory, a Hub id or a .gguf)"""
    data: str | None = eval_only()
    """token data directory from `minitron data` (default: the default corpus)"""
    split: Literal["dev", "test"] = eval_only("test")
    """the held-out split: test (reports) or dev (choices made by measurement)"""
    seq_len: int = eval_only(SEQ_LEN)
    """tokens per window"""
    teacher: str | None = eval_only()
    """also measure KL(teacher ‖ model) on the same windows (a model with the same tokenizer)"""
    # --- how much (compress's `eval` section)
    tokens: int = EVAL_TOKENS
    """held-out tokens measured, in windows spread over the whole split (fewer if it holds fewer)"""
    ood: bool = True
    """also measure the loss on out-of-domain English: the King James Bible (`make tasks`), which no training corpus
    of minitron's holds"""
    tasks: list[str] | None = None
    """benchmark tasks, zero-shot (comma-separated): any task lm-eval knows (its data downloaded or in the Hub cache),
    one in a YAML of --include-path, or a bundled one: mc_arc_easy, mc_arc_challenge, mc_hellaswag, mc_piqa,
    mc_social_iqa, mc_openbookqa, mc_commonsense_qa (validation sets, multiple choice, accuracy) and kjv (perplexity
    on the King James Bible), whose data comes from `make tasks` (compress: the first three by default; [] for none)"""
    limit: int | None = None
    """the first N documents of each task (default: all; compress: 100)"""
    include_path: Path | None = None
    """a directory of your own lm-eval task YAMLs (lm-eval's --include_path), whose tasks --tasks can name"""
    # --- eval's own
    baseline: Path | None = eval_only()
    """the --out JSON of an earlier `minitron eval` of another model on the same --tasks and --limit: the difference
    of the mean accuracies over the multiple-choice tasks (this model's minus the baseline's), paired document by
    document, with its interval (95 per cent)"""
    batch_size: int = eval_only(4)
    """windows per forward pass (and requests per batch of the tasks)"""
    loss: bool = eval_only(True)
    """measure the losses (--no-loss: only the tasks and/or the speed)"""
    speed: bool = eval_only(True)
    """also measure greedy generation speed (tokens/s)"""
    new_tokens: int = eval_only(64)
    """tokens generated for the speed measurement"""
    device: str = eval_only("auto")
    """auto, cpu or cuda"""
    out: Path | None = eval_only()
    """write the metrics to this JSON file"""
    overwrite: bool = eval_only(False)
    """replace an existing --out file"""

    def validate(self, prefix: str = "") -> "EvalConfig":
        """Refuse a bad count or an unknown task in one line; the config with its tasks named (checked against
        lm-eval and the bundled data, before any model is loaded)."""
        for name in ("tokens", "batch_size", "new_tokens"):
            whole_number(getattr(self, name), f"--{prefix}{name.replace('_', '-')}")
        return replace(self, tasks=check_tasks(self.tasks, self.limit, self.include_path, prefix) if self.tasks else [])

    def refuse_eval_only(self, command: str) -> None:
        """A command that measures models itself decides the eval-only fields: an `eval` section that sets one is
        refused, not silently overridden."""
        refuse_marked(self, "eval_only", command, "eval", "its eval section takes tokens, ood, tasks, limit and "
                      "include_path")


def evaluate(cfg: EvalConfig) -> dict:
    """Measure one model as `cfg` says (see `EvalConfig` for every setting); print the metrics and, with --out,
    write them as JSON."""
    if cfg.out is not None:
        refuse_existing_file(Path(cfg.out), cfg.overwrite)
    c = cfg.validate()
    if not (c.loss or c.speed or c.tasks):
        raise MinitronError("nothing to measure: --no-loss and --no-speed leave only --tasks, and none was given")
    before = baseline_tasks(Path(c.baseline), c.tasks, c.limit) if c.baseline is not None else None
    tokenizer = load_tokenizer(c.model)
    held_out = held_out_windows(c, tokenizer) if c.loss else {}
    dev = pick_device(c.device)
    models = {"model": load_model(c.model, dev),
              **({"teacher": load_model(c.teacher, dev)} if c.teacher and c.loss else {})}
    metrics = {"model": str(c.model), "params": count_params(models["model"])}
    for where, windows in held_out.items():
        measured = measure(models, windows, c.batch_size, "teacher" if "teacher" in models else None)
        metrics[where] = {**windows_info(windows), **measured["model"],
                          **({"teacher_loss": measured["teacher"]["loss"]} if "teacher" in measured else {})}
    if c.speed:
        metrics["generation_tokens_per_s"] = generation_speed(models["model"], tokenizer, new_tokens=c.new_tokens)
    if c.tasks:
        metrics["tasks"] = run_tasks(models["model"], tokenizer, c.tasks, c.limit, c.batch_size, c.include_path)
        metrics["tasks_limit"] = c.limit
    if before is not None:
        pair = paired_benchmarks(metrics["tasks"], before)
        if pair is None:
            print(f"warning: not paired with --baseline {c.baseline}: its documents differ from this run's, or a task "
                  "has fewer than two", flush=True)
        else:
            metrics["paired"] = {"baseline": str(c.baseline), **pair}
    print(json.dumps(without_documents(metrics), indent=2))
    if "paired" in metrics:
        p = metrics["paired"]
        print(f"mean accuracy minus the baseline's: {p['difference']:+.3f} ± {p['ci95']:.3f} (95%, paired over the "
              f"same {p['documents']} documents)")
    if c.out is not None:
        write_json(Path(c.out), metrics)
        print(f"wrote {c.out}")
    return metrics


def baseline_tasks(path: Path, tasks: list[str], limit: int | None) -> dict[str, dict]:
    """The task results of an earlier `minitron eval --out` JSON, checked to pair with this run's: the same
    multiple-choice tasks on the same documents, each document's score kept."""
    if not path.is_file():
        raise MinitronError(f"--baseline {path} is not a file; give the --out JSON of an earlier `minitron eval`")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MinitronError(f"--baseline {path} is not a JSON file that `minitron eval --out` wrote") from None
    results = saved.get("tasks") if isinstance(saved, dict) else None
    if not tasks:
        raise MinitronError("--baseline pairs benchmark tasks: give --tasks (those the baseline was evaluated on)")
    if not isinstance(results, dict):
        raise MinitronError(f"--baseline {path} holds no tasks; evaluate the baseline with --tasks and --out")
    if saved.get("tasks_limit") != limit:
        raise MinitronError(f"--baseline {path} was evaluated with --limit {saved.get('tasks_limit')}, this run with "
                            f"{limit}: pairing needs the same documents")
    for task in tasks:
        if task not in results:
            raise MinitronError(f"--baseline {path} has no results for task {task}; evaluate it on the same --tasks")
        if results[task].get("kind") == "multiple_choice" and "per_document" not in results[task]:
            raise MinitronError(f"--baseline {path} has no per-document scores for {task} (written before minitron "
                                "kept them); evaluate the baseline again")
    if not any(results[t].get("kind") == "multiple_choice" for t in tasks):
        raise MinitronError("--baseline pairs multiple-choice tasks, and --tasks has none")
    return {t: results[t] for t in tasks}


def without_documents(metrics: dict) -> dict:
    """The metrics as printed: each task's per-document scores (kept in --out's JSON) left out."""
    if "tasks" not in metrics:
        return metrics
    tasks = {name: {k: v for k, v in r.items() if k != "per_document"} for name, r in metrics["tasks"].items()}
    return {**metrics, "tasks": tasks}


def held_out_windows(c: EvalConfig, tokenizer) -> dict[str, Windows]:
    """The windows a model is measured on: `c.split` of the data (checked against the model, and the teacher) and,
    with `c.ood`, the out-of-domain text; each about `c.tokens` tokens."""
    model, teacher, split, seq_len = c.model, c.teacher, c.split, c.seq_len
    data_dir = TokenData.open(c.data if c.data is not None else default_data(model))
    config = load_config(model)
    data_dir.check_model(tokenizer, config.vocab_size, model)
    check_seq_len(config, seq_len, model)
    if teacher is not None:
        t_config = load_config(teacher)
        if tokenizer_identity(load_tokenizer(teacher))["sha"] != tokenizer_identity(tokenizer)["sha"]:
            raise MinitronError(f"teacher {teacher} and {model} use different tokenizers; KL needs the same vocabulary")
        check_seq_len(t_config, seq_len, teacher)
    num_seqs = math.ceil(c.tokens / seq_len)
    if data_dir.num_tokens(split) < seq_len + 1:
        raise MinitronError(f"data in {data_dir.path} has {data_dir.num_tokens(split):,} {split} tokens, too few for "
                            f"one window of {seq_len + 1}; lower --seq-len or add data")
    windows = {split: data_dir.spread(split, num_seqs, seq_len)}
    if c.ood:
        windows["ood"] = ood_windows(tokenizer, seq_len, num_seqs)
    return windows


def ood_windows(tokenizer, seq_len: int, num_seqs: int) -> Windows:
    """Windows spread over the out-of-domain text (`tasks.ood_documents`: the King James Bible, a document per
    book), tokenised once per tokenizer and cached."""
    cache = cache_dir() / "ood" / f"kjv-{tokenizer_identity(tokenizer)['sha']}.npz"
    if not cache.is_file():
        docs = [tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for d in ood_documents()]
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, tokens=np.concatenate(docs).astype(np.int64), starts=starts)
    saved = np.load(cache)
    starts, touched = spread_starts(len(saved["tokens"]), saved["starts"], num_seqs, seq_len)
    return Windows("ood", {"input_ids": windows_of(saved["tokens"], starts, seq_len)}, touched, len(saved["starts"]))


def windows_info(windows: Windows) -> dict:
    return {"split": windows.split, "tokens": windows.tokens, "windows": len(windows.batch["input_ids"]),
            "seq_len": windows.batch["input_ids"].shape[1] - 1, "documents": windows.documents,
            "split_documents": windows.split_documents}


def measure(models: dict[str, nn.Module], windows: Windows, batch_size: int, teacher: str | None = None) -> dict:
    """Each model's mean next-token cross-entropy on the windows (nats per counted label, the loss `lm_loss`
    gives) with a 95% interval over the windows, its perplexity, and with `teacher` (a key of `models`) the mean
    KL(teacher ‖ model) per label likewise. One pass: each batch goes through every model once."""
    return summarise(*window_sums(models, windows, batch_size, teacher))


@torch.no_grad()
def window_sums(models: dict[str, nn.Module], windows: Windows, batch_size: int,
                teacher: str | None = None) -> tuple[torch.Tensor, dict]:
    """`measure`'s measurements window by window: the counted labels (W,), and {model: {"loss": summed cross-entropy
    (W,), "kl": summed KL from `teacher` (W,), for the other models}}."""
    per = {name: {"loss": [], "kl": []} for name in models}
    counts = []
    n = len(windows.batch["input_ids"])
    for batch in tqdm(windows_in_batches(windows.batch, batch_size), total=math.ceil(n / batch_size), leave=False,
                      desc=f"measuring on {windows.split}", unit="batch", dynamic_ncols=True, disable=n <= batch_size):
        ids = batch["input_ids"]
        weight = label_weights(batch)
        counts.append(weight.sum(1))
        logp = {name: log_probs(m, ids) for name, m in models.items()}
        for name in models:
            ce = -logp[name].gather(-1, ids[:, 1:, None].to(logp[name].device)).squeeze(-1).cpu()
            per[name]["loss"].append((ce * weight).sum(1))
            if teacher is not None and name != teacher:
                kl = (logp[teacher].exp() * (logp[teacher] - logp[name])).sum(-1).cpu()
                per[name]["kl"].append((kl * weight).sum(1))
    return torch.cat(counts), {name: {k: torch.cat(v) for k, v in values.items() if v} for name, values in per.items()}


def summarise(labels: torch.Tensor, sums: dict) -> dict:
    """`measure`'s figures from `window_sums`: each model's loss, its interval and perplexity (and KL)."""
    out = {}
    for name, values in sums.items():
        loss, ci = ratio_ci(values["loss"], labels)
        out[name] = {"loss": loss, "ci95": ci, "ppl": math.exp(min(loss, 700.0))}
        if "kl" in values:
            out[name]["kl"], out[name]["kl_ci95"] = ratio_ci(values["kl"], labels)
    return out


def log_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """fp32 log-probabilities of every next token of windows ids (B, T+1): (B, T, V)."""
    device = next(model.parameters()).device
    with autocast(device):
        logits = model(input_ids=ids[:, :-1].to(device)).logits
    return torch.log_softmax(logits.float(), dim=-1)
