"""`minitron.score(model, data)`: the importance of a model a notebook holds (scored where it is, on its device and
dtype), or of a checkpoint by path, Hub id or 'default' (then `minitron score`'s function)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minitron.arch import as_linears
from minitron.data import SEQ_LEN, TokenData, calibration_batches, default_data
from minitron.errors import MinitronError
from minitron.importance.command import CALIB_SEED, CALIB_SEQS, score
from minitron.importance.scores import DEFAULT_CRITERIA, Scores, removal_sizes
from minitron.importance.walk import compute_scores
from minitron.load import load_tokenizer


def is_spec(model) -> bool:
    """Whether `model` names a checkpoint (a path, a Hub id, 'default') rather than being a model in memory."""
    return isinstance(model, (str, Path))


def model_spec(model: nn.Module) -> str:
    """Where an in-memory model came from (its tokenizer and generation defaults live there), or a refusal."""
    spec = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if not spec:
        raise MinitronError("this model does not say where it was loaded from (config._name_or_path is empty); pass "
                            "tokenizer= (or data= as a data directory) so minitron knows its vocabulary")
    return str(spec)


def calibration_windows(model: nn.Module, data, num_seqs: int, seq_len: int, batch_size: int, seed: int,
                        tokenizer=None) -> list[torch.Tensor]:
    """Batches of calibration windows for a model in memory: given token ids (a 2-D integer tensor [sequences,
    tokens], used as they are), or `num_seqs` windows of `seq_len` sampled from the train split of a data directory
    or `TokenData` (default: the default corpus in the model's tokenizer), which must have been made with the model's
    tokenizer (`tokenizer`: an object or a spec; default: the one where the model was loaded from)."""
    vocab = model.config.vocab_size
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.dtype.is_floating_point or data.numel() == 0:
            raise MinitronError(f"data as token ids must be a 2-D integer tensor [sequences, tokens], not "
                                f"{tuple(data.shape)} {data.dtype}")
        if int(data.max()) >= vocab or int(data.min()) < 0:
            raise MinitronError(f"the token ids run from {int(data.min())} to {int(data.max())}, but the model has "
                                f"embeddings for ids 0-{vocab - 1} only")
        return list(data.long().split(batch_size))
    spec = tokenizer if isinstance(tokenizer, (str, Path)) else None
    tok = load_tokenizer(spec or model_spec(model)) if tokenizer is None or spec else tokenizer
    if data is None:
        data = default_data(spec or model_spec(model))
    tokens = data if isinstance(data, TokenData) else TokenData.open(data)
    tokens.check_model(tok, vocab, "the model")
    return calibration_batches(tokens, num_seqs, seq_len, batch_size, seed)


def score_model(model, data=None, *, criteria: list[str] | None = None, calib_seqs: int = CALIB_SEQS,
                seq_len: int = SEQ_LEN, batch_size: int = 8, layer_loss: bool = False, block_sizes: list[int] = (),
                seed: int = CALIB_SEED, tokenizer=None, **command_options) -> Scores:
    """The importance of every hidden channel, head, MLP neuron and layer of `model` -> `Scores`.

    `model` is a model in memory (scored where it is, on its device and dtype) or what `minitron score --model`
    takes (a path, a Hub id, 'default'; then this is `minitron.importance.score` and `command_options` are its
    other options). `data`: a `minitron data` directory, a `TokenData`, token ids [N, T], or None for the default
    corpus in the model's tokenizer. `layer_loss`/`block_sizes`: the LM-loss increase of removing each layer alone
    and each block of k layers, which depth pruning by `loss` and `block` needs."""
    if is_spec(model):
        return score(model, data, criteria=criteria, calib_seqs=calib_seqs, seq_len=seq_len, batch_size=batch_size,
                     layer_loss=layer_loss, block_sizes=list(block_sizes), seed=seed, **command_options)
    if command_options:
        raise MinitronError(f"{', '.join(command_options)}: options of `minitron score` on a checkpoint; a model in "
                            "memory is scored where it is")
    L = as_linears(model).config.num_hidden_layers  # (GPT-2's Conv1D modules held as linears, where they are read)
    bad = [k for k in block_sizes if not 1 <= k < L]
    if bad:
        raise MinitronError(f"block sizes {bad} are impossible for a model of {L} layers (need 1 <= k < {L})")
    removal = removal_sizes(layer_loss, block_sizes)
    batches = calibration_windows(model, data, calib_seqs, seq_len, batch_size, seed, tokenizer)
    loss_batches = calibration_windows(model, data, min(8, calib_seqs), seq_len, batch_size, seed + 1, tokenizer) \
        if removal else None
    if isinstance(data, torch.Tensor) and loss_batches is not None:
        loss_batches = list(data.long()[:8].split(batch_size))  # given windows: the first 8 of them
    was_training = model.training
    model.eval()
    try:
        result = compute_scores(model, batches, list(criteria or DEFAULT_CRITERIA), loss_batches, removal, seed)
    finally:
        model.train(was_training)
    source = "token ids" if isinstance(data, torch.Tensor) else str(data or "default corpus")
    result.meta.update(teacher=getattr(model, "name_or_path", "") or "a model in memory",
                       calibration={"data": source, "num_seqs": sum(len(b) for b in batches),
                                    "seq_len": batches[0].shape[1], "seed": seed})
    return result
