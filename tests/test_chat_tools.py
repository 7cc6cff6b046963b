"""Tool calls parsed out of generated text in every format; malformed ones come back as errors."""
from __future__ import annotations

import json

import pytest
from chat_tiny import tiny_tokenizer

from minitron.chat.templates import get_format, render
from minitron.chat.tools import ToolCall, ToolCallError, describe, has_tool_call, load_tools, parse_tool_calls
from minitron.errors import MinitronError

PARIS = ToolCall("get_weather", {"city": "Paris"})


def test_nemotron_calls():
    text = ('<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>\n'
            '<toolcall> {"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\"}"} </toolcall>\n')
    assert parse_tool_calls(text, "nemotron") == [PARIS, ToolCall("get_time", {"zone": "CET"})]
    assert parse_tool_calls(text) == parse_tool_calls(text, "nemotron")  # style detected
    assert parse_tool_calls("Paris is sunny.", "nemotron") == [] and not has_tool_call("Paris is sunny.")


def test_chatml_and_mistral_calls():
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert parse_tool_calls(hermes, "chatml") == [PARIS]
    mistral = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call00001"}]</s>'
    assert parse_tool_calls(mistral, "mistral") == [PARIS] and parse_tool_calls(mistral) == [PARIS]


@pytest.mark.parametrize("text, message", [
    ('<toolcall> {"name": "get_weather", "arguments": {"city": "Par </toolcall>', "valid JSON"),
    ('<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}}', "never closed"),
    ('<toolcall> {"arguments": {}} </toolcall>', "no \"name\""),
    ('<toolcall> ["get_weather"] </toolcall>', "list, not an object"),
    ('<toolcall> {"name": "f", "arguments": [1]} </toolcall>', "must be an object"),
    ('<toolcall> {"name": "f", "arguments": "city=Paris"} </toolcall>', "not JSON"),
])
def test_malformed_nemotron_calls_are_errors(text, message):
    [error] = parse_tool_calls(text, "nemotron")
    assert isinstance(error, ToolCallError) and message in error.message and error.raw
    assert describe(error).startswith("malformed tool call:")


def test_malformed_mistral_calls_are_errors():
    [error] = parse_tool_calls('[TOOL_CALLS][{"name": "get_weather", "arguments": {', "mistral")
    assert isinstance(error, ToolCallError) and "valid JSON" in error.message
    [error] = parse_tool_calls("[TOOL_CALLS][]</s>", "mistral")
    assert "empty" in error.message


def test_one_bad_call_keeps_the_good_ones():
    text = ('<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>'
            '<toolcall> {oops} </toolcall>')
    good, bad = parse_tool_calls(text, "nemotron")
    assert good == PARIS and isinstance(bad, ToolCallError)


@pytest.mark.parametrize("name", ["nemotron", "chatml"])
def test_rendered_calls_parse_back(name):
    tok = tiny_tokenizer()
    call = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}
    user = {"role": "user", "content": "Weather?"}
    fmt = get_format(tok, name)
    prompt = render(tok, fmt, [user])
    reply = render(tok, fmt, [user, call], add_generation_prompt=False)[len(prompt):]
    assert parse_tool_calls(reply, fmt.tool_style) == [PARIS]


def test_load_tools(tmp_path):
    f = tmp_path / "tools.json"
    f.write_text(json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}]))
    assert load_tools(f) == [{"type": "function", "function": {"name": "get_weather",
                                                               "parameters": {"type": "object"}}}]
    f.write_text(json.dumps({"tools": [{"description": "no name"}]}))
    with pytest.raises(MinitronError, match="no name"):
        load_tools(f)
    f.write_text("[{")
    with pytest.raises(MinitronError, match="not valid JSON"):
        load_tools(f)
