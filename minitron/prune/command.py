"""`minitron prune`: prune a model to a target size (in memory, or streamed one layer at a time) and write
a Hugging Face checkpoint with a record of what was pruned.

    minitron prune --model default --target hidden_size=384,intermediate_size=1024 --out runs/pruned
    minitron prune --model default --prune.drop-layers 16-25 --prune.head-score attn --out runs/shallow
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from torch import nn

from minitron.arch import count_params, dense_layers, layers_differ
from minitron.card import write_model_card
from minitron.errors import MinitronError
from minitron.export_checks import EXPORTABLE, export_problem
from minitron.importance import Scores, calibration, compute_scores
from minitron.importance.scores import check_streamable
from minitron.io import atomic_dir, refuse_existing, save_hf, write_json
from minitron.lazy import LazyModel, choose_stream
from minitron.load import load_config, load_generation_config, load_model, load_tokenizer, pick_device, resolve_model
from minitron.prune.config import PruneConfig, ScoreNeeds
from minitron.prune.plan import (apply_plan, check_target, describe, layers_to_drop, make_plan, params_of,
                                 stored_dtype, target_config)
from minitron.prune.write import write_pruned
from minitron.shards import Checkpoint


def given_scores(path: Path | str, config, model: str | Path) -> Scores:
    """The scores saved in `path`, refused in one line, before any work, when computed on another model than `model`
    (of `config`): other sizes or another weights fingerprint (prune's --scores, search's)."""
    saved = Scores.load(path)
    saved.check_model(config, Checkpoint.open(resolve_model(model)).fingerprint(), path)
    return saved


def needed_scores(source: nn.Module | LazyModel, model: str, tokenizer, needs: ScoreNeeds, prune: PruneConfig,
                  data: Path | None, batch_size: int) -> Scores:
    """Compute only the scores this pruning needs (when no --scores directory is given), on the teacher in memory
    or streamed from its checkpoint (`source`); where they read the weights alone and no data is given, none is read
    (the default corpus, built in the model's tokenizer the first time, is not)."""
    batches = calibration(model, tokenizer, data, prune.calib_seqs, prune.seq_len, batch_size, prune.seed) \
        if needs.reads_text(data) else []
    loss_batches = calibration(model, tokenizer, data, min(8, prune.calib_seqs), prune.seq_len, batch_size,
                               prune.seed + 1) if needs.removal else None
    return compute_scores(source, batches, list(needs.criteria), loss_batches, needs.removal, prune.seed)


def prune(model: str = "default", target: dict[str, int] | None = None, out: Path | None = None,
          prune: PruneConfig = PruneConfig(), scores: Path | None = None, data: Path | None = None,
          batch_size: int = 8, dry_run: bool = False, stream: bool | None = None, device: str = "auto",
          overwrite: bool = False, name: str | None = None) -> dict:
    """Prune a model to a target size and write a Hugging Face checkpoint (with pruning.json).

    Args:
        model: teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory, a Hub id (org/name) or a .gguf file
        target: sizes to prune to, e.g. hidden_size=4096,intermediate_size=11520 (also num_attention_heads,
            num_key_value_heads, num_hidden_layers; a mixture of experts: num_experts, and each expert's neurons by
            its config's name, e.g. moe_intermediate_size); may be left out with --prune.drop-layers
        out: output directory for the pruned model
        prune: how units are ranked and which layers go (`--prune.criterion`, `--prune.drop-layers 16-23`, ...)
        scores: reuse importance scores saved by `minitron score` instead of running the model
        data: token data directory for calibration (default: the default corpus)
        batch_size: sequences per forward pass (when scores are computed here)
        dry_run: only print the resulting config and exact parameter count (needs just config.json; a hybrid's
            count with fewer layers is exact with --scores, which say which layers go)
        stream: read, score and write the checkpoint one layer at a time (default: only when the model
            does not fit in memory); keeps the stored dtype (bf16 in, bf16 out)
        device: auto, cpu or cuda
        overwrite: replace an existing --out directory
        name: the pruned model's name in its model card (default: derived from the teacher and the size, e.g.
            SmolLM2-135M-Instruct-minitron-67M)
    """
    config = load_config(model)
    prune.validate(config)
    sizes = check_target(config, target or {}, prune.drop_layers)
    saved = given_scores(scores, config, model) if scores is not None else None
    drop = prune.drop_layers or (layers_to_drop(saved, prune.layer_criterion, config.num_hidden_layers,
                                                sizes["num_hidden_layers"]) if saved is not None else None)
    new_config = target_config(config, sizes, drop)
    before, after = params_of(config), params_of(new_config)
    print(f"pruning {model}:\n{describe(config, sizes, before, after)}")
    if layers_differ(config) and sizes["num_hidden_layers"] != config.num_hidden_layers and drop is None:
        print("  (this model's layers differ in kind, so its count depends on which go, which the scores choose: this "
              f"counts the first {sizes['num_hidden_layers']} kept; give --scores for the exact count)")
    if dry_run:
        print(new_config.to_json_string(use_diff=False))
        return {"params_before": before, "params_after": after, "sizes": sizes}
    if out is None:
        raise MinitronError("--out is required (or use --dry-run)")
    out = Path(out)
    refuse_existing(out, overwrite)
    path = resolve_model(model)
    streamed = choose_stream(path, stream)
    if streamed and saved is None:
        check_streamable([prune.criterion])
    tokenizer = load_tokenizer(model)
    start, dev = time.time(), pick_device(device)
    net = None if streamed else load_model(model, dev)
    needs = prune.needs(config, sizes)
    if saved is None:
        source = LazyModel.open(path, dev) if streamed else net
        saved = needed_scores(source, model, tokenizer, needs, prune, data, batch_size)
    plan = make_plan(saved, config, sizes, prune)
    if plan.drop != drop:  # the layers the scores chose: their per-layer settings, and a hybrid's count
        new_config = target_config(config, sizes, plan.drop)
        after = params_of(new_config)
    warn_unexportable(new_config)
    if net is not None:
        apply_plan(net, plan)
    record = {"teacher": str(model), "target": sizes, "prune": asdict(prune), "dropped_layers": plan.drop,
              "calibration": saved.meta["calibration"] if "calibration" in saved.meta else ({
                  "data": str(data or "default corpus"), "num_seqs": prune.calib_seqs, "seq_len": prune.seq_len,
                  "seed": prune.seed} if needs.reads_text(data) else None),
              "scores": str(scores) if scores else None, "params_before": before, "params_after": after,
              "streamed": streamed}
    if plan.experts is not None:  # each student layer's experts, by the teacher layer's numbers
        dense = set(dense_layers(config))  # (a dense layer has none)
        record["kept_experts"] = [None if i in dense else e.tolist() for i, e in enumerate(plan.experts)
                                  if i not in set(plan.drop)]
    with atomic_dir(out, overwrite) as tmp:
        if streamed:
            written = write_pruned(path, plan, new_config, tmp)
            tokenizer.save_pretrained(tmp)
            load_generation_config(new_config, model).save_pretrained(tmp)
        else:
            written = count_params(net)
            save_hf(net.to("cpu", stored_dtype(config)), tokenizer, tmp, load_generation_config(net.config, model))
        if written != after:
            raise RuntimeError(f"internal error: pruned model has {written:,} parameters, expected {after:,}")
        record["seconds"] = round(time.time() - start, 1)
        write_json(tmp / "pruning.json", record)
        write_model_card(tmp, teacher=str(model), name=name)
    print(f"wrote {out} ({after:,} parameters)")
    return record


def warn_unexportable(config) -> None:
    """Say on stderr, before anything is trained on it, when `minitron export` would refuse the pruned model of a family
    it exports (a Gemma 2 or SmolLM3 whose layer pattern a depth target broke, a Phi-3 pruned in its heads alone, ...);
    a family it never exports (OPT, which llama.cpp does not run) is not a pruning's doing: nothing said."""
    problem = export_problem(config) if config.model_type in EXPORTABLE else None
    if problem is not None:
        print(f"warning: {problem}", file=sys.stderr, flush=True)
