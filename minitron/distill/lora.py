"""LoRA through `peft`: adapters on every linear layer of a model (its other weights frozen) for training, and
the trained adapters merged back into an ordinary model for saving. `--lora-rank 0` (the default) trains all
weights and never imports peft.

A Mamba-2 mixer's `out_proj` gets none: transformers' fused CUDA kernel for Mamba-2 (Nemotron-H, Granite 4, Bamba)
reads its weight directly in training, so an adapter there would be left out on a GPU (peft refuses it outright
on Nemotron-H); the mixer's `in_proj` is adapted."""
from __future__ import annotations

import warnings

from torch import nn

from minitron.arch import decoder_layers, mamba_of
from minitron.distill.config import TrainConfig
from minitron.errors import require


def lora_config(cfg: TrainConfig, model: nn.Module):
    """Adapters of `cfg`'s rank on every linear layer of `model` but lm_head and its Mamba-2 mixers' out_proj."""
    mixers = {id(m) for m in map(mamba_of, decoder_layers(model)) if m is not None}
    fused = [f"{name}.out_proj" for name, module in model.named_modules() if id(module) in mixers]
    return require("peft").LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                      target_modules="all-linear", exclude_modules=fused or None)


def add_lora(lm: nn.Module, cfg: TrainConfig) -> nn.Module:
    """`lm` itself with LoRA adapters injected in place (lm_head excluded) and only the adapters trainable."""
    get_peft_model = require("peft").get_peft_model  # optional and heavy: only LoRA runs import it

    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for a user to do
        warnings.simplefilter("ignore", FutureWarning)
        get_peft_model(lm, lora_config(cfg, lm))  # mutates lm; the PeftModel wrapper is not needed to train it
    return lm


def merged(plain: nn.Module, state_dict: dict, cfg: TrainConfig) -> nn.Module:
    """`plain` (a freshly built model of the same config) with the trained weights and adapters of
    `state_dict` (keys as in an `add_lora` model), the adapters merged into the weights and removed."""
    get_peft_model = require("peft").get_peft_model  # optional and heavy: only LoRA runs import it

    with warnings.catch_warnings():  # as in add_lora
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(plain, lora_config(cfg, plain))
    wrapped.base_model.model.load_state_dict(state_dict)
    return wrapped.merge_and_unload()
