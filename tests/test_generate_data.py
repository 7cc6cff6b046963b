"""`minitron data --generate`: the teacher's replies to prompts, batched, cached and resumed by id, as chat data
whose loss mask covers the replies only; the bundled prompts come from train documents only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chat_tiny import save_tiny_chat_model

from minitron.chat import replies as replies_mod
from minitron.chat.replies import answered, teacher_replies
from minitron.chat.templates import CHATML_TEMPLATE
from minitron.data import TokenData, build_data, split_of
from minitron.data.prompts import ASK, Generation, bundled_prompts, subjects, user_prompts
from minitron.errors import MinitronError

QUESTIONS = [f"Question number {i}: what is {w}?" for i, w in enumerate("abcdefghijkl")]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_tiny_chat_model(tmp_path_factory.mktemp("chat") / "tiny", CHATML_TEMPLATE)


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    return path


def test_generated_data_masks_the_prompts_and_holds_the_teachers_replies(teacher, prompts_file, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    generation = Generation(prompts=prompts_file, count=10, max_new_tokens=8, batch_size=4, device="cpu")
    out = build_data(tokenizer=str(teacher), out=tmp_path / "gen", generate=True, generation=generation,
                     dev_fraction=0.2, test_fraction=0.2)
    data = TokenData.open(out)
    assert data.meta["generated"]["count"] == 10 and data.meta["generated"]["prompts"] == str(prompts_file)
    replies = list((tmp_path / "cache" / "replies").glob("*.jsonl"))
    records = [json.loads(line) for line in replies[0].read_text().splitlines()]
    assert len(records) == 10 and {r["id"] for r in records} == {str(i) for i in range(1, 11)}  # the first 10
    assert all(r["messages"][0]["content"] == QUESTIONS[int(r["id"]) - 1] and r["messages"][-1]["role"] ==
               "assistant" for r in records)
    kept = [r for r in records if r["messages"][-1]["content"]]
    assert sum(data.meta["splits"][s]["documents"] for s in ("train", "dev", "test")) == len(kept)
    for split in ("train", "dev", "test"):
        expected = {r["id"] for r in kept if split_of(r["id"], 0.2, 0.2) == split}
        assert data.meta["splits"][split]["documents"] == len(expected)
    mask = np.concatenate([data.mask(s) for s in ("train", "dev", "test")])
    assert 0 < mask.mean() < 0.5  # the prompts (and chat headers) are masked out, the replies are not
    log = json.loads(replies[0].with_suffix(".json").read_text())["runs"]
    assert log[0]["replies"] == 10 and log[0]["tokens"] > 0 and log[0]["tokens_per_s"] > 0


def test_replies_are_resumed_by_id_and_reused(teacher, prompts_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "cache"))
    generation = Generation(prompts=prompts_file, count=12, max_new_tokens=6, batch_size=5, device="cpu")
    prompts = user_prompts(prompts_file, 12)
    calls = []
    real = replies_mod.complete_batch

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(len(args[3]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(replies_mod, "complete_batch", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        teacher_replies(str(teacher), prompts, generation)
    path = next((tmp_path / "cache" / "replies").glob("*.jsonl"))
    first = answered(path)
    assert len(first) == 5
    with open(path, "a") as f:
        f.write('{"id": "half a li')  # a line cut short by the interruption
    monkeypatch.setattr(replies_mod, "complete_batch", real)
    assert teacher_replies(str(teacher), prompts, generation) == path
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(p["id"] for p in prompts)  # each once: the 5 kept
    assert [r for r in records if r["id"] in first] == records[:5]
    monkeypatch.setattr(replies_mod, "write_replies", lambda *a, **k: pytest.fail("cached replies regenerated"))
    assert teacher_replies(str(teacher), prompts, generation) == path


def test_prompt_files_and_settings_are_checked(prompts_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt"}\n')
    with pytest.raises(MinitronError, match="needs a \"prompt\" string"):
        user_prompts(bad, None)
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    with pytest.raises(MinitronError, match="the last message must be the user's"):
        user_prompts(bad, None)
    bad.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n')
    with pytest.raises(MinitronError, match="same \"id\""):
        user_prompts(bad, None)
    assert [p["id"] for p in user_prompts(prompts_file, 3)] == ["1", "2", "3"]
    for setting, match in ((dict(count=0), "--generation.count"), (dict(batch_size=0), "--generation.batch-size")):
        with pytest.raises(MinitronError, match=match):
            Generation(**setting).check()
    with pytest.raises(MinitronError, match="--temperature"):
        teacher_replies("default", [], Generation(temperature=-1))
    with pytest.raises(MinitronError, match="leave out --source and --chat"):
        build_data(source=[str(prompts_file)], out=tmp_path / "x", generate=True)


def test_prompt_subjects_of_each_part():
    page = ".. _mod:\n\n*************\nThe abc module\n*************\n\nText.\n"
    assert subjects("docs", page) == ["The abc module"]
    assert subjects("wordnet", "hit, smash (noun): a success\nbell (noun): a hollow device\n") == ["hit", "bell"]
    assert subjects("chatterbot", "User: Hi?\nAssistant: Hello.\n\nUser: Hi?\nAssistant: Yes.\nUser: Bye\n") == \
        ["Hi?", "Bye"]
    assert subjects("fortunes", "Too short.\n\nA rather longer saying that is\n\tworth a thought.\n") == \
        ["A rather longer saying that is worth a thought."]


def test_bundled_prompts_come_from_train_documents_of_every_part():
    """The real packaged parts (`make corpus`): prompts from each, none from a dev or test document."""
    prompts = bundled_prompts(200)
    assert len(prompts) == 200 and len({p["id"] for p in prompts}) == 200
    assert {p["id"].split(":")[0] for p in prompts} == set(ASK)
    from minitron.data.corpora import PARTS
    for p in prompts:
        part, doc_id = p["id"].split(":")[0], p["id"].split(":", 1)[1].rsplit(":", 1)[0]
        held = PARTS[part].held_out
        assert split_of(doc_id, held, held) == "train"
        assert p["messages"][0]["role"] == "user" and 3 < len(p["messages"][0]["content"]) < 400
