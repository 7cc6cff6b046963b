"""`minitron prune`: prune a model to a target size (in memory, or streamed one layer at a time) and write
a Hugging Face checkpoint with a record of what was pruned.

    minitron prune --model default --target hidden_size=384,intermediate_size=1024 --out runs/pruned
"""
from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from minitron.arch import count_params
from minitron.card import write_model_card
from minitron.errors import MinitronError
from minitron.importance import (HEAD_SCORE, HIDDEN_SCORE, Agg, Criterion, HeadScore, HiddenScore, Scores, calibration,
                                 compute_scores)
from minitron.importance.scores import check_streamable
from minitron.io import atomic_dir, refuse_existing, save_hf, write_json
from minitron.lazy import LazyModel, choose_stream
from minitron.load import load_config, load_generation_config, load_model, load_tokenizer, pick_device, resolve_model
from minitron.prune.plan import (LayerCriterion, apply_plan, check_target, describe, make_plan, params_of,
                                 parse_layers, stored_dtype, target_config)
from minitron.prune.write import write_pruned
from minitron.shards import Checkpoint


def needed_scores(config, tokenizer, model: str, sizes: dict, drop: list[int] | None, criterion: str,
                  layer_criterion: str, data: Path | None, calib_seqs: int, seq_len: int, batch_size: int,
                  seed: int, source: nn.Module | LazyModel) -> Scores:
    """Compute only the scores this target needs (when no --scores directory is given), on the teacher in
    memory or streamed from its checkpoint (`source`)."""
    depth = drop is None and sizes["num_hidden_layers"] < config.num_hidden_layers
    k = config.num_hidden_layers - sizes["num_hidden_layers"]
    needs_loss = depth and layer_criterion in ("block", "loss")
    batches = calibration(model, tokenizer, data, calib_seqs, seq_len, batch_size, seed)
    loss_batches = calibration(model, tokenizer, data, min(8, calib_seqs), seq_len, batch_size, seed + 1) \
        if needs_loss else None
    criteria = [criterion] + (["random"] if depth and layer_criterion == "random" else [])
    return compute_scores(source, batches, criteria, loss_batches, [k] if needs_loss and k > 1 else [], seed)


def prune(model: str = "default", target: dict[str, int] | None = None, drop_layers: str | None = None,
          out: Path | None = None, criterion: Criterion = "activation", seq_agg: Agg = "mean",
          batch_agg: Agg = "l2", hidden_score: HiddenScore = HIDDEN_SCORE, head_score: HeadScore = HEAD_SCORE,
          layer_criterion: LayerCriterion = "block", scores: Path | None = None,
          data: Path | None = None, calib_seqs: int = 64, seq_len: int = 256, batch_size: int = 8,
          dry_run: bool = False, stream: bool | None = None, device: str = "auto", overwrite: bool = False,
          seed: int = 1234) -> dict:
    """Prune a model to a target size and write a Hugging Face checkpoint (with pruning.json).

    Args:
        model: teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory, a Hub id (org/name) or a .gguf file
        target: sizes to prune to, e.g. hidden_size=4096,intermediate_size=11520 (also num_attention_heads,
            num_key_value_heads, num_hidden_layers)
        drop_layers: explicit layers to remove, e.g. 16-31
        out: output directory for the pruned model
        criterion: width importance: activation (the papers'), wanda, magnitude, taylor or random
        seq_agg: activation aggregation over the sequence: mean (of |x|), l2 or var
        batch_agg: activation aggregation over the batch: l2, mean or var
        hidden_score: activation score of hidden channels: norms (each layer's input and post-attention norm
            scored on its own, then summed: the papers') or pooled (every norm's samples, final norm included,
            in one statistic)
        head_score: activation score of attention heads: o_proj (the head's output projected through its o_proj
            columns: best after distillation, docs/criteria_after_kd.md) or attn (the head's attention output
            before o_proj: the papers')
        layer_criterion: depth: block (best contiguous block by LM loss), loss (per layer), bi (Block
            Influence) or random
        scores: reuse importance scores saved by `minitron score` instead of running the model
        data: token data directory for calibration (default: the default corpus)
        calib_seqs: calibration sequences (when scores are computed here)
        seq_len: tokens per calibration sequence
        batch_size: sequences per forward pass
        dry_run: only print the resulting config and exact parameter count (needs just config.json)
        stream: read, score and write the checkpoint one layer at a time (default: only when the model
            does not fit in memory); keeps the stored dtype (bf16 in, bf16 out)
        device: auto, cpu or cuda
        overwrite: replace an existing --out directory
        seed: seed of the calibration sample
    """
    config = load_config(model)
    drop = parse_layers(drop_layers, config.num_hidden_layers) if drop_layers else None
    sizes = check_target(config, target or {}, drop)
    new_config = target_config(config, sizes, drop)
    before, after = params_of(config), params_of(new_config)
    print(f"pruning {model}:\n{describe(config, sizes, before, after)}")
    if dry_run:
        print(new_config.to_json_string(use_diff=False))
        return {"params_before": before, "params_after": after, "sizes": sizes}
    if out is None:
        raise MinitronError("--out is required (or use --dry-run)")
    out = Path(out)
    refuse_existing(out, overwrite)
    saved = Scores.load(scores) if scores is not None else None
    path = resolve_model(model)
    if saved is not None:
        saved.check_model(config, Checkpoint.open(path).fingerprint(), scores)
    streamed = choose_stream(path, stream)
    if streamed and saved is None:
        check_streamable([criterion])
    tokenizer = load_tokenizer(model)
    start, dev = time.time(), pick_device(device)
    net = None if streamed else load_model(model, dev)
    if saved is None:
        source = LazyModel.open(path, dev) if streamed else net
        saved = needed_scores(config, tokenizer, model, sizes, drop, criterion, layer_criterion, data, calib_seqs,
                              seq_len, batch_size, seed, source)
    plan = make_plan(saved, config, sizes, drop, criterion, seq_agg, batch_agg, layer_criterion, hidden_score,
                     head_score)
    if net is not None:
        apply_plan(net, plan)
    record = {"teacher": str(model), "target": sizes, "criterion": criterion,
              "aggregation": {"seq": seq_agg, "batch": batch_agg}, "layer_criterion": layer_criterion,
              "hidden_score": hidden_score, "head_score": head_score,
              "dropped_layers": plan.drop, "calibration": saved.meta.get("calibration") or
              {"data": str(data or "default corpus"), "num_seqs": calib_seqs, "seq_len": seq_len, "seed": seed},
              "scores": str(scores) if scores else None, "params_before": before, "params_after": after,
              "streamed": streamed}
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
        write_model_card(tmp, teacher=str(model), name=Path(out).name)
    print(f"wrote {out} ({after:,} parameters)")
    return record
