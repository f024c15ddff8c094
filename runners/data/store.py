"""The sharded token store: a corpus tokenized once into one memory-mapped token file per shard.

For a corpus larger than memory (a folder of ``.parquet``/``.jsonl``/``.txt`` shards, such as
FineWeb-Edu's): ``build_store`` tokenizes every shard of the source (``corpus.source_shards``)
in its own process (a fresh Python running this module), a batch of documents at a time,
showing a progress bar, into ``store-<corpus key>-<tokenizer key>/`` under the cache folder
(the keys of the in-memory cache: the corpus's content hash and the tokenizer). Each shard's
file ``shard-NNNNN.bin`` holds its train, then validation, then test tokens (uint16, or uint32
for a vocabulary over 65,536), every document followed by the end-of-text id; ``index.json``,
written last, lists the shards with their token and byte counts. A run opens the files as numpy
memmaps (``open_store``): a split is its shards' sections joined (``ShardedTokens``), read
window by window, never loaded.

A split's tokens are those the in-memory path gives for the same text (``tokens.py``): the same
documents in the same order, each in the same split. One thing differs: the in-memory path
gives a split that the hash left empty its neighbour's last document, which the store refuses
(a corpus worth sharding has documents in every split).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gatelab.runners.data.corpus import (
    SPLITS,
    CorpusError,
    Shard,
    Source,
    SplitName,
    shard_documents,
    source_shards,
    split_of,
)
from gatelab.runners.data.tokenizer import TextTokenizer, TokenizerKind, load_tokenizer

STORE_VERSION = 1
"""Bump when the layout or the encoding of the store changes, so stores are rebuilt."""
INDEX = "index.json"
ENCODE_BATCH_DOCS = 4096
"""Documents encoded at a time in a shard's process (bounds its memory)."""
SCAN_CHUNK_TOKENS = 1 << 26
"""Tokens compared at a time when looking for a token in a memory-mapped split."""


def token_dtype(vocab_size: int) -> np.dtype[np.unsignedinteger]:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class ShardedTokens:
    """One split of a store: its shards' sections joined into one token stream, as the
    in-memory path joins the split's documents; read through memmaps, never loaded whole."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).astype(np.int64)
        """Where each part starts in the stream; the last is its length."""
        self.dtype = self.parts[0].dtype if self.parts else np.dtype(np.uint16)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, index: np.ndarray) -> np.ndarray:
        """The tokens at ``index`` (any shape, positions in the stream), as ``ndarray.take``;
        a window may cross from one shard into the next."""
        flat = np.asarray(index, dtype=np.int64).ravel()
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of range for a split of {len(self)} tokens")
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty(flat.shape, self.dtype)
        for p in np.unique(part):
            picked = part == p
            out[picked] = self.parts[p][flat[picked] - self.offsets[p]]
        return out.reshape(np.shape(index))

    def positions_of(self, token: int, stop: int) -> np.ndarray:
        """Every position below ``stop`` holding ``token``, in order (int64), a chunk at a
        time."""
        found: list[np.ndarray] = []
        for part, offset in zip(self.parts, self.offsets[:-1], strict=True):
            end = min(len(part), stop - int(offset))
            for lo in range(0, max(end, 0), SCAN_CHUNK_TOKENS):
                hi = min(end, lo + SCAN_CHUNK_TOKENS)
                found.append(np.flatnonzero(part[lo:hi] == token) + (lo + int(offset)))
        return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


TokenArray = np.ndarray | ShardedTokens
"""A split's token ids: in memory, or memory-mapped from a store."""


def positions_of(tokens: TokenArray, token: int, stop: int) -> np.ndarray:
    """Every position of ``tokens`` below ``stop`` that holds ``token`` (int64)."""
    if isinstance(tokens, ShardedTokens):
        return tokens.positions_of(token, stop)
    return np.flatnonzero(tokens[:stop] == token).astype(np.int64)


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a store, as ``index.json`` lists it."""

    file: str
    """The token file, relative to the store."""
    sources: list[str]
    """The source files the shard was read from."""
    tokens: dict[str, int]
    """Tokens per split (end-of-text ids included), in file order: train, val, test."""
    bytes: dict[str, int]
    """UTF-8 bytes of the split's documents."""


@dataclass(frozen=True)
class _ShardJob:
    number: int
    shard: Shard
    text_column: str
    tokenizer_kind: TokenizerKind
    tokenizer_file: str | None
    out: str


def store_path(cache_dir: Path, corpus_key: str, tokenizer_key: str) -> Path:
    return cache_dir / f"store-{corpus_key}-{tokenizer_key}"


def store_complete(path: Path) -> bool:
    index = path / INDEX
    return index.is_file() and json.loads(index.read_text()).get("version") == STORE_VERSION


@contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Held while a store is built: a second run that needs it waits, then finds it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_store(source: Source, tokenizer: TextTokenizer, tokenizer_kind: TokenizerKind,
                tokenizer_file: Path | None, path: Path, workers: int | None = None,
                progress: bool = True) -> None:
    """Tokenize every shard of ``source`` into the store at ``path``, ``workers`` processes at
    once (``None``: one per core, at most one per shard; 1: in this process). The store
    appears complete or not at all: it is built in a private folder, then renamed."""
    shards = source_shards(source)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        jobs = [_ShardJob(i, shard, source.text_column, tokenizer_kind,
                          str(tokenizer_file) if tokenizer_file else None,
                          str(tmp / f"shard-{i:05d}.bin"))
                for i, shard in enumerate(shards)]
        entries = _encode_all(jobs, workers, progress, source.name)
        totals = {s: sum(e.tokens[s] for e in entries) for s in SPLITS}
        empty = [s for s in SPLITS if totals[s] == 0]
        if empty:
            raise CorpusError(f"data source {source.path} has no document in the "
                              f"{', '.join(empty)} split after hashing; a sharded corpus "
                              "needs documents in every split (give more documents)")
        index = {"version": STORE_VERSION, "corpus": source.key, "vocab_size":
                 tokenizer.vocab_size, "eot_id": tokenizer.eot_id,
                 "dtype": token_dtype(tokenizer.vocab_size).name,
                 "shards": [asdict(e) for e in entries]}
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
        if path.exists():  # an older store version
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_store(path: Path) -> tuple[dict[SplitName, ShardedTokens], dict[str, float]]:
    """Every split of the store at ``path`` (memmapped) and its bytes per token."""
    index = json.loads((path / INDEX).read_text())
    dtype = np.dtype(index["dtype"])
    parts: dict[SplitName, list[np.ndarray]] = {s: [] for s in SPLITS}
    for entry in index["shards"]:
        total = sum(entry["tokens"].values())
        tokens = (np.memmap(path / entry["file"], dtype=dtype, mode="r", shape=(total,))
                  if total else np.zeros(0, dtype))
        start = 0
        for split in SPLITS:
            parts[split].append(tokens[start:start + entry["tokens"][split]])
            start += entry["tokens"][split]
    bytes_per_token: dict[str, float] = {
        s: sum(e["bytes"][s] for e in index["shards"]) / sum(e["tokens"][s]
                                                                for e in index["shards"])
        for s in SPLITS}
    return {s: ShardedTokens(parts[s]) for s in SPLITS}, bytes_per_token


def _encode_all(jobs: list[_ShardJob], workers: int | None, progress: bool,
                name: str) -> list[ShardEntry]:
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    bar = tqdm(total=len(jobs), unit="shard", desc=f"tokenizing {name}", disable=not progress,
               dynamic_ncols=True)
    entries: dict[int, ShardEntry] = {}
    try:
        if workers <= 1:
            for job in jobs:
                entries[job.number] = _encode_shard(job)
                _advance(bar, entries)
        else:
            # Share the cores: fewer shards than cores still use every core.
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ThreadPoolExecutor(workers) as pool:
                futures = {pool.submit(_encode_in_process, job, threads): job.number
                           for job in jobs}
                for future in as_completed(futures):
                    entries[futures[future]] = future.result()
                    _advance(bar, entries)
    finally:
        bar.close()
    return [entries[job.number] for job in jobs]


def _advance(bar: tqdm, entries: dict[int, ShardEntry]) -> None:
    bar.update(1)
    bar.set_postfix_str(f"{sum(sum(e.tokens.values()) for e in entries.values()):,} tokens")


def _encode_in_process(job: _ShardJob, threads: int) -> ShardEntry:
    """``_encode_shard`` in a fresh Python (``python -m gatelab.runners.data.store``, the job
    on stdin, the entry on stdout): nothing of this process (its threads, its ``__main__``,
    CUDA) is inherited, and it encodes on ``threads`` threads."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false"}
    job_json = json.dumps({**asdict(job), "shard": {"files": [str(f) for f in job.shard.files],
                                                    "kind": job.shard.kind}})
    done = subprocess.run([sys.executable, "-m", __name__], input=job_json, env=env,
                          capture_output=True, text=True)
    if done.returncode == CORPUS_ERROR_EXIT:
        raise CorpusError(done.stdout.strip())
    if done.returncode != 0:
        files = ", ".join(map(str, job.shard.files))
        raise RuntimeError(f"tokenizing shard {job.number} ({files}) failed:\n"
                           f"{done.stderr[-3000:]}")
    return ShardEntry(**json.loads(done.stdout))


CORPUS_ERROR_EXIT = 3
"""A shard process's exit code for a ``CorpusError``, whose message it prints."""


def _encode_shard(job: _ShardJob) -> ShardEntry:
    """Encode one shard into its token file: train tokens as they come, then the validation
    and test tokens (kept in memory: about a tenth of the shard)."""
    tokenizer = load_tokenizer(job.tokenizer_kind,
                               Path(job.tokenizer_file) if job.tokenizer_file else None)
    dtype = token_dtype(tokenizer.vocab_size)
    held: dict[SplitName, list[np.ndarray]] = {"val": [], "test": []}
    tokens: dict[str, int] = dict.fromkeys(SPLITS, 0)
    nbytes: dict[str, int] = dict.fromkeys(SPLITS, 0)
    with open(job.out, "wb") as out:
        for batch in _batches(shard_documents(job.shard, job.text_column), ENCODE_BATCH_DOCS):
            by_split: dict[SplitName, list[str]] = {s: [] for s in SPLITS}
            for doc in batch:
                by_split[split_of(doc)].append(doc)
            for split, docs in by_split.items():
                if not docs:
                    continue
                encoded = tokenizer.encode_batch(docs)
                ids = np.fromiter((i for e in encoded for i in (*e, tokenizer.eot_id)), dtype,
                                  count=sum(len(e) + 1 for e in encoded))
                tokens[split] += len(ids)
                nbytes[split] += sum(len(d.encode("utf-8")) for d in docs)
                if split == "train":
                    ids.tofile(out)
                else:
                    held[split].append(ids)
        for split in ("val", "test"):
            for ids in held[split]:
                ids.tofile(out)
    return ShardEntry(Path(job.out).name, [str(f) for f in job.shard.files], tokens, nbytes)


def _batches(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _main() -> int:
    """Encode the shard job read from stdin (``_encode_in_process``); print its entry."""
    raw = json.loads(sys.stdin.read())
    shard = raw.pop("shard")
    job = _ShardJob(**{**raw, "shard": Shard(tuple(Path(f) for f in shard["files"]),
                                             shard["kind"]),
                       "tokenizer_kind": TokenizerKind(raw["tokenizer_kind"])})
    try:
        entry = _encode_shard(job)
    except CorpusError as err:
        print(err)
        return CORPUS_ERROR_EXIT
    print(json.dumps(asdict(entry)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
