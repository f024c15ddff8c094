"""The digests a token cache carries: a manifest of its files' SHA-256, written when the cache is
built and checked once per process when it is read (again only if a file's size or time
changes).

A cache (the tokenizer and the token ids, ``tokens.cache_files``) is keyed by the corpus's
content and the tokenizer (``tokens.data_key``), and its manifest ``manifest-<key>.json`` lies
beside it in the cache folder: ``{"files": {path relative to the cache: sha256}}``. It is the
manifest a sweep seals its data with (``runners/run/storage.py``: ``Storage.publish_data``
writes it with ``write_manifest``, and each node checks it once), so a cache built by
``gatelab train`` and one built by a sweep's driver are checked the same way. A file that no
longer matches its digest (edited, truncated, another corpus's tokens copied over it) is an
error naming the file and how to rebuild it, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

MANIFEST_PREFIX = "manifest-"
"""A manifest's file name: this prefix, the data key, ``.json``."""

_CHECKED: set[tuple[str, str, tuple[tuple[str, int, int], ...]]] = set()
"""The manifests whose files this process has checked: (path, SHA-256 of its text, each file's
name, size and modification time as checked)."""


class CacheError(RuntimeError):
    """A token cache file differs from the digest it was built with."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 8 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return h.hexdigest()


def manifest_path(cache: Path, key: str) -> Path:
    """The manifest of the data ``key`` in the cache folder ``cache``."""
    return cache / f"{MANIFEST_PREFIX}{key}.json"


def write_manifest(cache: Path, key: str, files: list[Path]) -> Path:
    """Record the digests of ``files`` (under ``cache``) as the manifest of ``key``; its path.
    The files are taken as checked by this process (it has just read every byte of them)."""
    digests = {str(f.relative_to(cache)): file_digest(f) for f in sorted(files)}
    manifest = manifest_path(cache, key)
    text = json.dumps({"files": digests}, indent=1, sort_keys=True)
    _write_atomic(manifest, text)
    _CHECKED.add(_seen(manifest, text, cache, digests))
    return manifest


def check_manifest(cache: Path, key: str, missing_ok: bool = False) -> bool:
    """Check every file of the manifest of ``key`` against its digest, once per process and
    manifest; ``False`` when there is no manifest (a cache built before caches carried one),
    ``CacheError`` naming the first file that differs. ``missing_ok``: a file that is not there
    is left to be rebuilt (the tokens of a cache whose tokenizer is kept), not an error."""
    manifest = manifest_path(cache, key)
    if not manifest.is_file():
        return False
    text = manifest.read_text()
    digests: dict[str, str] = json.loads(text)["files"]
    seen = _seen(manifest, text, cache, digests)
    if seen in _CHECKED:
        return True
    complete = True
    for rel, digest in digests.items():
        path = cache / rel
        if missing_ok and not path.exists():
            complete = False
            continue
        found = file_digest(path) if path.is_file() else "missing"
        if found != digest:
            raise CacheError(
                f"the token cache file {path} does not match the digest it was built with "
                f"(sha256 {found[:16]} against {digest[:16]} in {manifest}): it changed after "
                "it was built, so its tokens are not the corpus's. To rebuild it, remove "
                f"{manifest} and the files it lists (or the whole cache folder {cache})")
    if complete:
        _CHECKED.add(seen)
    return True


def _seen(manifest: Path, text: str, cache: Path, digests: dict[str, str]
          ) -> tuple[str, str, tuple[tuple[str, int, int], ...]]:
    """What ``_CHECKED`` holds for a manifest: its path and text, and its files' stats."""
    stats = []
    for rel in sorted(digests):
        try:
            st = (cache / rel).stat()
        except FileNotFoundError:
            stats.append((rel, -1, -1))
            continue
        stats.append((rel, st.st_size, st.st_mtime_ns))
    return str(manifest), hashlib.sha256(text.encode()).hexdigest(), tuple(stats)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a private name, then rename it: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
