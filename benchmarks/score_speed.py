"""The demo's score stage, as it was and as it is: the same `minitron score` call that `compress --config
configs/demo.yaml` makes (its criterion, calibration sequences and length, the removal losses of the block of layers
it drops), in fresh processes, alternately (--rounds each). Arms:

  before  as before issue 32: the single-layer removal losses too (`--layer-loss`, what every depth pruning computed),
          glibc's default malloc (every block over 32 MB mapped afresh)
  glibc   only the block length it removes, glibc's default malloc
  now     only the block length it removes, freed memory kept for reuse (what `minitron score` does on the CPU)
  bf16    as now, computed in bf16 (`--dtype bfloat16`)

    python benchmarks/score_speed.py [--rounds 2] [--arms before glibc now bf16] [--out docs/score_speed.json]

Every fp32 arm's tensors must agree with `now`'s to within 1e-5; bf16's largest differences are reported, with
whether it removes the same block (`--report` compares the saved scores again, with the JSON's seconds). Beside
them, the least time the call can take: its matmul FLOPs (`walk_flops`) over this CPU's measured matmul rate in
fp32 and bf16. Prints each run's wall time and, last, a JSON line: the median seconds of each arm, their ratios to
`now`, the differences. The demo's data is the default corpus.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from minitron.arch import head_dim
from minitron.load import load_config

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import machine  # noqa: E402 (sibling scripts)
from throughput import matmul_peak  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
BLOCK = 30 - DEMO["target"]["num_hidden_layers"]  # the layers the demo drops (SmolLM2-135M has 30)
ARMS = {"before": ["--layer-loss"], "glibc": [], "now": [], "bf16": ["--dtype", "bfloat16"]}
GLIBC = ("before", "glibc")  # run with scoring's reuse of freed memory switched off, as before issue 32
LAUNCH = """import sys, minitron.importance.walk as walk
if sys.argv[1] == "off":
    walk.reuse_freed_memory = lambda: False
from minitron.cli import main
main(sys.argv[2:])
"""


def run(arm: str, out: Path) -> float:
    cmd = [sys.executable, "-c", LAUNCH, "off" if arm in GLIBC else "on", "score", "--model", "default", "--out",
           str(out), "--overwrite", "--calib-seqs", str(DEMO["prune"]["calib_seqs"]), "--seq-len",
           str(DEMO["prune"]["seq_len"]), "--layer-loss-seqs", str(min(8, DEMO["prune"]["calib_seqs"])),
           "--block-sizes", str(BLOCK), "--criteria", "activation", *ARMS[arm]]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.time() - start


def differences(tensors: dict, arm: str) -> dict:
    """Largest difference of an arm's tensors from `now`'s, over the tensors both hold, relative to each tensor's
    largest magnitude (activation scores are sums of squares, losses are nats); the block losses' largest difference
    in nats, and whether the block it removes (the smallest loss) is the same."""
    shared = sorted(set(tensors[arm]) & set(tensors["now"]))
    a, b = ({k: t[k].float() for k in shared} for t in (tensors[arm], tensors["now"]))
    rel = {k: float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in shared}
    blocks = [k for k in shared if "block_loss" in k]
    return {"max_rel_diff": max(rel.values()), "block_loss_max_abs_diff": max(float((a[k] - b[k]).abs().max())
                                                                               for k in blocks),
            "shared_tensors": len(shared),
            "only_here": sorted(set(tensors[arm]) - set(tensors["now"])),
            "same_block": all(int(tensors[arm][k].argmin()) == int(tensors["now"][k].argmin()) for k in blocks)}


def walk_flops(config, calib_seqs: int, loss_seqs: int, seq_len: int, k: int) -> float:
    """The matmul FLOPs the score call cannot avoid (2 a weight a token; attention causal, 2 x heads x head size x
    length a token): every calibration window through every layer; each removal window's sequences through every
    layer (the intact model), through the layers after each block of k, and through lm_head, for the intact model
    and each of the L - k + 1 blocks."""
    layers, d, hidden = config.num_hidden_layers, head_dim(config), config.hidden_size
    per_layer = 2 * (hidden * (config.num_attention_heads + 2 * config.num_key_value_heads) * d
                     + config.num_attention_heads * d * hidden + 3 * hidden * config.intermediate_size)

    def layer(n: int) -> float:  # a token's FLOPs in one layer, at sequence length n
        return per_layer + 2 * config.num_attention_heads * d * n

    blocks = layers - k + 1
    calibration = calib_seqs * seq_len * layers * layer(seq_len)
    n = seq_len - 1  # a removal window's sequences predict their last n tokens
    removal = loss_seqs * n * ((layers + blocks * (blocks - 1) // 2) * layer(n) + (blocks + 1) * 2 * hidden
                               * config.vocab_size)
    return calibration + removal


def matmul_rates() -> dict[str, float]:
    """This CPU's matmul rate (TFLOP/s) in fp32 and bf16: the better of a 1,024-square product and one of the
    walk's own shapes (2,048 tokens through the default teacher's MLP)."""
    cpu = torch.device("cpu")
    return {dtype: max(matmul_peak(cpu, getattr(torch, dtype)),
                       matmul_peak(cpu, getattr(torch, dtype), (2048, 576, 1536))) / 1e12
            for dtype in ("float32", "bfloat16")}


def bound(summary: dict) -> str:
    """The least time the call can take at the measured matmul rates (a sentence under the table)."""
    rates, flop = summary["matmul_tflops"], summary["walk_tflop"]
    fp32 = flop / rates["float32"]  # seconds at the bare fp32 matmul rate
    return (f"The call's unavoidable matmuls are {flop:.1f} TFLOP (`walk_flops`); at this CPU's measured matmul rate "
            f"(fp32 {rates['float32'] * 1e3:.0f} GFLOP/s, bf16 {rates['bfloat16'] * 1e3:.0f}, in the same run) that "
            f"is at least {fp32:.0f} s in fp32 and {flop / rates['bfloat16']:.0f} s in bf16. *now* runs the whole "
            f"call at {fp32 / summary['median_s']['now']:.0%} of the fp32 matmul rate; 60 s would need "
            f"{fp32 / 60:.0%}.\n")


def table(summary: dict) -> str:
    """docs/performance.md's table (results_tables renders it from the JSON)."""
    lines = ["| arm | median s | vs now | largest difference from now (relative) | block losses' (nats) | "
             "same block removed |", "|---|---|---|---|---|---|"]
    for arm, sec in summary["median_s"].items():
        d = summary["differences"].get(arm)
        lines.append(f"| {arm} | {sec:.1f} | {summary['vs_now'][arm]:.2f}× | "
                     + (f"{d['max_rel_diff']:.2g} | {d['block_loss_max_abs_diff']:.2g} | "
                        f"{'yes' if d['same_block'] else 'no'} |" if d else "– | – | – |"))
    return ("\n".join(lines) + f"\n\n{summary['machine']}; `{summary['command']}`.\n"
            + ("\n" + bound(summary) if "walk_tflop" in summary else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--work", type=Path, default=Path("runs/bench/score_speed"))
    p.add_argument("--out", type=Path, default=Path("docs/score_speed.json"))
    p.add_argument("--report", action="store_true", help="compare the scores in --work again, with --out's seconds")
    args = p.parse_args()
    arms = list(dict.fromkeys([*args.arms, "now"]))  # `now` is what the others are compared with
    seconds = json.loads(args.out.read_text())["seconds"] if args.report else {arm: [] for arm in arms}
    for r in range(0 if args.report else args.rounds):
        for arm in arms:
            seconds[arm].append(run(arm, args.work / arm))
            print(f"round {r}: {arm:>6} {seconds[arm][-1]:.1f} s", flush=True)
    tensors = {arm: load_file(args.work / arm / "scores.safetensors") for arm in arms}
    median = {arm: statistics.median(s) for arm, s in seconds.items()}
    flop = walk_flops(load_config("default"), DEMO["prune"]["calib_seqs"], min(8, DEMO["prune"]["calib_seqs"]),
                      DEMO["prune"]["seq_len"], BLOCK)
    summary = {"seconds": seconds, "median_s": median,
               "vs_now": {arm: median[arm] / median["now"] for arm in arms},
               "differences": {arm: differences(tensors, arm) for arm in arms if arm != "now"},
               "machine": machine(), "walk_tflop": flop / 1e12,
               "matmul_tflops": json.loads(args.out.read_text())["matmul_tflops"] if args.report else matmul_rates(),
               "command": json.loads(args.out.read_text())["command"] if args.report else
               f"python benchmarks/score_speed.py --rounds {args.rounds} --arms " + " ".join(args.arms)}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("median_s", "vs_now", "differences")}))


if __name__ == "__main__":
    main()
