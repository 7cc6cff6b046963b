"""Which corpus should distillation use by default? The real default teacher (SmolLM2-135M-Instruct) pruned once to
the demo's shape (calibrated on the documentation), then the same student distilled for the same tokens on each
corpus of --rows (a part, a mix or parts at shares: `minitron data --corpus`), once per data order (--seeds).

Every student is measured on each kind of text minitron's corpora hold, on its dev split (selection) and its test
split (reports): the documentation, prose (Austen, Shakespeare, Milton), reference English (dictionaries, WordNet)
and dialogue (fortunes, chatterbot-corpus); on out-of-domain English that no corpus holds (the King James Bible); and
by its KL from the teacher on each test split. The selection measure is `general`, the mean of the four kinds' dev
losses (each kind weighs the same, whatever a row trains on); each row is compared with --baseline seed by seed
(paired differences with 95% intervals, `minitron.stats`).

    python benchmarks/corpus_mix.py [--tokens 32768] [--rows docs broad] [--seeds 0 1 2] [--out docs/corpus_mix.md]
    python benchmarks/corpus_mix.py --dry   # a tiny random teacher and generated text, in seconds (the test's)
    python benchmarks/corpus_mix.py --report --against broad   # the report again from its JSON, more pairings

A run whose student is already in --work (same corpus, recipe, budget and seed) is measured again without retraining;
a run already measured in --out's JSON (same budget, windows, recipe and seed) is kept as it is, so that a new row
can be added to a finished comparison without running its other rows again.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from minitron.data import PARTS, TokenData, build_data, default_data, mix_data
from minitron.data.prompts import Generation
from minitron.distill import TrainConfig, distill
from minitron.eval import measure, ood_windows
from minitron.load import load_model, load_tokenizer
from minitron.pipeline import REPLY_TOKENS, reply_to
from minitron.prune import PruneConfig, prune
from minitron.stats import fmt_interval, fmt_mean_sd, paired, verdict

DEMO = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo.yaml").read_text())
TARGET = DEMO["target"]  # the demo's shape
RECIPE = dict(seq_len=256, micro_batch=4, global_batch_tokens=1024, lr=1e-3, min_lr=1e-4, loss="forward_kl",
              precision="fp32")  # benchmarks/recipe.py's win-b1k
KINDS = {kind: ",".join(p for p, part in PARTS.items() if part.kind == kind)  # each kind of text: its parts
         for kind in ("documentation", "prose", "reference", "dialogue")}
ROWS = {  # name: the corpus (`--corpus`) distilled on
    "docs": "docs",
    "broad": "broad",
    "natural": ",".join(PARTS),  # every part end to end, at its own size
    "docs60": "docs:0.6,austen:0.06,gutenberg:0.06,gcide:0.06,wordnet:0.06,devil:0.01,jargon:0.01,foldoc:0.02,"
              "fortunes:0.06,chatterbot:0.02",  # the default since (the general mix)
    "replies": "teacher replies",  # the teacher's own replies to --replies bundled prompts (`data --generate`)
}
# rows that join other rows' data at shares: the general mix with a tenth of the teacher's conversations, whole (its
# chat template and prompts trained on too, as docs/replies_mix.md measured: `mix_data(keep_masks=False)`)
MIXED = {"docs60+replies": (("docs60", 0.9), ("replies", 0.1))}
ROWS.update({name: ",".join(f"{row}:{share}" for row, share in parts) for name, parts in MIXED.items()})
OUT = Path("docs/corpus_mix.md")  # the report, unless --out or --dry says
MEASURES = ("dev_loss", "test_loss", "ood_loss", "test_kl")
DRY_TARGET = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
DRY_RECIPE = dict(RECIPE, seq_len=32, micro_batch=2, global_batch_tokens=128)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768, help="training tokens per run")
    p.add_argument("--rows", nargs="+", default=["docs", "broad"], choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data orders each row is trained with")
    p.add_argument("--baseline", default="docs", choices=list(ROWS))
    p.add_argument("--against", nargs="*", default=[], choices=list(ROWS),
                   help="more rows to pair every row against (a table each, after the baseline's)")
    p.add_argument("--val-seqs", type=int, default=32, help="windows per split and kind")
    p.add_argument("--replies", type=int, default=1000, help="bundled prompts the teacher answers (row replies)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"], help="of the distillation")
    p.add_argument("--work", type=Path, default=Path("runs/bench/corpus_mix"), help="pruned student and runs")
    p.add_argument("--out", type=Path, default=None, help="report (default: docs/corpus_mix.md; --dry: in --work)")
    p.add_argument("--dry", action="store_true", help="a tiny random teacher and generated text (for the tests)")
    p.add_argument("--report", action="store_true", help="rewrite --out from its JSON (new --against), run nothing")
    args = p.parse_args()
    args.out = args.out or (args.work / "corpus_mix.md" if args.dry else OUT)
    if args.report:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        args.tokens, args.seeds, args.baseline, args.val_seqs = (saved[k] for k in ("tokens", "seeds", "baseline",
                                                                                    "val_seqs"))
        args.precision = saved.get("precision", "fp32")
        write_report(args, {k: saved[k] for k in ("target", "teacher", "pruned", "rows", "replies") if k in saved})
        return
    torch.manual_seed(0)
    if args.dry:
        torch.set_num_threads(1)  # tiny models crawl on two threads of a busy machine
    teacher, target, recipe, kinds, rows = dry_setup(args) if args.dry else real_setup(args)
    recipe = {**recipe, "precision": args.precision}
    windows = {f"{split}:{kind}": TokenData.open(path).spread(split, args.val_seqs, recipe["seq_len"])
               for kind, path in kinds.items() for split in ("dev", "test")}
    windows["ood"] = ood_windows(load_tokenizer(teacher), recipe["seq_len"], args.val_seqs)
    pruned = args.work / "pruned"
    if not same_shape(pruned, target):  # calibrated on the documentation, for every row alike
        prune(model=teacher, target=target, out=pruned, data=kinds["documentation"], device="cpu", overwrite=True,
              prune=PruneConfig(calib_seqs=8 if args.dry else 32, seq_len=recipe["seq_len"]))
    teacher_model = load_model(teacher, device="cpu")
    results = {"target": target, "teacher": measured(teacher_model, None, windows),
               "pruned": measured(load_model(pruned), teacher_model, windows), "rows": earlier(args, target)}
    if any(name in rows for name in ("replies", *MIXED)):  # what the teacher's replies cost to write
        made = TokenData.open(row_data(args, "replies", teacher)).meta["generated"]
        log = Path(made["replies"]).with_suffix(".json")
        results["replies"] = {**made, "replies": Path(made["replies"]).name,  # the file in the cache's replies/
                              "runs": json.loads(log.read_text())["runs"]}
    for seed in args.seeds:  # seed by seed, so that the pairs complete as the run goes
        for name in args.rows:
            kept = results["rows"].get(name, {}).get("seeds", {}).get(str(seed))
            if kept and kept["recipe"] == {**recipe, "seed": seed} and results["rows"][name]["corpus"] == ROWS[name]:
                continue
            run = train(args, name, seed, teacher, recipe, pruned, rows[name], target)
            student = load_model(args.work / run_name(name, seed) / "student", device="cpu")
            row = results["rows"].setdefault(name, {"corpus": ROWS[name], "seeds": {}})
            row["seeds"][str(seed)] = {**run, **measured(student, teacher_model, windows)}
            print(f"{name:>8} seed {seed}  general dev {row['seeds'][str(seed)]['dev_loss']:.3f}  ood "
                  f"{row['seeds'][str(seed)]['ood_loss']:.3f}  ({run['wall_s']:.0f} s)", flush=True)
            write_report(args, results)  # after every run: a long run reports what it has


def earlier(args, target: dict) -> dict:
    """The rows already measured in --out's JSON with this budget, these windows and students of this shape (none
    for a dry run)."""
    record = args.out.with_suffix(".json")
    if args.dry or not record.is_file():
        return {}
    saved = json.loads(record.read_text())
    if (saved["tokens"], saved["val_seqs"], saved.get("target")) != (args.tokens, args.val_seqs, target):
        return {}
    return saved["rows"]


def same_shape(pruned: Path, target: dict) -> bool:
    """Whether --work holds a pruned student of the shape `target` asks for (a changed demo shape prunes again)."""
    config = pruned / "config.json"
    return config.is_file() and all(json.loads(config.read_text()).get(k) == v for k, v in target.items())


def real_setup(args):
    """The default teacher, the demo's shape and recipe, each kind's data and each row's corpus, in its tokenizer."""
    kinds = {kind: default_data("default", corpus=spec) for kind, spec in KINDS.items()}
    return "default", TARGET, RECIPE, kinds, {name: row_data(args, name, "default") for name in args.rows}


def row_data(args, name: str, teacher: str, base=None) -> Path:
    """A row's token data: its corpus, for `replies` the teacher's replies to the bundled prompts (generated once
    into the minitron cache; the data built from them in --work), for a MIXED row its rows' data joined at shares
    (`base(row)` gives the data of a row that is a corpus; the default's corpora unless a dry run says)."""
    if name in MIXED:
        out = args.work / f"{name}-{args.replies}"
        if not (out / "meta.json").is_file():
            parts = [row_data(args, row, teacher, base) for row, _ in MIXED[name]]
            mix_data(parts, out, [share for _, share in MIXED[name]], overwrite=True, keep_masks=False)
        return out
    if name != "replies":
        return base(name) if base else default_data(teacher, corpus=ROWS[name])
    out = args.work / f"replies-{args.replies}"
    if not (out / "meta.json").is_file():
        held = 0.2 if args.dry else 0.05  # the replies' own dev and test splits (not measured here)
        build_data(tokenizer=teacher, out=out, generate=True, overwrite=True, dev_fraction=held, test_fraction=held,
                   generation=Generation(count=args.replies, max_new_tokens=16 if args.dry else 256, device="cpu",
                                         temperature=1.0 if args.dry else 0.0))  # a random teacher: sampled
    return out


def dry_setup(args):
    """A tiny random Llama with the default tokenizer; generated text, a vocabulary per kind; a row per corpus."""
    work = args.work
    teacher = work / "tiny-teacher"
    tok = load_tokenizer("default")
    if not (teacher / "config.json").is_file():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(teacher)
        tok.save_pretrained(teacher)
    words = {"documentation": "the function returns a list of values when the module imports the driver",
             "prose": "she walked to the garden where her sister waited with a letter from town",
             "reference": "noun a word that names a person place or thing in the language of old",
             "dialogue": "hello how are you today I am fine thank you and what do you like"}
    kinds = {}
    for kind, vocab in words.items():
        text, out = work / f"{kind}-text", work / f"{kind}-data"
        text.mkdir(parents=True, exist_ok=True)
        rng = random.Random(kind)
        for d in range(40):
            (text / f"{d:02d}.txt").write_text(" ".join(rng.choice(vocab.split()) for _ in range(150)) + "\n")
        if not (out / "meta.json").is_file():
            build_data(source=[str(text)], out=out, tokenizer=str(teacher), glob="*.txt", dev_fraction=0.2,
                       test_fraction=0.2, overwrite=True)
        kinds[kind] = out
    rows = {"docs": kinds["documentation"]}  # the rows: the documentation alone, or the four kinds at equal shares
    if not (work / "broad-data" / "meta.json").is_file():
        mix_data(list(kinds.values()), work / "broad-data", [0.25] * 4, overwrite=True)
    rows.update({name: work / "broad-data" for name in ROWS if name not in ("docs", "replies", *MIXED)})
    for name in ("replies", *MIXED):
        if name in args.rows:
            rows[name] = row_data(args, name, str(teacher), base=rows.get)
    return str(teacher), DRY_TARGET, DRY_RECIPE, kinds, rows


def measured(model, teacher, windows: dict) -> dict:
    """Loss on every held-out set and, with a teacher, KL from it on the test splits; `dev_loss`, `test_loss` and
    `test_kl` are the means over the four kinds (the general measure), `ood_loss` the out-of-domain text's."""
    models = {"model": model, **({"teacher": teacher} if teacher is not None else {})}
    out = {"reply": reply_to(model, load_tokenizer("default"), DEMO["prompt"])}  # in the default's chat template
    for where, w in windows.items():
        m = measure(models, w, 4, "teacher" if teacher is not None and where.startswith("test") else None)["model"]
        out[f"{where}_loss"] = m["loss"]
        if "kl" in m:
            out[f"{where}_kl"] = m["kl"]
    for split, key in (("dev", "loss"), ("test", "loss"), ("test", "kl")):
        values = [v for k, v in out.items() if k.startswith(f"{split}:") and k.endswith(f"_{key}")]
        if values:
            out[f"{split}_{key}"] = sum(values) / len(values)
    return out


def run_name(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}-seed{seed}"


def train(args, name: str, seed: int, teacher: str, recipe: dict, pruned: Path, data: Path, target: dict) -> dict:
    """Distil one row's student with one data order (or reuse the one already there, if of this shape)."""
    run = args.work / run_name(name, seed)
    recipe = {**recipe, "seed": seed}
    record = run / "bench.json"
    if record.is_file() and same_shape(run / "student", target):
        saved = json.loads(record.read_text())
        if (saved["recipe"], saved["tokens"], saved["data"]) == (recipe, args.tokens, data.name):
            return saved
    start = time.time()
    result = distill(TrainConfig(student=str(pruned), out=run, tokens=args.tokens, teacher=teacher, data=str(data),
                                 eval_every=0, save_every=10**9, device="cpu", overwrite=True, **recipe))
    saved = {"recipe": recipe, "tokens": args.tokens, "data": data.name, "wall_s": round(time.time() - start, 1),
             "tokens_per_s": round(result.tokens_per_s, 1), "train_loss": result.loss}
    record.write_text(json.dumps(saved) + "\n")
    return saved


def write_report(args, results: dict) -> None:
    kinds = list(KINDS)
    lines = ["# Which corpus to distil on", "",
             f"SmolLM2-135M-Instruct pruned to {shape(results.get('target'))} (configs/demo.yaml's shape when "
             f"measured, calibrated on the documentation), "
             f"then distilled for {args.tokens:,} tokens (1,024-token batches of 256-token sequences, lr 1e-3 → 1e-4, "
             f"forward KL, {args.precision}) on each corpus, once per data order (seeds {', '.join(map(str, args.seeds))}). "
             f"Measured on {args.val_seqs} windows spread over the dev split of each kind of text (selection) and as "
             f"many of its test split (reports), and of the King James Bible (out-of-domain: no corpus holds it). "
             f"*General* is the mean over the four kinds; KL is from the teacher, on the test splits. Mean ± "
             f"standard deviation over the seeds. "
             f"{'Dry run: a tiny random teacher on generated text. ' if args.dry else ''}", "",
             f"Reproduce: `.venv/bin/python benchmarks/corpus_mix.py --tokens {args.tokens} --rows "
             f"{' '.join(results['rows'])} --seeds {' '.join(map(str, args.seeds))} --baseline {args.baseline}"
             f"{' --against ' + ' '.join(args.against) if args.against else ''}{options(args, results)}`", "",
             "| model | corpus | " + " | ".join(f"{k} dev" for k in kinds) + " | general dev | general test | "
             "out-of-domain | test KL |", "|---" * (len(kinds) + 6) + "|"]
    for name in ("teacher", "pruned"):
        r = results[name]
        kl = f"{r['test_kl']:.3f}" if "test_kl" in r else "—"
        lines.append(f"| {name} | — | " + " | ".join(f"{r[f'dev:{k}_loss']:.3f}" for k in kinds) +
                     f" | {r['dev_loss']:.3f} | {r['test_loss']:.3f} | {r['ood_loss']:.3f} | {kl} |")
    for name, row in results["rows"].items():
        runs = list(row["seeds"].values())
        cells = [fmt_mean_sd([r[f"dev:{k}_loss"] for r in runs]) for k in kinds]
        cells += [fmt_mean_sd([r[m] for r in runs]) for m in MEASURES]
        lines.append(f"| {name} | `{row['corpus']}` | " + " | ".join(cells) + " |")
    if "replies" in results:
        lines += ["", replies_cost(results["replies"])]
    for baseline in [args.baseline, *args.against]:
        lines += ["", f"## Each row against {baseline}, seed by seed", "", *paired_table(results, baseline)]
    lines += replies_table(results, args.seeds[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"tokens": args.tokens, "seeds": args.seeds,
                                                         "baseline": args.baseline, "against": args.against,
                                                         "val_seqs": args.val_seqs, "precision": args.precision,
                                                         **results}, indent=2) + "\n")
    print(f"wrote {args.out}")


def options(args, results: dict) -> str:
    """The reproduce line's flags that are not at their defaults (the precision, the prompts answered, the report)."""
    flags = f" --precision {args.precision}" if args.precision != "fp32" else ""
    flags += f" --replies {results['replies']['count']}" if "replies" in results else ""
    return flags + (f" --out {args.out}" if args.out != OUT and not args.dry else "")


def replies_table(results: dict, seed: int) -> list[str]:
    """Each model's greedy reply to the demo's prompt in the default teacher's chat template (a row's with its first
    data order), where measured."""
    models = [("teacher", results["teacher"]), ("pruned", results["pruned"])]
    models += [(name, row["seeds"].get(str(seed), {})) for name, row in results["rows"].items()]
    if not any("reply" in r for _, r in models):  # measured before replies were recorded
        return []
    lines = ["", f"## The reply to the demo's prompt (seed {seed})", "",
             f"*{DEMO['prompt']}* in the chat template, greedy, at most {REPLY_TOKENS} tokens.", "",
             "| model | reply |", "|---|---|"]
    for name, r in models:
        reply = " ".join(r["reply"].split()).replace("|", "\\|") or "(ends its turn)" if "reply" in r else "–"
        lines.append(f"| {name} | {reply} |")
    return lines


def shape(target: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in target.items()) if target else "the demo's shape"


def replies_cost(r: dict) -> str:
    """What writing the `replies` row's text cost: the recorded runs' replies, seconds and generated tokens/s (a run
    stopped before it finished records nothing; its replies are in the cache all the same)."""
    runs = r["runs"]
    replies, seconds, tokens = (sum(x[k] for x in runs) for k in ("replies", "seconds", "tokens"))
    which = "them" if replies == r["count"] else f"{replies:,} of them (the rest in a run stopped before it finished)"
    return (f"Row `replies`: the teacher's greedy replies (at most {r['max_new_tokens']} tokens) to {r['count']:,} "
            f"bundled prompts (`minitron data --generate`), the loss on the replies only; writing {which} took "
            f"{seconds:,.0f} s for {tokens:,} tokens ({tokens / seconds:.0f} tokens/s, batches of "
            f"{runs[-1]['batch_size']} on {runs[-1]['device']}).")


def paired_table(results: dict, baseline: str) -> list[str]:
    """Each row against the baseline: the mean paired difference (same data order) with its 95% t-interval on the
    general dev and test losses, the documentation's dev and test losses, out-of-domain text and KL, and the
    verdict."""
    rows = results["rows"]
    base = rows.get(baseline, {}).get("seeds", {})
    lines = ["The mean paired difference (row − baseline, same data order) with its 95% t-interval; negative is "
             "better. A difference whose dev interval holds 0 is a tie; *better* or *worse* needs the dev interval "
             "to exclude 0 and the test difference to have the same sign.", "",
             "| row | seeds | general dev | general test | documentation dev | documentation test | out-of-domain | "
             "test KL | reading |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        common = sorted(set(row["seeds"]) & set(base))
        if name == baseline or not common:
            continue
        diff = {k: paired([row["seeds"][s][k] for s in common], [base[s][k] for s in common])
                for k in (*MEASURES, "dev:documentation_loss", "test:documentation_loss")}
        lines.append(f"| {name} | {len(common)} | {fmt_interval(diff['dev_loss'])} | "
                     f"{fmt_interval(diff['test_loss'])} | {fmt_interval(diff['dev:documentation_loss'])} | "
                     f"{fmt_interval(diff['test:documentation_loss'])} | "
                     f"{fmt_interval(diff['ood_loss'])} | {fmt_interval(diff['test_kl'])} | "
                     f"{verdict(diff['dev_loss'], diff['test_loss'])} |")
    return lines


if __name__ == "__main__":
    main()
