"""A multimodal checkpoint (Gemma 3 4B+, Mistral Small 3.1, Ministral 3) is taken as its language model: extracted once into a
text-only directory whose model gives the multimodal model's logits on text, then pruned like any other."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, tiny_tokenizer
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForImageTextToText, Exaone4Config, Gemma2Config, Gemma3Config, Gemma3TextConfig,
                          GemmaConfig, LlavaConfig, Ministral3Config, Mistral3Config, MistralConfig,
                          PaliGemmaConfig, PhiConfig, PhimoeConfig, PixtralVisionConfig, SiglipVisionConfig)

from minitron.errors import MinitronError
from minitron.load import load_config, load_model, resolve_model

TEXT = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
SIGLIP = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14)


def gemma3(**kw):
    return Gemma3Config(text_config=Gemma3TextConfig(**TEXT, sliding_window=8),
                        vision_config=SiglipVisionConfig(**SIGLIP), mm_tokens_per_image=4, image_token_index=250,
                        boi_token_index=251, eoi_token_index=252, **kw)


def mistral3(**kw):
    vision = PixtralVisionConfig(**SIGLIP, head_dim=16)
    return Mistral3Config(text_config=MistralConfig(**TEXT, sliding_window=None), vision_config=vision,
                          image_token_index=250, **kw)


def ministral3(**kw):
    """Ministral 3's checkpoints: Mistral 3's wrapper around a `ministral3` language model (YaRN; queries scaled past
    the original context, here 16 tokens, so that IDS's last position is scaled)."""
    rope = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 16.0, "original_max_position_embeddings": 16,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}
    return Mistral3Config(text_config=Ministral3Config(**TEXT, rope_parameters=rope, sliding_window=None),
                          vision_config=PixtralVisionConfig(**SIGLIP, head_dim=16), image_token_index=250, **kw)


def exaone4_5(**kw):
    """EXAONE 4.5: its vision tower around an `exaone4` language model (sliding layers, then a global one)."""
    from transformers.models.exaone4_5.configuration_exaone4_5 import Exaone4_5_Config

    text = Exaone4Config(**TEXT, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    vision = dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=2, num_key_value_heads=2, in_channels=3,
                  patch_size=4, spatial_merge_size=2, temporal_patch_size=2, window_size=8, out_hidden_size=64,
                  fullatt_block_indexes=[0])
    return Exaone4_5_Config(text_config=text.to_dict(), vision_config=vision, image_token_id=250, video_token_id=251,
                            **kw)


def qwen3_5(**kw):
    """Qwen3.5: its vision tower around a `qwen3_5_text` language model (a Gated DeltaNet layer, then gated
    attention)."""
    from transformers.models.qwen3_5 import Qwen3_5Config, Qwen3_5TextConfig

    text = Qwen3_5TextConfig(**TEXT, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                             linear_value_head_dim=8, layer_types=["linear_attention", "full_attention"])
    vision = dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=4, out_hidden_size=64,
                  num_position_embeddings=16)
    return Qwen3_5Config(text_config=text.to_dict(), vision_config=vision, image_token_id=250, video_token_id=251,
                         vision_start_token_id=252, vision_end_token_id=253, **kw)


def lfm2_vl(**kw):
    """LFM2-VL: SigLIP 2 around an `lfm2` language model (a short convolution, then attention)."""
    from transformers import Lfm2Config, Lfm2VlConfig

    text = Lfm2Config(**TEXT, layer_types=["conv", "full_attention"], block_auto_adjust_ff_dim=False)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, num_patches=16,
                  patch_size=4)
    return Lfm2VlConfig(text_config=text.to_dict(), vision_config=vision, image_token_id=250, projector_hidden_size=32,
                        **kw)


def llava_phi(**kw):
    """LLaVA around a Phi-2 language model (LLaVA-Phi's kind): its lm_head has a bias, which the text model keeps."""
    text = PhiConfig(**{k: v for k, v in TEXT.items() if k != "head_dim"})
    return LlavaConfig(text_config=text, vision_config={"model_type": "clip_vision_model", **SIGLIP},
                       image_token_index=250, **kw)


def paligemma(**kw):
    """PaliGemma 1: SigLIP around a Gemma language model."""
    return PaliGemmaConfig(text_config=GemmaConfig(**TEXT), vision_config=SiglipVisionConfig(**SIGLIP),
                           image_token_index=250, projection_dim=64, **kw)


def paligemma2(**kw):
    """PaliGemma 2: SigLIP around a Gemma 2 language model (local and global layers)."""
    text = Gemma2Config(**TEXT, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    return PaliGemmaConfig(text_config=text, vision_config=SiglipVisionConfig(**SIGLIP), image_token_index=250,
                           projection_dim=64, **kw)


def save_multimodal(path, config, seed: int = 0, prefix: str | None = None):
    """A random multimodal model saved with the tiny tokenizer; `prefix`: its language model's tensors renamed from
    transformers' `language_model.model.` to another layout (`model.language_model.`), its head to `lm_head.`."""
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("lm_head.bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    if prefix is not None:
        tensors = load_file(path / "model.safetensors")
        renamed = {k.replace("language_model.model.", prefix).replace("language_model.lm_head.", "lm_head."): v
                   for k, v in tensors.items()}
        save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    return model


IDS = torch.randint(0, 240, (2, 17), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make,tie,prefix", [(gemma3, True, None), (mistral3, True, None),
                                             (mistral3, False, None), (gemma3, True, "model.language_model."),
                                             (ministral3, False, None), (exaone4_5, False, None),
                                             (paligemma, True, None), (paligemma2, True, None),
                                             (qwen3_5, False, None), (lfm2_vl, True, None),
                                             (llava_phi, False, None)])
def test_the_language_model_gives_the_multimodal_models_logits_on_text(tmp_path, monkeypatch, capsys, make, tie,
                                                                       prefix):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    multimodal = save_multimodal(tmp_path / "mm", make(tie_word_embeddings=tie), prefix=prefix)
    text = resolve_model(tmp_path / "mm")
    assert text.parent == tmp_path / "cache" / "models" and "extracting the language model" in capsys.readouterr().out
    config = load_config(tmp_path / "mm")
    assert config.model_type == make().text_config.model_type and config.tie_word_embeddings == tie
    model = load_model(tmp_path / "mm")
    assert type(model).__name__.endswith("ForCausalLM")
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, multimodal(input_ids=IDS).logits, rtol=1e-5, atol=1e-5)
    stored = load_file(text / "model.safetensors")
    assert not any("vision" in k or "projector" in k for k in stored)
    assert ("lm_head.weight" in stored) != tie  # a tied head is the embeddings, stored once
    assert resolve_model(tmp_path / "mm") == text and capsys.readouterr().out == ""  # extracted once


def test_a_multimodal_teacher_is_pruned_into_a_text_model(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    save_multimodal(tmp_path / "mm", gemma3())
    run_cli("prune", "--model", tmp_path / "mm", "--data", tiny_data, "--target", "intermediate_size=48",
            "--prune.calib-seqs", 4, "--prune.seq-len", 32, "--out", tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["intermediate_size"] == 48


def test_unsupported_language_models_are_refused_naming_the_wrapper(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    config = LlavaConfig(text_config=PhimoeConfig(**{**TEXT, "num_hidden_layers": 1, "num_local_experts": 2}),  # not
                         # supported (its sparsemixer router)
                         vision_config={"model_type": "clip_vision_model", **SIGLIP}, image_token_index=250)
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path / "mm")
    with pytest.raises(MinitronError, match=r"is a multimodal llava model; its language model: architecture "
                                            "'phimoe' .*supported model types: afmoe, apertus, arcee"):
        load_config(tmp_path / "mm")
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_quantized_checkpoints_are_refused_before_anything_is_read(tmp_path, monkeypatch, capsys):
    """An FP8 release (Ministral 3's instruct models are published so), a GPTQ or AWQ one: read as full-precision
    tensors they would be another model, silently; refused in one line, text or multimodal, before any extraction."""
    from conftest import cli_error, save_tiny

    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    fp8 = {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": None}
    save_multimodal(tmp_path / "mm", ministral3())
    save_tiny(tmp_path / "text")
    for name, path in (("mm", tmp_path / "mm"), ("text", tmp_path / "text")):
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "quantization_config": fp8}))
        err = cli_error(capsys, "prune", "--model", path, "--target", "intermediate_size=48", "--out",
                        tmp_path / f"pruned-{name}")
        assert err == (f"minitron: error: {path} holds fp8 weights (its config's quantization_config); minitron "
                       "scores, prunes and distils full-precision weights: use the model's bf16 (or fp16) release, "
                       "or dequantize it first")
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_a_multimodal_config_alone_plans_a_pruning(tmp_path, capsys):
    """`prune --dry-run` needs only config.json, multimodal or not: its language model's sizes and count."""
    gemma3().save_pretrained(tmp_path / "mm")
    run_cli("prune", "--model", tmp_path / "mm", "--target", "intermediate_size=48", "--dry-run")
    out = capsys.readouterr().out
    assert "intermediate_size: 96 -> 48" in out and '"model_type": "gemma3_text"' in out
