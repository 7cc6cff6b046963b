"""`minitron data`: tokenise text (or chat conversations, with assistant-only loss masks) into token shards
with a train/validation split by document; and the default corpus, built on first use and cached."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from minitron.chat.dataset import encode_with_mask
from minitron.chat.templates import get_format
from minitron.data.corpora import HELD_OUT, item_kind, item_sources, named_corpus, part_documents
from minitron.data.prompts import Generation, bundled_prompts, user_prompts
from minitron.data.sources import iter_conversations, iter_documents, source_bytes, split_of
from minitron.data.tokens import SPLITS, ShardWriter, TokenData, token_dtype, tokenizer_identity, write_meta
from minitron.errors import MinitronError, real_number, whole_number
from minitron.io import atomic_dir, build_once, read_jsonl, refuse_existing, write_json
from minitron.load import cache_dir, load_tokenizer


def build_data(source: list[str] | None = None, out: Path | None = None, tokenizer: str = "default",
               glob: str | None = None, text_field: str = "text", dev_fraction: float | None = None,
               test_fraction: float | None = None, max_tokens: int | None = None, seed: int = 0,
               overwrite: bool = False, chat: bool = False, chat_template: str = "auto",
               corpus: str = "default", generate: bool = False, generation: Generation = Generation()) -> Path:
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
        dev_fraction: share of documents held out as the dev split (selection: search, benchmarks, defaults;
            default 0.02, or a corpus part's own: docs/data.md)
        test_fraction: share of documents held out as the test split (reports; default as --dev-fraction)
        max_tokens: stop after about this many tokens (all splits together)
        seed: seed of the document split
        overwrite: replace an existing output directory
        chat: the sources are chat JSONL ({"messages": [...], "tools": [...]}): render each conversation
            with the chat template and train on the assistant's tokens only (writes loss masks)
        chat_template: chat format for --chat: auto, nemotron, chatml, mistral or model
        corpus: the corpus built when no --source is given (`make corpus` installs them; docs/data.md): a part
            (docs, austen, gutenberg, gcide, wordnet, devil, jargon, foldoc, fortunes, chatterbot), parts end to
            end (docs,austen) or at shares of the tokens (docs:0.6,gcide:0.4), a named mix (prose, mix, broad,
            default), or mixes and token data directories that --out wrote, e.g. the teacher's conversations
            (default:0.9,runs/replies:0.1; their loss masks kept)
        generate: the teacher (--tokenizer's model) writes replies, in its chat format, to --generation.prompts or to
            the bundled prompts (docs/data.md), batched, cached and resumable; the conversations are the data, with
            the loss on the replies only (sequence-level distillation)
        generation: how the replies are written (--generation.count, --generation.max-new-tokens, ...)
    """
    check_build(chat, source, out, dev_fraction, test_fraction, max_tokens, overwrite, generate)
    tok = load_tokenizer(tokenizer)
    conversations = None
    if generate:  # the teacher's conversations, then tokenised as chat data
        replies, conversations = generated(tokenizer, generation, chat_template)
        source, chat, held_out, total = [str(replies)], True, HELD_OUT, None
    elif source is None:
        named = named_corpus(corpus)
        out = Path(out) if out is not None else default_data_dir(tok, max_tokens, corpus)
        if len(named.parts) > 1:  # a mix: its parts' cached splits, each at its share
            if (dev_fraction, test_fraction, seed) != (None, None, 0):
                raise MinitronError("--dev-fraction, --test-fraction and --seed split one part or your own sources; a "
                                    f"mix ({corpus}) is made of its parts' cached splits")
            for item in named.parts:
                item_sources(item)  # every part installed, before any is tokenised
            return mix_data([item_data(tokenizer, tok, max_tokens, item) for item in named.parts], out,
                            named.weights, overwrite=overwrite)
        documents, source, total, held_out = part_documents(next(iter(named.parts)))  # refuses one not installed
    else:
        glob = "**/*.jsonl" if chat and glob is None else glob
        held_out = HELD_OUT
        total = source_bytes(source, glob)  # refuses missing sources before anything is shown or written
        documents = None if chat else iter_documents(source, glob, text_field)
    dev_fraction = held_out if dev_fraction is None else dev_fraction
    test_fraction = held_out if test_fraction is None else test_fraction
    if tok.eos_token_id is None:
        raise MinitronError(f"tokenizer of {tokenizer} has no EOS token to separate documents")
    conversations = conversations if conversations is not None else iter_conversations(source, glob) if chat else None
    with atomic_dir(out, overwrite=overwrite) as tmp:
        docs = tokenised_chats(tok, conversations, chat_template) if chat else \
            ((d, tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], None, len(t.encode()))
             for d, t in documents)
        splits = write_splits(tmp, docs, token_dtype(len(tok)), chat, lambda d: split_of(d, dev_fraction,
                                                                                           test_fraction, seed),
                              max_tokens, total)
        if any(splits[s]["tokens"] == 0 for s in SPLITS):
            counts = ", ".join(f"{splits[s]['documents']} {s}" for s in SPLITS)
            raise MinitronError(f"too little data in {', '.join(map(str, source))}: {counts} documents; every split "
                                "needs some (add data or raise --dev-fraction / --test-fraction)")
        write_meta(tmp, tok, token_dtype(len(tok)), splits, sources=[str(s) for s in source],
                   dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
                   **({"chat_template": chat_template} if chat else {}),
                   **({"generated": {**asdict(generation), "prompts": str(generation.prompts or "bundled"),
                                     "replies": source[0]}} if generate else {}))
    print(f"wrote {out}: " + " / ".join(f"{splits[s]['tokens']:,} {s}" for s in SPLITS) + " tokens")
    return out


def check_build(chat: bool, source, out, dev_fraction: float | None, test_fraction: float | None,
                max_tokens: int | None, overwrite: bool, generate: bool = False) -> None:
    """`minitron data`'s settings, refused in one line before anything is loaded or written."""
    if generate and (source is not None or chat or out is None):
        raise MinitronError("--generate writes its own conversations into --out; leave out --source and --chat")
    if chat and (source is None or out is None):
        raise MinitronError("--chat needs --source (conversation JSONL files) and --out")
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if value is None:  # the default: HELD_OUT, or a corpus part's own
            continue
        real_number(value, f"--{name.replace('_', '-')}", lambda v: 0 < v < 1,
                    "a share of the documents strictly between 0 and 1")
    if (dev_fraction or HELD_OUT) + (test_fraction or HELD_OUT) >= 1:
        raise MinitronError(f"--dev-fraction {dev_fraction} and --test-fraction {test_fraction} leave no documents "
                            "to train on; lower them")
    if max_tokens is not None:
        whole_number(max_tokens, "--max-tokens")
    if out is not None:
        refuse_existing(Path(out), overwrite)


def write_splits(tmp: Path, docs, dtype, chat: bool, split_of_doc, max_tokens: int | None,
                 total_bytes: int | None = None) -> dict:
    """Every (id, token ids, mask, text bytes) document into its split's shards, with a progress bar over the text
    read (an ETA when `total_bytes` is known: `max_tokens` stops it early) and the tokens written; the splits'
    counts."""
    writer = ShardWriter(tmp, dtype, with_mask=chat)
    with tqdm(desc="tokenising", total=total_bytes, unit="B", unit_scale=True, dynamic_ncols=True) as bar:
        for doc_id, ids, mask, nbytes in docs:
            writer.add(split_of_doc(doc_id), ids, mask)
            bar.update(min(nbytes, bar.total - bar.n) if bar.total else nbytes)  # JSONL: text < file bytes
            bar.set_postfix(tokens=f"{sum(writer.tokens.values()):,}", refresh=False)
            if max_tokens and sum(writer.tokens.values()) >= max_tokens:
                break
        else:  # every file read: the bar ends full (JSONL files hold more bytes than their text)
            bar.update((bar.total or bar.n) - bar.n)
    return writer.close()


def generated(teacher: str, generation: Generation, template: str) -> tuple[Path, list[tuple[str, dict]]]:
    """The teacher's replies to --generation.prompts or the bundled prompts (`chat.replies.teacher_replies`: cached,
    resumable), and (prompt id, conversation) of each, in the prompts' order (not the order they were written in,
    which a resumed run changes); empty replies left out."""
    from minitron.chat.replies import teacher_replies  # the teacher generates: a layer above the data (test_imports)

    generation.check()
    prompts = user_prompts(Path(generation.prompts), generation.count) if generation.prompts is not None else \
        bundled_prompts(generation.count)
    replies = teacher_replies(teacher, prompts, generation, template)
    by_id = {record["id"]: record for _, record in read_jsonl(replies)}
    return replies, [(p["id"], by_id[p["id"]]) for p in prompts if by_id[p["id"]]["messages"][-1]["content"]]


def tokenised_chats(tok, conversations, template: str) -> Iterator[tuple[str, list[int], list[int], int]]:
    """(id, token ids, loss mask, text bytes) of (id, {"messages", "tools"}) conversations; the mask is 1 on the
    assistant's tokens only."""
    fmt = get_format(tok, template)
    for doc_id, record in conversations:
        ids, mask = encode_with_mask(tok, fmt, record["messages"], record.get("tools"))
        yield doc_id, ids + [tok.eos_token_id], mask + [0], sum(len(str(m.get("content") or "").encode())
                                                                  for m in record["messages"])


def item_data(tokenizer: str, tok, max_tokens: int | None, item: str) -> Path:
    """One item of a mix as token data: a part or a named mix from the cache (built on first use), or a data
    directory as it is, refused in one line when its tokenizer is not --tokenizer's."""
    if item_kind(item) != "data":
        return default_data(tokenizer, max_tokens, item)
    TokenData.open(Path(item)).check_tokenizer(tok, f"--tokenizer {tokenizer}'s")
    return Path(item)


def default_data_dir(tokenizer, max_tokens: int | None = None, corpus: str = "default") -> Path:
    """Where a corpus is cached for a tokenizer: keyed by the corpus' content, so old caches are not mixed up."""
    suffix = f"-{max_tokens}" if max_tokens else ""
    return cache_dir() / "data" / f"{named_corpus(corpus).key}-{tokenizer_identity(tokenizer)['sha']}{suffix}"


def default_data(tokenizer_spec: str = "default", max_tokens: int | None = None, corpus: str = "default") -> Path:
    """A corpus (by default the default one, `corpora.MIXES`) tokenised for a model's tokenizer, built on first use and
    cached. A mix is made from its parts' caches (`mix_data`), without tokenising again what is already cached."""
    out = default_data_dir(load_tokenizer(tokenizer_spec), max_tokens, corpus)
    build_once(out, (out / "meta.json").is_file,
               lambda: build_data(tokenizer=tokenizer_spec, out=out, max_tokens=max_tokens, corpus=corpus))
    return out


def mix_data(parts: list[Path], out: Path, shares: list[float] | None = None, overwrite: bool = False,
             keep_masks: bool = True) -> Path:
    """Token data directories joined split by split into one: end to end at their own sizes (`shares` None, the
    shards `build_data` writes from their sources in this order), or each part at its share of the split's tokens
    (the parts' tokens together): a larger part keeps an evenly spread selection of its documents, a smaller one is
    repeated whole as often as it fits, then as much of an evenly spread selection as the rest needs (`share_of`).
    Documents are kept whole, so nothing crosses a document boundary and train, dev and test stay disjoint. When a
    part has loss masks (chat data: the loss on the replies only) the mix keeps them, every token of the other
    parts trained on; `keep_masks=False` trains on every token of every part."""
    data = [TokenData.open(p) for p in parts]
    if len({(d.meta["tokenizer"]["sha"], d.meta["dtype"]) for d in data}) != 1:
        raise MinitronError(f"cannot join {', '.join(map(str, parts))}: made with different tokenizers")
    masked = keep_masks and any(d.mask(split) is not None for d in data for split in SPLITS)
    splits = {}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split in SPLITS:
            total = sum(d.num_tokens(split) for d in data)
            targets = [d.num_tokens(split) for d in data] if shares is None else [round(s * total) for s in shares]
            splits[split] = write_mixed_split(tmp, split, data, targets, masked)
        write_json(tmp / "meta.json", {**data[0].meta, "splits": splits, "shares": shares,
                                       "parts": [{"sources": d.meta["sources"], "splits": d.meta["splits"]}
                                                 for d in data],
                                       "sources": [s for d in data for s in d.meta["sources"]]})
    print(f"wrote {out}: " + " / ".join(f"{splits[s]['tokens']:,} {s}" for s in SPLITS) + " tokens")
    return out


def write_mixed_split(tmp: Path, split: str, data: list[TokenData], targets: list[int], masked: bool) -> dict:
    """One split of a mix: about `targets[i]` tokens of whole documents of each part (`share_of`), written in
    order, with their loss masks (all ones for a part without) when `masked`; the split's counts."""
    offset, documents = 0, 0
    with ExitStack() as files:
        out, starts = (files.enter_context(open(tmp / f"{split}.{kind}", "wb")) for kind in ("bin", "docs.bin"))
        masks = files.enter_context(open(tmp / f"{split}.mask.bin", "wb")) if masked else None
        for d, target in zip(data, targets):
            tokens, first = np.asarray(d.tokens(split)), np.asarray(d.doc_starts(split), dtype=np.int64)
            mask = d.mask(split) if masked else None
            ends = np.append(first[1:], len(tokens))
            chosen = share_of(first, len(tokens), target)
            for i in chosen:
                out.write(tokens[first[i]:ends[i]].tobytes())
                if masks is not None:
                    masks.write(np.asarray(mask[first[i]:ends[i]]).tobytes() if mask is not None else
                                np.ones(ends[i] - first[i], dtype=np.uint8).tobytes())
            lengths = ends[chosen] - first[chosen]
            starts.write((offset + np.concatenate([[0], np.cumsum(lengths)[:-1]])).astype(np.uint64).tobytes()
                         if len(chosen) else b"")
            offset += int(lengths.sum())
            documents += len(chosen)
    return {"tokens": offset, "documents": documents}


def share_of(starts: np.ndarray, n_tokens: int, target: int) -> np.ndarray:
    """The documents (indices into `starts`, where each of a split's documents starts in its `n_tokens`) that make
    about `target` tokens: every document as many whole times as fit, then an evenly spread selection of them for
    the rest (its own size exactly when `target` is `n_tokens`)."""
    if len(starts) == 0 or target <= 0:
        return np.zeros(0, dtype=np.int64)
    full, rest = divmod(target, n_tokens)
    i = np.arange(len(starts) + 1)
    picked = np.nonzero(np.diff(i * rest // n_tokens))[0]  # floor((i+1) r/n) > floor(i r/n): r/n of them, spread
    return np.concatenate([np.tile(np.arange(len(starts)), int(full)), picked]).astype(np.int64)
