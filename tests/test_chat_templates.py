"""Chat formats rendered character for character: Nemotron/Minitron, ChatML, Mistral-NeMo, models' own."""
from __future__ import annotations

import pytest
from chat_tiny import tekken_tokenizer, tiny_tokenizer

from minitron.chat.templates import attach_template, detect_format, encode, get_format, render
from minitron.errors import MinitronError

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "What is the capital of France?"}
REPLY = {"role": "assistant", "content": "Paris."}
USER2 = {"role": "user", "content": "And of Italy?"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOLS_JSON = ('{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", '
              '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}')
WEATHER = {"role": "user", "content": "Weather in Paris?"}
CALL = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
    "name": "get_weather", "arguments": {"city": "Paris"}}}]}
RESULT = {"role": "tool", "content": "sunny, 22 degrees"}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_nemotron_single_turn(tok):
    assert render(tok, get_format(tok, "nemotron"), [SYSTEM, USER]) == (
        "<extra_id_0>System\nYou are a helpful assistant.\n\n"
        "<extra_id_1>User\nWhat is the capital of France?\n"
        "<extra_id_1>Assistant\n")


def test_nemotron_without_system_prompt(tok):
    assert render(tok, get_format(tok, "nemotron"), [USER]) == (
        "<extra_id_0>System\n\n<extra_id_1>User\nWhat is the capital of France?\n<extra_id_1>Assistant\n")


def test_nemotron_multi_turn(tok):
    fmt = get_format(tok, "nemotron")
    assert render(tok, fmt, [SYSTEM, USER, REPLY, USER2]) == (
        "<extra_id_0>System\nYou are a helpful assistant.\n\n"
        "<extra_id_1>User\nWhat is the capital of France?\n"
        "<extra_id_1>Assistant\nParis.\n"
        "<extra_id_1>User\nAnd of Italy?\n"
        "<extra_id_1>Assistant\n")
    assert render(tok, fmt, [SYSTEM, USER, REPLY], add_generation_prompt=False).endswith(
        "<extra_id_1>Assistant\nParis.\n")


def test_nemotron_tool_use(tok):
    text = render(tok, get_format(tok, "nemotron"), [SYSTEM, WEATHER, CALL, RESULT], TOOLS,
                  documents=[{"title": "geo", "text": "Paris is in France."}])
    assert text == (
        "<extra_id_0>System\nYou are a helpful assistant.\n\n"
        f"<tool> {TOOLS_JSON} </tool>\n"
        "<context> Paris is in France. </context>\n\n"
        "<extra_id_1>User\nWeather in Paris?\n"
        "<extra_id_1>Assistant\n"
        '<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>\n'
        "<extra_id_1>Tool\nsunny, 22 degrees\n"
        "<extra_id_1>Assistant\n")


def test_nemotron_tools_only_and_string_arguments(tok):
    fmt = get_format(tok, "nemotron")
    assert render(tok, fmt, [SYSTEM, WEATHER], TOOLS) == (
        f"<extra_id_0>System\nYou are a helpful assistant.\n\n<tool> {TOOLS_JSON} </tool>\n\n"
        "<extra_id_1>User\nWeather in Paris?\n<extra_id_1>Assistant\n")
    two_calls = {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"type": "function", "function": {"name": "b", "arguments": {}}}]}
    assert render(tok, fmt, [WEATHER, two_calls], add_generation_prompt=False).endswith(
        '<extra_id_1>Assistant\n<toolcall> {"name": "a", "arguments": {"x": 1}} </toolcall>\n'
        '<toolcall> {"name": "b", "arguments": {}} </toolcall>\n')


def test_nemotron_token_ids(tok):
    fmt = get_format(tok, "nemotron")
    ids = encode(tok, fmt, [SYSTEM, USER, REPLY, USER2])
    expected = ("<extra_id_0>System\nYou are a helpful assistant.\n\n<extra_id_1>User\nWhat is the capital of "
                "France?\n<extra_id_1>Assistant\nParis.\n<extra_id_1>User\nAnd of Italy?\n<extra_id_1>Assistant\n")
    assert ids == tok(expected, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == expected
    turn, system = tok.convert_tokens_to_ids(["<extra_id_1>", "<extra_id_0>"])
    assert ids[0] == system and ids.count(turn) == 4  # each marker is one special token


def test_nemotron_refuses_misplaced_system(tok):
    with pytest.raises(MinitronError, match="nemotron"):
        render(tok, get_format(tok, "nemotron"), [USER, SYSTEM])


def test_chatml(tok):
    fmt = get_format(tok, "chatml")
    assert render(tok, fmt, [SYSTEM, USER, REPLY, USER2]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert render(tok, fmt, [SYSTEM, WEATHER, CALL, RESULT], TOOLS) == (
        f"<|im_start|>system\nYou are a helpful assistant.\n\n<tools>\n{TOOLS_JSON}\n</tools><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>tool\nsunny, 22 degrees<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert fmt.stop_strings == ("<|im_end|>",)


def test_model_template_used_as_is():
    own = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
          "{% if add_generation_prompt %}[assistant] {% endif %}"
    tok = tiny_tokenizer(chat_template=own)
    fmt = get_format(tok)
    assert fmt.name == "model" and fmt.template == own
    assert render(tok, fmt, [SYSTEM, USER]) == (
        "[system] You are a helpful assistant.\n[user] What is the capital of France?\n[assistant] ")
    assert "<|im_end|>" in fmt.stop_strings  # the tokenizer's end-of-sequence token


def test_detect_format_from_tokens():
    assert detect_format(tiny_tokenizer()) == "nemotron"
    assert detect_format(tiny_tokenizer(["<|im_start|>", "<|im_end|>"])) == "chatml"
    with pytest.raises(MinitronError, match="--template"):
        detect_format(tiny_tokenizer(["<s>", "</s>"]))
    with pytest.raises(MinitronError, match="unknown chat template"):
        get_format(tiny_tokenizer(), "alpaca")


def test_attach_template_survives_saving(tok, tmp_path):
    from transformers import AutoTokenizer

    attach_template(tok, "nemotron")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert get_format(again).name == "model"
    assert render(again, get_format(again), [SYSTEM, USER]) == render(again, get_format(again, "nemotron"),
                                                                      [SYSTEM, USER])


MISTRAL_PROMPT_IDS = [1, 3, 4568, 1584, 1261, 20351, 27089, 1338, 7493, 1395, 1278, 8961, 1307, 5498, 1063, 4]


@pytest.fixture(scope="module")
def tekken():
    return tekken_tokenizer()


def test_mistral_nemo_prompt(tekken):
    fmt = get_format(tekken, "mistral")
    assert render(tekken, fmt, [SYSTEM, USER]) == (
        "<s>[INST]You are a helpful assistant.\n\nWhat is the capital of France?[/INST]")
    assert encode(tekken, fmt, [SYSTEM, USER]) == MISTRAL_PROMPT_IDS
    assert detect_format(tekken) == "mistral"


def test_mistral_nemo_tools(tekken):
    fmt = get_format(tekken, "mistral")
    text = render(tekken, fmt, [SYSTEM, WEATHER, CALL, RESULT], TOOLS)
    assert text == (
        f"<s>[AVAILABLE_TOOLS][{TOOLS_JSON}][/AVAILABLE_TOOLS]"
        "[INST]You are a helpful assistant.\n\nWeather in Paris?[/INST]"
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call00001"}]</s>'
        '[TOOL_RESULTS]{"content": "sunny, 22 degrees", "call_id": "call00001"}[/TOOL_RESULTS]')
    ids = encode(tekken, fmt, [SYSTEM, WEATHER, CALL, RESULT], TOOLS)
    assert ids[:2] == [1, 5] and ids[-1] == 8  # <s> [AVAILABLE_TOOLS] ... [/TOOL_RESULTS]
    # transformers' Tekken tokenizer reads the rendered text back to the very same ids
    assert tekken(text, add_special_tokens=False)["input_ids"] == ids


def test_mistral_refuses_other_vocabularies(tok):
    with pytest.raises(MinitronError, match="Tekken"):
        get_format(tok, "mistral")


@pytest.mark.slow
def test_default_teacher_chatml_template_as_is():
    from minitron.load import load_tokenizer

    tok = load_tokenizer("default")
    fmt = get_format(tok)
    assert fmt.name == "model" and fmt.stop_strings == ("<|im_end|>",)
    assert render(tok, fmt, [USER]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = encode(tok, fmt, [SYSTEM, USER])
    assert ids[:3] == [1, 9690, 198] and ids[-4:] == [1, 520, 9531, 198]  # <|im_start|>system\n ... assistant\n
    assert tok.decode(ids) == render(tok, fmt, [SYSTEM, USER])
