"""Chat distillation data: the loss mask covers exactly what the assistant writes, stop included."""
from __future__ import annotations

import json

import numpy as np
import torch
import pytest
from chat_tiny import save_tiny_chat_model, tekken_tokenizer, tiny_tokenizer

from minitron.chat.dataset import encode_with_mask, reply_spans
from minitron.chat.templates import CHATML_TEMPLATE, get_format
from minitron.errors import MinitronError

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "How are you today?"},
    {"role": "assistant", "content": "Sunny, thank you!"},
]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "sunny, 22 degrees"},
    {"role": "assistant", "content": "It is sunny."},
]


def masked_text(tok, ids, mask, value=1) -> str:
    return tok.decode([i for i, m in zip(ids, mask) if m == value])


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_chatml_mask_is_the_replies_and_their_stop(tok):
    fmt = get_format(tok, "chatml")
    ids, mask = encode_with_mask(tok, fmt, CONVERSATION)
    assert masked_text(tok, ids, mask) == "Paris.<|im_end|>Sunny, thank you!<|im_end|>"
    assert masked_text(tok, ids, mask, 0) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of "
        "France?<|im_end|>\n<|im_start|>assistant\n\n<|im_start|>user\nHow are you today?<|im_end|>\n"
        "<|im_start|>assistant\n\n")
    # piecewise tokenisation gives the same ids as tokenising the whole conversation at once here
    assert ids == tok(reply_spans(tok, fmt, CONVERSATION)[0], add_special_tokens=False)["input_ids"]


def test_nemotron_mask_ends_with_the_next_turn_marker(tok):
    fmt = get_format(tok, "nemotron")
    ids, mask = encode_with_mask(tok, fmt, CONVERSATION)
    # each reply ends where the model writes the next <extra_id_1>; the final one gets it appended
    assert masked_text(tok, ids, mask) == "Paris.\n<extra_id_1>Sunny, thank you!\n<extra_id_1>"
    assert tok.decode(ids).endswith("<extra_id_1>Assistant\nSunny, thank you!\n<extra_id_1>")


def test_nemotron_tool_call_reply_is_trained_tool_result_is_not(tok):
    ids, mask = encode_with_mask(tok, get_format(tok, "nemotron"), TOOL_CONVERSATION)
    assert masked_text(tok, ids, mask) == (
        '<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>\n<extra_id_1>'
        "It is sunny.\n<extra_id_1>")


def test_mistral_mask():
    from minitron.chat.mistral import decode_mistral

    tekken = tekken_tokenizer()
    ids, mask = encode_with_mask(tekken, get_format(tekken, "mistral"), CONVERSATION[1:3] + TOOL_CONVERSATION)
    assert decode_mistral([i for i, m in zip(ids, mask) if m]) == (
        'Paris.</s>[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call00001"}]</s>'
        "It is sunny.</s>")


def test_templates_that_rewrite_history_are_refused():
    moving = "{% for m in messages %}{{ m['role'] }}{% if loop.last %}(last){% endif %}: {{ m['content'] }}\n" \
             "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    tok = tiny_tokenizer(chat_template=moving)
    with pytest.raises(MinitronError, match="renders earlier turns differently"):
        encode_with_mask(tok, get_format(tok), CONVERSATION)


def test_minitron_data_chat(tmp_path):
    from minitron.data import TokenData, build_data

    model = save_tiny_chat_model(tmp_path / "model", CHATML_TEMPLATE)
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"What is {i} + {i}?"},
        {"role": "assistant", "content": f"{2 * i}."}]}) + "\n" for i in range(40)))
    out = build_data(source=[str(source)], out=tmp_path / "data", tokenizer=str(model), chat=True,
                     dev_fraction=0.2, test_fraction=0.2)
    data = TokenData.open(out)
    tok = tiny_tokenizer()
    for split in ("train", "dev", "test"):
        ids, mask = np.asarray(data.tokens(split)), np.asarray(data.mask(split))
        assert len(ids) == len(mask) == data.num_tokens(split) > 0
        replies = tok.decode(ids[mask == 1].tolist()).split("<|im_end|>")[:-1]
        assert replies and all(r.endswith(".") and r[:-1].isdigit() for r in replies)
    batch = data.sample("train", batch_size=2, seq_len=16, seed=0, step=0)
    assert batch["loss_mask"].shape == (2, 16) and batch["loss_mask"].dtype == torch.bool
    windows = data.spread("test", 3, 16)  # evaluation windows carry the mask over their labels
    mask = windows.batch["loss_mask"]
    assert mask.shape == (3, 16) and mask.dtype == torch.bool and windows.tokens == int(mask.sum()) > 0
    last = np.asarray(data.mask("test"))[-16:]  # the last window ends on the split's last token
    assert mask[-1].tolist() == last.astype(bool).tolist()


def test_minitron_data_chat_refuses_bad_records(tmp_path):
    from minitron.data import build_data

    model = save_tiny_chat_model(tmp_path / "model", CHATML_TEMPLATE)
    source = tmp_path / "chats.jsonl"
    source.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(MinitronError, match="no assistant message"):
        build_data(source=[str(source)], out=tmp_path / "data", tokenizer=str(model), chat=True)
    source.write_text(json.dumps({"text": "plain"}) + "\n")
    with pytest.raises(MinitronError, match="no \"messages\" list"):
        build_data(source=[str(source)], out=tmp_path / "data", tokenizer=str(model), chat=True)
    with pytest.raises(MinitronError, match="--chat needs --source"):
        build_data(tokenizer=str(model), chat=True, out=tmp_path / "data")
