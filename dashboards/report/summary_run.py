"""Attach a written report to MLflow as the sweep's summary run.

The summary run lives in the same experiment as the sweep's training runs, so the MLflow UI
shows it beside them; it holds the report folder as artifacts (``report/``: HTML, Markdown,
CSV, PNG) and the verdict counts as metrics. It is tagged ``gatelab.summary=1``,
``gatelab.summary.sweep=<NAME>`` and ``gatelab.sweep.<NAME>=1`` (so a UI filter on the sweep
shows it), and has **no** ``gatelab.run_hash``: sweeps plan by hash and the dashboards load
only runs with a hash and without ``gatelab.summary``, so it is never taken for a training run.
A new report replaces the previous summary run of the same sweep (the old one is deleted).
"""

from __future__ import annotations

import time
from typing import Any

from gatelab.contract import Artifact, Tag, sweep_tag
from gatelab.dashboards.report.parts import Report
from gatelab.experiment import ensure_experiment
from gatelab.metrics import SUMMARY_RUN_COUNT, claims_metric
from gatelab.verdict import Verdict


def summary_tags(sweep: str, n_runs: int) -> dict[str, str]:
    return {Tag.SUMMARY: "1", Tag.SUMMARY_SWEEP: sweep, **sweep_tag(sweep),
            Tag.SUMMARY_RUNS: str(n_runs),
            "mlflow.note.content": f"Summary of sweep {sweep}: see the report/ artifacts "
                                   "(report.html opens offline)."}


def verdict_counts(verdicts: list[str]) -> dict[str, int]:
    """How many claims got each verdict, by the verdict's key (``Verdict.key``: the summary
    run's metric ``claims.<key>``), every verdict present (zero where none)."""
    counts = dict.fromkeys((v.key for v in Verdict), 0)
    for verdict in verdicts:
        counts[Verdict(verdict).key] += 1
    return counts


def previous_summaries(client: Any, experiment_id: str, sweep: str) -> list[str]:
    """Run ids of earlier summary runs of ``sweep``."""
    query = f"tags.`{Tag.SUMMARY}` = '1' and tags.`{Tag.SUMMARY_SWEEP}` = '{sweep}'"
    return [r.info.run_id for r in client.search_runs([experiment_id], query, max_results=100)]


def attach(report: Report, tracking_uri: str, experiment: str, sweep: str) -> str:
    """Log ``report`` as the summary run of ``sweep``; returns its run id."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(client, tracking_uri, experiment)
    old = previous_summaries(client, exp_id, sweep)
    run_id: str = client.create_run(exp_id, run_name=f"summary-{sweep}").info.run_id
    counts = verdict_counts(report.table("verdicts")["verdict"].to_list())
    now = int(time.time() * 1000)
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(claims_metric(k), float(v), now, 0) for k, v in counts.items()]
            + [Metric(SUMMARY_RUN_COUNT, float(report.n_runs), now, 0)],
            tags=[RunTag(str(k), v) for k, v in summary_tags(sweep, report.n_runs).items()])
        client.log_artifacts(run_id, str(report.out), artifact_path=Artifact.REPORT)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    for previous in old:
        client.delete_run(previous)
    return run_id
