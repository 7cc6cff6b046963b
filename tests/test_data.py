"""Token shards: every kind of source, dtypes, a train/dev/test split by document that does not depend on where
data lives, sampling that is a pure function of (seed, step), and evaluation windows spread over a whole split."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_tiny_data, cli_error, run_cli, tiny_tokenizer, write_corpus
from minitron.data import (DOCS_SOURCES, SPLITS, ShardWriter, TokenData, build_data, iter_documents, split_of,
                           spread_starts, token_dtype, windows_of, write_meta)
from minitron.errors import MinitronError


def test_every_kind_of_source(tmp_path, tiny_dir):
    import datasets

    corpus = write_corpus(tmp_path / "dir", docs=6)
    (tmp_path / "one.txt").write_text("a single file")
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"text": f"row {i}", "id": i}) for i in range(5)) + "\n\n")
    datasets.Dataset.from_dict({"text": ["from a saved dataset"] * 3}).save_to_disk(str(tmp_path / "hf"))
    sources = [corpus, tmp_path / "one.txt", tmp_path / "rows.jsonl", tmp_path / "hf"]
    docs = list(iter_documents(sources, glob="*.txt"))
    assert len(docs) == 6 + 1 + 5 + 3
    assert docs[0][0] == "doc000.txt" and docs[7][0] == "rows.jsonl:1" and docs[-1][0] == "hf::2"
    out = build_data(source=[str(s) for s in sources], tokenizer=str(tiny_dir), out=tmp_path / "data", glob="*.txt",
                     dev_fraction=0.3, test_fraction=0.3)
    meta = json.loads((out / "meta.json").read_text())
    assert SPLITS == ("train", "dev", "test") and set(meta["splits"]) == set(SPLITS)
    assert sum(meta["splits"][s]["documents"] for s in SPLITS) == len(docs)
    tok = tiny_tokenizer()
    expected = sum(len(tok(text, add_special_tokens=False)["input_ids"]) + 1 for _, text in docs)  # + EOS each
    assert sum(meta["splits"][s]["tokens"] for s in SPLITS) == expected
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["vocab_size"] == 100
    assert meta["dev_fraction"] == meta["test_fraction"] == 0.3 and "val_fraction" not in meta


def documents_of(data: TokenData, split: str) -> list[list[int]]:
    """A split's documents, cut where `{split}.docs.bin` says they start."""
    toks, starts = data.tokens(split).tolist(), [int(x) for x in data.doc_starts(split)] + [data.num_tokens(split)]
    return [toks[a:b] for a, b in zip(starts, starts[1:])]


def test_three_splits_hold_every_document_once(tmp_path, tiny_dir):
    """train, dev and test are disjoint sets of whole documents whose union is the corpus: each document is in the
    split `split_of` names (dev the first band of the hash, test the next), in corpus order."""
    corpus = write_corpus(tmp_path / "c", docs=40, words=20)
    docs = list(iter_documents([corpus], glob="*.txt"))
    data = TokenData.open(build_data(source=[str(corpus)], tokenizer=str(tiny_dir), out=tmp_path / "d",
                                     glob="*.txt", dev_fraction=0.2, test_fraction=0.3))
    tok, eos = tiny_tokenizer(), tiny_tokenizer().eos_token_id
    ids = {doc_id: tok(text, add_special_tokens=False)["input_ids"] + [eos] for doc_id, text in docs}
    where = {doc_id: split_of(doc_id, 0.2, 0.3) for doc_id, _ in docs}
    assert set(where.values()) == set(SPLITS)
    for split in SPLITS:
        got = documents_of(data, split)
        assert got == [ids[d] for d, _ in docs if where[d] == split]
        assert len(got) == data.meta["splits"][split]["documents"] and all(d[-1] == eos for d in got)
    # the bands: dev is what a lower dev_fraction keeps as dev; test starts where dev ends
    for doc_id, _ in docs:
        assert split_of(doc_id, 0.2, 0.3) == ("dev" if split_of(doc_id, 0.2, 0.01) == "dev" else
                                              "test" if split_of(doc_id, 0.5, 0.01) == "dev" else "train")
    with pytest.raises(MinitronError, match="leave no documents to train on"):
        build_data(source=[str(corpus)], tokenizer=str(tiny_dir), out=tmp_path / "e", glob="*.txt",
                   dev_fraction=0.5, test_fraction=0.5)
    with pytest.raises(MinitronError, match="--test-fraction must be a share"):
        build_data(source=[str(corpus)], tokenizer=str(tiny_dir), out=tmp_path / "e", glob="*.txt",
                   test_fraction=0)


def test_split_is_by_document_and_does_not_depend_on_location(tmp_path, tiny_dir):
    a = write_corpus(tmp_path / "a", docs=30)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    one = TokenData.open(build_data(source=[str(a)], tokenizer=str(tiny_dir), out=tmp_path / "d1", glob="*.txt",
                                    dev_fraction=0.3, test_fraction=0.3))
    two = TokenData.open(build_data(source=[str(b)], tokenizer=str(tiny_dir), out=tmp_path / "d2", glob="*.txt",
                                    dev_fraction=0.3, test_fraction=0.3))
    for split in SPLITS:
        assert np.array_equal(one.tokens(split), two.tokens(split))
        assert np.array_equal(one.doc_starts(split), two.doc_starts(split))
    eos = tiny_tokenizer().eos_token_id
    for split in SPLITS:  # every document is whole in its split: it ends with its EOS
        toks, starts = one.tokens(split), one.doc_starts(split).astype(np.int64)
        assert toks[-1] == eos and (toks == eos).sum() == one.meta["splits"][split]["documents"] == len(starts)
        assert starts[0] == 0 and (toks[starts[1:] - 1] == eos).all()


def test_large_vocabularies_use_uint32(tmp_path):
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    ids = [70_000, 5, 131_071]
    writer = ShardWriter(tmp_path, np.dtype(np.uint32), with_mask=False)
    writer.add("train", ids)
    writer.add("dev", ids[:2])
    writer.add("test", ids[1:])
    write_meta(tmp_path, tiny_tokenizer(), np.dtype(np.uint32), writer.close())
    data = TokenData.open(tmp_path)
    assert data.tokens("train").tolist() == ids and data.tokens("test").tolist() == ids[1:]


def test_sampling_is_a_pure_function_of_seed_and_step(tiny_data):
    data = TokenData.open(tiny_data)
    a = data.sample("train", 4, 16, seed=0, step=3, micro=1)["input_ids"]
    assert a.shape == (4, 17) and a.dtype == torch.int64
    assert torch.equal(a, data.sample("train", 4, 16, seed=0, step=3, micro=1)["input_ids"])
    assert not torch.equal(a, data.sample("train", 4, 16, seed=0, step=4, micro=1)["input_ids"])
    assert not torch.equal(a, data.sample("train", 4, 16, seed=1, step=3, micro=1)["input_ids"])



def test_spread_windows_reach_the_end_of_the_split(tiny_data):
    """`spread`: windows evenly spaced from the split's first token to its last, the same for every call."""
    data = TokenData.open(tiny_data)
    n = data.num_tokens("dev")
    windows = data.spread("dev", 3, 8)
    ids, toks = windows.batch["input_ids"], data.tokens("dev")
    assert ids.shape == (3, 9) and ids.dtype == torch.int64 and set(windows.batch) == {"input_ids"}
    starts = np.linspace(0, n - 9, 3).round().astype(np.int64)
    for row, start in zip(ids, starts):
        assert row.tolist() == toks[start:start + 9].tolist()
    assert ids[0, 0] == toks[0] and ids[-1, -1] == toks[-1]  # the first token and the last
    assert torch.equal(ids, data.spread("dev", 3, 8).batch["input_ids"])
    assert windows.split == "dev" and windows.tokens == 3 * 8
    assert windows.split_documents == data.meta["splits"]["dev"]["documents"]
    assert windows.describe() == f"24 tokens of {windows.documents} of the {windows.split_documents} dev documents"
    every = data.spread("test", 10**6, 8)  # as many as fit when fewer do
    assert len(every.batch["input_ids"]) == (data.num_tokens("test") - 1) // 8
    assert every.documents == every.split_documents


def hand_made(tmp_path, lengths: list[int]) -> TokenData:
    """A data directory whose test split holds documents of these lengths (document d is all token d % 90 + 4)."""
    writer = ShardWriter(tmp_path, np.dtype(np.uint16), with_mask=False)
    writer.add("train", [5] * 40)
    writer.add("dev", [6] * 40)
    for d, length in enumerate(lengths):
        writer.add("test", [d % 90 + 4] * length)
    write_meta(tmp_path, tiny_tokenizer(), np.dtype(np.uint16), writer.close())
    return TokenData.open(tmp_path)


def test_spread_windows_cover_documents_to_the_end_of_the_split(tmp_path):
    """Many small documents: four windows touch documents at the start, middle and end of the split (the first
    N consecutive windows would all sit in its first documents), and `documents` counts exactly those touched."""
    data = hand_made(tmp_path, [10] * 50)  # documents d at tokens 10d .. 10d + 9
    assert data.doc_starts("test").tolist() == list(range(0, 500, 10))
    windows = data.spread("test", 4, 8)  # starts 0, 164, 327, 491 (linspace 0 .. 500 - 9)
    touched = sorted({int(t) - 4 for t in windows.batch["input_ids"].flatten()})
    assert touched == [0, 16, 17, 32, 33, 49]
    assert windows.documents == len(touched) == 6 and windows.split_documents == 50
    assert windows.tokens == 32 and windows.describe() == "32 tokens of 6 of the 50 test documents"
    # documents of different lengths: windows every 150 tokens over 10 documents of 5 and one long one
    starts, documents = spread_starts(1050, np.array([0, *range(1000, 1050, 5)]), 3, 49)
    assert starts.tolist() == [0, 500, 1000] and documents == 1 + 10


def test_a_window_ending_on_a_documents_first_token_touches_it(tmp_path):
    """A window of seq_len + 1 tokens takes its last token (a label the loss counts) from the next document."""
    data = hand_made(tmp_path, [10] * 3)
    windows = data.spread("test", 1, 10)  # tokens 0 .. 10: document 0 and the first token of document 1
    assert windows.batch["input_ids"][0].tolist() == [4] * 10 + [5]
    assert windows.documents == 2


def test_windows_of_reads_rows_at_the_starts():
    tokens = np.arange(100, dtype=np.uint16)
    got = windows_of(tokens, np.array([0, 7, 90]), 9)
    assert got.dtype == torch.int64 and got.tolist() == [list(range(s, s + 10)) for s in (0, 7, 90)]


def test_an_old_train_val_directory_is_refused_in_one_line(tiny_data, tiny_dir, capsys):
    """A directory an older minitron made (train/val, no test split, no document offsets) is refused, with the
    remedy, before anything reads it as the new layout."""
    old = Path(tiny_data)
    meta = json.loads((old / "meta.json").read_text())
    meta["splits"] = {"train": meta["splits"]["train"], "val": meta["splits"]["dev"]}
    meta["val_fraction"] = meta.pop("dev_fraction")
    del meta["test_fraction"]
    (old / "meta.json").write_text(json.dumps(meta))
    (old / "dev.bin").rename(old / "val.bin")
    for f in [*old.glob("*.docs.bin"), old / "test.bin"]:
        f.unlink()
    with pytest.raises(MinitronError) as e:
        TokenData.open(old)
    message = str(e.value)
    assert "\n" not in message and "older minitron, with train/val splits and no test split" in message
    assert "rebuild the directory with `minitron data`" in message
    err = cli_error(capsys, "eval", "--model", tiny_dir, "--data", old, "--seq-len", 32, "--no-ood", "--no-speed")
    assert "older minitron" in err and "rebuild" in err


def test_data_command_and_bad_sources(tmp_path, tiny_dir, capsys):
    corpus = write_corpus(tmp_path / "c", docs=10)
    run_cli("data", "--source", corpus, "--tokenizer", tiny_dir, "--out", tmp_path / "d", "--glob", "*.txt",
            "--dev-fraction", 0.3, "--test-fraction", 0.3)
    assert TokenData.open(tmp_path / "d").num_tokens("train") > 0
    assert "already exists" in cli_error(capsys, "data", "--source", corpus, "--tokenizer", tiny_dir, "--out",
                                         tmp_path / "d", "--glob", "*.txt")
    assert "does not exist" in cli_error(capsys, "data", "--source", tmp_path / "nope", "--tokenizer", tiny_dir,
                                         "--out", tmp_path / "e")
    assert "no files match" in cli_error(capsys, "data", "--source", corpus, "--tokenizer", tiny_dir,
                                         "--out", tmp_path / "e", "--glob", "*.md")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    assert "bad.jsonl:2 is not valid JSON" in cli_error(capsys, "data", "--source", tmp_path / "bad.jsonl",
                                                        "--tokenizer", tiny_dir, "--out", tmp_path / "e")
    (tmp_path / "field.jsonl").write_text('{"body": "no text field"}\n')
    assert "has no 'text' field" in cli_error(capsys, "data", "--source", tmp_path / "field.jsonl", "--tokenizer",
                                              tiny_dir, "--out", tmp_path / "e")
    (tmp_path / "small.txt").write_text("one short document")
    assert "too little data" in cli_error(capsys, "data", "--source", tmp_path / "small.txt", "--tokenizer",
                                          tiny_dir, "--out", tmp_path / "e")
    assert not (tmp_path / "e").exists()
    assert "is not a minitron data directory" in cli_error(capsys, "eval", "--model", tiny_dir, "--data", corpus)


@pytest.mark.slow
def test_default_corpus_in_one_command(tmp_path):
    out = build_data(out=tmp_path / "docs", max_tokens=1_000_000, corpus="docs")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sources"] == list(DOCS_SOURCES) and meta["tokenizer"]["vocab_size"] == 49152
    assert meta["splits"]["dev"]["documents"] > 0 and meta["splits"]["test"]["documents"] > 0
    assert meta["splits"]["train"]["tokens"] > 100_000


@pytest.mark.parametrize("change", [
    lambda m: m.pop("splits"), lambda m: m.pop("dtype"), lambda m: m.pop("tokenizer"),
    lambda m: m.update(dtype="float64"), lambda m: m.update(dtype=16), lambda m: m["splits"].pop("test"),
    lambda m: m["splits"]["train"].update(tokens="many"), lambda m: m["splits"]["train"].update(tokens=-1),
    lambda m: m["tokenizer"].pop("sha"), lambda m: m.clear() or m.update(x=[1]),
])
def test_meta_json_with_missing_or_wrong_fields(tiny_data, tiny_dir, capsys, change):
    meta_file = Path(tiny_data) / "meta.json"
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta_file.write_text(json.dumps(meta))
    assert "meta.json is not a minitron data description" in cli_error(capsys, "eval", "--model", tiny_dir,
                                                                        "--data", tiny_data, "--seq-len", 32)
    meta_file.write_text("[1, 2]")
    assert "meta.json is not a minitron data description" in cli_error(capsys, "eval", "--model", tiny_dir,
                                                                        "--data", tiny_data, "--seq-len", 32)


def test_non_utf8_jsonl_is_one_line_naming_the_line(tmp_path, tiny_dir, capsys):
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    err = cli_error(capsys, "data", "--source", tmp_path / "latin.jsonl", "--tokenizer", tiny_dir, "--out",
                    tmp_path / "o")
    assert "latin.jsonl:2 is not UTF-8" in err and not (tmp_path / "o").exists()
    (tmp_path / "latin.jsonl").write_bytes(b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                                          b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    err = cli_error(capsys, "data", "--chat", "--source", tmp_path / "latin.jsonl", "--tokenizer", tiny_dir,
                    "--out", tmp_path / "o")
    assert "latin.jsonl:2 is not UTF-8" in err and not (tmp_path / "o").exists()


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path, tiny_dir, capsys):
    """Two `minitron data` runs into one --out: the first (another process) is held inside its write by a
    named pipe among its sources; the second must be refused, not silently replace the first's output."""
    import os
    import subprocess
    import sys
    import time

    slow = write_corpus(tmp_path / "slow", docs=10)
    os.mkfifo(tmp_path / "zz.txt")  # read last; blocks until written
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "minitron", "data", "--source", str(slow),
                              str(tmp_path / "zz.txt"), "--tokenizer",
                              str(tiny_dir), "--out", str(out), "--glob", "*.txt", "--dev-fraction", "0.3", "--test-fraction", "0.3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".out.tmp-*")) and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)  # until the first writer is inside its write
        assert list(tmp_path.glob(".out.tmp-*")), first.communicate()
        other = write_corpus(tmp_path / "other", docs=10, seed=1)
        err = cli_error(capsys, "data", "--source", other, "--tokenizer", tiny_dir, "--out", out, "--glob", "*.txt",
                        "--dev-fraction", 0.3, "--test-fraction", 0.3, "--overwrite")
        assert "being written by another process" in err and not out.exists()
    finally:
        try:  # non-blocking: fails at once if the first writer is not reading
            fd = os.open(tmp_path / "zz.txt", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"the last document\n"), os.close(fd)
        except OSError:
            first.kill()
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert TokenData.open(out).num_tokens("train") > 0
    assert not list(tmp_path.glob(".out.*"))  # no lock or temporary files left beside the output


def test_build_shows_progress_with_a_total(tmp_path, tiny_dir, capsys):
    """The tokenising bar counts the sources' bytes against their total (an ETA), and ends full; the last line of
    output names what was written."""
    out = build_tiny_data(tmp_path, tiny_dir)
    captured = capsys.readouterr()
    assert re.search(r"tokenising: 100%\|.*tokens=", captured.err), captured.err[-300:]
    assert captured.out.splitlines()[-1].startswith(f"wrote {out}: ")
