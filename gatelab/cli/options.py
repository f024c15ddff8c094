"""Flags that several commands share, each declared once: where runs are recorded
(``--tracking-uri``, ``--experiment``), where a run keeps its files (``--work-dir``,
``--storage``), ``--no-progress``, ``--port``, ``--ablations`` (every command) and flags that were
renamed (a one-line error naming the new spelling)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``build_parser`` hands each command's ``add_parser``: it adds the command's parser."""

TRACKING_HELP = ("MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the "
                 "current directory)")
DEFAULT_EXPERIMENT = "gatelab"
"""The MLflow experiment every command reads and writes unless ``--experiment`` names another."""
DEFAULT_PORT = 5000
"""The port ``gatelab ui`` and ``gatelab server`` listen on unless ``--port`` says otherwise."""


def add_tracking_uri(p: argparse.ArgumentParser) -> None:
    """``--tracking-uri``: the MLflow store a command records to or reads from."""
    p.add_argument("--tracking-uri", help=TRACKING_HELP)


def add_experiment(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    """``--experiment``: the MLflow experiment (default ``gatelab``), with ``help_text``."""
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=help_text)


def add_store(p: argparse.ArgumentParser) -> None:
    """``--tracking-uri`` and ``--experiment``: which runs a command reads or writes."""
    add_tracking_uri(p)
    add_experiment(p)


def add_run_places(p: argparse.ArgumentParser) -> None:
    """The flags of commands that train: where runs are recorded and kept, and progress."""
    add_store(p)
    p.add_argument("--work-dir", default=".gatelab", help="this machine's folder for "
                   "checkpoints and caches (default .gatelab)")
    p.add_argument("--storage", metavar="PATH_OR_URI",
                   help="where checkpoints, leases and the token cache live for every node: a "
                   "path all nodes mount, or an fsspec URI (default: $GATELAB_STORAGE, else "
                   "--work-dir)")
    p.add_argument("--no-progress", action="store_true")


def add_port(p: argparse.ArgumentParser) -> None:
    """``--port``: where a served MLflow listens (default 5000)."""
    p.add_argument("--port", type=int, default=DEFAULT_PORT)


def add_ablations(p: argparse.ArgumentParser) -> None:
    """``--ablations DIR``: every command takes it (see ``use_ablations``)."""
    p.add_argument("--ablations", metavar="DIR", action="append",
                   help="a folder of your own variant specs, searched before ./ablations "
                   "and the shipped ones (repeatable)")


def use_ablations(folders: Sequence[str] | None) -> None:
    """Put the ``--ablations`` folders, absolute, in front of the spec search for this process
    and the workers it starts (``gatelab.shipped.ABLATIONS_ENV``); ``None`` changes nothing."""
    if not folders:
        return
    from gatelab.shipped import ABLATIONS_ENV

    os.environ[ABLATIONS_ENV] = os.pathsep.join(str(Path(d).resolve()) for d in folders)


class Renamed(argparse.Action):
    """A flag that was renamed: fails with a message naming the new spelling."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: object):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"{option_string} was renamed: use {self.new}")
