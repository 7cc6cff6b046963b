"""`minitron correct` (teacher correction): full fine-tuning and LoRA write stock Hugging Face checkpoints whose
loss on the training data went down; LoRA adapters are merged away."""
import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from conftest import FALCON_LAYOUTS, FAMILIES, build_tiny_data, cli_error, run_cli, save_tiny, tiny_model
from minitron.data import TokenData
from minitron.arch import decoder_layers, mamba_of
from minitron.distill import TrainConfig, distill
from minitron.distill.lora import add_lora, merged
from minitron.numerics import lm_loss, windows_in_batches

TINY = ["--train.tokens", 2048, "--train.seq-len", 32, "--train.micro-batch", 4, "--train.global-batch-tokens", 256]


def train_loss(model_dir, data) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # stock transformers
    return lm_loss(model, windows_in_batches(TokenData.open(data).spread("train", 16, 32).batch, 8))


@pytest.mark.parametrize("lora", [False, True])
def test_correct_writes_a_better_stock_checkpoint(tmp_path, one_thread, lora, capsys):
    tiny_dir = save_tiny(tmp_path / "tiny-llama", tie=lora)  # LoRA on tied embeddings (as SmolLM2's) too
    tiny_data = build_tiny_data(tmp_path, tiny_dir)
    out = tmp_path / "corrected"
    extra = ["--train.lora-rank", 4, "--train.lora-alpha", 8, "--train.lr", 1e-2] if lora else ["--train.lr", 3e-3]
    run_cli("correct", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--device", "cpu", *TINY, *extra)
    model = out / "student"
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"wrote {model}: the corrected teacher")
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"):
        assert (model / name).is_file(), name
    keys, original = (set(safe_open(m / "model.safetensors", framework="pt").keys()) for m in (model, tiny_dir))
    assert keys == original and not any("lora" in k or "base_layer" in k for k in keys)
    assert AutoTokenizer.from_pretrained(model).vocab_size == AutoTokenizer.from_pretrained(tiny_dir).vocab_size
    before, after = train_loss(tiny_dir, tiny_data), train_loss(model, tiny_data)
    assert after < before - 0.1, (before, after)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["loss"] == "ce" and saved["teacher"] is None and saved["lora_rank"] == (4 if lora else 0)
    assert (model / "README.md").read_text().split("\n---\n")[1].lstrip().startswith("# tiny-llama-corrected\n")
    assert AutoConfig.from_pretrained(model).tie_word_embeddings == lora
    if lora:  # only the adapters trained: the embeddings (no adapter) are the teacher's
        a, b = (AutoModelForCausalLM.from_pretrained(m).model.embed_tokens.weight for m in (tiny_dir, model))
        torch.testing.assert_close(a, b)


def test_correct_bad_input(tiny_dir, tiny_data, tmp_path, capsys):
    base = ["correct", "--model", tiny_dir, "--data", tiny_data, *TINY]
    assert "needs --out" in cli_error(capsys, *base)
    err = cli_error(capsys, *base, "--out", tmp_path / "a", "--train.lora-rank", -1)
    assert "--train.lora-rank must be a whole number, 0 or more" in err and not (tmp_path / "a").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_dir, tiny_data, tmp_path, capsys):
    """correct --dry-run: the fine-tuning's plan, as distill's dry run prints it (cross-entropy, no teacher), and no
    run directory."""
    out = tmp_path / "corrected"
    run_cli("correct", "--model", tiny_dir, "--data", tiny_data, "--out", out, "--device", "cpu", *TINY,
            "--train.lora-rank", 4, "--dry-run")
    printed = capsys.readouterr().out
    assert printed.startswith(f"--dry-run: the plan for {out} (nothing written)\n") and "no teacher" in printed
    assert "8 steps of 256 tokens" in printed and "lr 0.0001 to 1e-05" in printed and "LoRA rank 4" in printed
    assert "cross-entropy on the data alone, no teacher" in printed and not out.exists()


def test_lora_training_resumes_exactly(tiny_dir, tiny_data, tmp_path, die_after_checkpoint, one_thread):
    """Killed after its step-2 checkpoint, a LoRA run resumes (adapters and their optimiser state) and ends where
    an unbroken run ends."""
    cfg = TrainConfig(student=str(tiny_dir), data=str(tiny_data), out=tmp_path / "a", loss="ce", tokens=1024,
                      seq_len=32, global_batch_tokens=256, lr=1e-2, lora_rank=4, save_every=2, device="cpu")
    restore = die_after_checkpoint
    with pytest.raises(KeyboardInterrupt):
        distill(cfg)
    restore()
    resumed = distill(replace(cfg, resume=True))
    unbroken = distill(replace(cfg, out=tmp_path / "b"))
    assert resumed.steps == unbroken.steps == 4
    assert resumed.val_loss == pytest.approx(unbroken.val_loss, rel=1e-5)


@pytest.mark.parametrize("layout", [*FAMILIES, *FALCON_LAYOUTS])
def test_lora_adapts_and_merges_back_every_family(layout, one_thread):
    """LoRA on every family (and Falcon's layouts): adapters on its linear layers train, and merged back they give a
    model with the teacher's tensor names and shapes, whose logits are the adapted model's and whose every decoder
    layer moved. A Mamba-2 mixer's out_proj, which the fused CUDA kernel reads directly, gets none."""
    cfg = TrainConfig(lora_rank=4, lora_alpha=8)
    teacher = tiny_model(layout)
    lm = add_lora(tiny_model(layout), cfg)
    trainable = [p for p in lm.parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n, p in lm.named_parameters() if p.requires_grad)
    for mamba in filter(None, map(mamba_of, decoder_layers(lm))):
        assert type(mamba.out_proj) is nn.Linear and hasattr(mamba.in_proj, "lora_A")
    ids = torch.randint(0, teacher.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    lm.train()
    lm(ids, labels=ids).loss.backward()
    torch.optim.SGD(trainable, lr=0.1).step()  # lora_B starts at zero: one step makes the adapters count
    lm.eval()
    with torch.no_grad():
        adapted = lm(ids).logits
        out = merged(tiny_model(layout), lm.state_dict(), cfg).eval()
        torch.testing.assert_close(out(ids).logits, adapted, rtol=1e-4, atol=1e-5)
    before, after = teacher.state_dict(), out.state_dict()
    assert {n: t.shape for n, t in after.items()} == {n: t.shape for n, t in before.items()}
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    layers = {id(layer) for layer in decoder_layers(out)}
    prefixes = [f"{name}." for name, module in out.named_modules() if id(module) in layers]
    assert len(prefixes) == len(layers) and all(any(n.startswith(p) for n in moved) for p in prefixes), moved
