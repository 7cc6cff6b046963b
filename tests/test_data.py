"""Token shards: every kind of source, dtypes, a split by document that does not depend on where data lives,
and sampling that is a pure function of (seed, step)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli_error, run_cli, tiny_tokenizer, write_corpus
from minitron.data import (DOCS_SOURCES, ShardWriter, TokenData, build_data, iter_documents, token_dtype,
                           write_meta)


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
                     val_fraction=0.3)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == len(docs)
    tok = tiny_tokenizer()
    expected = sum(len(tok(text, add_special_tokens=False)["input_ids"]) + 1 for _, text in docs)  # + EOS each
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == expected
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["vocab_size"] == 100


def test_split_is_by_document_and_does_not_depend_on_location(tmp_path, tiny_dir):
    a = write_corpus(tmp_path / "a", docs=30)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    one = TokenData.open(build_data(source=[str(a)], tokenizer=str(tiny_dir), out=tmp_path / "d1", glob="*.txt",
                                    val_fraction=0.3))
    two = TokenData.open(build_data(source=[str(b)], tokenizer=str(tiny_dir), out=tmp_path / "d2", glob="*.txt",
                                    val_fraction=0.3))
    for split in ("train", "val"):
        assert np.array_equal(one.tokens(split), two.tokens(split))
    eos = tiny_tokenizer().eos_token_id
    for split in ("train", "val"):  # every document is whole in its split: it ends with its EOS
        toks = one.tokens(split)
        assert toks[-1] == eos and (toks == eos).sum() == one.meta["splits"][split]["documents"]


def test_large_vocabularies_use_uint32(tmp_path):
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    ids = [70_000, 5, 131_071]
    writer = ShardWriter(tmp_path, np.dtype(np.uint32), with_mask=False)
    writer.add("train", ids)
    writer.add("val", ids[:2])
    write_meta(tmp_path, tiny_tokenizer(), np.dtype(np.uint32), writer.close())
    assert TokenData.open(tmp_path).tokens("train").tolist() == ids


def test_sampling_is_a_pure_function_of_seed_and_step(tiny_data):
    data = TokenData.open(tiny_data)
    a = data.sample("train", 4, 16, seed=0, step=3, micro=1)["input_ids"]
    assert a.shape == (4, 17) and a.dtype == torch.int64
    assert torch.equal(a, data.sample("train", 4, 16, seed=0, step=3, micro=1)["input_ids"])
    assert not torch.equal(a, data.sample("train", 4, 16, seed=0, step=4, micro=1)["input_ids"])
    assert not torch.equal(a, data.sample("train", 4, 16, seed=1, step=3, micro=1)["input_ids"])
    fixed = data.fixed("val", 3, 8)["input_ids"]
    assert torch.equal(fixed[:, :8].flatten(), torch.from_numpy(data.tokens("val")[:24].astype(np.int64)))


def test_data_command_and_bad_sources(tmp_path, tiny_dir, capsys):
    corpus = write_corpus(tmp_path / "c", docs=10)
    run_cli("data", "--source", corpus, "--tokenizer", tiny_dir, "--out", tmp_path / "d", "--glob", "*.txt",
            "--val-fraction", 0.3)
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
    assert meta["splits"]["val"]["documents"] > 0 and meta["splits"]["train"]["tokens"] > 100_000


@pytest.mark.parametrize("change", [
    lambda m: m.pop("splits"), lambda m: m.pop("dtype"), lambda m: m.pop("tokenizer"),
    lambda m: m.update(dtype="float64"), lambda m: m.update(dtype=16), lambda m: m["splits"].pop("val"),
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
                              str(tiny_dir), "--out", str(out), "--glob", "*.txt", "--val-fraction", "0.3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".out.tmp-*")) and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)  # until the first writer is inside its write
        assert list(tmp_path.glob(".out.tmp-*")), first.communicate()
        other = write_corpus(tmp_path / "other", docs=10, seed=1)
        err = cli_error(capsys, "data", "--source", other, "--tokenizer", tiny_dir, "--out", out, "--glob", "*.txt",
                        "--val-fraction", 0.3, "--overwrite")
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
