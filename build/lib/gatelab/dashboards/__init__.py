"""Tables, plots and reports from recorded runs: results as pure functions of the tracking store.

In a notebook::

    from gatelab import dashboards
    runs = dashboards.load("smoke")          # or load(None) for every run, tracking_uri=...
    runs.frame                               # one row per run, typed columns
    runs.table1(); runs.table4(); runs.lr_tolerance(); runs.stability()
    runs.long_context(); runs.verdicts(); runs.history("val_loss")

``gatelab report NAME`` writes all of it (Markdown, CSV, PNG, one self-contained HTML file) and
``gatelab ui`` opens the MLflow UI. This package reads specs from ``gatelab.registry`` (they
are data) and never imports the training code (``gatelab.model``, ``gatelab.runners``) or
torch; tag names, statuses and where a tracking URI points come from ``gatelab.contract``,
which the runners that write the runs import too.
"""

from gatelab.dashboards.runs import Runs, load

__all__ = ["Runs", "load"]
