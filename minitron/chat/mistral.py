"""Mistral-NeMo-Instruct-2407 prompts, rendered by `mistral-common` with the Tekken tokenizer it ships.

Mistral's reference renderer is code, not a Jinja template: `[AVAILABLE_TOOLS]` go right before the last
user turn, the system prompt is joined to the last user turn, a reply follows `[/INST]` or
`[/TOOL_RESULTS]` directly and ends with `</s>`. Conversations use the OpenAI/transformers message
dicts; tool-call ids (nine letters or digits in this format) are filled in when missing.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from minitron.errors import MinitronError, require

TEKKEN_FILE = "tekken_240718.json"  # the Mistral-NeMo vocabulary (131,072 tokens), Tekken v3 instruct format
REPLY_STARTS = ("[/INST]", "[/TOOL_RESULTS]")
PROMPT_STARTS = ("[INST]", "[TOOL_RESULTS]", "[AVAILABLE_TOOLS]")


def tekken_path() -> Path:
    mistral_common = require("mistral_common")  # optional: only the mistral format needs it

    return Path(mistral_common.__file__).parent / "data" / TEKKEN_FILE


@lru_cache(maxsize=2)
def mistral_tokenizer(finetuning: bool = False):
    """mistral-common's tokenizer for Mistral-NeMo; `finetuning` accepts conversations ending in a reply."""
    tekken = tekken_path()  # refuses a missing mistral-common in one line
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mode = ValidationMode.finetuning if finetuning else ValidationMode.test
    return MistralTokenizer.from_file(str(tekken), mode=mode)


def hf_tekken_tokenizer():
    """A transformers tokenizer with the same vocabulary (for models saved without one)."""
    from transformers.integrations.mistral import convert_tekken_tokenizer  # lazy: CLI start-up speed

    return convert_tekken_tokenizer(str(tekken_path()))


def check_tekken_vocabulary(tokenizer) -> None:
    """Refuse the mistral format for a model whose vocabulary is not Mistral-NeMo's Tekken."""
    vocab = tokenizer.get_vocab()
    ours = mistral_tokenizer().instruct_tokenizer.tokenizer
    if len(tokenizer) != ours.n_words or vocab.get("[INST]") != ours.get_special_token("[INST]"):
        raise MinitronError(f"the mistral format needs Mistral-NeMo's Tekken vocabulary ({ours.n_words:,} tokens, "
                            f"[INST] = {ours.get_special_token('[INST]')}); this tokenizer has {len(tokenizer):,}")


def _with_call_ids(messages: list[dict]) -> list[dict]:
    """Copies of the messages with ids on every tool call and tool result, and JSON-text arguments."""
    out, pending, counter = [], [], 0
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call.get("function", call)
                args = fn.get("arguments", {})
                counter += 1
                call_id = call.get("id") or f"call{counter:05d}"
                pending.append(call_id)
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
            m["tool_calls"] = calls
        elif m.get("role") == "tool" and not m.get("tool_call_id"):
            m["tool_call_id"] = pending.pop(0) if pending else f"call{counter:05d}"
        if m.get("role") == "tool" and not isinstance(m.get("content"), str):
            m["content"] = json.dumps(m.get("content"))
        out.append(m)
    return out


def encode_mistral(messages: list[dict], tools: list[dict] | None = None,
                   add_generation_prompt: bool = True) -> tuple[list[int], str]:
    """(token ids, rendered text) of a conversation; a final assistant turn is kept when not prompting."""
    from mistral_common.protocol.instruct.request import ChatCompletionRequest  # lazy: CLI start-up speed

    finetuning = bool(messages) and messages[-1].get("role") == "assistant" and not add_generation_prompt
    try:
        request = ChatCompletionRequest.from_openai(messages=_with_call_ids(messages), tools=tools or None)
        tokenized = mistral_tokenizer(finetuning).encode_chat_completion(request)
    except Exception as e:  # mistral-common raises its own validation errors, pydantic's, KeyError...
        raise MinitronError(f"mistral-common cannot render this conversation: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}") from None
    return list(tokenized.tokens), tokenized.text


def reply_mask(ids: list[int]) -> list[int]:
    """1 on the reply tokens of an encoded conversation: after `[/INST]`/`[/TOOL_RESULTS]`, up to `</s>`."""
    tok = mistral_tokenizer().instruct_tokenizer.tokenizer
    starts = {tok.get_special_token(s) for s in REPLY_STARTS}
    prompts = {tok.bos_id} | {tok.get_special_token(s) for s in PROMPT_STARTS}
    mask, inside = [], False
    for i in ids:
        inside = inside and i not in prompts
        mask.append(int(inside))
        if i in starts:
            inside = True
        elif i == tok.eos_id:
            inside = False
    return mask


def decode_mistral(ids: list[int]) -> str:
    """Text of token ids with control tokens such as `[TOOL_CALLS]` kept."""
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy  # lazy: CLI start-up speed

    return mistral_tokenizer().instruct_tokenizer.tokenizer.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)
