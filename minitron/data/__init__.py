"""Tokenise text sources into memmap token shards (train/dev/test, split by document) and sample from them.

    minitron data --source DIR --out runs/data

Modules, in the order data flows: `sources` (documents and chat conversations; `packaged` and `corpora`: the
corpora built by default, from packaged text) -> `build` (tokenise and write, `build_data`; mixes, `mix_data`) ->
`tokens` (the shards on disk, read back as `TokenData`).
"""
from minitron.data.build import build_data, default_data, default_data_dir, mix_data, tokenised_chats
from minitron.data.corpora import DOCS_GLOB, DOCS_SOURCES, MIXES, PARTS, named_corpus
from minitron.data.sources import iter_conversations, iter_documents, source_files, split_of
from minitron.data.tokens import (EVAL_TOKENS, SEQ_LEN, SPLITS, VAL_SEQS, ShardWriter, TokenData, Windows,
                                  calibration_batches, spread_starts, token_dtype, tokenizer_identity,
                                  windows_of, write_meta)

__all__ = ["DOCS_GLOB", "DOCS_SOURCES", "EVAL_TOKENS", "MIXES", "PARTS", "SEQ_LEN", "SPLITS", "ShardWriter",
           "TokenData", "VAL_SEQS", "Windows", "build_data", "calibration_batches", "default_data",
           "default_data_dir", "iter_conversations", "iter_documents", "mix_data", "named_corpus",
           "source_files", "split_of", "spread_starts", "token_dtype", "tokenised_chats",
           "tokenizer_identity", "windows_of", "write_meta"]
