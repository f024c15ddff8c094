"""The flags several commands share, checked before a command runs and before anything is
written, each refused in one line that names the flag, its value and the fix: the tracking store
(``--tracking-uri``, or ``$MLFLOW_TRACKING_URI``: ``gatelab.tracking_store``), ``--experiment``,
``--work-dir``, ``--out`` and ``gatelab server --store``."""

from __future__ import annotations

import argparse
import enum
import os
from pathlib import Path

from gatelab.tracking_store import StoreUse, check_store, creatable


class PathKind(enum.Enum):
    """What a path flag names."""

    FILE = "file"
    FOLDER = "folder"
    """Created, with its parents, where it is missing."""


STORE_USE: dict[str, StoreUse] = {
    "report": StoreUse.READ, "compare": StoreUse.READ, "ui": StoreUse.READ,
    "train": StoreUse.WRITE, "sweep": StoreUse.WRITE,
}
"""What each command that takes ``--tracking-uri`` does with the store."""

OUT_KIND: dict[str, PathKind] = {
    "compare": PathKind.FILE, "report": PathKind.FOLDER, "new": PathKind.FOLDER,
}
"""What each command's ``--out`` names: ``compare``'s page, ``report``'s folder, the folder
``new`` writes its spec into."""


def check_flags(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` (one line) for the first shared flag of ``args`` that cannot work."""
    command = args.command
    experiment = getattr(args, "experiment", None)
    if experiment is not None and not experiment.strip():
        raise ValueError(f"--experiment {experiment!r}: an MLflow experiment needs a name; "
                         "pass --experiment NAME, or leave it out for 'gatelab'")
    for flag, attr, kind in (("--work-dir", "work_dir", PathKind.FOLDER),
                             ("--out", "out", OUT_KIND.get(command)),
                             ("--store", "store", PathKind.FOLDER)):
        value = getattr(args, attr, None)
        if value is not None and kind is not None:
            check_path(flag, value, kind)
    if command in STORE_USE:
        check_store(args.tracking_uri, STORE_USE[command])
    if command == "server":
        from gatelab.cli.server import store_uri

        check_store(store_uri(Path(args.store).expanduser().resolve()), StoreUse.WRITE,
                    flag="--store")


def check_path(flag: str, value: str, kind: PathKind) -> None:
    """``ValueError`` when ``value`` (given with ``flag``) cannot be the ``kind`` of path a
    command writes: empty, the other kind, not writable, or impossible to create."""
    if not value.strip():
        raise ValueError(f"{flag} is empty: pass a {kind.value}")
    path = Path(value).expanduser()
    if path.is_dir() and kind is PathKind.FILE:
        raise ValueError(f"{flag} {value} is a folder: pass the file to write, e.g. "
                         f"{flag} {path / 'page.html'}")
    if path.exists() and not path.is_dir() and kind is PathKind.FOLDER:
        raise ValueError(f"{flag} {value} is a file: pass a folder (it is created if missing)")
    if path.exists():
        folder = path if path.is_dir() else path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {value}: no permission to write in {folder}; pass "
                             f"another {kind.value}")
        return
    problem = creatable(path)
    if problem:
        raise ValueError(f"{flag} {value} cannot be created: {problem}; pass another "
                         f"{kind.value}")
