"""GGUF export: transformers' own GGUF loader reads the file back and gives the Hugging Face model's logits, and
llama.cpp itself loads it and continues a prompt greedily as transformers does."""
from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from conftest import WORDS, cli_error, load_benchmark, run_cli, save_tiny, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from minitron.errors import MinitronError
from minitron.export import PRE_TOKENIZERS, export, pre_tokenizer_name

VOCAB = 320  # room for a byte-level BPE vocabulary (256 bytes + specials + merges) with unused rows after it
# (atol, rtol) of the reloaded model's logits (|logits| < 1) against the fp32 Hugging Face model. Measured worst
# errors: f16 5e-4, bf16 5e-3, q8_0 1.4e-2 (int8 blocks of 32 with one f16 scale: the loosest); a wrong q/k
# rotary layout gives 0.49.
TOLERANCE = {"f16": (2e-3, 1e-2), "bf16": (1e-2, 1e-2), "q8_0": (3e-2, 2e-2)}
SHARPEN = 8.0
TEXT = "the teacher prunes 123 heads\n  and the student keeps them!"


def byte_level_tokenizer(split: str | None = None):
    """A byte-level BPE (GPT-2 / Llama 3 / Qwen style) trained here on a few words: 300 tokens.

    `split`: a regex that cuts the text before the bytes are mapped (as Llama 3 and Qwen do); None: GPT-2's.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                              use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    return fast


def sentencepiece_tokenizer():
    """A sentencepiece-style BPE (Llama 2 / Mistral 7B style: `▁` for spaces, bos added, byte fallback)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def save_model(path, family: str, tokenizer, tie: bool = False):
    """A tiny random model of `family` with `tokenizer`; Qwen keeps head_dim as its configs imply (see below)."""
    # transformers' GGUF loader does not read the head size for Qwen2/Qwen3: it takes hidden_size /
    # num_attention_heads for Qwen2 and the config default (128) for Qwen3, so the tiny models use those.
    head_dim = {"qwen2": 8, "qwen3": 128}.get(family, 16)
    model = tiny_model(family, tie=tie, vocab_size=VOCAB, head_dim=head_dim)
    with torch.no_grad():  # sharpen attention, so that a wrong q/k layout changes the logits well beyond rounding
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(SHARPEN)
            layer.self_attn.k_proj.weight.mul_(SHARPEN)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def reload(path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def assert_same_logits(model, gguf_model, dtype: str):
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = model(ids).logits, gguf_model(ids).logits
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("family,dtype,tie", [
    ("llama", "f16", False), ("llama", "bf16", True), ("llama", "q8_0", False),
    ("mistral", "f16", False), ("qwen2", "f16", True), ("qwen2", "q8_0", False), ("qwen3", "f16", False),
])
def test_export_reloads_with_the_same_logits(tmp_path, family, dtype, tie):
    tokenizer = byte_level_tokenizer()
    model = save_model(tmp_path / "hf", family, tokenizer, tie)
    out = export(str(tmp_path / "hf"), tmp_path / "out" / "model.gguf", dtype)
    assert out == tmp_path / "out" / "model.gguf" and [p.name for p in out.parent.iterdir()] == ["model.gguf"]
    assert_same_logits(model, reload(out), dtype)
    reloaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    assert reloaded(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def llama_cpp_check():
    """benchmarks/llama_cpp_check.py, which runs llama.cpp itself through node-llama-cpp's prebuilt build."""
    return load_benchmark("llama_cpp_check")


def test_llama_cpp_generates_as_transformers(tmp_path):
    """llama.cpp itself (node-llama-cpp's prebuilt CPU build; `make setup` installs it) loads the exports, tokenises
    text as the Hugging Face tokenizer does, and continues a prompt greedily with the Hugging Face model's choices.
    (It refused every byte-level export while the pre-tokenizer was written as 'gpt2' instead of 'gpt-2'.)

    Every token llama.cpp picks must be transformers' argmax after the same prefix, up to the export's rounding
    (TOLERANCE's atol): these random models' top two logits can be closer than bf16 or q8_0 rounding (llama.cpp's
    q8_0 products round the activations to 8 bits too), so free-running continuations may part at a near tie
    without anything being wrong. Measured worst shortfall over 32 tokens: f16 0, bf16 6e-4, q8_0 2.2e-3; without
    the Llama q/k reordering it is 0.21 on the first case."""
    check = llama_cpp_check()
    if check.node_llama_cpp() is None:
        pytest.skip("llama.cpp is not installed: `make setup` installs node-llama-cpp (needs Node.js >= 20)")
    texts = [TEXT, "the 2024 teacher's  heads\n\n don't prune 12345 them"]
    cases = [("llama", None, "f16", False), ("qwen2", "qwen2", "q8_0", True), ("qwen3", None, "f16", False),
             ("llama", "llama-bpe", "bf16", True), ("llama", "tekken", "q8_0", False),
             ("mistral", "sentencepiece", "f16", False)]
    jobs, models = [], []
    for i, (family, pre, dtype, tie) in enumerate(cases):
        tokenizer = sentencepiece_tokenizer() if pre == "sentencepiece" else byte_level_tokenizer(
            PRE_TOKENIZERS.get(pre))
        model = save_model(tmp_path / f"hf{i}", family, tokenizer, tie)
        out = export(str(tmp_path / f"hf{i}"), tmp_path / f"{i}.gguf", dtype)
        ids = tokenizer(TEXT)["input_ids"]
        jobs.append({"model": out, "ids": ids, "n": 16})
        models.append((family, pre, dtype, model, ids))
        for text in texts:  # llama.cpp adds no bos here: compare the text's own tokens
            want = tokenizer(text, add_special_tokens=False)["input_ids"]
            jobs.append({"model": out, "text": text, "n": 0, "want": want})
    results = check.llama_cpp_greedy([{k: v for k, v in job.items() if k != "want"} for job in jobs])
    for job, result in zip(jobs, results, strict=True):
        if "want" in job:
            assert result["prompt"] == job["want"], (job["model"], job["text"])
    for (family, pre, dtype, model, ids), result in zip(models, results[::len(texts) + 1], strict=True):
        generated = result["generated"]
        assert result["prompt"] == ids and len(generated) == 16
        with torch.no_grad():
            logits = model(torch.tensor([ids + generated])).logits[0, len(ids) - 1:-1]
        shortfall = logits.max(-1).values - logits[torch.arange(16), torch.tensor(generated)]
        assert shortfall.max() <= TOLERANCE[dtype][0], (family, pre, dtype, shortfall)


def test_export_metadata(tmp_path):
    """The numbers llama.cpp reads (transformers' loader ignores some of them, so read them here)."""
    tokenizer = byte_level_tokenizer()
    save_model(tmp_path / "hf", "llama", tokenizer)
    out = export(str(tmp_path / "hf"), tmp_path / "model.gguf", "q8_0")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    assert fields["general.architecture"] == "llama"
    assert {k: fields[f"llama.{k}"] for k in ["context_length", "embedding_length", "block_count",
                                              "feed_forward_length", "attention.head_count",
                                              "attention.head_count_kv", "attention.key_length",
                                              "rope.dimension_count", "vocab_size"]} == {
        "context_length": 256, "embedding_length": 64, "block_count": 4, "feed_forward_length": 96,
        "attention.head_count": 8, "attention.head_count_kv": 2, "attention.key_length": 16,
        "rope.dimension_count": 16, "vocab_size": VOCAB}
    assert fields["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == VOCAB and tokens[300] == "[PAD300]"
    assert types[:3] == [gguf.TokenType.CONTROL] * 3 and types[300] == gguf.TokenType.UNUSED
    assert types[100] == gguf.TokenType.NORMAL
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    types_by_name = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types_by_name["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types_by_name["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "tekken"])
def test_pre_tokenizers(tmp_path, pre):
    """Llama 3, Qwen and Mistral NeMo split text their own ways: the file names the way, transformers rebuilds it."""
    tokenizer = byte_level_tokenizer(PRE_TOKENIZERS[pre])
    save_model(tmp_path / "hf", "llama", tokenizer)
    out = export(str(tmp_path / "hf"), tmp_path / "model.gguf")
    assert gguf.GGUFReader(out).fields["tokenizer.ggml.pre"].contents() == pre
    text = "the 2024 teacher's  heads\n\n don't prune 12345 them"
    reloaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_pre_tokenizer_names(capsys):
    from tokenizers import Regex, pre_tokenizers

    digits = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel()])
    assert pre_tokenizer_name(json.loads(digits.__getstate__())) == "smollm"  # SmolLM's own tokenizer
    other = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\w+"), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(use_regex=False)])
    assert pre_tokenizer_name(json.loads(other.__getstate__())) == "default"
    assert "warning: unrecognised pre-tokenizer" in capsys.readouterr().out


def test_sentencepiece_tokenizer(tmp_path):
    tokenizer = sentencepiece_tokenizer()
    model = save_model(tmp_path / "hf", "llama", tokenizer)
    out = export(str(tmp_path / "hf"), tmp_path / "model.gguf")
    reader = gguf.GGUFReader(out)
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.add_space_prefix"].contents() is True
    assert reader.fields["tokenizer.ggml.add_bos_token"].contents() is True
    reloaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    text = "the teacher prunes heads and the student keeps them"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"] and tokenizer(text)["input_ids"][0] == 1
    assert_same_logits(model, reload(out), "f16")


def test_export_refuses_other_families_and_tokenizers(tmp_path):
    save_model(tmp_path / "gemma", "gemma3_text", byte_level_tokenizer())
    with pytest.raises(MinitronError, match="cannot export 'gemma3_text' models to GGUF; export supports llama"):
        export(str(tmp_path / "gemma"), tmp_path / "gemma.gguf")
    save_tiny(tmp_path / "word-level")  # conftest's character-level WordLevel tokenizer
    with pytest.raises(MinitronError, match="cannot export a WordLevel tokenizer"):
        export(str(tmp_path / "word-level"), tmp_path / "w.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma", "word-level"]  # no file, no temporary left


def test_export_keeps_an_existing_file(tmp_path):
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")
    with pytest.raises(MinitronError, match="already exists"):
        export(str(tmp_path / "hf"), out)
    with pytest.raises(MinitronError, match="--dtype 'q4' is not a GGUF export type"):
        export(str(tmp_path / "hf"), out, "q4", overwrite=True)
    assert out.read_bytes() == b"old"
    export(str(tmp_path / "hf"), out, overwrite=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_export_command(tmp_path, capsys):
    save_model(tmp_path / "hf", "llama", byte_level_tokenizer())
    run_cli("export", "--model", tmp_path / "hf", "--out", tmp_path / "m.gguf", "--dtype", "q8_0")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["general.file_type"].parts[-1][0] == gguf.LlamaFileType.MOSTLY_Q8_0
    err = cli_error(capsys, "export", "--model", tmp_path / "hf", "--out", tmp_path / "m.gguf")
    assert "already exists" in err


@pytest.mark.slow
def test_default_teacher(tmp_path):
    """SmolLM2-135M-Instruct to f16 GGUF, checked three ways (one export, as the export is the slow part)."""
    out = export("default", tmp_path / "smollm2.gguf", "f16")
    assert out.stat().st_size > 250e6  # 135M parameters in f16
    matches_llama_cpps_own_conversion(out)
    transformers_reads_it_back(out)
    if llama_cpp_check().node_llama_cpp() is not None:  # test_llama_cpp_generates_as_transformers skips without it
        llama_cpp_replies_as_transformers(out)


def matches_llama_cpps_own_conversion(out):
    """The default teacher ships as a GGUF that llama.cpp's converter wrote (Q4_1). Exported from its Hugging Face
    conversion, every tensor must come back in the same layout (q/k rotary order included) and the same values up
    to f16 rounding, with the same tokenizer and the same architecture numbers."""
    from minitron.load import default_gguf

    ours, theirs = gguf.GGUFReader(out), gguf.GGUFReader(default_gguf())
    for key in ["tokens", "token_type", "merges", "bos_token_id", "eos_token_id", "unknown_token_id",
                "padding_token_id", "add_bos_token"]:
        assert ours.fields[f"tokenizer.ggml.{key}"].contents() == theirs.fields[f"tokenizer.ggml.{key}"].contents()
    for key in ["tokenizer.chat_template", "llama.context_length", "llama.embedding_length", "llama.block_count",
                "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                "llama.rope.dimension_count", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                "llama.vocab_size"]:
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key
    mine = {t.name: t for t in ours.tensors}
    assert sorted(mine) == sorted(t.name for t in theirs.tensors)
    for t in theirs.tensors:
        want = gguf.dequantize(t.data, t.tensor_type)
        got = gguf.dequantize(mine[t.name].data, mine[t.name].tensor_type)
        assert got.shape == want.shape, t.name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max(), err_msg=t.name)


def transformers_reads_it_back(out):
    """transformers' GGUF loader gives the same chat prompt, token ids, logits and greedy reply."""
    from minitron.load import load_model, load_tokenizer

    model, tokenizer = load_model("default"), load_tokenizer("default")
    gguf_model = reload(out)
    gguf_tokenizer = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert gguf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == prompt
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert gguf_tokenizer(prompt, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        expected, actual = model(ids).logits, gguf_model(ids).logits
    torch.testing.assert_close(actual, expected, atol=5e-2, rtol=1e-2)  # f16 weights; logits span about ±38
    generate = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    reply = model.generate(ids, **generate)
    assert gguf_model.generate(ids, **generate).tolist() == reply.tolist()
    assert "Paris" in tokenizer.decode(reply[0, ids.shape[1]:])


def llama_cpp_replies_as_transformers(out):
    """llama.cpp itself tokenises the chat prompt as transformers does and gives the same greedy reply (measured:
    the same 136 tokens over benchmarks/llama_cpp_check.py's three prompts)."""
    from minitron.load import load_model, load_tokenizer

    model, tokenizer = load_model("default"), load_tokenizer("default")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt)["input_ids"]
    reply = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    [result] = llama_cpp_check().llama_cpp_greedy([{"model": out, "text": prompt, "n": len(reply)}])
    assert result["prompt"] == ids and result["generated"] == reply
    assert tokenizer.decode(reply) == "The capital of France is Paris.<|im_end|>"
