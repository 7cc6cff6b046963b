"""How fast does the teacher write its replies (`minitron data --generate`)? The same bundled prompts answered
greedily, in one process, each way in turn: padded batches through `model.generate` (--padded: replies at once,
each batch running until its longest reply ends) and continuous batching through transformers' `generate_batch`
(--continuous: at most that many replies at once, a finished reply's place taken by the next prompt at the next
step). Prints each way's generated tokens/s, its speed against the first way, and how many replies are the same
token for token as the first way's. Measured (docs/performance.md): 64 a padded batch is the fastest on a 2-core
CPU, continuous batching slower than either padded way; `data --generate` and `minitron generate` use padded batches
of 64.

    python benchmarks/generate_speed.py [--prompts 64] [--padded 16 64] [--continuous 16 64]
                                        [--out docs/generate_speed.json]
    python benchmarks/generate_speed.py --dry   # a tiny random teacher, in seconds (the test's)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import machine  # noqa: E402 (a sibling script)

from minitron.chat.generate import (Completion, Sampling, complete_many, generation_config, pad_id,  # noqa: E402
                                    room, scan_completion, stop_token_ids)
from minitron.chat.templates import encode, get_format  # noqa: E402
from minitron.data.prompts import bundled_prompts  # noqa: E402
from minitron.load import load_model, load_tokenizer  # noqa: E402

PAGE_TOKENS = 64  # tokens of one page of continuous batching's paged KV cache


def table(summary: dict) -> str:
    """docs/performance.md's table (results_tables renders it from the JSON)."""
    first = next(iter(summary["runs"]))
    lines = [f"| way | seconds | generated tokens | tokens/s | speed vs {first} | replies as with {first} |",
             "|---|---|---|---|---|---|"]
    for way, r in summary["runs"].items():
        lines.append(f"| {way} | {r['seconds']:.1f} | {r['tokens']:,} | {r['tokens_per_s']:.1f} | "
                     f"{summary['speedup'][way]:.2f}× | {r['same_as_first']} of {summary['prompts']} |")
    return "\n".join(lines) + (f"\n\nThe first {summary['prompts']} bundled prompts, greedy, at most "
                               f"{summary['max_new_tokens']} tokens a reply, on the default teacher (fp32); "
                               f"{summary['machine']}; `{summary['command']}`.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=64, help="the first N bundled prompts")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--padded", type=int, nargs="*", default=[16, 64], help="padded batch sizes (model.generate)")
    p.add_argument("--continuous", type=int, nargs="*", default=[16, 64], help="replies at once (generate_batch)")
    p.add_argument("--out", type=Path, default=Path("docs/generate_speed.json"))
    p.add_argument("--dry", action="store_true", help="a tiny random teacher (for the tests)")
    args = p.parse_args()
    model, tok = (dry_teacher() if args.dry else (load_model("default"), load_tokenizer("default")))
    fmt = get_format(tok, "auto")
    prompts = [encode(tok, fmt, q["messages"], None) for q in bundled_prompts(args.prompts)]
    sampling = Sampling(args.max_new_tokens)  # greedy, as `data --generate` by default
    ways = [("padded", n) for n in args.padded] + [("continuous", n) for n in args.continuous]
    runs, first = {}, None
    for kind, n in ways:
        start = time.time()
        if kind == "padded":  # minitron's way (`data --generate`, `generate --input`): batches of similar length
            done = complete_many(model, tok, fmt, prompts, sampling, n, progress=False)
        else:
            done = complete_continuous(model, tok, fmt, prompts, sampling, n)
        seconds = time.time() - start
        ids = [c.token_ids for c in done]
        first = first or ids
        tokens = sum(map(len, ids))
        same = sum(a == b for a, b in zip(ids, first))
        runs[f"{kind} {n}"] = {"seconds": round(seconds, 1), "tokens": tokens,
                               "tokens_per_s": round(tokens / seconds, 1), "same_as_first": same}
        print(f"{kind:>10} {n:>3}: {seconds:7.1f} s  {tokens:,} tokens  {tokens / seconds:6.1f} tokens/s  "
              f"{same} of {len(ids)} replies as the first way's", flush=True)
    base = next(iter(runs.values()))["tokens_per_s"]
    summary = {"prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "runs": runs,
               "speedup": {k: round(r["tokens_per_s"] / base, 2) for k, r in runs.items()}, "machine": machine(),
               "threads": torch.get_num_threads(), "dry": args.dry,
               "command": "python benchmarks/generate_speed.py " + " ".join(sys.argv[1:])}
    if not args.dry:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


@torch.no_grad()
def complete_continuous(model, tok, fmt, prompts: list[list[int]], sampling: Sampling,
                        batch_size: int) -> list[Completion]:
    """The replies by continuous batching (transformers' `generate_batch`): at most `batch_size` written at once, a
    finished reply's place taken by the next prompt at the next step. Its paged KV cache is sized for these prompts
    (transformers would size it from the free memory, which takes minutes on a CPU)."""
    from transformers import ContinuousBatchingConfig

    stop_ids = stop_token_ids(model, tok, fmt)
    longest = max(map(len, prompts))
    sampling = room(model, longest, sampling)
    config = generation_config(tok, fmt, stop_ids, pad_id(tok, stop_ids), sampling)
    config.stop_strings = None  # continuous batching has no stop-string criterion (the scan cuts the reply)
    pages = -(-(longest + sampling.max_new_tokens) // PAGE_TOKENS)  # of one reply, at most
    cache = ContinuousBatchingConfig(page_size=PAGE_TOKENS, num_blocks=batch_size * pages + 1,
                                     max_requests_per_batch=batch_size, max_batch_tokens=max(4 * longest, batch_size),
                                     allow_block_sharing=False)
    out = model.generate_batch(prompts, generation_config=config, continuous_batching_config=cache, warmup=False)
    replies = [out[f"req_{i}"] for i in range(len(prompts))]  # a fresh manager numbers the requests in order
    assert [r.prompt_ids for r in replies] == prompts and not any(r.error for r in replies)
    return [scan_completion(tok, fmt, stop_ids, r.generated_tokens) for r in replies]


def dry_teacher():
    """A tiny random Llama with the default tokenizer (its chat template): replies of random tokens."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = load_tokenizer("default")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                                         eos_token_id=tok.eos_token_id, tie_word_embeddings=True))
    return model.eval(), tok


if __name__ == "__main__":
    main()
