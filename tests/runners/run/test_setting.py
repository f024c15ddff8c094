"""A run's identity is the hash of what changes its numbers: content, never names or cadence."""

from __future__ import annotations

import dataclasses
import pydoc_data.topics
from pathlib import Path

import pytest

from gatelab.identity import IDENTITY_VERSION, run_identity
from gatelab.registry import presets
from gatelab.registry.loader import load_variant
from gatelab.runners.run.numerics import DeviceType, Numerics, Precision, resolve_numerics
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.setting import resolve_setting

CPU = resolve_numerics("cpu")
TEXT = "\n\n".join(list(pydoc_data.topics.topics.values())[:50])


def _hash(variant: str = "g1-elementwise", numerics: Numerics = CPU,
          **overrides: object) -> str:
    return resolve_setting(load_variant(variant), load_recipe("tiny", overrides),
                           numerics).run_hash


def test_cadence_compile_and_logging_do_not_change_the_identity() -> None:
    base = _hash()
    assert _hash(eval_every=7) == base
    assert _hash(checkpoint_every=3) == base
    assert _hash(compile=True) == base
    assert _hash(compile=False) == base
    assert _hash(micro_batch_size=4) == base  # gradient accumulation: the same update


def test_a_measurement_batch_of_its_own_changes_the_identity_and_tf32_too() -> None:
    base = _hash()
    assert _hash(measure_batch_size=4) != base
    assert _hash(numerics=dataclasses.replace(CPU, tf32=True)) != base
    assert CPU.tf32 is False  # never on a CPU, whose recorded runs had no such field


def test_what_changes_the_numbers_changes_the_identity() -> None:
    base = _hash()
    for change in ({"steps": 301}, {"lr": 1e-3}, {"seed": 1}, {"batch_size": 8},
                   {"weight_decay": 0.0}, {"data.window_start": "document"},
                   {"data.tokenizer": "bytes"}, {"eval_batches": 4}):
        assert _hash(**change) != base, change
    assert _hash("g1-headwise") != base


def test_the_precision_and_the_device_are_part_of_the_identity() -> None:
    bf16 = dataclasses.replace(CPU, precision=Precision.BF16)
    cuda = dataclasses.replace(CPU, device_type=DeviceType.CUDA)
    assert len({_hash(), _hash(numerics=bf16), _hash(numerics=cuda)}) == 3


def test_a_size_preset_is_hashed_by_its_content_not_its_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = _hash()
    monkeypatch.setitem(presets.PRESETS, "tiny-copy", presets.PRESETS["tiny"])
    assert _hash(size="tiny-copy") == base  # another name for the same shape
    monkeypatch.setitem(presets.PRESETS, "tiny",
                        dataclasses.replace(presets.PRESETS["tiny"], ffn_hidden=320))
    assert _hash() != base  # an edited preset is another experiment


def test_the_corpus_is_hashed_by_its_content_not_its_path(tmp_path: Path) -> None:
    one, two = tmp_path / "a.txt", tmp_path / "copy" / "b.txt"
    two.parent.mkdir()
    one.write_text(TEXT)
    two.write_text(TEXT)
    first = _hash(**{"data.source": str(one)})
    assert _hash(**{"data.source": str(two)}) == first
    two.write_text(TEXT + "\n\nOne more paragraph of text.")
    assert _hash(**{"data.source": str(two)}) != first


def test_setting_hashes_leave_out_seed_and_variant_and_then_the_lr() -> None:
    spec = load_variant("baseline")
    a = resolve_setting(spec, load_recipe("tiny", {"seed": 0}), CPU).identity
    b = resolve_setting(spec, load_recipe("tiny", {"seed": 1}), CPU).identity
    c = resolve_setting(spec, load_recipe("tiny", {"seed": 1, "lr": 1e-3}), CPU).identity
    gated = resolve_setting(load_variant("g1-elementwise-matched"), load_recipe("tiny"),
                            CPU).identity
    assert a.run_hash != b.run_hash and a.setting_hash == b.setting_hash
    assert c.setting_hash != b.setting_hash and c.lr_setting_hash == b.lr_setting_hash
    assert gated.run_hash != a.run_hash and gated.setting_hash == a.setting_hash
    other_size = resolve_setting(spec, load_recipe("tiny", {"size": "sink-cpu"}), CPU).identity
    assert other_size.setting_hash != a.setting_hash
    assert a.document["version"] == IDENTITY_VERSION
    assert "tiny" not in str(a.document)  # no preset name anywhere in what is hashed


def test_run_identity_needs_the_lr() -> None:
    with pytest.raises(ValueError, match="'lr'"):
        run_identity(architecture={}, size={}, training={}, data={}, numerics={}, seed=0)


def test_cuda_on_a_machine_without_it_says_what_to_do() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot be shown here")
    with pytest.raises(ValueError, match="no CUDA device here.*use --device cpu or auto"):
        resolve_numerics("cuda")
