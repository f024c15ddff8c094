"""The data a run trains on: token ids of each split, cached, and batches drawn from them.

``prepare_data(DataConfig)`` reads the corpus (``runners/corpus.py``), trains or loads the
tokenizer (``runners/tokenizer.py``) and caches the token ids, so a second run starts at once.
Bits per byte (``loss / ln 2 / bytes_per_token``) compare runs across tokenizers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from runners.corpus import load_corpus
from runners.tokenizer import TOKENIZER_VERSION, ByteTokenizer, TextTokenizer, load_or_train_bpe

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataConfig:
    source: str = "wiki"
    text_column: str = "text"
    tokenizer: Literal["bpe", "bytes"] | str = "bpe"
    vocab_size: int = 4096
    cache_dir: str = ".gatelab/cache"


@dataclass
class TokenData:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    vocab_size: int
    bytes_per_token: dict[str, float]
    corpus_name: str
    corpus_hash: str
    tokenizer_name: str
    tokenizer: TextTokenizer | None = field(default=None, repr=False)
    """Loaded lazily for cached data (``get_tokenizer``); training does not need it."""
    from_cache: bool = False
    seconds: float = 0.0

    def describe(self) -> str:
        n = {s: len(getattr(self, s)) for s in SPLITS}
        return (f"{self.corpus_name} ({self.corpus_hash}), {self.tokenizer_name} vocab "
                f"{self.vocab_size}: {n['train']:,} train / {n['val']:,} val / {n['test']:,} "
                f"test tokens, {self.bytes_per_token['train']:.2f} bytes/token")


def prepare_data(cfg: DataConfig) -> TokenData:
    """Token ids of every split for ``cfg``, from the cache when it has them."""
    start = time.perf_counter()
    cache = Path(cfg.cache_dir)
    corpus = load_corpus(cfg.source, cfg.text_column)
    tok_name = "bytes" if cfg.tokenizer == "bytes" else f"bpe{cfg.vocab_size}"
    ids_path = cache / f"tokens-{corpus.content_hash}-{tok_name}-t{TOKENIZER_VERSION}.npz"
    if ids_path.is_file():
        with np.load(ids_path) as saved:
            arrays = {s: saved[s] for s in SPLITS}
            vocab, bpt = int(saved["vocab_size"]), json_dict(saved["bytes_per_token"])
        return TokenData(**arrays, vocab_size=vocab, bytes_per_token=bpt,
                         corpus_name=corpus.name, corpus_hash=corpus.content_hash,
                         tokenizer_name=tok_name, from_cache=True,
                         seconds=time.perf_counter() - start)
    tokenizer = get_tokenizer(cfg, corpus.documents["train"], corpus.content_hash)
    arrays, bpt = {}, {}
    for split in SPLITS:
        docs = corpus.documents[split]
        ids: list[int] = []
        for doc_ids in tokenizer.encode_batch(docs):
            ids.extend(doc_ids)
            ids.append(tokenizer.eot_id)
        dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.int32
        arrays[split] = np.asarray(ids, dtype=dtype)
        bpt[split] = sum(len(d.encode("utf-8")) for d in docs) / max(len(ids), 1)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = ids_path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays, vocab_size=tokenizer.vocab_size,
             bytes_per_token=np.array([bpt[s] for s in SPLITS]))
    tmp.replace(ids_path)
    return TokenData(**arrays, vocab_size=tokenizer.vocab_size, bytes_per_token=bpt,
                     corpus_name=corpus.name, corpus_hash=corpus.content_hash,
                     tokenizer_name=tok_name, tokenizer=tokenizer,
                     seconds=time.perf_counter() - start)


def json_dict(values: np.ndarray) -> dict[str, float]:
    return {s: float(v) for s, v in zip(SPLITS, values.tolist(), strict=True)}


def get_tokenizer(cfg: DataConfig, train_docs: list[str], corpus_hash: str) -> TextTokenizer:
    if cfg.tokenizer == "bytes":
        return ByteTokenizer()
    if cfg.tokenizer != "bpe":
        raise ValueError(f"data.tokenizer {cfg.tokenizer!r} is not allowed; allowed: bpe, bytes")
    return load_or_train_bpe(train_docs, cfg.vocab_size, corpus_hash, Path(cfg.cache_dir))[0]


def sample_batch(tokens: np.ndarray, batch_size: int, seq_len: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs (B, T) and next-token targets (B, T), int64. Deterministic for a
    seeded ``generator``."""
    if len(tokens) <= seq_len + 1:
        raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len {seq_len}")
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    return _windows(tokens, starts.tolist(), seq_len)


def eval_batches(tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` batches of windows at evenly spaced, fixed starts (the same every call).
    A split too short for that many distinct windows repeats windows (overlapping starts)."""
    count = batch_size * n_batches
    last = len(tokens) - seq_len - 1
    if last < 0:
        raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len {seq_len}")
    starts = np.linspace(0, last, count).astype(np.int64).tolist()
    return [_windows(tokens, starts[i:i + batch_size], seq_len)
            for i in range(0, count, batch_size)]


def _windows(tokens: np.ndarray, starts: list[int], seq_len: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    block = torch.from_numpy(rows)
    return block[:, :-1], block[:, 1:]


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Cross-entropy per token in nats -> bits per UTF-8 byte of text."""
    return loss_nats / math.log(2) / bytes_per_token
