"""A tiny byte-level BPE tokenizer with chat tokens, and a tiny chat model saved with it (no downloads).

The vocabulary holds only the characters of CORPUS, so even a random model writes printable text.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CORPUS = [
    "You are a helpful assistant. What is the capital of France? Paris. Hello there! How are you today?",
    'The weather in Paris is sunny, 22 degrees. {"name": "get_weather", "arguments": {"city": "Paris"}}',
    "System User Assistant Tool <tool> </tool> <context> </context> <toolcall> </toolcall> <tool_call>",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\"()[]{}<>/|-_+=*&%$#@\n",
]
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<extra_id_0>", "<extra_id_1>"]


def tiny_tokenizer(chat_tokens: list[str] = CHAT_TOKENS, chat_template: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=chat_tokens,
                                                        show_progress=False))
    eos = "<|im_end|>" if "<|im_end|>" in chat_tokens else chat_tokens[-1]
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)
    if chat_template:
        out.chat_template = chat_template
    return out


def save_tiny_chat_model(path: Path, chat_template: str | None = None) -> Path:
    """A random tiny Llama with the tiny tokenizer (and `chat_template` as its own), saved to `path`."""
    from conftest import tiny_model
    from transformers import GenerationConfig

    tokenizer = tiny_tokenizer(chat_template=chat_template)
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=3)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(path)
    return path


@lru_cache(maxsize=1)
def tekken_tokenizer():
    """transformers' tokenizer for Mistral-NeMo's Tekken vocabulary (shipped by mistral-common), made once."""
    from minitron.chat.mistral import hf_tekken_tokenizer

    return hf_tekken_tokenizer()
