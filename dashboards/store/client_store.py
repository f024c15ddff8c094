"""Read runs through ``MlflowClient``: works with every tracking store (an ``http://`` server,
a Databricks workspace, SQLite), at the cost of one ``Run`` object per run and one request per
metric history. ``SqliteStore`` is the fast path for local SQLite files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from gatelab.contract import IN_SWEEP, SWEEP_TAG_PREFIX, TAG_PREFIX, Tag
from gatelab.dashboards.store.raw_runs import (
    HISTORY_SCHEMA,
    KV_SCHEMA,
    METRIC_SCHEMA,
    RUNS_SCHEMA,
    RawRuns,
)

_PAGE = 1000


@dataclass
class ClientStore:
    """Any tracking store, read with ``MlflowClient``."""

    uri: str

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def read_runs(self, experiment: str | None, sweep: str | None) -> RawRuns:
        client = self._client()
        if experiment is None:
            experiments = list(client.search_experiments())
        else:
            found = client.get_experiment_by_name(experiment)
            experiments = [found] if found is not None else []
        if not experiments:
            return RawRuns.empty()
        names = {e.experiment_id: e.name for e in experiments}
        query = f"tags.`{SWEEP_TAG_PREFIX}{sweep}` = '{IN_SWEEP}'" if sweep is not None else ""
        runs: list[tuple[Any, ...]] = []
        tags: list[tuple[str, str, str]] = []
        params: list[tuple[str, str, str]] = []
        metrics: list[tuple[str, str, float]] = []
        token: str | None = None
        while True:
            page = client.search_runs(list(names), query, max_results=_PAGE, page_token=token)
            for run in page:
                data, info = run.data, run.info
                if Tag.RUN_HASH not in data.tags or Tag.SUMMARY in data.tags:
                    continue
                rid = info.run_id
                runs.append((rid, info.run_name, names.get(info.experiment_id), info.status,
                             info.start_time, info.end_time))
                tags += [(rid, k, v) for k, v in data.tags.items() if k.startswith(TAG_PREFIX)]
                params += [(rid, k, v) for k, v in data.params.items()]
                metrics += [(rid, k, float(v)) for k, v in data.metrics.items()]
            token = page.token
            if not token:
                break
        return RawRuns(pl.DataFrame(runs, schema=RUNS_SCHEMA, orient="row"),
                       pl.DataFrame(tags, schema=KV_SCHEMA, orient="row"),
                       pl.DataFrame(params, schema=KV_SCHEMA, orient="row"),
                       pl.DataFrame(metrics, schema=METRIC_SCHEMA, orient="row"))

    def read_history(self, run_ids: Sequence[str], metrics: Sequence[str]) -> pl.DataFrame:
        client = self._client()
        rows: list[tuple[str, str, int, float, int]] = []
        for rid in run_ids:
            for key in metrics:
                rows += [(rid, key, m.step, float(m.value), m.timestamp)
                         for m in client.get_metric_history(rid, key)]
        return pl.DataFrame(rows, schema=HISTORY_SCHEMA, orient="row")

    def read_experiment_tags(self, experiment: str) -> dict[str, str]:
        found = self._client().get_experiment_by_name(experiment)
        return {} if found is None else dict(found.tags)
