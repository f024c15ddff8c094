"""The token ids a run trains on: each split's, cached once per corpus and tokenizer.

``prepare_data(DataConfig)`` finds the corpus (``corpus.py``), trains or loads the
tokenizer (``tokenizer.py``) and caches the token ids under ``cache_dir``, keyed by the
corpus's content and the tokenizer: in memory (``tokens-<corpus key>-<tokenizer key>.npz``,
loaded whole), or for a folder of shards or a large file in the sharded token store
(``store.py``: ``store-<corpus key>-<tokenizer key>/``, memory-mapped); ``DataConfig.store``
says which. A second call only hashes the source and loads or maps the cache. Each split is
its documents' tokens, each followed by the end-of-text id, the same in either cache.
Bits per byte (``bits_per_byte``) compare losses across tokenizers.

Every cache carries its digests (``digests.py``: the manifest a sweep seals its data with),
written when it is built and checked once per process before anything of it is read: a cache
file changed since it was built is a ``CacheError`` naming the file, never trained on. A cache
built before caches carried digests is sealed as it is found, on its first use.
"""

from __future__ import annotations

import enum
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gatelab.runners.data.corpus import (
    SPLITS,
    Source,
    SplitName,
    locate_source,
    read_corpus,
    shard_documents,
    source_shards,
    split_of,
)
from gatelab.runners.data.digests import check_manifest, write_manifest
from gatelab.runners.data.store import (
    TokenArray,
    build_store,
    open_store,
    store_complete,
    store_lock,
    store_path,
)
from gatelab.runners.data.tokenizer import (
    MIN_BPE_VOCAB,
    TOKENIZER_KINDS,
    TOKENIZER_VERSION,
    TextTokenizer,
    TokenizerKind,
    bpe_path,
    cached_tokenizer,
    fit_tokenizer,
)

logger = logging.getLogger("gatelab")

MEMORY_MAX_BYTES = 256 << 20
"""``store: auto`` keeps a single source file up to this size in memory."""


class TokenStore(enum.StrEnum):
    """Where a corpus's token ids are cached and read from; the same ids either way, so not
    part of a run's identity."""

    AUTO = "auto"
    """``shards`` for a folder or a file over ``MEMORY_MAX_BYTES``, else ``memory``."""
    MEMORY = "memory"
    """One ``.npz`` file, loaded whole."""
    SHARDS = "shards"
    """The sharded token store (``store.py``): built in parallel, memory-mapped."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "wiki"
    """``wiki`` (the built-in corpus) or a path: a text file, a folder of .txt files, or a
    .parquet/.jsonl file."""
    text_column: str = "text"
    """The column holding the text, for .parquet/.jsonl sources."""
    tokenizer: TokenizerKind = TokenizerKind.BPE
    vocab_size: int = 4096
    """BPE vocabulary size requested; ignored by ``bytes`` (always 257)."""
    cache_dir: str = ".gatelab/cache"
    store: TokenStore = TokenStore.AUTO
    build_workers: int | None = None
    """Processes that build a sharded store (``None``: one per core, at most one per shard)."""
    progress: bool = True
    """Show a progress bar while a sharded store is built."""

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"data.tokenizer {self.tokenizer!r} is not allowed; allowed: "
                             f"{', '.join(TOKENIZER_KINDS)}")
        object.__setattr__(self, "tokenizer", TokenizerKind(self.tokenizer))
        if self.tokenizer == "bpe" and self.vocab_size < MIN_BPE_VOCAB:
            raise ValueError(f"data.vocab_size {self.vocab_size} is too small for bpe (at least "
                             f"{MIN_BPE_VOCAB}); use data.tokenizer=bytes for raw bytes")

    @property
    def tokenizer_key(self) -> str:
        vocab = "" if self.tokenizer == "bytes" else str(self.vocab_size)
        return f"{self.tokenizer}{vocab}-t{TOKENIZER_VERSION}"


@dataclass(frozen=True, eq=False)
class TokenData:
    train: TokenArray
    """Token ids, documents joined by EOT: an array (uint16 when the vocabulary fits, else
    int32), or memory-mapped shards (uint16 or uint32)."""
    val: TokenArray
    test: TokenArray
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

    def split(self, name: SplitName) -> TokenArray:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def describe(self) -> str:
        n = {s: len(self.split(s)) for s in SPLITS}
        return (f"{self.corpus_name} ({self.corpus_hash}), {self.tokenizer_name} vocab "
                f"{self.vocab_size}: {n['train']:,} train / {n['val']:,} val / {n['test']:,} "
                f"test tokens, {self.bytes_per_token['train']:.2f} bytes/token")


def prepare_data(cfg: DataConfig) -> TokenData:
    """Token ids of every split for ``cfg``, from the cache when it has them and the tokenizer
    (checked against its digests first: ``CacheError`` names a changed file)."""
    start = time.perf_counter()
    cache = Path(cfg.cache_dir)
    source = locate_source(cfg.source, cfg.text_column)
    key = f"{source.key}-{cfg.tokenizer_key}"
    check_manifest(cache, key, missing_ok=True)  # before anything of the cache is read
    if _sharded(cfg.store, source):
        return _prepare_sharded(cfg, source, start)
    tokens_path = tokens_file(cache, source.key, cfg.tokenizer_key)
    tokenizer = cached_tokenizer(cfg.tokenizer, cfg.vocab_size, source.key, cache)
    if tokenizer is not None and tokens_path.is_file():
        arrays, bytes_per_token = _load_tokens(tokens_path)
        from_cache = True
        _seal_found(cfg, source)
    else:
        corpus = read_corpus(source)
        tokenizer = fit_tokenizer(cfg.tokenizer, cfg.vocab_size, source.key, cache,
                                  corpus.documents["train"])
        arrays, bytes_per_token = _encode_splits(tokenizer, corpus.documents)
        _save_tokens(tokens_path, arrays, bytes_per_token)
        write_manifest(cache, key, _cache_files(cfg, source))
        from_cache = False
    return TokenData(train=arrays["train"], val=arrays["val"], test=arrays["test"],
                     vocab_size=tokenizer.vocab_size, bytes_per_token=bytes_per_token,
                     corpus_name=source.name, corpus_hash=source.content_hash,
                     tokenizer=tokenizer, from_cache=from_cache,
                     seconds=time.perf_counter() - start)


def tokens_file(cache: Path, corpus_key: str, tokenizer_key: str) -> Path:
    """The in-memory path's token ids of every split, in one ``.npz``."""
    return cache / f"tokens-{corpus_key}-{tokenizer_key}.npz"


def data_key(cfg: DataConfig) -> str:
    """What the cache files of ``cfg`` are keyed by: its source's content and its tokenizer."""
    return f"{locate_source(cfg.source, cfg.text_column).key}-{cfg.tokenizer_key}"


def cache_files(cfg: DataConfig) -> list[Path]:
    """The files ``prepare_data(cfg)`` reads from the cache (after it has built them): the
    tokenizer (BPE), then the token ids (one file, or every file of a sharded store)."""
    return _cache_files(cfg, locate_source(cfg.source, cfg.text_column))


def _cache_files(cfg: DataConfig, source: Source) -> list[Path]:
    cache = Path(cfg.cache_dir)
    files = [] if cfg.tokenizer == "bytes" else [bpe_path(cache, source.key, cfg.vocab_size)]
    if _sharded(cfg.store, source):
        folder = store_path(cache, source.key, cfg.tokenizer_key)
        return files + sorted(p for p in folder.rglob("*") if p.is_file())
    return files + [tokens_file(cache, source.key, cfg.tokenizer_key)]


def _seal_found(cfg: DataConfig, source: Source) -> None:
    """Seal a cache built before caches carried digests, as it is (``check_manifest`` has
    checked one that carries them)."""
    key = f"{source.key}-{cfg.tokenizer_key}"
    if not check_manifest(Path(cfg.cache_dir), key):
        manifest = write_manifest(Path(cfg.cache_dir), key, _cache_files(cfg, source))
        logger.info("the token cache of %s had no digests (built before caches carried them): "
                    "sealed as found in %s; remove it to rebuild", source.name, manifest)


def _sharded(store: TokenStore, source: Source) -> bool:
    if store is TokenStore.AUTO:
        return source.kind == "folder" or (source.kind != "wiki"
                                           and source.path.stat().st_size > MEMORY_MAX_BYTES)
    return store is TokenStore.SHARDS


def _prepare_sharded(cfg: DataConfig, source: Source, start: float) -> TokenData:
    """``prepare_data`` through the sharded store: built once (one process builds it, any
    other waits for it), then memory-mapped."""
    cache = Path(cfg.cache_dir)
    path = store_path(cache, source.key, cfg.tokenizer_key)
    tokenizer = cached_tokenizer(cfg.tokenizer, cfg.vocab_size, source.key, cache)
    from_cache = tokenizer is not None and store_complete(path)
    if not from_cache:
        with store_lock(path):
            tokenizer = fit_tokenizer(cfg.tokenizer, cfg.vocab_size, source.key, cache,
                                      _train_documents(source))
            if not store_complete(path):
                tokenizer_file = (None if cfg.tokenizer == "bytes"
                                  else bpe_path(cache, source.key, cfg.vocab_size))
                build_store(source, tokenizer, cfg.tokenizer, tokenizer_file, path,
                            cfg.build_workers, cfg.progress)
                write_manifest(cache, f"{source.key}-{cfg.tokenizer_key}",
                               _cache_files(cfg, source))
    assert tokenizer is not None
    _seal_found(cfg, source)
    splits, bytes_per_token = open_store(path)
    return TokenData(train=splits["train"], val=splits["val"], test=splits["test"],
                     vocab_size=tokenizer.vocab_size, bytes_per_token=bytes_per_token,
                     corpus_name=source.name, corpus_hash=source.content_hash,
                     tokenizer=tokenizer, from_cache=from_cache,
                     seconds=time.perf_counter() - start)


def _train_documents(source: Source) -> Iterator[str]:
    """The train split's documents in order, read as far as they are wanted."""
    for shard in source_shards(source):
        for doc in shard_documents(shard, source.text_column):
            if split_of(doc) == "train":
                yield doc


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


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Mean cross-entropy per token in nats -> bits per UTF-8 byte of text."""
    return loss_nats / math.log(2) / bytes_per_token
