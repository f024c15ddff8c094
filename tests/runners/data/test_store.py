"""The sharded token store: built once from generated shards, memory-mapped, and the same tokens
and windows as the in-memory path; folder keys; a run on a sharded folder trains."""

from __future__ import annotations

import hashlib
import json
import pydoc_data.topics
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from gatelab.runners.data import corpus as corpus_module
from gatelab.runners.data import tokenizer as tokenizer_module
from gatelab.runners.data import tokens as tokens_module
from gatelab.runners.data.batches import eval_batches, sample_batch, window_starts
from gatelab.runners.data.corpus import SPLITS, CorpusError, load_corpus, locate_source
from gatelab.runners.data.digests import CacheError
from gatelab.runners.data.store import ShardedTokens, positions_of, store_path
from gatelab.runners.data.tokens import DataConfig, TokenData, TokenStore, prepare_data

DOCS = [d for d in pydoc_data.topics.topics.values() if d.strip()]
"""~230 documents of real English (and code), 465k characters."""


def write_shards(folder: Path, docs: list[str]) -> Path:
    """A folder of generated shards: parquet, JSONL and .txt files (one document each, in a
    sub-folder), the documents in their listing order."""
    folder.mkdir(parents=True)
    (folder / "z-notes").mkdir()
    thirds = np.array_split(np.arange(len(docs)), 5)
    pl.DataFrame({"text": [docs[i] for i in thirds[0]], "id": thirds[0]}).write_parquet(
        folder / "a-000.parquet", row_group_size=7)
    pl.DataFrame({"text": [docs[i] for i in thirds[1]]}).write_parquet(folder / "a-001.parquet")
    (folder / "b-000.jsonl").write_text("\n".join(json.dumps({"text": docs[i]})
                                                  for i in thirds[2]))
    for i in thirds[3]:
        (folder / "c" / f"{i:04d}.txt").parent.mkdir(exist_ok=True)
        (folder / "c" / f"{i:04d}.txt").write_text(docs[i])
    (folder / "d-000.jsonl").write_text("\n".join(json.dumps({"text": docs[i]})
                                                  for i in thirds[4]))
    (folder / "z-notes" / "README.md").write_text("not a document")
    return folder


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenData, TokenData, Path]:
    """The same generated folder through the in-memory path and the sharded store (BPE 512)."""
    tmp = tmp_path_factory.mktemp("store")
    folder = write_shards(tmp / "shards", DOCS)
    cache = tmp / "cache"
    memory = prepare_data(DataConfig(source=str(folder), vocab_size=512, cache_dir=str(cache),
                                     store=TokenStore.MEMORY))
    sharded = prepare_data(DataConfig(source=str(folder), vocab_size=512, cache_dir=str(cache),
                                      store=TokenStore.AUTO, build_workers=1, progress=False))
    return memory, sharded, cache


def as_array(tokens: np.ndarray | ShardedTokens) -> np.ndarray:
    return tokens.take(np.arange(len(tokens)))


def test_a_folder_of_shards_reads_every_document_in_listing_order(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "shards", DOCS)
    source = locate_source(str(folder))
    shards = corpus_module.source_shards(source)
    assert [s.kind for s in shards] == ["parquet", "parquet", "jsonl", "document", "jsonl"]
    read = [d for s in shards for d in corpus_module.shard_documents(s)]
    assert read == [d.strip() for d in DOCS]
    corpus = load_corpus(str(folder))
    assert sorted(d for split in SPLITS for d in corpus.documents[split]) == sorted(read)


def test_the_store_holds_the_in_memory_tokens(both: tuple[TokenData, TokenData, Path]) -> None:
    memory, sharded, cache = both
    assert isinstance(memory.train, np.ndarray) and isinstance(sharded.train, ShardedTokens)
    for split in SPLITS:
        assert np.array_equal(as_array(sharded.split(split)), memory.split(split)), split
        assert sharded.bytes_per_token[split] == pytest.approx(memory.bytes_per_token[split])
    assert sharded.vocab_size == memory.vocab_size == 512
    store = store_path(cache, locate_source(sharded.corpus_name).key,
                       DataConfig(vocab_size=512).tokenizer_key)
    files = sorted(p.name for p in store.iterdir())
    assert files == ["index.json"] + [f"shard-{i:05d}.bin" for i in range(5)]
    for part in sharded.train.parts:
        assert isinstance(part, np.memmap)
        assert part.dtype == np.uint16
    total = sum(len(sharded.split(s)) for s in SPLITS)
    assert sum((store / f"shard-{i:05d}.bin").stat().st_size for i in range(5)) == 2 * total


def test_the_store_gives_the_in_memory_windows(both: tuple[TokenData, TokenData, Path]) -> None:
    memory, sharded, _ = both
    eot = memory.tokenizer.eot_id
    for starts_of in (lambda d: None, lambda d: window_starts(d.train, 64, eot)):
        a = sample_batch(memory.train, 16, 64, torch.Generator().manual_seed(5), starts_of(memory))
        b = sample_batch(sharded.train, 16, 64, torch.Generator().manual_seed(5),
                         starts_of(sharded))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert np.array_equal(window_starts(memory.train, 64, eot), window_starts(sharded.train, 64,
                                                                             eot))
    for eot_id in (None, eot):
        for (xa, ya), (xb, yb) in zip(eval_batches(memory.val, 4, 64, 3, eot_id),
                                      eval_batches(sharded.val, 4, 64, 3, eot_id), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_sharded_windows_cross_shard_boundaries() -> None:
    parts = [np.arange(0, 5, dtype=np.uint16), np.arange(5, 5, dtype=np.uint16),
             np.arange(5, 12, dtype=np.uint16), np.arange(12, 13, dtype=np.uint16)]
    tokens = ShardedTokens(parts)
    assert len(tokens) == 13 and len(tokens.parts) == 3
    index = np.array([[3, 4, 5, 6], [9, 10, 11, 12]])
    assert np.array_equal(tokens.take(index), index)
    with pytest.raises(IndexError, match="out of range for a split of 13 tokens"):
        tokens.take(np.array([13]))
    joined = np.concatenate(parts) % 4
    modded = ShardedTokens([p % 4 for p in parts])
    assert np.array_equal(positions_of(modded, 1, 11), np.flatnonzero(joined[:11] == 1))
    assert np.array_equal(positions_of(joined, 1, 11), positions_of(modded, 1, 11))


def test_the_store_is_built_once_and_then_mapped(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_shards(tmp_path / "shards", DOCS[:120])
    cfg = DataConfig(source=str(folder), tokenizer="bytes", cache_dir=str(tmp_path / "c"),
                     build_workers=2, progress=False)
    first = prepare_data(cfg)  # two processes
    builds: list[int] = []
    real = tokens_module.build_store
    monkeypatch.setattr(tokens_module, "build_store", lambda *a, **k: builds.append(1) or
                        real(*a, **k))
    second = prepare_data(cfg)
    assert not first.from_cache and second.from_cache and not builds
    one_process = prepare_data(DataConfig(source=str(folder), tokenizer="bytes",
                                          cache_dir=str(tmp_path / "c1"), build_workers=1,
                                          progress=False))
    for split in SPLITS:
        assert np.array_equal(as_array(first.split(split)), as_array(one_process.split(split)))
    assert int(as_array(first.train).max()) == 256  # raw bytes and end-of-text ids


def test_a_single_file_has_its_key_and_tokens_either_way(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "corpus.jsonl"
    source.write_text("\n".join(json.dumps({"text": d}) for d in DOCS[:150]))
    cache = tmp_path / "cache"
    memory = prepare_data(DataConfig(source=str(source), vocab_size=400, cache_dir=str(cache)))
    trained: list[int] = []
    real = tokenizer_module.train_bpe
    monkeypatch.setattr(tokenizer_module, "train_bpe", lambda *a: trained.append(1) or real(*a))
    sharded = prepare_data(DataConfig(source=str(source), vocab_size=400, cache_dir=str(cache),
                                      store=TokenStore.SHARDS, build_workers=1, progress=False))
    key = locate_source(str(source)).key
    assert not trained, "the store retrained the tokenizer the in-memory path cached"
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [
        f"store-{key}-bpe400-t{tokenizer_module.TOKENIZER_VERSION}"]
    assert (cache / f"tokens-{key}-bpe400-t1.npz").is_file()
    for split in SPLITS:
        assert np.array_equal(as_array(sharded.split(split)), memory.split(split))


def test_auto_shards_folders_and_large_files(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "c.txt"
    text.write_text("\n\n".join(DOCS[:60]))
    cfg = DataConfig(source=str(text), tokenizer="bytes", cache_dir=str(tmp_path / "c"),
                     build_workers=1, progress=False)
    assert isinstance(prepare_data(cfg).train, np.ndarray)
    monkeypatch.setattr(tokens_module, "MEMORY_MAX_BYTES", 1000)
    assert isinstance(prepare_data(cfg).train, ShardedTokens)


def test_a_corpus_with_an_empty_split_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"document {i}")
    with pytest.raises(CorpusError, match=r"no document in the .*split.* needs documents in "
                                          r"every split"):
        prepare_data(DataConfig(source=str(folder), tokenizer="bytes",
                                cache_dir=str(tmp_path / "c"), build_workers=1, progress=False))
    assert not list((tmp_path / "c").glob("store-*/"))  # nothing half-built is left


def test_a_bad_shard_fails_the_build_with_its_message(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in DOCS[:50]))
    (folder / "b.jsonl").write_text('{"body": "no text column"}\n')
    with pytest.raises(CorpusError, match=r"b\.jsonl has no column 'text' \(line 1\)"):
        prepare_data(DataConfig(source=str(folder), tokenizer="bytes", build_workers=2,
                                cache_dir=str(tmp_path / "c"), progress=False))
    assert not list((tmp_path / "c").glob("store-*/"))  # the lock file stays


def old_folder_hash(folder: Path) -> str:
    """How folders of .txt files were hashed before shards (their runs' recorded identity)."""
    h = hashlib.sha256(b"folder")
    for f in sorted(p for p in folder.rglob("*.txt") if p.is_file()):
        data = f.read_bytes()
        name = f.relative_to(folder).as_posix().encode("utf-8")
        h.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def test_folder_keys_are_content_hashes(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS[:20]):
        (folder / ("sub" if i % 2 else "") / f"{i}.txt").write_text(doc)
    (folder / "notes.md").write_text("ignored")
    txt_only = locate_source(str(folder))
    assert txt_only.content_hash == old_folder_hash(folder)
    assert locate_source(str(folder), "body").key == txt_only.key  # no table: no column
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for f in folder.rglob("*"):
        if f.is_file():
            (copy / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(folder)).write_bytes(f.read_bytes())
    assert locate_source(str(copy)).key == txt_only.key  # content, not path
    pl.DataFrame({"text": DOCS[20:30]}).write_parquet(folder / "shard.parquet")
    with_table = locate_source(str(folder))
    assert with_table.key != txt_only.key
    assert locate_source(str(folder), "body").key != with_table.key
    (folder / "sub" / "1.txt").write_text("changed")
    assert locate_source(str(folder)).key != with_table.key


def test_text_files_split_on_blank_lines_as_the_regex_did(tmp_path: Path) -> None:
    text = ("  lead\n\nfirst para\nsame para \r\n\r\n\tsecond\n \t \n\n third \u2028 x\n"
            "\u2028\nfourth\x0bline\n\x85\nfifth\n\n\n\n" + "\n\n".join(DOCS[:5]) + "\n   ")
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    reference = [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]
    shard = corpus_module.source_shards(locate_source(str(path)))[0]
    assert list(corpus_module.shard_documents(shard)) == reference
    assert len(reference) > 8


@pytest.mark.slow
def test_a_run_on_a_sharded_folder_trains(tmp_path: Path) -> None:
    from gatelab.registry.loader import load_variant
    from gatelab.runners.run.recipe import load_recipe
    from gatelab.runners.run.resources import Resources
    from gatelab.runners.run.train import train

    folder = write_shards(tmp_path / "shards", DOCS)
    recipe = load_recipe("tiny", {"steps": 30, "eval_every": 15, "checkpoint_every": 15,
                                  "warmup_steps": 5, "batch_size": 8, "seq_len": 64,
                                  "eval_batches": 2, "measure_batches": 1,
                                  "data.source": str(folder), "data.vocab_size": 512,
                                  "data.window_start": "document"})
    res = Resources(threads=1, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    work_dir=tmp_path / "work", experiment="test")
    result = train(load_variant("baseline"), recipe, res)
    assert result.status == "finished"
    assert result.summary.val_loss < result.summary.train_loss_last20 + 1.0
    assert result.summary.val_loss < np.log(512)  # learned something beyond uniform
    assert list((tmp_path / "work" / "cache").glob("store-*/index.json"))
    assert not list((tmp_path / "work" / "cache").glob("tokens-*.npz"))


def test_a_changed_shard_of_a_store_is_an_error(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "shards", DOCS[:60])
    cfg = DataConfig(source=str(folder), tokenizer="bytes", cache_dir=str(tmp_path / "c"),
                     build_workers=1, progress=False)
    built = prepare_data(cfg)
    shard = sorted(Path(cfg.cache_dir).glob("store-*/shard-00000.bin"))[0]
    raw = bytearray(shard.read_bytes())
    raw[0:2] = bytes([raw[1], raw[0] ^ 1])  # another token id, same length
    shard.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=f"the token cache file {re.escape(str(shard))} does "
                       "not match the digest it was built with"):
        prepare_data(cfg)
    assert len(built.train) > 0
