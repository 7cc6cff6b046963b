"""`minitron data`: tokenise text (or chat conversations, with assistant-only loss masks) into token shards
with a train/validation split by document; and the default corpus, built on first use and cached."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from minitron.chat.dataset import encode_with_mask
from minitron.chat.templates import get_format
from minitron.data.sources import (CORPORA, DOCS_GLOB, corpus_sources, is_hf_dataset, is_r_data, iter_conversations,
                                   iter_documents, source_files, split_of)
from minitron.data.tokens import SPLITS, ShardWriter, TokenData, token_dtype, tokenizer_identity, write_meta
from minitron.errors import MinitronError
from minitron.io import atomic_dir, refuse_existing, write_json
from minitron.load import cache_dir, load_tokenizer


def build_data(source: list[str] | None = None, out: Path | None = None, tokenizer: str = "default",
               glob: str | None = None, text_field: str = "text", dev_fraction: float = 0.02,
               test_fraction: float = 0.02, max_tokens: int | None = None, seed: int = 0, overwrite: bool = False,
               chat: bool = False, chat_template: str = "auto", corpus: str = "default") -> Path:
    """Tokenise text into memmap token shards, split by document into train, dev (what choices are made on) and test
    (what results are reported on).

    Args:
        source: text files, directories, .jsonl files, saved Hugging Face datasets or R package data
            directories (default: the named --corpus)
        out: output directory (default: the minitron cache, keyed by corpus and tokenizer)
        tokenizer: model whose tokenizer to use ('default', a Hugging Face directory, a Hub id or a .gguf)
        glob: which files to read inside directories (default: every .txt, .md, .rst and .jsonl file; with
            --chat every .jsonl file; for the named corpora their own)
        text_field: the text field of JSONL records and dataset rows
        dev_fraction: share of documents held out as the dev split (selection: search, benchmarks, defaults)
        test_fraction: share of documents held out as the test split (reports)
        max_tokens: stop after about this many tokens (all splits together)
        seed: seed of the document split
        overwrite: replace an existing output directory
        chat: the sources are chat JSONL ({"messages": [...], "tools": [...]}): render each conversation
            with the chat template and train on the assistant's tokens only (writes loss masks)
        chat_template: chat format for --chat: auto, nemotron, chatml, mistral or model
        corpus: the corpus built when no --source is given: 'default' (docs then prose), 'docs' (the Python
            and Linux documentation from Debian's python3.11-doc and linux-doc-6.1) or 'prose' (Jane Austen's
            novels from Debian's r-cran-janeaustenr); `make corpus` installs them
    """
    check_build(chat, source, out, dev_fraction, test_fraction, max_tokens, overwrite)
    tok = load_tokenizer(tokenizer)
    if source is None:
        source, glob = corpus_sources(corpus), glob or DOCS_GLOB
    out = Path(out) if out is not None else default_data_dir(tok, max_tokens, corpus)
    if tok.eos_token_id is None:
        raise MinitronError(f"tokenizer of {tokenizer} has no EOS token to separate documents")
    glob = "**/*.jsonl" if chat and glob is None else glob
    for src in map(Path, source):  # refuse missing sources before anything is shown or written
        if not (is_hf_dataset(src) or is_r_data(src)):
            source_files(src, glob)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        docs = tokenised_chats(tok, source, glob, chat_template) if chat else \
            ((d, tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], None)
             for d, t in iter_documents(source, glob, text_field))
        splits = write_splits(tmp, docs, token_dtype(len(tok)), chat, lambda d: split_of(d, dev_fraction,
                                                                                           test_fraction, seed),
                              max_tokens)
        if any(splits[s]["tokens"] == 0 for s in SPLITS):
            counts = ", ".join(f"{splits[s]['documents']} {s}" for s in SPLITS)
            raise MinitronError(f"too little data in {', '.join(map(str, source))}: {counts} documents; every split "
                                "needs some (add data or raise --dev-fraction / --test-fraction)")
        write_meta(tmp, tok, token_dtype(len(tok)), splits, sources=[str(s) for s in source],
                   dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
                   **({"chat_template": chat_template} if chat else {}))
    print(f"wrote {out}: " + " / ".join(f"{splits[s]['tokens']:,} {s}" for s in SPLITS) + " tokens")
    return out


def check_build(chat: bool, source, out, dev_fraction: float, test_fraction: float, max_tokens: int | None,
                overwrite: bool) -> None:
    """`minitron data`'s settings, refused in one line before anything is loaded or written."""
    if chat and (source is None or out is None):
        raise MinitronError("--chat needs --source (conversation JSONL files) and --out")
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
            raise MinitronError(f"--{name.replace('_', '-')} must be a share of the documents strictly between 0 and "
                                f"1, not {value!r}")
    if dev_fraction + test_fraction >= 1:
        raise MinitronError(f"--dev-fraction {dev_fraction} and --test-fraction {test_fraction} leave no documents "
                            "to train on; lower them")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise MinitronError(f"--max-tokens must be a positive whole number, not {max_tokens!r}")
    if out is not None:
        refuse_existing(Path(out), overwrite)


def write_splits(tmp: Path, docs, dtype, chat: bool, split_of_doc, max_tokens: int | None) -> dict:
    """Every (id, token ids, mask) document into its split's shards, with a progress bar; the splits' counts."""
    writer = ShardWriter(tmp, dtype, with_mask=chat)
    with tqdm(desc="tokenising", unit=" tok", unit_scale=True, dynamic_ncols=True) as bar:
        for doc_id, ids, mask in docs:
            writer.add(split_of_doc(doc_id), ids, mask)
            bar.update(len(ids))
            if max_tokens and sum(writer.tokens.values()) >= max_tokens:
                break
    return writer.close()


def tokenised_chats(tok, sources: list[str], glob: str,
                    template: str) -> Iterator[tuple[str, list[int], list[int]]]:
    """(id, token ids, loss mask) of chat JSONL conversations; the mask is 1 on the assistant's tokens only."""
    fmt = get_format(tok, template)
    for doc_id, record in iter_conversations(sources, glob):
        ids, mask = encode_with_mask(tok, fmt, record["messages"], record.get("tools"))
        yield doc_id, ids + [tok.eos_token_id], mask + [0]


def default_data_dir(tokenizer, max_tokens: int | None = None, corpus: str = "default") -> Path:
    """Where a named corpus is cached for a tokenizer: keyed by the corpus' content, so old caches are not mixed up."""
    if corpus not in CORPORA:
        raise MinitronError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    suffix = f"-{max_tokens}" if max_tokens else ""
    return cache_dir() / "data" / f"{CORPORA[corpus][0]}-{tokenizer_identity(tokenizer)['sha']}{suffix}"


def default_data(tokenizer_spec: str = "default", max_tokens: int | None = None, corpus: str = "default") -> Path:
    """A named corpus (by default the documentation and prose mix) tokenised for a model's tokenizer, built on
    first use and cached. A mix is its parts' caches end to end: the same shards as tokenising it, without
    tokenising again what is already cached."""
    out = default_data_dir(load_tokenizer(tokenizer_spec), max_tokens, corpus)
    if not (out / "meta.json").is_file():
        parts = CORPORA[corpus][1]
        if len(parts) > 1 and not max_tokens:
            concat_data([default_data(tokenizer_spec, corpus=part) for part in parts], out)
        else:
            build_data(tokenizer=tokenizer_spec, out=out, max_tokens=max_tokens, corpus=corpus)
    return out


def concat_data(parts: list[Path], out: Path) -> Path:
    """Token data directories end to end, split by split: the shards `build_data` writes from their sources in
    this order (documents are tokenised one by one, so nothing crosses a boundary)."""
    data = [TokenData.open(p) for p in parts]
    if len({(d.meta["tokenizer"]["sha"], d.meta["dtype"]) for d in data}) != 1:
        raise MinitronError(f"cannot join {', '.join(map(str, parts))}: made with different tokenizers")
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            with open(tmp / f"{split}.bin", "wb") as f, open(tmp / f"{split}.docs.bin", "wb") as starts:
                offset = 0
                for d in data:
                    f.write(np.asarray(d.tokens(split)).tobytes())
                    starts.write((np.asarray(d.doc_starts(split)) + np.uint64(offset)).astype(np.uint64).tobytes())
                    offset += d.num_tokens(split)
        splits = {split: {key: sum(d.meta["splits"][split][key] for d in data) for key in ("tokens", "documents")}
                  for split in SPLITS}
        write_json(tmp / "meta.json", {**data[0].meta, "splits": splits,
                                       "sources": [s for d in data for s in d.meta["sources"]]})
    return out
