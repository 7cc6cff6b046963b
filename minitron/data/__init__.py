"""Tokenise text sources into memmap token shards (train/val split by document) and sample from them.

    minitron data --source DIR --out runs/data

Modules, in the order data flows: `sources` (documents and chat conversations) -> `build` (tokenise and
write, `build_data`) -> `tokens` (the shards on disk, read back as `TokenData`).
"""
from minitron.data.build import build_data, concat_data, default_data, default_data_dir, tokenised_chats
from minitron.data.sources import (CORPORA, DOCS_GLOB, DOCS_SOURCES, corpus_sources, is_validation,
                                   iter_conversations, iter_documents, source_files)
from minitron.data.tokens import (SEQ_LEN, SPLITS, VAL_SEQS, ShardWriter, TokenData, calibration_batches, token_dtype,
                                  tokenizer_identity, write_meta)

__all__ = ["CORPORA", "DOCS_GLOB", "DOCS_SOURCES", "SEQ_LEN", "SPLITS", "ShardWriter", "TokenData", "VAL_SEQS",
           "build_data", "calibration_batches", "concat_data", "corpus_sources", "default_data", "default_data_dir", "is_validation",
           "iter_conversations", "iter_documents", "source_files", "token_dtype", "tokenised_chats",
           "tokenizer_identity", "write_meta"]
