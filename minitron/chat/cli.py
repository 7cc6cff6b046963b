"""`minitron chat` (an interactive terminal chat) and `minitron generate` (one prompt, or a JSONL batch)."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal

from minitron.chat.generate import BATCH_SIZE, Completion, Sampling, complete, complete_many
from minitron.chat.templates import ChatFormat, encode, get_format
from minitron.chat.tools import ToolCall, as_message_calls, describe, load_tools, parse_tool_calls
from minitron.errors import MinitronError, whole_number
from minitron.io import read_jsonl, refuse_existing_file, write_atomic
from minitron.load import load_model, load_tokenizer, pick_device

Template = Literal["auto", "nemotron", "chatml", "mistral", "model"]
HELP = ("/reset forgets the conversation · /system TEXT sets the system prompt (and resets) · "
        "/tool TEXT answers the last tool call · /exit leaves (or Ctrl-D)")


def utf8(text: str | None, what: str) -> str | None:
    """`text` as given on the command line or stdin, refused in one line if it is not UTF-8 (Python keeps the bad
    bytes of arguments as lone surrogates, which no tokenizer encodes)."""
    try:
        text is None or text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MinitronError(f"{what} is not UTF-8 text (a bad byte at character {e.start + 1}); convert it to "
                            "UTF-8") from None
    return text


def load_chat_model(model: str, template: str = "auto", device: str = "auto"):
    """(model, tokenizer, chat format) ready to generate."""
    tokenizer = load_tokenizer(model)
    fmt = get_format(tokenizer, template)
    return load_model(model, pick_device(device)), tokenizer, fmt


def read_tools(path: Path | None, fmt: ChatFormat) -> list[dict] | None:
    """Tool definitions from --tools, with a note when the chat template has no place for them."""
    if path is None:
        return None
    tools = load_tools(path)
    if fmt.template is not None and "tools" not in fmt.template:
        print("minitron: note: the model's chat template ignores tools; try --template nemotron or chatml",
              file=sys.stderr)
    return tools


def _show(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _report(completion: Completion, fmt: ChatFormat, sampling: Sampling) -> list:
    """Print the end of a streamed reply: a cut-off note and any tool calls; return the parsed calls."""
    if not completion.stopped:
        _show(f" [cut at {sampling.max_new_tokens} tokens]")
    _show("\n")
    calls = parse_tool_calls(completion.text, fmt.tool_style)
    for call in calls:
        _show(f"[tool call] {describe(call)}\n")
    return calls


def _assistant_message(completion: Completion, fmt: ChatFormat, calls: list) -> dict:
    if fmt.name == "mistral" and calls and all(isinstance(c, ToolCall) for c in calls):
        return {"role": "assistant", "tool_calls": as_message_calls(calls)}
    return {"role": "assistant", "content": completion.text.strip()}


class ChatSession:
    """The conversation of one `minitron chat`: slash commands and streamed replies."""

    def __init__(self, model, tokenizer, fmt: ChatFormat, system: str | None, tools: list[dict] | None,
                 sampling: Sampling):
        self.model, self.tokenizer, self.fmt, self.tools, self.sampling = model, tokenizer, fmt, tools, sampling
        self.system, self.turn = system, 0
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the session should end."""
        command, _, arg = line.strip().partition(" ")
        if not line.startswith("/"):
            if line.strip():
                self.messages.append({"role": "user", "content": line.strip()})
                self.reply()
        elif command in ("/exit", "/quit"):
            return False
        elif command == "/reset":
            self.reset()
            print("(conversation reset)")
        elif command == "/system":
            self.system = arg.strip() or None
            self.reset()
            print(f"(system prompt {'set' if self.system else 'cleared'}; conversation reset)")
        elif command == "/tool" and arg.strip():
            self.messages.append({"role": "tool", "content": arg.strip()})
            self.reply()
        else:
            print(HELP)
        return True

    def reply(self) -> None:
        sampling = replace(self.sampling, seed=self.sampling.seed + self.turn)  # new draws each turn
        self.turn += 1
        try:
            completion = complete(self.model, self.tokenizer, self.fmt, self.messages, self.tools, sampling, _show)
        except KeyboardInterrupt:
            _show(" [interrupted]\n")
            self.messages.pop()
            return
        except MinitronError as e:
            print(f"minitron: error: {e}")
            self.messages.pop()
            return
        self.messages.append(_assistant_message(completion, self.fmt, _report(completion, self.fmt, sampling)))


def _line_editing() -> None:
    try:
        import readline  # noqa: F401  (arrow keys and history for input())
    except ImportError:
        pass


def chat(model: str = "default", template: Template = "auto", system: str | None = None,
         tools: Path | None = None, temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 512,
         seed: int = 0, device: str = "auto") -> None:
    """Chat with a model in the terminal; replies stream as they are written.

    Type a message and press Enter. /reset forgets the conversation, /system TEXT sets the system
    prompt, /tool TEXT answers a tool call, /exit (or Ctrl-D) leaves.

    Args:
        model: 'default', a Hugging Face directory, a Hub id (org/name) or a .gguf file
        template: chat format: auto (the model's own template, else guessed from its tokens), nemotron,
            chatml, mistral (Mistral-NeMo via mistral-common) or model (the tokenizer's own)
        system: system prompt
        tools: JSON file of tool definitions (OpenAI-style function schemas) the model may call
        temperature: sampling temperature (0: greedy)
        top_p: nucleus sampling threshold
        max_new_tokens: longest reply, in tokens
        seed: sampling seed
        device: auto, cpu, cuda or cuda:N
    """
    sampling = Sampling(max_new_tokens, temperature, top_p, seed).check()
    utf8(system, "--system")
    lm, tokenizer, fmt = load_chat_model(model, template, device)
    session = ChatSession(lm, tokenizer, fmt, system, read_tools(tools, fmt), sampling)
    print(f"chatting with {model} ({fmt.name} format). {HELP}")
    _line_editing()
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        except UnicodeDecodeError:
            raise MinitronError("a line of input is not UTF-8 text; set the terminal to UTF-8") from None
        if not session.handle(utf8(line, "a line of input")):
            return


def _read_prompts(path: Path) -> list[dict]:
    """Records of a prompts JSONL file: {"prompt": ...} or {"messages": [...]}."""
    records = []
    for i, record in read_jsonl(path):
        if not isinstance(record, dict) or not ("prompt" in record or "messages" in record):
            raise MinitronError(f"{path}:{i} needs a \"prompt\" string or a \"messages\" list")
        records.append(record)
    return records


def _conversation(record: dict, system: str | None) -> list[dict]:
    """The messages to answer: the record's own, or its prompt after the system prompt."""
    if "messages" in record:
        return record["messages"]
    system = record.get("system", system)
    return ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": str(record["prompt"])}]


def _result(record: dict, completion: Completion, fmt: ChatFormat) -> dict:
    out = {**record, "reply": completion.text.strip(), "stopped": completion.stopped}
    calls = parse_tool_calls(completion.text, fmt.tool_style)
    if calls:
        out["tool_calls"] = [vars(c) if isinstance(c, ToolCall) else {"error": c.message, "raw": c.raw}
                             for c in calls]
    return out


def _write_jsonl(path: Path | None, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if path is None:
        _show(text)
        return
    write_atomic(path, text)


def generate(model: str = "default", prompt: str | None = None, input: Path | None = None,
             output: Path | None = None, template: Template = "auto", system: str | None = None,
             tools: Path | None = None, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
             batch_size: int = BATCH_SIZE, seed: int = 0, device: str = "auto", overwrite: bool = False) -> list[dict]:
    """Reply to one prompt (printed as it is written), or to every record of a JSONL file.

    Input records are {"prompt": "..."} or {"messages": [...]}, each optionally with "tools" and
    "system"; output records add "reply", "stopped" (ended with the stop token) and parsed "tool_calls".

    Args:
        model: 'default', a Hugging Face directory, a Hub id (org/name) or a .gguf file
        prompt: one user message to answer
        input: JSONL file of prompts to answer in batches
        output: where to write the JSONL replies for --input (default: print them)
        template: chat format: auto, nemotron, chatml, mistral or model (the tokenizer's own)
        system: system prompt
        tools: JSON file of tool definitions the model may call
        max_new_tokens: longest reply, in tokens
        temperature: sampling temperature (0: greedy)
        top_p: nucleus sampling threshold
        batch_size: prompts generated together with --input (padded batches; docs/performance.md)
        seed: sampling seed
        device: auto, cpu, cuda or cuda:N
        overwrite: replace an existing --output file
    """
    if (prompt is None) == (input is None):
        raise MinitronError("give either --prompt TEXT or --input prompts.jsonl")
    if output is not None:
        refuse_existing_file(Path(output), overwrite)
    whole_number(batch_size, "--batch-size")
    sampling = Sampling(max_new_tokens, temperature, top_p, seed).check()
    utf8(prompt, "--prompt"), utf8(system, "--system")
    records = [{"prompt": prompt}] if prompt is not None else _read_prompts(Path(input))
    lm, tokenizer, fmt = load_chat_model(model, template, device)
    default_tools = read_tools(tools, fmt)
    if prompt is not None:
        completion = complete(lm, tokenizer, fmt, _conversation(records[0], system), default_tools, sampling,
                              _show)
        _report(completion, fmt, sampling)
        return [_result(records[0], completion, fmt)]
    prompts = [encode(tokenizer, fmt, _conversation(r, system), r.get("tools") or default_tools) for r in records]
    results = [_result(r, c, fmt) for r, c in
               zip(records, complete_many(lm, tokenizer, fmt, prompts, sampling, batch_size))]
    _write_jsonl(Path(output) if output else None, results)
    if output:
        print(f"wrote {len(results)} replies to {output} "
              f"({sum(r['stopped'] for r in results)} ended with the stop token)")
    return results
