"""Prune a teacher larger than memory: Mistral-NeMo 12B's exact shape -> Mistral-NeMo-Minitron-8B's.

Generates a random bf16 checkpoint of Mistral-NeMo 12B's shape (hidden 5120, 40 layers, 32 heads, 8 KV,
head_dim 128, ffn 14336, vocab 131072, untied; ~24.5 GB in 5 GiB shards) tensor by tensor, tokenises a
little real text with the Tekken tokenizer (mistral_common's data folder), then runs the ordinary commands

    minitron score --model 12b --data data --calib-seqs 8 --seq-len 256 --batch-size 8 --out scores --stream
        [--dtype bfloat16: with --dtypes, once per compute dtype, compared]
    minitron prune --model 12b --scores scores --target hidden_size=4096,intermediate_size=11520 --out 8b --stream

(`--stream` so that a machine with memory to spare runs the same path; the report also records what the
automatic choice decides on this machine, without the flag). Reports the wall
time of each stage, the peak resident memory (a 0.1 s VmRSS sampler per stage, and ru_maxrss), and the
output's parameter count, from the written shards and from its config built on the meta device. Every
generated file is deleted at the end, also on failure.

    .venv/bin/python benchmarks/stream_12b.py [--device cpu|cuda] [--workdir DIR] [--layers N]
                                              [--dtypes float32 bfloat16] [--tokenizer DIR]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import torch

from minitron.cli import main as minitron
from minitron.prune import check_target, params_of, target_config
from minitron.shards import Checkpoint, SafetensorsWriter, TensorSpec
from minitron.lazy import choose_stream, skeleton

NEMO_12B = dict(hidden_size=5120, num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                intermediate_size=14336, vocab_size=131072, tie_word_embeddings=False, sliding_window=None,
                max_position_embeddings=131072, rope_theta=1_000_000.0, rms_norm_eps=1e-5, bos_token_id=1,
                eos_token_id=2, dtype="bfloat16")
TARGET = "hidden_size=4096,intermediate_size=11520"
STUDENT_PARAMS = 8_414_105_600  # Mistral-NeMo-Minitron-8B
GIB = 2**30


class RssSampler:
    """Peak VmRSS of this process per stage, sampled every `every` seconds by a daemon thread."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak, self.stop = every, 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.peak = max(self.peak, self.rss())

    def reset(self) -> None:
        self.peak = self.rss()


@contextmanager
def stage(name: str, report: dict, sampler: RssSampler):
    sampler.reset()
    start = time.time()
    print(f"\n=== {name}", flush=True)
    yield
    report[name] = {"wall_s": round(time.time() - start, 1), "peak_rss_gib": round(sampler.peak / GIB, 2)}
    print(f"=== {name}: {report[name]}", flush=True)


def teacher_config(layers: int):
    from transformers import MistralConfig

    return MistralConfig(**{**NEMO_12B, "num_hidden_layers": layers}, architectures=["MistralForCausalLM"])


def random_tensor(name: str, spec: TensorSpec, g: torch.Generator) -> torch.Tensor:
    """N(0, 0.02) weights; norms around 1."""
    t = torch.empty(spec.shape, dtype=spec.dtype)
    return t.normal_(1.0, 0.05, generator=g) if "norm" in name else t.normal_(0.0, 0.02, generator=g)


def generate(out: Path, layers: int, tokenizer: Path | None = None) -> None:
    """Config, Tekken tokenizer (or a copy of `tokenizer`) and random bf16 weights, one tensor at a time."""
    config = teacher_config(layers)
    out.mkdir()
    config.save_pretrained(out)
    if tokenizer is None:
        save_tekken(out)
    else:
        for f in tokenizer.iterdir():
            shutil.copy(f, out / f.name)
    model = skeleton(config, "meta")
    specs = {n: TensorSpec(torch.bfloat16, tuple(t.shape)) for n, t in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    with SafetensorsWriter(out, specs, max_shard_bytes=5 * GIB) as writer:
        for name, spec in specs.items():
            writer.write(name, random_tensor(name, spec, g))


def save_tekken(out: Path) -> None:
    """Mistral-NeMo's Tekken tokenizer (from mistral_common), converted to a Hugging Face tokenizer."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(resources.files("mistral_common") / "data" / "tekken_240911.json", Path(tmp) / "tekken.json")
        tok = AutoTokenizer.from_pretrained(tmp)
    tok.eos_token = "</s>"
    tok.save_pretrained(out)


def calibration_text(out: Path) -> list[str]:
    """The Python documentation sources of the documentation corpus when installed, else generated sentences."""
    from minitron.data import DOCS_SOURCES

    docs = Path(DOCS_SOURCES[0])
    if docs.is_dir():
        return [str(p) for p in sorted(docs.glob("library/*.rst.txt"))[:60]]
    words = "the model streams each layer from disk while the scores of every channel accumulate".split()
    out.mkdir()
    for d in range(40):
        (out / f"{d}.txt").write_text(" ".join(words[(d * 7 + i) % len(words)] for i in range(800)))
    return [str(out)]


def expected_params(layers: int) -> int:
    """The student's size from the target arithmetic alone (and the published figure at full depth)."""
    config = teacher_config(layers)
    sizes = check_target(config, {"hidden_size": 4096, "intermediate_size": 11520})
    expected = params_of(target_config(config, sizes))
    assert layers != 40 or expected == STUDENT_PARAMS, expected
    return expected


def verify(pruned: Path, expected: int) -> dict:
    """Parameters of the output: summed from the shards' headers, and from its config on the meta device."""
    from transformers import AutoConfig

    ckpt = Checkpoint.open(pruned)
    config = AutoConfig.from_pretrained(pruned)
    found = {"from_shards": ckpt.numel(), "from_config_on_meta": params_of(config),
             "dtypes": sorted({str(s.dtype) for s in ckpt.specs.values()}),
             "shards": len(set(ckpt.files.values())), "sizes": {"hidden_size": config.hidden_size,
                                                                  "intermediate_size": config.intermediate_size}}
    assert found["from_shards"] == found["from_config_on_meta"] == expected, found
    assert found["dtypes"] == ["torch.bfloat16"], found
    return found


def agreement(a: Path, b: Path) -> dict:
    """Share of the units that the 8B target keeps by activation importance (default aggregation) that the
    scores in `a` and in `b` both keep."""
    from minitron.importance import Scores

    sa, sb = Scores.load(a).tensors, Scores.load(b).tensors
    keep = {"hidden": 4096, "mlp": 11520}
    out = {}
    for kind, k in keep.items():
        ta, tb = sa[f"activation/mean-l2/{kind}"], sb[f"activation/mean-l2/{kind}"]
        if kind == "mlp":  # per layer
            same = sum(len(set(x.topk(k).indices.tolist()) & set(y.topk(k).indices.tolist())) for x, y in zip(ta, tb))
            out[kind] = round(same / (k * len(ta)), 4)
        else:
            out[kind] = round(len(set(ta.topk(k).indices.tolist()) & set(tb.topk(k).indices.tolist())) / k, 4)
    return out


def run(work: Path, layers: int, device: str, dtypes: list[str], tokenizer: Path | None = None) -> dict:
    report, sampler = {"layers": layers, "device": device}, RssSampler()
    ckpt, data, scores, pruned = work / "nemo-12b", work / "data", work / "scores", work / "minitron-8b"
    with stage("generate", report, sampler):
        generate(ckpt, layers, tokenizer)
    report["teacher_gb"] = round(sum(f.stat().st_size for f in ckpt.glob("*.safetensors")) / 1e9, 2)
    report["auto_choice_streams"] = choose_stream(ckpt, None)
    with stage("data", report, sampler):
        minitron(["data", "--source", *calibration_text(work / "text"), "--tokenizer", str(ckpt), "--out", str(data),
                  "--glob", "*.txt", "--max-tokens", "60000", "--dev-fraction", "0.1", "--test-fraction", "0.1"])
    for i, dtype in enumerate(dtypes):  # the first dtype's scores prune; the others are compared with them
        with stage("score" if i == 0 else f"score_{dtype}", report, sampler):
            minitron(["score", "--model", str(ckpt), "--data", str(data), "--calib-seqs", "8", "--seq-len", "256",
                      "--batch-size", "8", "--out", str(scores if i == 0 else work / f"scores-{dtype}"),
                      "--device", device, "--dtype", dtype, "--stream"])
        if i:
            shared = agreement(scores, work / f"scores-{dtype}")
            report[f"score_{dtype}"]["kept_units_shared_with_" + dtypes[0]] = shared
    with stage("prune", report, sampler):
        minitron(["prune", "--model", str(ckpt), "--scores", str(scores), "--target", TARGET, "--out", str(pruned),
                  "--stream"])
    report["student"] = verify(pruned, expected_params(layers))
    report["ru_maxrss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where to put ~42 GB")
    parser.add_argument("--device", default="cpu", help="where the layer math runs: cpu or cuda")
    parser.add_argument("--layers", type=int, default=40, help="fewer decoder layers for a quick trial")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="score with each compute dtype in turn (the first one's scores prune)")
    parser.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer directory to use instead of "
                        "converting Tekken from mistral_common (for machines without it: see gpu_check.sh)")
    args = parser.parse_args()
    need = 42e9 * args.layers / 40 + 3e9
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        sys.exit(f"need {need / 1e9:.0f} GB free in {args.workdir}, have {free / 1e9:.0f} GB (use --workdir)")
    work = Path(tempfile.mkdtemp(prefix="minitron-stream-12b-", dir=args.workdir))
    start = time.time()
    try:
        report = run(work, args.layers, args.device, args.dtypes, args.tokenizer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["total_wall_s"] = round(time.time() - start, 1)
    report["cleaned_up"] = not work.exists()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
