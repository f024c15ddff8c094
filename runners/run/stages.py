"""Stages: a run that continues from another run's final weights (``Recipe.continue_from``).

The parent is found in the tracking store by its hash and must have finished. Its weights are
the MLflow artifact ``final_weights.pt``, logged at its end when its recipe asks
(``save_weights``): the artifact store is what every machine of a Ray cluster already shares
with the driver, so a stage may run on another node than its parent (a local checkpoint would
not reach it, and a finished run deletes its checkpoint). A stage is linked to its parent by
the tags ``gatelab.parent_hash`` and ``gatelab.parent_run_id``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gatelab.contract import Artifact, RunStatus, Tag
from gatelab.identity import Lineage
from gatelab.runners.run.tracking import RunTracker


class ParentError(RuntimeError):
    """A stage's parent cannot be continued from; the message names its hash and what to run."""


@dataclass(frozen=True)
class Parent:
    """The finished run a stage continues from."""

    run_id: str
    lineage: Lineage

    def tags(self) -> dict[str, str]:
        return {Tag.PARENT_HASH: self.lineage.run_hash, Tag.PARENT_RUN_ID: self.run_id}


_FIRST = ("train it first: run the sweep that plans it (its stages run after it), or "
          "gatelab train with the parent's recipe and --set save_weights=true")


def find_parent(client: Any, experiment: str, run_hash: str) -> Parent:
    """The finished run ``run_hash`` of ``experiment``, or ``ParentError`` saying why it
    cannot be continued from and what to run first."""
    found = RunTracker.find(client, experiment, run_hash)
    if found is None:
        raise ParentError(f"continue_from {run_hash}: no run of that hash in experiment "
                          f"{experiment!r} of this tracking store; {_FIRST}")
    tags = found.data.tags
    status = tags.get(Tag.STATUS)
    if status != RunStatus.FINISHED:
        cause = f" ({tags[Tag.FAILURE]})" if Tag.FAILURE in tags else ""
        raise ParentError(f"continue_from {run_hash}: its run {found.info.run_id} is "
                          f"{status or 'not recorded as ended'}{cause}, not finished, so it has "
                          f"no final weights; {_FIRST}")
    return Parent(found.info.run_id, Lineage(
        run_hash, tags.get(Tag.SETTING_HASH, run_hash), tags.get(Tag.LR_SETTING_HASH, run_hash)))


def parent_weights(client: Any, parent: Parent) -> dict[str, torch.Tensor]:
    """The parent's final weights (on the CPU), or ``ParentError`` if it logged none."""
    names = {f.path for f in client.list_artifacts(parent.run_id)}
    if Artifact.WEIGHTS not in names:
        raise ParentError(
            f"continue_from {parent.lineage.run_hash}: its run {parent.run_id} finished without "
            f"its final weights ({Artifact.WEIGHTS}): it was trained without save_weights, "
            "which is not part of its identity, so it will not be trained again as it is. "
            f"Delete that run (mlflow runs delete --run-id {parent.run_id}), then rerun it with "
            "save_weights (a sweep with stages sets it for every run a stage continues from)")
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(parent.run_id, Artifact.WEIGHTS, tmp)
        state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def load_parent_weights(model: torch.nn.Module, state: dict[str, torch.Tensor],
                        parent: Parent) -> None:
    """Put the parent's weights into ``model``; ``ParentError`` if they do not fit (another
    variant, size or vocabulary than the stage builds)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ParentError(
            f"continue_from {parent.lineage.run_hash}: its weights do not fit this run's model "
            "(a stage keeps its parent's variant, size and tokenizer): "
            f"{str(err).splitlines()[0]}") from None


def log_weights(tracker: RunTracker, model: torch.nn.Module) -> None:
    """Log ``model``'s weights as the tracker's run's ``final_weights.pt``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Artifact.WEIGHTS
        torch.save(model.state_dict(), path)
        tracker.client.log_artifact(tracker.run_id, str(path))
