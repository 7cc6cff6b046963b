"""Chat formats: the Jinja templates minitron ships, how a model's format is picked, and prompt rendering.

Formats (the `--template` choices):
- `nemotron`: NVIDIA's Nemotron/Minitron instruct format (Nemotron-Mini-4B-Instruct), with tools and
  context documents. Layout as on the model card::

      <extra_id_0>System\\n{system}\\n\\n<tool> {json} </tool>\\n<context> {text} </context>\\n\\n
      <extra_id_1>User\\n{prompt}\\n<extra_id_1>Assistant\\n<toolcall> {json} </toolcall>\\n
      <extra_id_1>Tool\\n{tool response}\\n<extra_id_1>Assistant\\n

  The reply ends where the model writes the next `<extra_id_1>`. Choices: message contents are
  stripped (as the model's published tokenizer template does); tools and contexts are one block with no
  blank line between them (the model card's layout; the tokenizer template puts one there); each tool
  is one `<tool>` line holding its JSON schema exactly as passed; structured
  assistant `tool_calls` are written as `<toolcall> {"name": ..., "arguments": ...} </toolcall>`, one a
  line; documents come from `documents=` (transformers' RAG argument) or `contexts=`.
- `chatml`: `<|im_start|>{role}\\n{content}<|im_end|>\\n`; tools in the system turn as `<tools>` lines and
  calls as `<tool_call>` JSON lines (the Hermes convention).
- `mistral`: Mistral-NeMo-Instruct-2407, rendered by mistral-common with Tekken (see `minitron.chat.mistral`).
- `model`: the tokenizer's own chat template, used as is.

`auto` picks `mistral` for the Tekken vocabulary, else `model` when the tokenizer has a template, else
the format whose special tokens the vocabulary holds.
"""
from __future__ import annotations

from dataclasses import dataclass

from minitron.chat.mistral import check_tekken_vocabulary, encode_mistral
from minitron.errors import MinitronError

FORMATS = ("nemotron", "chatml", "mistral", "model")

# Every tag strips the whitespace around it ({%- -%}), so only quoted strings reach the output.
NEMOTRON_TEMPLATE = r"""
{%- set ns = namespace(system=none) -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set ns.system = messages[0]['content'] -%}
{%- endif -%}
{%- set docs = documents or contexts or [] -%}
{{- '<extra_id_0>System' -}}
{%- if ns.system is not none -%}
    {{- '\n' + ns.system | trim -}}
    {%- if tools or docs -%}{{- '\n' -}}{%- endif -%}
{%- endif -%}
{%- for tool in tools or [] -%}
    {{- '\n<tool> ' + tool | tojson + ' </tool>' -}}
{%- endfor -%}
{%- for doc in docs -%}
    {{- '\n<context> ' + (doc if doc is string else doc['text']) | trim + ' </context>' -}}
{%- endfor -%}
{{- '\n\n' -}}
{%- for message in messages -%}
    {%- if message['content'] is string -%}
        {%- set content = message['content'] | trim -%}
    {%- elif message['content'] is defined and message['content'] is not none -%}
        {%- set content = message['content'] | tojson -%}
    {%- else -%}
        {%- set content = '' -%}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        {{- '<extra_id_1>User\n' + content + '\n' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '<extra_id_1>Assistant\n' + content -}}
        {%- for call in message['tool_calls'] or [] -%}
            {%- set fn = call['function'] if call['function'] is defined else call -%}
            {%- set args = fn['arguments'] if fn['arguments'] is defined else {} -%}
            {{- '\n' if content or not loop.first else '' -}}
            {{- '<toolcall> {"name": ' + fn['name'] | tojson + ', "arguments": ' -}}
            {{- (args if args is string else args | tojson) + '} </toolcall>' -}}
        {%- endfor -%}
        {{- '\n' -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '<extra_id_1>Tool\n' + content + '\n' -}}
    {%- elif not (message['role'] == 'system' and loop.first) -%}
        {{- raise_exception('nemotron format: unexpected ' + message['role'] + ' message (system goes first)') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<extra_id_1>Assistant\n' -}}
{%- endif -%}
"""

CHATML_TEMPLATE = r"""
{%- if tools and not (messages and messages[0]['role'] == 'system') -%}
    {{- '<|im_start|>system\n<tools>\n' -}}
    {%- for tool in tools -%}{{- tool | tojson + '\n' -}}{%- endfor -%}
    {{- '</tools><|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') -}}
    {%- if message['role'] == 'system' and loop.first and tools -%}
        {{- '\n\n<tools>\n' -}}
        {%- for tool in tools -%}{{- tool | tojson + '\n' -}}{%- endfor -%}
        {{- '</tools>' -}}
    {%- endif -%}
    {%- for call in message['tool_calls'] or [] -%}
        {%- set fn = call['function'] if call['function'] is defined else call -%}
        {%- set args = fn['arguments'] if fn['arguments'] is defined else {} -%}
        {{- '\n' if message['content'] or not loop.first else '' -}}
        {{- '<tool_call>\n{"name": ' + fn['name'] | tojson + ', "arguments": ' -}}
        {{- (args if args is string else args | tojson) + '}\n</tool_call>' -}}
    {%- endfor -%}
    {{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""

TEMPLATES = {"nemotron": NEMOTRON_TEMPLATE, "chatml": CHATML_TEMPLATE}
STOP_STRINGS = {"nemotron": ("<extra_id_1>",), "chatml": ("<|im_end|>",), "mistral": ("</s>",)}
TOOL_STYLES = {"nemotron": "nemotron", "chatml": "chatml", "mistral": "mistral"}


@dataclass(frozen=True)
class ChatFormat:
    """How conversations become prompts for one model, and where its replies stop."""

    name: str  # nemotron | chatml | mistral | model
    template: str | None  # Jinja source; None for mistral (mistral-common renders it)
    stop_strings: tuple[str, ...]  # the reply ends at the first of these (not part of the reply)

    @property
    def tool_style(self) -> str | None:
        """The tool-call syntax replies use (`minitron.chat.tools`); None: look for any known one."""
        return TOOL_STYLES.get(self.name)


def _own_template(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return template or None


def _is_tekken(vocab: dict[str, int]) -> bool:
    """Mistral-NeMo's Tekken vocabulary (its control tokens at their ids)."""
    return len(vocab) == 131072 and vocab.get("[INST]") == 3 and vocab.get("[TOOL_CALLS]") == 9


def detect_format(tokenizer) -> str:
    """`mistral` for the Tekken vocabulary (mistral-common is its reference renderer), else the tokenizer's own
    template when it has one, else a format guessed from its special tokens."""
    vocab = tokenizer.get_vocab()
    if _is_tekken(vocab):
        return "mistral"
    if _own_template(tokenizer):
        return "model"
    if "<extra_id_1>" in vocab:
        return "nemotron"
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "chatml"
    raise MinitronError("the model's tokenizer has no chat template and no known chat tokens; "
                        "pass --template nemotron, chatml or mistral")


def _model_stops(tokenizer, template: str) -> tuple[str, ...]:
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    for marker in ("<|im_end|>", "<extra_id_1>", "<|eot_id|>", "<end_of_turn>"):
        if marker in template and marker not in stops:
            stops.append(marker)
    return tuple(stops)


def get_format(tokenizer, name: str = "auto") -> ChatFormat:
    """The chat format `name` (or the detected one for 'auto') for this tokenizer."""
    name = detect_format(tokenizer) if name == "auto" else name
    if name == "model":
        template = _own_template(tokenizer)
        if template is None:
            raise MinitronError("the model's tokenizer has no chat template; pass --template nemotron, chatml "
                                "or mistral")
        return ChatFormat("model", template, _model_stops(tokenizer, template))
    if name == "mistral":
        check_tekken_vocabulary(tokenizer)
        return ChatFormat("mistral", None, STOP_STRINGS["mistral"])
    if name not in TEMPLATES:
        raise MinitronError(f"unknown chat template {name!r}; choose auto, {', '.join(FORMATS)}")
    return ChatFormat(name, TEMPLATES[name], STOP_STRINGS[name])


def attach_template(tokenizer, name: str) -> ChatFormat:
    """Set a shipped template as the tokenizer's own, so `save_pretrained` keeps it; returns the format."""
    fmt = get_format(tokenizer, name)
    if fmt.template is None:
        raise MinitronError(f"the {name} format is rendered by mistral-common, not by a Jinja template")
    tokenizer.chat_template = fmt.template
    return fmt


def render(tokenizer, fmt: ChatFormat, messages: list[dict], tools: list[dict] | None = None,
           add_generation_prompt: bool = True, **extra) -> str:
    """The prompt text for `messages` (plus the assistant header when `add_generation_prompt`)."""
    if fmt.name == "mistral":
        return encode_mistral(messages, tools, add_generation_prompt)[1]
    try:
        return tokenizer.apply_chat_template(messages, tools=tools or None, chat_template=fmt.template,
                                             add_generation_prompt=add_generation_prompt, tokenize=False, **extra)
    except MinitronError:
        raise
    except Exception as e:  # jinja2 raises TemplateError, TypeError... for conversations a template refuses
        raise MinitronError(f"the {fmt.name} chat template cannot render this conversation: "
                            f"{type(e).__name__}: {str(e).splitlines()[0][:160]}") from None


def encode(tokenizer, fmt: ChatFormat, messages: list[dict], tools: list[dict] | None = None,
           add_generation_prompt: bool = True, **extra) -> list[int]:
    """Token ids of the prompt, exactly as `render` writes it (no extra BOS/EOS)."""
    if fmt.name == "mistral":
        return encode_mistral(messages, tools, add_generation_prompt)[0]
    text = render(tokenizer, fmt, messages, tools, add_generation_prompt, **extra)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
