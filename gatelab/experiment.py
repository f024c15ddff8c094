"""The MLflow experiment gatelab records into: created where its artifacts outlive whichever
process created it, and marked as a model-training experiment."""

from __future__ import annotations

from typing import Any

from gatelab.contract import sqlite_path

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The experiment kind of a model-training experiment. MLflow 3.17's UI does not read it yet to
choose its landing page: the links gatelab prints carry ``?workflowType=machine_learning``
(``gatelab.cli.sweep_text.ui_link``), which opens the training runs."""


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts: beside a SQLite
    database (``<its folder>/mlruns/<experiment>``), an absolute place that does not depend on
    the working directory of whichever process creates the experiment (MLflow's default,
    ``./mlruns``, would land inside a Ray job's temporary copy); ``None`` for a tracking server,
    which decides (``mlflow-artifacts:`` with proxied artifacts) and for other stores."""
    db = sqlite_path(uri)
    if db is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (db.resolve().parent / "mlruns" / safe).as_uri()


def ensure_experiment(client: Any, uri: str, experiment: str) -> str:
    """The id of ``experiment``, created if need be (``artifact_location``) and marked as a
    model-training experiment (``MODEL_TRAINING``)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(experiment,
                                              artifact_location=artifact_location(uri, experiment))
        except Exception:  # another process created it first
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp_id
