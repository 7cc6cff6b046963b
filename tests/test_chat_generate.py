"""Generation: stop handling, streaming vs batched replies, `minitron generate`, and `minitron chat` driven
through a real pseudo-terminal."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from chat_tiny import save_tiny_chat_model, tekken_tokenizer, tiny_tokenizer

from minitron.chat.generate import Sampling, StopScanner, complete, complete_many, generate_reply
from minitron.chat.templates import CHATML_TEMPLATE, encode, get_format

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_chat_model(tmp_path_factory.mktemp("chat") / "tiny", CHATML_TEMPLATE)


@pytest.fixture(scope="module")
def loaded(model_dir):
    from minitron.chat.cli import load_chat_model

    return load_chat_model(str(model_dir), device="cpu")


def scan(tok, text: str, stops: tuple[str, ...], stop_ids=frozenset()) -> tuple[list[str], StopScanner]:
    scanner, pieces = StopScanner(tok, stops, set(stop_ids)), []
    for token in tok(text, add_special_tokens=False)["input_ids"]:
        pieces.append(scanner.push(token))
        if scanner.done:
            break
    return pieces, scanner


def test_stop_string_is_cut_and_never_shown():
    tok = tiny_tokenizer()
    pieces, scanner = scan(tok, "Hello there!\n<extra_id_1>User\nmore", ("<extra_id_1>",))
    assert "".join(pieces) == "Hello there!\n" and scanner.done
    assert scanner.completion().text == "Hello there!\n" and scanner.completion().stopped
    # a stop string spread over several tokens is held back until it is complete (or ruled out)
    pieces, scanner = scan(tok, "Paris. ENDING", ("END",))
    assert "".join(pieces) == "Paris. " and scanner.completion().text == "Paris. "
    assert not any("E" in p for p in pieces)
    pieces, scanner = scan(tok, "Paris. EN", ("END",))
    assert not scanner.done and scanner.completion().text == "Paris. EN" and not scanner.completion().stopped


def test_stop_token_id_ends_the_reply():
    tok = tiny_tokenizer()
    pieces, scanner = scan(tok, "Paris.<|im_end|>junk", (), {tok.eos_token_id})
    assert "".join(pieces) == "Paris." and scanner.completion().text == "Paris." and scanner.done
    assert scanner.completion().token_ids[-1] == tok.eos_token_id


def test_streamed_and_batched_greedy_replies_agree(loaded):
    model, tok, fmt = loaded
    conversations = [[{"role": "user", "content": q}] for q in (QUESTION, "Hi", "How are you today? Weather?")]
    sampling = Sampling(max_new_tokens=12)
    streamed = [complete(model, tok, fmt, c, sampling=sampling) for c in conversations]
    batched = complete_many(model, tok, fmt, [encode(tok, fmt, c) for c in conversations], sampling,
                            batch_size=3, progress=False)
    assert [c.text for c in streamed] == [c.text for c in batched]
    assert [c.stopped for c in streamed] == [c.stopped for c in batched]
    assert generate_reply(model, tok, conversations[0], max_new_tokens=12) == streamed[0].text.strip()


def test_streaming_loop_matches_transformers_generate(family):
    from conftest import tiny_model

    tok = tiny_tokenizer()
    model = tiny_model(family, vocab_size=len(tok))
    fmt = get_format(tok, "chatml")
    prompt = encode(tok, fmt, [{"role": "user", "content": QUESTION}])
    ours = complete(model, tok, fmt, [{"role": "user", "content": QUESTION}], sampling=Sampling(10))
    ids = torch.tensor([prompt])
    theirs = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(ours.token_ids),
                            do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert ours.token_ids == theirs


def test_mistral_format_generates_from_mistral_common_ids():
    from conftest import tiny_model

    tekken = tekken_tokenizer()
    fmt = get_format(tekken, "mistral")
    model = tiny_model("mistral", vocab_size=len(tekken), num_hidden_layers=1)
    messages = [{"role": "user", "content": QUESTION}]
    first = int(model(input_ids=torch.tensor([encode(tekken, fmt, messages)])).logits[0, -1].argmax())
    with torch.no_grad():  # make </s> (id 2) the greedy choice
        model.lm_head.weight[2] = model.lm_head.weight[first] * 1.01
    completion = complete(model, tekken, fmt, messages, sampling=Sampling(5))
    assert completion.stopped and completion.token_ids == [2] and completion.text == ""


def test_sampling_is_seeded(loaded):
    model, tok, fmt = loaded
    messages = [{"role": "user", "content": QUESTION}]
    runs = [complete(model, tok, fmt, messages, sampling=Sampling(12, 1.0, 0.9, seed)).text for seed in (0, 0, 1)]
    assert runs[0] == runs[1]


def test_generate_command_batch(model_dir, tmp_path):
    from minitron.cli import run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": QUESTION}) + "\n" +
                       json.dumps({"messages": [{"role": "user", "content": "Hi"}], "id": 7}) + "\n")
    out = tmp_path / "out.jsonl"
    run(["generate", "--model", str(model_dir), "--input", str(prompts), "--output", str(out),
         "--max-new-tokens", "6", "--device", "cpu"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in records] == [None, 7]
    assert all(isinstance(r["reply"], str) and isinstance(r["stopped"], bool) for r in records)
    assert records[0]["prompt"] == QUESTION and "messages" not in records[0]


def test_generate_command_refuses_no_prompt(model_dir):
    from minitron.cli import run
    from minitron.errors import MinitronError

    with pytest.raises(MinitronError, match="--prompt"):
        run(["generate", "--model", str(model_dir)])


def test_chat_session_commands(loaded, capsys):
    from minitron.chat.cli import ChatSession

    model, tok, fmt = loaded
    session = ChatSession(model, tok, fmt, "Be brief.", None, Sampling(4))
    assert session.handle("Hi") and [m["role"] for m in session.messages] == ["system", "user", "assistant"]
    assert session.handle("/tool sunny") and [m["role"] for m in session.messages][-2:] == ["tool", "assistant"]
    assert session.handle("/reset") and session.messages == [{"role": "system", "content": "Be brief."}]
    assert session.handle("/system") and session.messages == []
    assert session.handle("/what") and "/reset" in capsys.readouterr().out
    assert not session.handle("/exit")


class Terminal:
    """A command running on a pseudo-terminal, read until expected text appears."""

    def __init__(self, argv: list[str]):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, close_fds=True,
                                     env={**os.environ, "TERM": "dumb"})
        os.close(slave)
        self.output = ""

    def read_until(self, text: str, count: int = 1, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {text!r} within {timeout} s; the terminal shows:\n{self.output[-2000:]}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the command ended before {text!r}:\n{self.output[-2000:]}")
            self.output += chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return self.output

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


def test_chat_in_a_pseudo_terminal(model_dir, loaded):
    model, tok, fmt = loaded
    expected = complete(model, tok, fmt, [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": QUESTION}], sampling=Sampling(8))
    term = Terminal([sys.executable, "-m", "minitron", "chat", "--model", str(model_dir), "--temperature", "0",
                     "--max-new-tokens", "8", "--system", "Be brief.", "--device", "cpu"])
    try:
        term.read_until(">>> ")
        assert "(model format)" in term.output
        term.type(QUESTION)
        shown = term.read_until(">>> ", count=2)
        reply = shown.split(QUESTION + "\n", 1)[1].rsplit(">>> ", 1)[0]
        assert reply.startswith(expected.text)
        assert reply.endswith("\n") and ("[cut at 8 tokens]" in reply) == (not expected.stopped)
        term.type("/reset")
        term.read_until("(conversation reset)")
        term.read_until(">>> ", count=3)
        term.type("/exit")
    finally:
        code = term.close()
    assert code == 0


@pytest.mark.slow
def test_default_teacher_knows_paris():
    result = subprocess.run([sys.executable, "-m", "minitron", "generate", "--model", "default", "--prompt", QUESTION,
                             "--max-new-tokens", "32"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout


def test_streamed_text_is_the_reply_and_stop_strings_end_generation(loaded):
    """What `on_text` receives is the reply; a stop string of several tokens ends `model.generate` itself
    (transformers' `stop_strings`), not just the text."""
    from dataclasses import replace

    model, tok, fmt = loaded
    messages = [{"role": "user", "content": QUESTION}]
    pieces = []
    full = complete(model, tok, fmt, messages, sampling=Sampling(16), on_text=pieces.append)
    assert "".join(pieces) == full.text and len(full.text) > 6
    stop = full.text[2:5]
    assert stop not in tok.get_vocab() and len(tok(stop, add_special_tokens=False)["input_ids"]) > 1
    pieces = []
    cut = complete(model, tok, replace(fmt, stop_strings=(stop,)), messages, sampling=Sampling(16),
                   on_text=pieces.append)
    assert cut.stopped and cut.text == full.text[:full.text.find(stop)] == "".join(pieces)
    assert len(cut.token_ids) < 16 and cut.token_ids == full.token_ids[:len(cut.token_ids)]
