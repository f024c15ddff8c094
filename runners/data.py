"""The data a run trains on: token ids of each split, cached, and batches drawn from them.

``prepare_data(DataConfig)`` finds the corpus (``runners/corpus.py``), trains or loads the
tokenizer (``runners/tokenizer.py``) and caches the token ids under ``cache_dir`` as
``tokens-<corpus key>-<tokenizer key>.npz``; a second call only hashes the source and loads
that file. Each split is its documents' tokens, each followed by the end-of-text id.
Bits per byte (``bits_per_byte``) compare losses across tokenizers.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from runners.corpus import SPLITS, SplitName, locate_source, read_corpus
from runners.tokenizer import (
    MIN_BPE_VOCAB,
    TOKENIZER_KINDS,
    TOKENIZER_VERSION,
    TextTokenizer,
    TokenizerKind,
    cached_tokenizer,
    fit_tokenizer,
)


@dataclass(frozen=True)
class DataConfig:
    source: str = "wiki"
    """``wiki`` (the built-in corpus) or a path: a text file, a folder of .txt files, or a
    .parquet/.jsonl file."""
    text_column: str = "text"
    """The column holding the text, for .parquet/.jsonl sources."""
    tokenizer: str = "bpe"
    """One of ``TOKENIZER_KINDS``: ``bpe`` or ``bytes``. Typed ``str`` because recipes pass a
    plain string; checked on construction."""
    vocab_size: int = 4096
    """BPE vocabulary size requested; ignored by ``bytes`` (always 257)."""
    cache_dir: str = ".gatelab/cache"

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"data.tokenizer {self.tokenizer!r} is not allowed; allowed: "
                             f"{', '.join(TOKENIZER_KINDS)}")
        if self.tokenizer == "bpe" and self.vocab_size < MIN_BPE_VOCAB:
            raise ValueError(f"data.vocab_size {self.vocab_size} is too small for bpe (at least "
                             f"{MIN_BPE_VOCAB}); use data.tokenizer=bytes for raw bytes")

    @property
    def tokenizer_kind(self) -> TokenizerKind:
        return cast(TokenizerKind, self.tokenizer)

    @property
    def tokenizer_key(self) -> str:
        vocab = "" if self.tokenizer == "bytes" else str(self.vocab_size)
        return f"{self.tokenizer}{vocab}-t{TOKENIZER_VERSION}"


@dataclass(frozen=True, eq=False)
class TokenData:
    train: np.ndarray
    """Token ids (uint16 when the vocabulary fits, else int32), documents joined by EOT."""
    val: np.ndarray
    test: np.ndarray
    vocab_size: int
    """The tokenizer's actual size: the model's embedding size."""
    bytes_per_token: dict[str, float]
    """Per split: UTF-8 bytes of its documents / its token count (end-of-text ids included)."""
    corpus_name: str
    corpus_hash: str
    tokenizer: TextTokenizer = field(repr=False)
    from_cache: bool = False
    """True when the token ids were loaded, not encoded."""
    seconds: float = 0.0
    """Time ``prepare_data`` took."""

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name

    def split(self, name: SplitName) -> np.ndarray:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def describe(self) -> str:
        n = {s: len(self.split(s)) for s in SPLITS}
        return (f"{self.corpus_name} ({self.corpus_hash}), {self.tokenizer_name} vocab "
                f"{self.vocab_size}: {n['train']:,} train / {n['val']:,} val / {n['test']:,} "
                f"test tokens, {self.bytes_per_token['train']:.2f} bytes/token")


def prepare_data(cfg: DataConfig) -> TokenData:
    """Token ids of every split for ``cfg``, from the cache when it has them and the tokenizer."""
    start = time.perf_counter()
    cache = Path(cfg.cache_dir)
    source = locate_source(cfg.source, cfg.text_column)
    tokens_path = cache / f"tokens-{source.key}-{cfg.tokenizer_key}.npz"
    tokenizer = cached_tokenizer(cfg.tokenizer_kind, cfg.vocab_size, source.key, cache)
    if tokenizer is not None and tokens_path.is_file():
        arrays, bytes_per_token = _load_tokens(tokens_path)
        from_cache = True
    else:
        corpus = read_corpus(source)
        tokenizer = fit_tokenizer(cfg.tokenizer_kind, cfg.vocab_size, source.key, cache,
                                  corpus.documents["train"])
        arrays, bytes_per_token = _encode_splits(tokenizer, corpus.documents)
        _save_tokens(tokens_path, arrays, bytes_per_token)
        from_cache = False
    return TokenData(train=arrays["train"], val=arrays["val"], test=arrays["test"],
                     vocab_size=tokenizer.vocab_size, bytes_per_token=bytes_per_token,
                     corpus_name=source.name, corpus_hash=source.content_hash,
                     tokenizer=tokenizer, from_cache=from_cache,
                     seconds=time.perf_counter() - start)


def _encode_splits(tokenizer: TextTokenizer, documents: dict[SplitName, list[str]]
                   ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    arrays: dict[str, np.ndarray] = {}
    bytes_per_token: dict[str, float] = {}
    for split in SPLITS:
        docs = documents[split]
        encoded = tokenizer.encode_batch(docs)
        tokens = np.fromiter((i for ids in encoded for i in (*ids, tokenizer.eot_id)), dtype,
                             count=sum(len(ids) + 1 for ids in encoded))
        arrays[split] = tokens
        bytes_per_token[split] = sum(len(d.encode("utf-8")) for d in docs) / len(tokens)
    return arrays, bytes_per_token


def _save_tokens(path: Path, arrays: dict[str, np.ndarray],
                 bytes_per_token: dict[str, float]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, train=arrays["train"], val=arrays["val"], test=arrays["test"],
             bytes_per_token=np.array(json.dumps(bytes_per_token)))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary name, then an atomic rename: concurrent runs sharing the cache never
    # read a half-written file.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def _load_tokens(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    with np.load(path) as saved:
        arrays: dict[str, np.ndarray] = {split: saved[split] for split in SPLITS}
        bytes_per_token: dict[str, float] = json.loads(str(saved["bytes_per_token"]))
    return arrays, bytes_per_token


def window_starts(tokens: np.ndarray, seq_len: int, eot_id: int | None = None) -> np.ndarray:
    """Every legal start of a ``seq_len`` window (plus its one-token-shifted target) in
    ``tokens``: all of them, or with ``eot_id`` only those on an end-of-text token, so that
    every window opens with the same token (a BOS) and then a document's first token."""
    n_starts = len(tokens) - seq_len
    if n_starts < 1:
        raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len {seq_len}")
    if eot_id is None:
        return np.arange(n_starts, dtype=np.int64)
    starts = np.flatnonzero(tokens[:n_starts] == eot_id).astype(np.int64)
    if len(starts) == 0:
        raise ValueError(f"no end-of-text token leaves room for a {seq_len}-token window: "
                         "use data.window_start=random or a shorter seq_len")
    return starts


def sample_batch(tokens: np.ndarray, batch_size: int, seq_len: int,
                 generator: torch.Generator, starts: np.ndarray | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at uniformly random starts (drawn from ``starts`` when given,
    see ``window_starts``): inputs ``x`` (B, T) and next-token targets ``y`` (B, T) = ``x``
    shifted by one, int64. Deterministic for a seeded ``generator``, which it advances."""
    if starts is None:
        n_starts = len(tokens) - seq_len
        if n_starts < 1:
            raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len "
                             f"{seq_len}")
        picked = torch.randint(0, n_starts, (batch_size,), generator=generator).numpy()
    else:
        picked = starts[torch.randint(0, len(starts), (batch_size,), generator=generator).numpy()]
    return _windows(tokens, picked, seq_len)


def eval_batches(tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int,
                 eot_id: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` batches of windows at fixed starts spread evenly from the first legal
    start to the last (``window_starts``; with ``eot_id`` only end-of-text positions): the same
    every call. A split shorter than ``batch_size * n_batches`` disjoint windows gets
    overlapping ones (shared tokens are counted again), never a wrap."""
    legal = window_starts(tokens, seq_len, eot_id)
    picks = np.linspace(0, len(legal) - 1, batch_size * n_batches).round().astype(np.int64)
    starts = legal[picks]
    return [_windows(tokens, starts[i:i + batch_size], seq_len)
            for i in range(0, len(starts), batch_size)]


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    rows_BT1 = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    block = torch.from_numpy(rows_BT1)
    return block[:, :-1], block[:, 1:]


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Mean cross-entropy per token in nats -> bits per UTF-8 byte of text."""
    return loss_nats / math.log(2) / bytes_per_token
