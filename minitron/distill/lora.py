"""LoRA through `peft`: adapters on every linear layer of a model (its other weights frozen) for training, and
the trained adapters merged back into an ordinary model for saving. `--lora-rank 0` (the default) trains all
weights and never imports peft."""
from __future__ import annotations

import warnings

from torch import nn

from minitron.distill.config import TrainConfig
from minitron.errors import require


def lora_config(cfg: TrainConfig):
    return require("peft").LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                      target_modules="all-linear")


def add_lora(lm: nn.Module, cfg: TrainConfig) -> nn.Module:
    """`lm` itself with LoRA adapters injected in place (lm_head excluded) and only the adapters trainable."""
    get_peft_model = require("peft").get_peft_model  # optional and heavy: only LoRA runs import it

    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for a user to do
        warnings.simplefilter("ignore", FutureWarning)
        get_peft_model(lm, lora_config(cfg))  # mutates lm; the PeftModel wrapper is not needed to train it
    return lm


def merged(plain: nn.Module, state_dict: dict, cfg: TrainConfig) -> nn.Module:
    """`plain` (a freshly built model of the same config) with the trained weights and adapters of
    `state_dict` (keys as in an `add_lora` model), the adapters merged into the weights and removed."""
    get_peft_model = require("peft").get_peft_model  # optional and heavy: only LoRA runs import it

    with warnings.catch_warnings():  # as in add_lora
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(plain, lora_config(cfg))
    wrapped.base_model.model.load_state_dict(state_dict)
    return wrapped.merge_and_unload()
