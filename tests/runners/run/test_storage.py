"""The storage a sweep's nodes share: checkpoints, leases and the data cache under a path or an
fsspec URI (fsspec's in-memory file system stands for an object store here: one process, two
"nodes" with their own scratch folders), and the data manifest that each node checks."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from gatelab.contract import Tag
from gatelab.registry.loader import load_variant
from gatelab.runners.data.tokens import DataConfig, cache_files, data_key, prepare_data
from gatelab.runners.run.checkpoint import REQUIRED_KEYS
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.storage import STORAGE_ENV, Storage, StorageError
from gatelab.runners.run.train import Progress, train

SHORT = {"steps": 12, "eval_every": 6, "checkpoint_every": 4, "warmup_steps": 2,
         "batch_size": 4, "seq_len": 32, "eval_batches": 1, "measure_batches": 1}


def state(step: int) -> dict[str, object]:
    out: dict[str, object] = {key: 0.0 for key in REQUIRED_KEYS}
    return {**out, "model": {"w": torch.full((2, 2), float(step))}, "step": step,
            "run_id": "abc", "recent_losses": []}


def memory_root() -> str:
    return f"memory://gatelab-test-{uuid.uuid4().hex[:8]}"


def test_a_path_storage_is_absolute_and_holds_everything(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    place = Storage.resolve("shared", tmp_path / "work")
    assert place.is_path and place.root == str(tmp_path / "shared")
    assert place.lease_dir == tmp_path / "shared"
    assert place.cache_dir == tmp_path / "shared" / "cache"
    place.save_checkpoint("h1", state(4))
    assert (tmp_path / "shared" / "checkpoints" / "h1" / "last.pt").is_file()
    other_node = Storage.resolve(str(tmp_path / "shared"), tmp_path / "elsewhere")
    loaded = other_node.load_checkpoint("h1")
    assert loaded is not None and loaded["step"] == 4
    other_node.drop_checkpoint("h1")
    assert place.load_checkpoint("h1") is None
    # Without --storage: $GATELAB_STORAGE, else the work dir.
    assert Storage.resolve(None, tmp_path / "work").root == str(tmp_path / "work")
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "env"))
    assert Storage.resolve(None, tmp_path / "work").root == str(tmp_path / "env")


def test_a_checkpoint_under_a_uri_written_on_one_node_is_read_on_another(tmp_path: Path) -> None:
    root = memory_root()
    node_a, node_b = Storage(root, tmp_path / "a"), Storage(root, tmp_path / "b")
    assert not node_a.is_path and node_a.lease_dir == tmp_path / "a"
    node_a.save_checkpoint("h2", state(8))
    assert node_b.checkpoint_path("h2").exists() is False
    loaded = node_b.load_checkpoint("h2")
    assert loaded is not None and loaded["step"] == 8
    assert torch.equal(loaded["model"]["w"], torch.full((2, 2), 8.0))
    node_a.save_checkpoint("h2", state(12))  # the newer one replaces it
    loaded = node_b.load_checkpoint("h2")
    assert loaded is not None and loaded["step"] == 12
    node_b.drop_checkpoint("h2")
    assert node_a.load_checkpoint("h2") is not None  # node a's local copy only...
    node_a.checkpoint_path("h2").unlink()
    assert node_a.load_checkpoint("h2") is None  # ...the shared one is gone


def small_data(cache: Path) -> DataConfig:
    return DataConfig(source="wiki", tokenizer="bytes", cache_dir=str(cache))


@pytest.mark.parametrize("kind", ["path", "uri"])
def test_data_built_once_is_sealed_and_each_node_checks_its_copy(tmp_path: Path,
                                                                 kind: str) -> None:
    root = str(tmp_path / "shared") if kind == "path" else memory_root()
    builder, node = Storage(root, tmp_path / "a"), Storage(root, tmp_path / "b")
    cfg = small_data(builder.cache_dir)
    key = data_key(cfg)
    assert node.verify_data(key) is False  # nothing published yet
    prepare_data(cfg)
    builder.publish_data(key, cache_files(cfg))
    assert node.verify_data(key) is True
    tokens = node.cache_dir / cache_files(small_data(node.cache_dir))[-1].name
    assert tokens.is_file()
    loaded = prepare_data(small_data(node.cache_dir))
    assert loaded.from_cache  # the node reads what the builder made: nothing rebuilt
    # A changed copy on a node that has not checked it yet is refused, naming the file.
    third = Storage(root, tmp_path / "c")
    if kind == "uri":
        third.verify_data(key)
        tokens = third.cache_dir / tokens.name
        for seal in (tmp_path / "c" / "verified").iterdir():
            seal.unlink()
    else:
        tokens = builder.cache_dir / tokens.name
    tokens.write_bytes(tokens.read_bytes()[:-7] + b"changed")
    with pytest.raises(StorageError, match=rf"{tokens.name}.*does not match the one the sweep "
                       r"built.*same storage path"):
        third.verify_data(key)


def test_a_run_interrupted_on_one_node_resumes_on_another_from_the_shared_storage(
        tmp_path: Path) -> None:
    """Two nodes: their own work dirs, one storage URI (in memory) and one tracking store."""
    spec, recipe = load_variant("baseline"), load_recipe("tiny", SHORT)
    root, uri = memory_root(), f"sqlite:///{tmp_path / 'mlflow.db'}"
    node_a = Resources(threads=1, tracking_uri=uri, work_dir=tmp_path / "a", storage=root,
                       experiment="test")
    node_b = Resources(threads=1, tracking_uri=uri, work_dir=tmp_path / "b", storage=root,
                       experiment="test")

    def crash_at_6(p: Progress) -> None:
        if p.step == 6:
            raise RuntimeError("the node went away")

    with pytest.raises(RuntimeError, match="went away"):
        train(spec, recipe, node_a, on_progress=crash_at_6)
    steps: list[int] = []
    result = train(spec, recipe, node_b, on_progress=lambda p: steps.append(p.step))
    assert result.status == "finished"
    assert steps[0] == 5 and steps[-1] == SHORT["steps"]  # resumed after the step-4 checkpoint
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.run_id == result.run_id
    assert run.data.tags[Tag.NODE] and run.data.tags[Tag.CODE_HASH]
    assert len(run.data.tags[Tag.CODE_HASH]) == 64
    assert Storage(root, tmp_path / "c").load_checkpoint(result.run_hash) is None  # dropped
