"""Does llama.cpp itself continue a prompt as transformers does, from minitron's GGUF export? (issue 20 item 5)

    python benchmarks/llama_cpp_check.py [--model default] [--dtypes f16 q8_0] [--tokens 64] [--work runs/llama_cpp]

Exports --model to each dtype, then for a few chat prompts compares llama.cpp's greedy continuation (token ids)
with transformers' greedy generation from the Hugging Face model in fp32, and prints a Markdown table: whether
llama.cpp tokenised the chat prompt as the Hugging Face tokenizer does, how many generated tokens agree before the
first difference, and the worst shortfall: how far below its own top logit the Hugging Face model puts llama.cpp's
pick, after llama.cpp's prefix (0 when every pick is transformers' argmax; small when a near tie tipped).
llama.cpp runs through node-llama-cpp's prebuilt CPU build (`make setup` installs it into the virtual environment;
NODE_LLAMA_CPP names another copy of the package); nothing is compiled.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from minitron.export import export
from minitron.load import load_model, load_tokenizer

SCRIPT = Path(__file__).resolve().with_name("llama_cpp_greedy.mjs")
PROMPTS = ["What is the capital of France?", "Write a short poem about the sea.",
           "Explain in two sentences why the sky is blue."]


def node_llama_cpp() -> Path | None:
    """node-llama-cpp's package folder (with its prebuilt llama.cpp), or None when it or Node.js is missing."""
    package = Path(os.environ.get("NODE_LLAMA_CPP") or Path(sys.prefix) / "node" / "node_modules" / "node-llama-cpp")
    return package if shutil.which("node") and (package / "dist" / "index.js").is_file() else None


def llama_cpp_greedy(jobs: list[dict]) -> list[dict]:
    """Run llama_cpp_greedy.mjs: jobs [{"model", "ids" or "text", "n"}] -> [{"prompt": ids, "generated": ids}]."""
    package = node_llama_cpp()
    if package is None:
        raise RuntimeError("llama.cpp is not installed: `make setup` installs node-llama-cpp (needs Node.js >= 20)")
    jobs = [{**job, "model": str(job["model"])} for job in jobs]
    run = subprocess.run(["node", str(SCRIPT), str(package)], input=json.dumps(jobs), capture_output=True,
                         text=True)
    if run.returncode:
        raise RuntimeError(f"llama.cpp failed: {run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtypes", nargs="+", default=["f16", "q8_0"])
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per prompt (fewer if the model stops)")
    ap.add_argument("--work", type=Path, default=Path("runs/llama_cpp"))
    args = ap.parse_args(argv)

    model, tokenizer = load_model(args.model).float().eval(), load_tokenizer(args.model)
    references = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text)["input_ids"]
        with torch.no_grad():
            reply = model.generate(torch.tensor([ids]), max_new_tokens=args.tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        references.append((prompt, text, ids, reply))

    print("| dtype | prompt | prompt ids as HF | HF tokens | agreeing tokens | worst shortfall | "
          "llama.cpp's reply (if different) |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        start = time.time()
        out = export(args.model, args.work / f"model-{dtype}.gguf", dtype, overwrite=True)
        print(f"<!-- {dtype}: exported in {time.time() - start:.1f} s, {out.stat().st_size / 1e6:.0f} MB -->",
              flush=True)
        results = llama_cpp_greedy([{"model": out, "text": text, "n": len(reply)}
                                    for _, text, _, reply in references])
        for (prompt, _, ids, reply), result in zip(references, results):
            generated = result["generated"]
            agree = agreement(reply, generated)
            with torch.no_grad():
                logits = model(torch.tensor([ids + generated])).logits[0, len(ids) - 1:-1]
            shortfall = (logits.max(-1).values - logits[torch.arange(len(generated)), torch.tensor(generated)]).max()
            theirs = "" if agree == len(reply) else json.dumps(tokenizer.decode(generated))
            print(f"| {dtype} | {prompt} | {result['prompt'] == ids} | {len(reply)} | {agree} | {shortfall:.3f} | "
                  f"{theirs} |", flush=True)
    print(f"\nThe Hugging Face model's replies: {json.dumps([tokenizer.decode(r) for *_, r in references])}")


if __name__ == "__main__":
    main()
