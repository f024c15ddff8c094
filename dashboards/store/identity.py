"""One variant id, one architecture: the runs of an id recorded with different architectures
(a shipped id replaced with ``gatelab new --force``, a spec edited between runs) are told
apart, so that no table, verdict or ``gatelab compare`` pools them or pairs both with one
baseline run.

A run records its architecture as the ``spec.*`` params (``architecture_dict`` of its spec,
flattened: what ``gatelab.registry.hashing.spec_hash`` hashes). ``spec_hash`` rebuilds that
dict from the params and hashes it as the registry does, so a run's ``spec_hash`` is the one
``gatelab show ID`` prints for the spec it trained.

**Several rows, labelled.** Where the runs of one id (among the runs loaded) hold more than
one architecture, each architecture becomes a variant of its own, named ``ID@HASH8`` (the first
eight digits of its spec hash), in every table, verdict and comparison; ``variant_id`` keeps
the recorded id. An id with one architecture keeps its name. A claim that names such an id is
not tested (``dashboards/verdicts/procedure.py`` says which labels it names instead).

**Runs of an older schema.** A field added to the schema later is absent from the params of
runs recorded before it; an absent param matches any value, so such runs join the
architecture they agree with on every param both recorded (a ``None`` sub-spec against a
sub-spec's fields is a difference). A run that agrees with several architectures of its id
cannot be placed: it is labelled ``ID@unknown``, as is one that records no ``spec.*`` param
at all where its id has several architectures (with one, it keeps the id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import polars as pl

from gatelab.identity import content_hash

SPEC_PARAM_PREFIX = "spec."
"""The params holding a run's architecture."""
LABEL_HASH_DIGITS = 8
"""Digits of the spec hash in a label (``g1-elementwise@3f2a9c1b``)."""
UNKNOWN = "unknown"
"""The label's suffix for runs that agree with several architectures of their id."""

_INT = re.compile(r"-?\d+")
Params = Mapping[str, str]
"""A run's ``spec.*`` params without the prefix, as recorded (strings)."""


def param_value(text: str) -> object:
    """A param's recorded string as the value it was written from (``str()`` of a number,
    bool or ``None``; JSON of a list; an enum's value as itself)."""
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def architecture(params: Params) -> dict[str, object]:
    """The nested architecture dict ``params`` were flattened from."""
    out: dict[str, object] = {}
    for key in sorted(params):
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = param_value(params[key])
    return out


def spec_hash(params: Params) -> str:
    """The registry's spec hash of the architecture ``params`` record."""
    return content_hash(architecture(params))


def _conflict(a: Params, b: Params) -> bool:
    """Whether ``a`` and ``b`` record different architectures: a param both hold with two
    values, or a sub-spec one records as ``None`` while the other records its fields."""
    for key, value in a.items():
        if key in b and b[key] != value:
            return True
    for one, other in ((a, b), (b, a)):
        for key, value in one.items():
            if value == "None" and any(k.startswith(f"{key}.") for k in other):
                return True
    return False


def group_architectures(signatures: list[Params]) -> list[int | None]:
    """For each of ``signatures`` (one id's distinct ``spec.*`` params, the most complete and
    newest first), the index of its architecture among those found; ``None`` where it agrees
    with several."""
    groups: list[dict[str, str]] = []
    placed: list[int | None] = []
    for params in signatures:
        matches = [i for i, g in enumerate(groups) if not _conflict(params, g)]
        if not matches:
            groups.append(dict(params))
            placed.append(len(groups) - 1)
        elif len(matches) == 1:
            groups[matches[0]].update({k: v for k, v in params.items()
                                       if k not in groups[matches[0]]})
            placed.append(matches[0])
        else:
            placed.append(None)
    return placed


def by_architecture(frame: pl.DataFrame, params: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (one row per run, ``variant`` the recorded id) with ``variant_id`` (the
    recorded id), ``spec_hash`` (its run's architecture as ``spec_hash``; null where no
    ``spec.*`` param was recorded) and ``variant`` labelled ``ID@HASH8`` where the id holds
    several architectures among ``frame``'s runs. ``params``: the raw long params table
    (``run_id``, ``key``, ``value``)."""
    spec = (params.filter(pl.col("key").str.starts_with(SPEC_PARAM_PREFIX))
            .join(frame.select("run_id"), on="run_id", how="semi")
            .sort("run_id", "key")
            .group_by("run_id")
            .agg(pl.concat_str(pl.col("key").str.strip_prefix(SPEC_PARAM_PREFIX), pl.lit("="),
                               pl.col("value")).str.join("\n").alias("__sig")))
    rows = (frame.select("run_id", "variant", "start_time")
            .join(spec, on="run_id", how="left")
            .with_columns(pl.col("__sig").fill_null(""))
            .sort("start_time", descending=True, nulls_last=True))
    by_sig: dict[str, str | None] = {}
    labels: dict[tuple[str | None, str], str | None] = {}
    for (variant,), part in rows.group_by(["variant"], maintain_order=True):
        sigs = list(dict.fromkeys(part["__sig"].to_list()))
        parsed = {s: _parse(s) for s in sigs}
        by_sig.update({s: spec_hash(p) if p else None for s, p in parsed.items()})
        ordered = sorted((s for s in sigs if s), key=lambda s: -len(parsed[s]))
        placed = dict(zip(ordered, group_architectures([parsed[s] for s in ordered]),
                          strict=True))
        kinds = {i for i in placed.values() if i is not None}
        name = variant if isinstance(variant, str) else None
        if len(kinds) <= 1 or name is None:
            labels.update({(name, s): name for s in sigs})
            continue
        first = {i: next(s for s in ordered if placed[s] == i) for i in kinds}
        for s in sigs:
            group = placed.get(s)
            suffix = (UNKNOWN if group is None
                      else str(by_sig[first[group]])[:LABEL_HASH_DIGITS])
            labels[(name, s)] = f"{name}@{suffix}"
    named = pl.DataFrame([(v, s, label) for (v, s), label in labels.items()],
                         schema={"variant": pl.Utf8, "__sig": pl.Utf8, "__label": pl.Utf8},
                         orient="row")
    hashes = pl.DataFrame(list(by_sig.items()), schema={"__sig": pl.Utf8, "spec_hash": pl.Utf8},
                          orient="row")
    mapping = (rows.select("run_id", "variant", "__sig")
               .join(named, on=["variant", "__sig"], how="left", nulls_equal=True)
               .join(hashes, on="__sig", how="left")
               .select("run_id", "__label", "spec_hash"))
    return (frame.join(mapping, on="run_id", how="left", maintain_order="left")
            .with_columns(pl.col("variant").alias("variant_id"),
                          pl.col("__label").alias("variant"))
            .drop("__label"))


def _parse(signature: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in signature.split("\n") if line)


def split_variants(frame: pl.DataFrame) -> dict[str, list[str]]:
    """The variant ids of ``frame`` recorded with several architectures, each with the labels
    its runs carry (``ID@HASH8``, sorted); empty for a frame without ``variant_id``."""
    if "variant_id" not in frame.columns or frame.is_empty():
        return {}
    split = (frame.filter(pl.col("variant") != pl.col("variant_id"))
             .group_by("variant_id").agg(pl.col("variant").unique().sort()))
    return {str(vid): list(labels) for vid, labels in split.iter_rows()}
