"""Does a (compressed) model still keep its chat format? Share of greedy replies to held-out prompts that
end with the stop token and are well formed (no leaked turn markers, every tool call parses), and, for
prompts that offer tools, the share of tool-call replies that parse.

    python benchmarks/chat_format_check.py --model runs/chat/student --prompts runs/chat/heldout.jsonl \
        [--model default ...] [--template auto] [--max-new-tokens 160] [--batch-size 16] [--out result.json]

Prompts are JSONL records {"prompt": ...} or {"messages": [...]}, optionally with "tools". Several
--model values are measured one after another in the same run, so their figures compare.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from minitron.chat.tools import ToolCall, has_tool_call, parse_tool_calls

MARKERS = ("<|im_start|>", "<|im_end|>", "<extra_id_0>", "<extra_id_1>", "[INST]", "[/INST]", "</s>")


def check_reply(completion, fmt) -> dict:
    """What one reply got right: stopped, well formed, and its tool calls."""
    calls = parse_tool_calls(completion.text, fmt.tool_style)
    parsed = all(isinstance(c, ToolCall) for c in calls)
    leaked = any(m in completion.text for m in MARKERS)
    return {"stopped": completion.stopped, "well_formed": completion.stopped and not leaked and parsed,
            "tool_call": has_tool_call(completion.text, fmt.tool_style), "tool_call_parses": bool(calls) and parsed}


def summarise(checks: list[dict], offered_tools: list[bool]) -> dict:
    n = len(checks)
    tool_replies = [c for c, t in zip(checks, offered_tools) if t and c["tool_call"]]
    return {"replies": n,
            "stopped_share": sum(c["stopped"] for c in checks) / n,
            "well_formed_share": sum(c["well_formed"] for c in checks) / n,
            "prompts_with_tools": sum(offered_tools),
            "tool_call_replies": len(tool_replies),
            "tool_call_parse_share": (sum(c["tool_call_parses"] for c in tool_replies) / len(tool_replies)
                                      if tool_replies else None)}


def measure(model_spec: str, records: list[dict], template: str, max_new_tokens: int, batch_size: int) -> dict:
    from minitron.chat.cli import load_chat_model
    from minitron.chat.generate import Sampling, complete_many
    from minitron.chat.templates import encode

    model, tok, fmt = load_chat_model(model_spec, template, "auto")
    prompts = [encode(tok, fmt, r["messages"], r.get("tools")) for r in records]
    start = time.time()
    replies = complete_many(model, tok, fmt, prompts, Sampling(max_new_tokens), batch_size)
    result = summarise([check_reply(c, fmt) for c in replies], [bool(r.get("tools")) for r in records])
    return {"model": model_spec, "format": fmt.name, **result, "seconds": round(time.time() - start, 1),
            "sample": {"prompt": records[0]["messages"][-1]["content"][:200], "reply": replies[0].text[:400]}}


def read_records(path: Path, limit: int | None) -> list[dict]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in records:
        r.setdefault("messages", [{"role": "user", "content": r.get("prompt", "")}])
    return records[:limit]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", required=True, help="model(s): 'default', HF directories or .gguf")
    p.add_argument("--prompts", type=Path, required=True, help="held-out prompts (JSONL)")
    p.add_argument("--template", default="auto", choices=["auto", "nemotron", "chatml", "mistral", "model"])
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="also write the results here (JSON)")
    args = p.parse_args()
    records = read_records(args.prompts, args.limit)
    results = []
    for spec in args.model:
        results.append(measure(spec, records, args.template, args.max_new_tokens, args.batch_size))
        print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
