"""Where a run's durable files live: checkpoints, leases, the tokenizer and the token cache.

One place per sweep, named by ``--storage`` (or ``$GATELAB_STORAGE``); without one, the work
dir. It is one of two kinds:

- **a path**: a local folder, or on a cluster a shared file system that every node mounts at
  the same path (NFS, Lustre, a cloud file share). Everything lives there directly, so a run
  interrupted on one node resumes from its checkpoint on any other, and a lease (one trainer
  per hash, ``lease.py``) holds across nodes.
- **an fsspec URI** (``s3://bucket/gatelab``, ``gs://...``, ``az://...``; the matching fsspec
  package, e.g. ``s3fs``, installed on every node): a checkpoint is written to the node's work
  dir, then uploaded under a temporary name and moved over the last one; resuming downloads it.
  The data cache is published by the sweep's driver and downloaded by each node. Leases stay
  in each node's work dir (an object store has no atomic create-if-absent that fsspec exposes
  everywhere), so two drivers of one sweep on one cluster can each train a hash: give a shared
  path when that matters.

The data cache (tokenizer and token ids, keyed as ``runners/data/tokens.py`` keys them) is built
once per cluster: the driver prepares every data setting of the sweep before any run starts and
writes a manifest of the files' SHA-256 digests beside them (the manifest every token cache
carries, ``runners/data/digests.py``); each node checks the files it reads against the
manifest once (``verify_data``), so a node that sees another storage or a changed file fails
with the file's name instead of training on other tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatelab.runners.data.digests import MANIFEST_PREFIX, file_digest, write_manifest
from gatelab.runners.run.checkpoint import load_checkpoint, save_checkpoint

STORAGE_ENV = "GATELAB_STORAGE"
"""Names the storage when ``--storage`` is not given."""


class StorageError(RuntimeError):
    """The storage cannot be used, or a node's copy of its data differs; the message says which
    file or URI and what to do."""


def _is_uri(root: str) -> bool:
    scheme, sep, _ = root.partition("://")
    return bool(sep) and scheme != "file" and scheme.isidentifier()


@dataclass(frozen=True)
class Storage:
    """The durable place of a sweep's runs, and this node's scratch folder (its work dir)."""

    root: str
    """A path, or an fsspec URI (see the module docstring)."""
    scratch: Path
    """This node's work dir: local copies of what lives under a URI."""

    @classmethod
    def resolve(cls, storage: str | None, work_dir: Path) -> Storage:
        """``storage``, else ``$GATELAB_STORAGE``, else ``work_dir``; a path is made absolute
        (a relative one would resolve differently on every node)."""
        root = storage or os.environ.get(STORAGE_ENV) or str(work_dir)
        if not _is_uri(root):
            root = str(Path(root.removeprefix("file://")).expanduser().resolve())
        return cls(root, Path(work_dir).resolve())

    @property
    def is_path(self) -> bool:
        return not _is_uri(self.root)

    def _fs(self) -> tuple[Any, str]:
        import fsspec

        try:
            fs, base = fsspec.core.url_to_fs(self.root)
        except (ImportError, ValueError) as err:
            raise StorageError(
                f"the storage {self.root} cannot be opened ({err}); install the fsspec package "
                "for its scheme on every node (e.g. pip install s3fs for s3://), or give a "
                "shared path") from None
        return fs, base.rstrip("/")

    # -- leases --------------------------------------------------------------------------
    @property
    def lease_dir(self) -> Path:
        """Where leases live: the storage path, or this node's work dir under a URI."""
        return Path(self.root) if self.is_path else self.scratch

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_path(self, run_hash: str) -> Path:
        """The checkpoint file this node reads and writes (under a URI: the local copy)."""
        base = Path(self.root) if self.is_path else self.scratch
        return base / "checkpoints" / run_hash / "last.pt"

    def save_checkpoint(self, run_hash: str, state: dict[str, Any]) -> None:
        local = self.checkpoint_path(run_hash)
        save_checkpoint(local, state)
        if not self.is_path:
            fs, base = self._fs()
            remote = f"{base}/checkpoints/{run_hash}/last.pt"
            tmp = f"{remote}.{uuid.uuid4().hex[:8]}.tmp"
            fs.put_file(str(local), tmp)
            fs.mv(tmp, remote)

    def load_checkpoint(self, run_hash: str) -> dict[str, Any] | None:
        """The last checkpoint of ``run_hash`` from wherever it was written, or ``None``."""
        local = self.checkpoint_path(run_hash)
        if not self.is_path:
            fs, base = self._fs()
            remote = f"{base}/checkpoints/{run_hash}/last.pt"
            if fs.exists(remote):
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f"{local.name}.{uuid.uuid4().hex[:8]}.download")
                fs.get_file(remote, str(tmp))
                os.replace(tmp, local)
        return load_checkpoint(local)

    def drop_checkpoint(self, run_hash: str) -> None:
        """A finished run's checkpoint is not kept."""
        self.checkpoint_path(run_hash).unlink(missing_ok=True)
        if not self.is_path:
            fs, base = self._fs()
            remote = f"{base}/checkpoints/{run_hash}/last.pt"
            if fs.exists(remote):
                fs.rm(remote)

    # -- the data cache ------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """The folder ``prepare_data`` reads and writes on this node."""
        return (Path(self.root) if self.is_path else self.scratch) / "cache"

    def publish_data(self, key: str, files: list[Path]) -> Path:
        """Record the digests of ``files`` (under ``cache_dir``) as the manifest ``key``, and
        under a URI upload them; the manifest's local path."""
        cache = self.cache_dir
        manifest = write_manifest(cache, key, files)  # the manifest a cache carries anyway
        digests = json.loads(manifest.read_text())["files"]
        if not self.is_path:
            fs, base = self._fs()
            for rel in digests:
                remote = f"{base}/cache/{rel}"
                if not fs.exists(remote):
                    fs.put_file(str(cache / rel), remote)
            fs.put_file(str(manifest), f"{base}/cache/{manifest.name}")
        return manifest

    def verify_data(self, key: str) -> bool:
        """Make this node's copy of the data ``key`` match its manifest: under a URI download
        what is missing; then check every file's digest once per node. ``False`` when no
        manifest was published (a run outside a sweep builds its own cache as before);
        ``StorageError`` naming the file when a digest differs."""
        cache = self.cache_dir
        name = f"{MANIFEST_PREFIX}{key}.json"
        if not self.is_path:
            fs, base = self._fs()
            if not fs.exists(f"{base}/cache/{name}"):
                return False
            cache.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{base}/cache/{name}", str(cache / name))
            for rel in json.loads((cache / name).read_text())["files"]:
                if not (cache / rel).is_file():
                    (cache / rel).parent.mkdir(parents=True, exist_ok=True)
                    tmp = cache / f"{rel}.{uuid.uuid4().hex[:8]}.download"
                    fs.get_file(f"{base}/cache/{rel}", str(tmp))
                    os.replace(tmp, cache / rel)
        manifest = cache / name
        if not manifest.is_file():
            return False
        text = manifest.read_text()
        seal = self.scratch / "verified" / (hashlib.sha256(text.encode()).hexdigest()[:24]
                                            + f"-{socket.gethostname()}")
        if seal.exists():
            return True
        for rel, digest in json.loads(text)["files"].items():
            path = cache / rel
            found = file_digest(path) if path.is_file() else "missing"
            if found != digest:
                raise StorageError(
                    f"the data cache file {path} on {socket.gethostname()} does not match the "
                    f"one the sweep built (sha256 {found[:16]} against {digest[:16]} in "
                    f"{manifest}): this node sees another storage, or the file changed. Check "
                    "that every node mounts the same storage path; to rebuild, remove "
                    f"{manifest} and rerun the sweep")
        seal.parent.mkdir(parents=True, exist_ok=True)
        seal.touch()
        return True
