"""A run's identity: the hash of everything that changes its numbers, and of nothing else.

The runner (``gatelab.runners.run.setting``) resolves a run into four plain parts and this
module hashes them: the architecture (every backbone field after the spec's capacity and
parameter matching, and every other field of the spec's architecture), the training fields
that change the numbers (steps, batch, sequence length, LR schedule, optimizer, measurement
sizes), the data (the corpus's content hash, tokenizer kind, vocabulary and version, window
placement) and the numerics (device type, precision, attention kernel family), plus the seed.
Names (of the variant, recipe or size preset), file paths, evaluation and checkpoint cadence,
``compile``, resources and logging are never part of it.

Three hashes come out: the run's (``run_hash``); the setting's, the conditions a comparison of
variants shares (the size's backbone before the variant changes it, the training, the data and
the numerics: no seed, no architecture), so the seeds of a variant are its runs with one
setting hash; and the LR setting's (the setting without the peak LR: the points of an LR grid).
Dashboards group runs by the tags that carry them and never rebuild an identity of their own.

A stage (a run that continues from another's final weights) hashes its parent's run hash; its
setting hashes hold the parent's setting hashes instead, so the stages of two variants (or
seeds) of one setting share a setting, as their parents do.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IDENTITY_VERSION = 2
"""Bumped when the rules of what is hashed change; version 1 hashed names and paths."""


def content_hash(data: object, length: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace), first ``length`` hex digits."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunIdentity:
    run_hash: str
    setting_hash: str
    """The size, training, data and numerics: no architecture, no seed."""
    lr_setting_hash: str
    """The setting without ``training.lr``."""
    document: dict[str, Any]
    """What ``run_hash`` hashes: recorded with the run (``identity.json``)."""


@dataclass(frozen=True)
class Lineage:
    """The run a stage continues from, by its three hashes (as its tags record them)."""

    run_hash: str
    setting_hash: str
    lr_setting_hash: str


def run_identity(*, architecture: Mapping[str, Any], size: Mapping[str, Any],
                 training: Mapping[str, Any], data: Mapping[str, Any],
                 numerics: Mapping[str, Any], seed: int,
                 parent: Lineage | None = None) -> RunIdentity:
    """The identity of a run from its resolved parts (plain JSON-ready data): ``architecture``
    is what the model is built from (the resolved backbone included), ``size`` the size's
    backbone before the variant changes it (for the setting hashes only). ``training`` holds
    the peak learning rate as ``lr``; a stage's also ``continue_from``, its ``parent``'s run
    hash, which its setting hashes replace by the parent's setting hashes."""
    if "lr" not in training:
        raise ValueError("training must hold the peak learning rate as 'lr'")
    if (parent is None) != (training.get("continue_from") is None) or (
            parent is not None and parent.run_hash != training["continue_from"]):
        raise ValueError("a stage's training must hold its parent's run hash as "
                         "'continue_from', and only a stage's")
    document: dict[str, Any] = {
        "version": IDENTITY_VERSION, "architecture": copy.deepcopy(dict(architecture)),
        "training": dict(training), "data": dict(data), "numerics": dict(numerics),
        "seed": seed,
    }
    setting_training = dict(training)
    lr_setting_training = {k: v for k, v in training.items() if k != "lr"}
    if parent is not None:
        setting_training["continue_from"] = parent.setting_hash
        lr_setting_training["continue_from"] = parent.lr_setting_hash
    setting = {"version": IDENTITY_VERSION, "size": dict(size), "training": setting_training,
               "data": dict(data), "numerics": dict(numerics)}
    lr_setting = {**setting, "training": lr_setting_training}
    return RunIdentity(content_hash(document), content_hash(setting), content_hash(lr_setting),
                       document)
