"""The corpora's parts as built: each part's source, licence, documents and tokens per split in the default teacher's
tokenizer, and its share of every named mix, written to docs/data.json (its table in docs/data.md is rendered from
it by `benchmarks/results_tables.py`). Builds every part that is not cached yet (`make corpus` installs them).

    python benchmarks/corpus_table.py [--out docs/data.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from minitron.data import MIXES, PARTS, SPLITS, TokenData, default_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/data.json"))
    args = p.parse_args()
    parts = {}
    for name, part in PARTS.items():
        meta = TokenData.open(default_data("default", corpus=name)).meta
        parts[name] = {"kind": part.kind, "about": part.about, "licence": part.licence, "package": part.package,
                       "splits": {s: meta["splits"][s] for s in SPLITS}}
    mixes = {name: shares for name, shares in MIXES.items() if len(shares) > 1}
    args.out.write_text(json.dumps({"tokenizer": "default (SmolLM2-135M-Instruct)", "parts": parts,
                                    "mixes": mixes}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
