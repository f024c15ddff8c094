"""Tokenizers: a byte-level BPE trained locally on the train split, or raw bytes.

Both put an end-of-text token between documents, so training windows may cross documents.
A trained BPE is cached by (corpus hash, vocabulary size, ``TOKENIZER_VERSION``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

TOKENIZER_VERSION = 1
"""Bump when training changes, so cached tokenizers and token ids are rebuilt."""
EOT = "<|endoftext|>"


class TextTokenizer(Protocol):
    vocab_size: int
    eot_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; end-of-text is 256."""

    vocab_size = 257
    eot_id = 256

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A HF ``tokenizers`` byte-level BPE."""

    def __init__(self, tokenizer: object):
        from tokenizers import Tokenizer

        assert isinstance(tokenizer, Tokenizer)
        self.tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        eot = tokenizer.token_to_id(EOT)
        assert eot is not None
        self.eot_id = eot

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def train_bpe(documents: list[str], vocab_size: int) -> BPETokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(documents, trainer)
    return BPETokenizer(tok)


def load_or_train_bpe(documents: list[str], vocab_size: int, corpus_hash: str,
                      cache_dir: Path) -> tuple[BPETokenizer, bool]:
    """(tokenizer, trained now?) from the cache, training and saving it on a miss."""
    from tokenizers import Tokenizer

    path = cache_dir / f"bpe-{corpus_hash}-v{vocab_size}-t{TOKENIZER_VERSION}.json"
    if path.is_file():
        return BPETokenizer(Tokenizer.from_file(str(path))), False
    tokenizer = train_bpe(documents, vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tokenizer.tok.save(str(tmp))
    tmp.replace(path)
    return tokenizer, True
