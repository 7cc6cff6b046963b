"""The named corpora: the prose source (Jane Austen's novels, R data from Debian's r-cran-janeaustenr, installed by
`make corpus`) yields whole chapters with a deterministic split; the default mix's dev and test splits start with
the documentation's own, so figures measured on the documentation stay comparable; missing pieces are one line."""
import itertools
import shutil
import sys

import numpy as np
import pytest

import minitron.data.sources as sources
from conftest import cli_error, tiny_tokenizer, write_corpus
from minitron.data import (CORPORA, SPLITS, TokenData, build_data, concat_data, default_data_dir, iter_documents,
                           split_of)
from minitron.errors import MinitronError


@pytest.fixture(scope="module")
def prose_docs():
    return list(iter_documents([sources.prose_source()]))  # parsing R data is slow in Python: read it once


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
    shutil.copytree(sources.prose_source(), moved)
    emma = [d for d in prose_docs if d[0].startswith("emma:")]
    assert list(itertools.islice(iter_documents([moved]), len(emma))) == emma  # books are read one at a time
    split = {doc_id: split_of(doc_id, 0.02, 0.02) for doc_id, _ in prose_docs}
    for held_out in ("dev", "test"):  # the defaults: 2% of the chapters each
        docs = [doc_id for doc_id, s in split.items() if s == held_out]
        assert 2 <= len(docs) <= 20 and sum(len(dict(prose_docs)[d]) for d in docs) > 40_000  # > 32 x 256 tokens
    assert list(split.values()).count("train") > 0.9 * len(split)


def test_the_mix_starts_its_held_out_splits_with_the_docs_ones(tmp_path, tiny_dir):
    assert CORPORA["mix"][1][0] == "docs" and CORPORA["docs"][0] == "docs3"  # docs3: the three-split layout
    assert CORPORA["default"] == CORPORA["docs"]  # until the mix is shown to help
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
    joined = TokenData.open(concat_data([alone.path, second], tmp_path / "d4"))  # how a cached mix is made
    assert joined.meta["splits"] == mix.meta["splits"] and joined.meta["sources"] == mix.meta["sources"]
    for split in SPLITS:
        assert np.array_equal(joined.tokens(split), mix.tokens(split))
        assert np.array_equal(joined.doc_starts(split), mix.doc_starts(split))  # the second part's offsets shifted


def test_each_corpus_has_its_own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path))
    tok = tiny_tokenizer()
    dirs = {name: default_data_dir(tok, corpus=name) for name in CORPORA}
    assert len(set(dirs.values())) == len(CORPORA) - 1 and dirs["docs"].name.startswith("docs3-")
    assert dirs["prose"].name.startswith("austen2-") and dirs["mix"].name.startswith("mix2-")
    assert default_data_dir(tok) == dirs["default"] == dirs["docs"] != dirs["mix"]
    with pytest.raises(MinitronError, match="unknown corpus 'novels'; choose one of docs, prose, mix, default"):
        default_data_dir(tok, corpus="novels")


def test_a_missing_prose_package_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path, tiny_dir, capsys):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "PROSE_DATA", "no/such/package/data")
    for corpus in ("prose", "mix"):
        err = cli_error(capsys, "data", "--corpus", corpus, "--tokenizer", tiny_dir, "--out", tmp_path / "out")
        assert "r-cran-janeaustenr is missing" in err and "`make corpus`" in err and "apt-get download" in err
    assert not (tmp_path / "out").exists()


def test_reading_r_data_without_rdata_is_one_line(monkeypatch, tmp_path, tiny_dir, capsys):
    monkeypatch.setitem(sys.modules, "rdata", None)  # as if it were not installed
    err = cli_error(capsys, "data", "--source", sources.prose_source(), "--tokenizer", tiny_dir,
                    "--out", tmp_path / "out")
    assert "needs the `rdata` package" in err and "pip install rdata" in err and not (tmp_path / "out").exists()
