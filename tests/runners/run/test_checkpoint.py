"""Checkpoints round-trip; a failed write leaves the previous one intact; one that cannot be read
is moved aside (kept, never overwritten), reported with one warning, and the run restarts from
step 0 into the same MLflow run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from gatelab.registry.loader import load_variant
from gatelab.runners.run import checkpoint
from gatelab.runners.run.checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.setting import resolve_setting
from gatelab.runners.run.train import Progress, train


def full_state(step: int = 7) -> dict[str, Any]:
    """A state with every key the training loop restores."""
    state: dict[str, Any] = {key: 0.0 for key in REQUIRED_KEYS}
    return {**state, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": step,
            "run_id": "0123abcd", "recent_losses": [1.0, 2.0]}


def corrupt_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("last.pt.corrupt-*"))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gatelab" and r.levelno == logging.WARNING]


def test_a_checkpoint_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, full_state())
    loaded = load_checkpoint(path)
    assert loaded is not None
    assert loaded["step"] == 7 and loaded["run_id"] == "0123abcd"
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_no_checkpoint_is_none_and_silent(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    assert load_checkpoint(tmp_path / "last.pt") is None
    assert list(tmp_path.iterdir()) == [] and warnings_of(caplog) == []


def truncated(path: Path) -> None:
    save_checkpoint(path, full_state())
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0)).numpy().tobytes())


def empty(path: Path) -> None:
    path.write_bytes(b"")


def missing_keys(path: Path) -> None:
    torch.save({"optimizer": {}, "generator": torch.zeros(3)}, path)


def not_a_dict(path: Path) -> None:
    torch.save([1, 2, 3], path)


def bad_step(path: Path) -> None:
    torch.save({**full_state(), "step": "seven"}, path)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncated, ""),
    "random-bytes": (random_bytes, "UnpicklingError"),
    "empty": (empty, "EOFError"),
    "missing-keys": (missing_keys, "missing keys: first_loss, max_grad_norm, model, "
                                   "recent_losses, run_id, spikes, step"),
    "not-a-dict": (not_a_dict, "holds a list, not a dict"),
    "bad-step": (bad_step, "step is 'seven', not a step number"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_an_unreadable_checkpoint_is_moved_aside_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    path = tmp_path / "last.pt"
    corrupt, problem = CORRUPTIONS[kind]
    corrupt(path)
    damaged = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="gatelab"):
        assert load_checkpoint(path) is None
    assert not path.exists()
    [moved] = corrupt_files(tmp_path)
    assert moved.read_bytes() == damaged  # kept as it was, for inspection
    assert moved.name.startswith("last.pt.corrupt-") and moved.name.endswith("Z")
    [warning] = warnings_of(caplog)
    message = warning.getMessage()
    assert f"checkpoint {path} cannot be read (" in message and problem in message
    assert f"moved it to {moved}" in message and "restarts from step 0" in message
    assert "\n" not in message
    save_checkpoint(path, full_state())  # a new run writes its checkpoint in the same place
    assert load_checkpoint(path) is not None and corrupt_files(tmp_path) == [moved]


def test_a_second_corrupt_checkpoint_never_replaces_the_first(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    for content in (b"first", b"second", b"third"):
        path.write_bytes(content)
        assert load_checkpoint(path) is None
    assert sorted(p.read_bytes() for p in corrupt_files(tmp_path)) == [b"first", b"second",
                                                                        b"third"]


def test_a_checkpoint_that_cannot_be_moved_aside_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"garbage")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.os, "rename", refuse)
    with pytest.raises(RuntimeError, match=rf"the checkpoint {path} cannot be read \(.*\) and "
                                           r"cannot be moved aside \(Permission denied\); move "
                                           r"it away by hand"):
        load_checkpoint(path)
    assert path.read_bytes() == b"garbage"


def test_a_failed_write_keeps_the_previous_checkpoint_and_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, full_state(step=3))
    real_save = torch.save

    def disk_full(obj: object, f: Any) -> None:
        real_save(obj, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, full_state(step=9))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded["step"] == 3


SHORT = {"steps": 16, "eval_every": 8, "checkpoint_every": 4, "warmup_steps": 2,
         "batch_size": 4, "seq_len": 32, "eval_batches": 1, "measure_batches": 1}


@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_a_run_with_a_corrupt_checkpoint_restarts_from_step_0_into_its_mlflow_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec, recipe = load_variant("baseline"), load_recipe("tiny", SHORT)
    res = Resources(threads=1, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                    work_dir=tmp_path / "work", experiment="test")

    def crash_at_6(p: Progress) -> None:
        if p.step == 6:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, recipe, res, on_progress=crash_at_6)
    rhash = resolve_setting(spec, recipe, res.numerics()).run_hash
    path = res.work_dir / "checkpoints" / rhash / "last.pt"
    written = torch.load(path, weights_only=True)
    assert set(written) == REQUIRED_KEYS and written["step"] == 4  # the loop's own state
    client = MlflowClient(res.tracking_uri)
    experiment = client.get_experiment_by_name("test")
    assert experiment is not None
    [crashed] = client.search_runs([experiment.experiment_id])

    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])  # as a crash mid-write on a bare file system does
    steps: list[int] = []
    with caplog.at_level(logging.WARNING, logger="gatelab"):
        resumed = train(spec, recipe, res, on_progress=lambda p: steps.append(p.step))
    assert steps[0] == 1 and steps[-1] == SHORT["steps"]
    assert resumed.status == "finished" and resumed.run_id == crashed.info.run_id
    assert len(client.search_runs([experiment.experiment_id])) == 1
    [moved] = corrupt_files(path.parent)
    assert moved.read_bytes() == data[:len(data) // 3]
    [warning] = warnings_of(caplog)
    assert str(moved) in warning.getMessage() and "restarts from step 0" in warning.getMessage()
    assert not path.exists()  # the run finished, so its checkpoint was removed
