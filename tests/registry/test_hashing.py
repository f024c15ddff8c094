"""A spec's hash covers its architecture and nothing else."""

from __future__ import annotations

from dataclasses import replace

from gatelab.registry.hashing import content_hash, spec_hash
from gatelab.registry.loader import load_all, load_variant


def test_hash_ignores_description_paper_and_id() -> None:
    spec = load_variant("g1-elementwise")
    renamed = replace(spec, id="other", description="x", hypothesis="y", paper=())
    assert spec_hash(renamed) == spec_hash(spec)


def test_every_shipped_spec_builds_a_different_architecture() -> None:
    hashes = {spec.id: spec_hash(spec) for spec in load_all()}
    assert len(set(hashes.values())) == len(hashes)


def test_content_hash_is_order_independent_and_sensitive() -> None:
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 1.5})
    assert len(content_hash({})) == 16
