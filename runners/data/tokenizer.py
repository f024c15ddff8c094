"""Tokenizers: a byte-level BPE trained locally on the train split, or raw bytes.

Both have an end-of-text id, which ``tokens.py`` puts after every document so training
windows may cross documents. Both round-trip any text: ``decode(encode(t)) == t``.
A trained BPE is cached as ``bpe-<corpus key>-v<vocab size>-t<TOKENIZER_VERSION>.json``.
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TOKENIZER_VERSION = 1
"""Bump when training or encoding changes, so cached tokenizers and token ids are rebuilt."""
EOT = "<|endoftext|>"



class TokenizerKind(enum.StrEnum):
    BPE = "bpe"
    """A byte-level BPE trained on the corpus's train split."""
    BYTES = "bytes"
    """Raw UTF-8 bytes plus end-of-text: vocabulary 257, no training."""


TOKENIZER_KINDS: tuple[TokenizerKind, ...] = tuple(TokenizerKind)
MIN_BPE_VOCAB = 258
"""256 byte tokens, end-of-text and at least one merge."""
BPE_TRAIN_BYTES = 1 << 30
"""A BPE trains on the train split's first documents up to this many UTF-8 bytes (1 GiB: the
whole split of any corpus that fits in memory, a sample of a sharded one)."""


class TextTokenizer(Protocol):
    name: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; end-of-text ids are dropped."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; end-of-text is 256, so the vocabulary is 257."""

    name = "bytes"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        # A window cut inside a multi-byte character decodes it as U+FFFD rather than failing.
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A HF ``tokenizers`` byte-level BPE: no normalization, no prefix space, so it is lossless."""

    def __init__(self, tokenizer: Tokenizer):
        eot = tokenizer.token_to_id(EOT)
        if eot is None:
            raise ValueError(f"a BPE tokenizer without the end-of-text token {EOT!r}")
        self.tok = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size()
        self.eot_id: int = eot
        self.name = f"bpe{self.vocab_size}"

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # One call for many texts: the batch is encoded on all cores.
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def train_bpe(documents: list[str], vocab_size: int) -> BPETokenizer:
    """A byte-level BPE of at most ``vocab_size`` tokens (fewer if the text has too few pairs to
    merge) trained on ``documents``; the same documents give the same tokenizer."""
    if vocab_size < MIN_BPE_VOCAB:
        raise ValueError(f"a BPE vocabulary needs at least {MIN_BPE_VOCAB} tokens, got "
                         f"{vocab_size}; use tokenizer 'bytes' for raw bytes")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(documents, trainer)
    return BPETokenizer(tok)


def bpe_training_documents(train_documents: Iterable[str]) -> list[str]:
    """The documents a BPE trains on: the train split's, in order, until they reach
    ``BPE_TRAIN_BYTES`` (the document that crosses it included)."""
    picked: list[str] = []
    total = 0
    for doc in train_documents:
        picked.append(doc)
        total += len(doc.encode("utf-8"))
        if total >= BPE_TRAIN_BYTES:
            break
    return picked


def load_tokenizer(kind: TokenizerKind, path: Path | None) -> TextTokenizer:
    """A tokenizer from its saved file (``bytes`` needs none)."""
    if kind == "bytes":
        return ByteTokenizer()
    if path is None:
        raise ValueError("a BPE tokenizer is loaded from its file; none was given")
    return BPETokenizer(Tokenizer.from_file(str(path)))


def bpe_path(cache_dir: Path, corpus_key: str, vocab_size: int) -> Path:
    return cache_dir / f"bpe-{corpus_key}-v{vocab_size}-t{TOKENIZER_VERSION}.json"


def cached_tokenizer(kind: TokenizerKind, vocab_size: int, corpus_key: str,
                     cache_dir: Path) -> TextTokenizer | None:
    """The tokenizer if it needs no training or is cached, else ``None``."""
    if kind == "bytes":
        return ByteTokenizer()
    path = bpe_path(cache_dir, corpus_key, vocab_size)
    return load_tokenizer(kind, path) if path.is_file() else None


def fit_tokenizer(kind: TokenizerKind, vocab_size: int, corpus_key: str, cache_dir: Path,
                  train_documents: Iterable[str]) -> TextTokenizer:
    """The cached tokenizer, or a BPE trained on ``train_documents`` (read only as far as
    ``bpe_training_documents`` takes them) and cached."""
    found = cached_tokenizer(kind, vocab_size, corpus_key, cache_dir)
    if found is not None:
        return found
    tokenizer = train_bpe(bpe_training_documents(train_documents), vocab_size)
    path = bpe_path(cache_dir, corpus_key, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary name, then an atomic rename: concurrent runs sharing the cache never
    # read a half-written file (and write identical ones).
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tokenizer.tok.save(str(tmp))
    tmp.replace(path)
    return tokenizer
