"""Chat conversations as training tokens: rendered with the model's chat format, with a loss mask that is
1 exactly on what the assistant writes (its reply and the token/string that ends it), 0 on every prompt.

Input: records `{"messages": [{"role": ..., "content": ...}, ...], "tools": [...]}` ("tools" optional), read
from JSONL files by `minitron.data.sources.iter_conversations`.
"""
from __future__ import annotations

from minitron.chat.mistral import encode_mistral, reply_mask
from minitron.chat.templates import ChatFormat, render
from minitron.errors import MinitronError

ROLES = ("system", "user", "assistant", "tool")


def check_conversation(record, where: str) -> None:
    """Refuse records that are not `{"messages": [{"role", "content"}...]}` with at least one reply."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise MinitronError(f"{where} has no \"messages\" list (chat data is {{\"messages\": [{{\"role\": ..., "
                            "\"content\": ...}, ...]}})")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise MinitronError(f"{where}: every message needs a role among {', '.join(ROLES)}, got {m!r:.80}")
    if not any(m["role"] == "assistant" for m in messages):
        raise MinitronError(f"{where} has no assistant message: nothing to train on")
    if messages[0]["role"] == "assistant":
        raise MinitronError(f"{where} starts with an assistant message; a reply needs a prompt before it")


def reply_spans(tokenizer, fmt: ChatFormat, messages: list[dict],
                tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant reply, stop string included.

    A reply starts where the prompt for it (the conversation so far plus the assistant header) ends, and
    ends after the first stop string that follows; formats that leave the stop to the next turn
    (Nemotron's `<extra_id_1>`) get it appended after a final reply.
    """
    text = render(tokenizer, fmt, messages, tools, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, fmt, messages[:i], tools, add_generation_prompt=True)
        if not text.startswith(prompt):
            raise MinitronError(f"the {fmt.name} chat template renders earlier turns differently once later ones "
                                "follow, so replies cannot be located; use --chat-template nemotron or chatml")
        ends = [j + len(s) for s in fmt.stop_strings if (j := text.find(s, len(prompt))) >= 0]
        if not ends:
            text += fmt.stop_strings[0]
            ends = [len(text)]
        spans.append((len(prompt), min(ends)))
    return text, spans


def encode_with_mask(tokenizer, fmt: ChatFormat, messages: list[dict],
                     tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """(token ids, loss mask) of a conversation; the mask is 1 on assistant-written tokens only.

    Prompts and replies are tokenised piece by piece, as in generation: the prompt is one string, and
    the reply is what the model writes after it.
    """
    if fmt.name == "mistral":
        ids = encode_mistral(messages, tools, add_generation_prompt=False)[0]
        return ids, reply_mask(ids)
    text, spans = reply_spans(tokenizer, fmt, messages, tools)
    ids, mask, pos = [], [], 0
    for start, end in spans + [(len(text), len(text))]:
        for piece, flag in ((text[pos:start], 0), (text[start:end], 1)):
            if piece:
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += piece_ids
                mask += [flag] * len(piece_ids)
        pos = end
    return ids, mask
