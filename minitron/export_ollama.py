"""What a GGUF export says about itself and how Ollama runs it: the `general.*` identity keys (name, licence, base
models from the model card) and the Ollama `Modelfile` written beside the file.

Ollama's templates are Go templates, not Jinja: for the chat formats minitron knows (minitron.chat.templates:
chatml, nemotron, mistral) the Modelfile carries the same layout as a Go template over `.Messages`; a tokenizer
whose own template renders exactly as one of them (SmolLM2's is ChatML with a default system prompt) gets that
format's template, and its default system prompt as `SYSTEM`. Any other template is left to Ollama, which derives
one from the chat template stored in the GGUF.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf

from minitron.chat.templates import TEMPLATES, get_format
from minitron.errors import MinitronError

# The formats' layouts without tools (Ollama passes tool calls its own way), in Ollama's Go template language.
# chatml: <|im_start|>{role}\n{content}<|im_end|>\n per message, then the assistant header.
CHATML_GO = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
# nemotron: the System turn always (with the system prompt if any), then User/Assistant/Tool turns, each ended by
# a newline, then the Assistant header. (The Jinja template also strips each message's content; Go cannot.)
NEMOTRON_GO = """<extra_id_0>System
{{- range .Messages }}{{ if eq .Role "system" }}
{{ .Content }}{{ end }}{{ end }}

{{ range .Messages }}{{ if eq .Role "user" }}<extra_id_1>User
{{ .Content }}
{{ else if eq .Role "assistant" }}<extra_id_1>Assistant
{{ .Content }}
{{ else if eq .Role "tool" }}<extra_id_1>Tool
{{ .Content }}
{{ end }}{{ end }}<extra_id_1>Assistant
"""
# mistral (Mistral-NeMo-Instruct-2407, Tekken v3): [INST]{user}[/INST]{reply}</s>, the system prompt joined to the
# last user turn (llama.cpp adds the <s> the tokenizer starts with).
MISTRAL_GO = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}[INST]{{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}{{ .Content }}</s>
{{- end }}
{{- end }}"""
GO_TEMPLATES = {"chatml": CHATML_GO, "nemotron": NEMOTRON_GO, "mistral": MISTRAL_GO}
# a conversation to compare templates on: with the system turn given, and without it (to find a default one)
PROBE = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi!"},
         {"role": "user", "content": "How are you?"}]
MARK = "\x00SYSTEM\x00"


def model_card(path: Path) -> dict:
    """The YAML front matter of the model directory's README.md (the Hub's model card), read as llama.cpp's
    converter reads it; {} when there is none."""
    try:
        return gguf.Metadata.load_model_card(path)
    except Exception as e:  # yaml raises its own errors for a malformed card
        print(f"warning: cannot read the front matter of {path / 'README.md'} ({type(e).__name__}); the GGUF gets "
              f"no licence or base model", flush=True)
        return {}


def add_identity(writer: gguf.GGUFWriter, name: str, path: Path) -> None:
    """general.name, and general.license and general.base_model.* from the model card when it names them."""
    writer.add_name(name)
    card = model_card(path)
    license = card.get("license")
    if isinstance(license, list):
        license = ", ".join(map(str, license))
    if license:
        writer.add_license(str(license))
    bases = card.get("base_model") or []
    bases = [b for b in ([bases] if isinstance(bases, str) else bases) if isinstance(b, str) and b.strip()]
    if bases:
        writer.add_base_model_count(len(bases))
    for i, base in enumerate(bases):
        org, _, model = base.strip().rpartition("/")
        writer.add_base_model_name(i, model)
        if org:  # a Hub id org/name
            writer.add_base_model_organization(i, org)
            writer.add_base_model_repo_url(i, f"https://huggingface.co/{org}/{model}")


def _render(tokenizer, template: str, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                             tokenize=False)
    except Exception:  # a template may refuse a conversation (raise_exception, roles it does not know)
        return None


def _same_layout(tokenizer, own: str, known: str) -> tuple[bool, str | None]:
    """Whether the tokenizer's own template renders as `known` does, and the default system prompt it adds when
    the conversation has none (None if it adds none)."""
    with_system = [{"role": "system", "content": "Be brief."}, *PROBE]
    first = _render(tokenizer, own, with_system)
    if first is None or first != _render(tokenizer, known, with_system):
        return False, None
    bare = _render(tokenizer, own, PROBE)
    if bare is not None and bare == _render(tokenizer, known, PROBE):
        return True, None
    marked = _render(tokenizer, known, [{"role": "system", "content": MARK}, *PROBE])
    if bare is None or marked is None or marked.count(MARK) != 1:
        return False, None
    before, after = marked.split(MARK)
    if not (bare.startswith(before) and bare.endswith(after)) or len(bare) < len(before) + len(after):
        return False, None
    system = bare[len(before):len(bare) - len(after)]
    same = _render(tokenizer, known, [{"role": "system", "content": system}, *PROBE]) == bare
    return (True, system) if same and system else (False, None)


def chat_layout(tokenizer) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(format, default system prompt, stop strings): format is chatml, nemotron or mistral when the tokenizer's
    chat format is one minitron knows, 'model' for another template of its own, None when it has none."""
    try:
        fmt = get_format(tokenizer, "auto")
    except MinitronError:  # no template and no known chat tokens: a plain completion model
        return None, None, ()
    if fmt.name != "model":
        return fmt.name, None, fmt.stop_strings
    for name, known in TEMPLATES.items():
        same, system = _same_layout(tokenizer, fmt.template, known)
        if same:
            return name, system, get_format(tokenizer, name).stop_strings
    return "model", None, fmt.stop_strings


def modelfile(gguf_name: str, tokenizer) -> str:
    """The Modelfile that imports the GGUF file `gguf_name` (in the same folder) into Ollama."""
    name, system, stops = chat_layout(tokenizer)
    lines = [f"# Ollama: ollama create NAME -f {Path(gguf_name).stem}.Modelfile && ollama run NAME",
             f"FROM ./{gguf_name}"]
    if name in GO_TEMPLATES:
        lines.append(f"# the {name} chat format, as a Go template (without tools)")
        lines.append(f'TEMPLATE """{GO_TEMPLATES[name]}"""')
        if system:
            lines.append(f'SYSTEM """{system}"""')
    elif name == "model":
        lines.append("# the tokenizer's chat template is none of minitron's formats (chatml, nemotron, mistral): "
                     "Ollama uses the template stored in the GGUF (tokenizer.chat_template)")
    else:
        lines.append("# the tokenizer has no chat template: a completion model (Ollama passes the prompt as is)")
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"
