"""`minitron score`: the importance of every hidden channel, head, MLP neuron and layer of a teacher, from
activations on calibration data, saved for any later target.

    minitron score --model default --out runs/scores --layer-loss --block-sizes 2 4
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from minitron.data import SEQ_LEN, TokenData, calibration_batches, default_data
from minitron.errors import MinitronError
from minitron.importance.scores import (DEFAULT_CRITERIA, Scores, check_criteria, check_streamable, reads_text,
                                        removal_sizes)
from minitron.importance.walk import compute_scores
from minitron.io import refuse_existing
from minitron.lazy import LazyModel, choose_stream
from minitron.load import check_seq_len, load_config, load_model, load_tokenizer, pick_device, resolve_model
from minitron.shards import Checkpoint

ComputeDtype = Literal["float32", "bfloat16"]
CALIB_SEQS = 64  # calibration sequences, the default of every command that scores (prune.PruneConfig's too)
CALIB_SEED = 1234  # seed of the calibration sample (and of the random criterion)


def calibration(model_spec: str, tokenizer, data: Path | None, num_seqs: int, seq_len: int, batch_size: int,
                seed: int) -> list[torch.Tensor]:
    """Calibration batches from a data directory, or from the default corpus in the model's tokenizer."""
    tokens = TokenData.open(data if data is not None else default_data(model_spec))
    tokens.check_model(tokenizer, load_config(model_spec).vocab_size, model_spec)
    return calibration_batches(tokens, num_seqs, seq_len, batch_size, seed)


def score(model: str = "default", data: Path | None = None, out: Path | None = None,
          criteria: list[str] | None = None, calib_seqs: int = CALIB_SEQS, seq_len: int = SEQ_LEN, batch_size: int = 8,
          layer_loss: bool = False, layer_loss_seqs: int = 8, block_sizes: list[int] | None = None,
          stream: bool | None = None, device: str = "auto", dtype: ComputeDtype = "float32", seed: int = CALIB_SEED,
          overwrite: bool = False) -> Scores:
    """Score the importance of every hidden channel, head, MLP neuron and layer from activations.

    Args:
        model: teacher: 'default' (SmolLM2-135M-Instruct), a Hugging Face directory, a Hub id (org/name) or a .gguf file
        data: token data directory from `minitron data` (default: the default corpus)
        out: directory to save the scores (scores.safetensors + scores.json)
        criteria: width criteria to compute: activation, wanda, magnitude, taylor, random
        calib_seqs: number of calibration sequences
        seq_len: tokens per calibration sequence
        batch_size: sequences per forward pass
        layer_loss: also measure the LM-loss increase of removing each layer alone
        layer_loss_seqs: calibration sequences used for the layer-removal losses
        block_sizes: contiguous block lengths k whose removal losses to measure for depth pruning (each length
            costs a pass over the layers after each block; with --layer-loss, single layers too)
        stream: read the checkpoint one layer at a time (default: only when the model does not fit in
            memory); all criteria but taylor
        device: auto, cpu or cuda
        dtype: what the forward passes compute in: float32, or bfloat16 (half the memory, several times
            faster on GPUs and on CPUs with bf16 units; statistics are accumulated in fp32 either way)
        seed: seed of the calibration sample and of the random criterion
        overwrite: replace an existing --out directory
    """
    if out is not None:
        refuse_existing(Path(out), overwrite)
    criteria = criteria or DEFAULT_CRITERIA
    if calib_seqs < 1 or seq_len < 2 or batch_size < 1:
        raise MinitronError("--calib-seqs, --batch-size must be at least 1 and --seq-len at least 2")
    config = load_config(model)
    check_seq_len(config, seq_len, model)
    path, L = resolve_model(model), config.num_hidden_layers
    bad = [k for k in block_sizes or [] if not 1 <= k < L]
    if bad:
        raise MinitronError(f"block sizes {bad} are impossible for a model of {L} layers (need 1 <= k < {L})")
    compute = getattr(torch, dtype)
    streamed = choose_stream(path, stream, compute)
    (check_streamable if streamed else check_criteria)(criteria)
    tokenizer = load_tokenizer(model)
    removal = removal_sizes(layer_loss, block_sizes)
    text = reads_text(criteria, removal, data)  # (the weights' criteria alone read none, nor save Block Influence)
    batches = calibration(model, tokenizer, data, calib_seqs, seq_len, batch_size, seed) if text else []
    loss_batches = calibration(model, tokenizer, data, layer_loss_seqs, seq_len, batch_size, seed + 1) if removal \
        else None
    dev = pick_device(device)
    source = LazyModel.open(path, dev, compute) if streamed else load_model(model, dev, compute)
    result = compute_scores(source, batches, criteria, loss_batches, removal, seed)
    result.meta.update(teacher=str(model), compute_dtype=dtype, fingerprint=Checkpoint.open(path).fingerprint(),
                       calibration={"data": str(data or "default corpus"), "num_seqs": calib_seqs,
                                    "seq_len": seq_len, "seed": seed} if text else None)
    if out is not None:
        result.save(Path(out), overwrite)
        print(f"wrote importance scores to {out}")
    return result
