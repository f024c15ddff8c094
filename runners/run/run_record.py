"""What gatelab records about one training run in MLflow beside its metrics: the tags that say
what it is, the MLflow UI's source and description, what is written when its run opens (params,
tags and, on a first start, its config, identity, model and dataset), and the recorded result
of a hash that is already done."""

from __future__ import annotations

from typing import Any

import torch

from gatelab.contract import DONE_STATUSES, NO_VALUE, Artifact, RunStatus, Tag
from gatelab.identity import IDENTITY_VERSION
from gatelab.registry.schema import VariantSpec, architecture_dict, to_plain
from gatelab.run_summary import RunSummary
from gatelab.runners.data.tokens import TokenData
from gatelab.runners.run.provenance import code_hash, git_state, node_name
from gatelab.runners.run.result import RunResult
from gatelab.runners.run.setting import RunSetting
from gatelab.runners.run.tracking import RunTracker, flatten


def run_name(setting: RunSetting) -> str:
    """The MLflow run name: variant, LR and seed (the hash stays a tag)."""
    return f"{setting.spec.id} lr={setting.recipe.lr:g} seed={setting.recipe.seed}"


def run_tags(setting: RunSetting) -> dict[str, str]:
    """The tags that say what a run is (``gatelab.contract.Tag``), status aside."""
    spec, recipe, numerics, ident = (setting.spec, setting.recipe, setting.numerics,
                                     setting.identity)
    gate = spec.architecture.gate
    return {
        Tag.VARIANT: spec.id, Tag.RUN_HASH: ident.run_hash,
        Tag.SETTING_HASH: ident.setting_hash, Tag.LR_SETTING_HASH: ident.lr_setting_hash,
        Tag.IDENTITY_VERSION: str(IDENTITY_VERSION),
        Tag.SIZE: recipe.size, Tag.SEED: str(recipe.seed), Tag.LR: str(recipe.lr),
        Tag.POSITION: gate.position.value if gate else NO_VALUE,
        Tag.GRANULARITY: gate.granularity.value if gate else NO_VALUE,
        Tag.PAPER_ROW: spec.paper_row or NO_VALUE,
        Tag.DEVICE: numerics.device_type.value, Tag.PRECISION: numerics.precision.value,
        Tag.KERNEL: numerics.kernel.value, Tag.TORCH_VERSION: torch.__version__,
    }


def mlflow_tags(spec: VariantSpec, commit: str) -> dict[str, str]:
    """The tags the MLflow UI reads: the source (its Source column and the commit link) and the
    run's description (its Description column): the spec's description and hypothesis."""
    out = {"mlflow.source.name": "gatelab", "mlflow.source.type": "LOCAL",
           "mlflow.note.content": f"{spec.description}\n\nHypothesis: {spec.hypothesis}"}
    if commit != "unknown":
        out["mlflow.source.git.commit"] = commit
    return out


def model_summary(model: torch.nn.Module) -> str:
    """The built model as text (its modules) with its parameter count: the run's
    ``model.txt``."""
    n = sum(p.numel() for p in model.parameters())
    return f"{n:,} parameters\n\n{model}\n"


def record_start(tracker: RunTracker, setting: RunSetting, model: Any, data: TokenData,
                 tags: dict[str, str], first: bool) -> None:
    """What a run records when it (re)opens, status ``running``: its params and tags (``tags``
    beside its own), and on its ``first`` start its config, identity, model and dataset."""
    spec, recipe = setting.spec, setting.recipe
    commit, dirty = git_state()
    tracker.log_params(flatten({"spec": architecture_dict(spec), "recipe": to_plain(recipe),
                                "backbone": to_plain(model.backbone)}))
    tracker.set_tags({
        **run_tags(setting), Tag.STATUS: RunStatus.RUNNING,
        Tag.GIT_COMMIT: commit, Tag.GIT_DIRTY: str(dirty).lower(), Tag.DATA: data.describe(),
        Tag.CODE_HASH: code_hash(), Tag.NODE: node_name(),
        **mlflow_tags(spec, commit), **tags,
    })
    if not first:
        return
    tracker.log_json(Artifact.CONFIG, {
        "spec": to_plain(spec), "recipe": to_plain(recipe),
        "backbone": to_plain(model.backbone), "numerics": setting.numerics.as_dict()})
    tracker.log_json(Artifact.IDENTITY, setting.identity.document)
    tracker.log_text(Artifact.MODEL, model_summary(model))
    tracker.log_dataset(data.corpus_name, data.corpus_hash, recipe.data.source, "train")


def recorded_result(client: Any, uri: str, experiment: str, run_hash: str,
                    tags: dict[str, str] | None) -> RunResult | None:
    """The recorded result of a hash that finished or diverged (``tags`` added to its run),
    else ``None``; its summary is read back from its latest metrics."""
    found = RunTracker.find(client, experiment, run_hash)
    if found is None or found.data.tags.get(Tag.STATUS) not in DONE_STATUSES:
        return None
    if tags:
        RunTracker(client, found.info.run_id, uri).set_tags(tags)
    summary = RunSummary.from_metrics(found.data.metrics, found.data.tags.get(Tag.DIVERGENCE),
                                      strict=False)
    return RunResult(found.info.run_id, run_hash, RunStatus(found.data.tags[Tag.STATUS]),
                     summary, skipped=True)
