"""Tool calls parsed out of generated text, and tool definitions read from files.

Syntaxes ("styles"):
- `nemotron`: `<toolcall> {"name": ..., "arguments": {...}} </toolcall>`, one per call;
- `chatml`: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (the Hermes convention);
- `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": ...}, ...]` (Tekken v3), up to `</s>`.
A malformed call comes back as a `ToolCallError` naming the problem, never as an exception.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from minitron.errors import MinitronError

TAGS = {"nemotron": ("<toolcall>", "</toolcall>"), "chatml": ("<tool_call>", "</tool_call>")}
MISTRAL_MARKER = "[TOOL_CALLS]"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(frozen=True)
class ToolCallError:
    message: str  # what is wrong, in one line
    raw: str  # the text that failed to parse


def detect_style(text: str) -> str | None:
    """The tool-call syntax present in `text`, or None when it holds no call."""
    if MISTRAL_MARKER in text:
        return "mistral"
    for style, (open_tag, _) in TAGS.items():
        if open_tag in text:
            return style
    return None


def _marker(style: str) -> str:
    return MISTRAL_MARKER if style == "mistral" else TAGS[style][0]


def has_tool_call(text: str, style: str | None = None) -> bool:
    """Whether `text` starts any tool call (well-formed or not)."""
    return detect_style(text) is not None if style is None else _marker(style) in text


def parse_tool_calls(text: str, style: str | None = None) -> list[ToolCall | ToolCallError]:
    """Every tool call in a reply, in order; [] when there is none. `style` None: detect it."""
    style = style or detect_style(text)
    if style is None or _marker(style) not in text:
        return []
    if style == "mistral":
        return _parse_mistral(text)
    return _parse_tagged(text, *TAGS[style])


def _parse_tagged(text: str, open_tag: str, close_tag: str) -> list[ToolCall | ToolCallError]:
    calls: list[ToolCall | ToolCallError] = []
    pos = text.find(open_tag)
    while pos >= 0:
        end = text.find(close_tag, pos)
        if end < 0:
            calls.append(ToolCallError(f"{open_tag} is never closed by {close_tag}", text[pos:]))
            break
        calls.append(_one_call(text[pos + len(open_tag):end].strip(), open_tag))
        pos = text.find(open_tag, end)
    return calls


def _parse_mistral(text: str) -> list[ToolCall | ToolCallError]:
    body = text.split(MISTRAL_MARKER, 1)[1].split("</s>", 1)[0].strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        return [ToolCallError(f"{MISTRAL_MARKER} is not followed by valid JSON ({e.msg} at character {e.pos})", body)]
    items = value if isinstance(value, list) else [value]
    if not items:
        return [ToolCallError(f"{MISTRAL_MARKER} holds an empty list", body)]
    return [_check_call(item, json.dumps(item), MISTRAL_MARKER) for item in items]


def _one_call(body: str, where: str) -> ToolCall | ToolCallError:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        return ToolCallError(f"{where} does not hold valid JSON ({e.msg} at character {e.pos})", body)
    return _check_call(value, body, where)


def _check_call(value, raw: str, where: str) -> ToolCall | ToolCallError:
    if not isinstance(value, dict):
        return ToolCallError(f"{where} holds {type(value).__name__}, not an object with name and arguments", raw)
    name, args = value.get("name"), value.get("arguments", {})
    if not isinstance(name, str) or not name:
        return ToolCallError(f"{where} has no \"name\" string", raw)
    if isinstance(args, str):  # OpenAI style: arguments as JSON text
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return ToolCallError(f"{where} {name}: \"arguments\" is a string that is not JSON", raw)
    if not isinstance(args, dict):
        return ToolCallError(f"{where} {name}: \"arguments\" must be an object, got {type(args).__name__}", raw)
    return ToolCall(name, args)


def as_message_calls(calls: list[ToolCall]) -> list[dict]:
    """Parsed calls as the `tool_calls` of an assistant message (OpenAI/transformers layout)."""
    return [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def load_tools(path: str | Path) -> list[dict]:
    """Tool definitions from a JSON file: a list of JSON schemas, or {"tools": [...]}.

    Each is an OpenAI-style `{"type": "function", "function": {"name", "description", "parameters"}}`;
    a bare `{"name", ...}` is wrapped into that layout.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise MinitronError(f"tools file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise MinitronError(f"tools file {path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    tools = value.get("tools") if isinstance(value, dict) else value
    if not isinstance(tools, list):
        raise MinitronError(f"tools file {path} must hold a list of tool definitions (or {{\"tools\": [...]}})")
    return [_normalise_tool(t, path, i) for i, t in enumerate(tools)]


def _normalise_tool(tool, path: Path, index: int) -> dict:
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise MinitronError(f"tools file {path}: tool {index} has no name (expected {{\"type\": \"function\", "
                            "\"function\": {\"name\": ..., \"parameters\": ...}}})")
    return tool if "function" in tool else {"type": "function", "function": fn}


_WS = re.compile(r"\s+")


def describe(call: ToolCall | ToolCallError) -> str:
    """One line for people: `name({"arg": 1})` or `malformed tool call: why`."""
    if isinstance(call, ToolCallError):
        return f"malformed tool call: {call.message}: {_WS.sub(' ', call.raw)[:80]}"
    return f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})"
