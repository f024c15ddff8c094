"""Tables, plots and reports from recorded runs: results as pure functions of the tracking store.

In a notebook::

    from gatelab import dashboards
    runs = dashboards.load("smoke")          # or load(None) for every run, tracking_uri=...
    runs.frame                               # one row per run, typed columns
    runs.table1(); runs.table4(); runs.lr_tolerance(); runs.stability()
    runs.long_context(); runs.verdicts(); runs.history("val_loss")

``gatelab report NAME`` writes all of it (Markdown, CSV, PNG, one self-contained HTML file).

In layers, each importing only those below it (``tests/test_layout.py`` holds them to it):
``store/`` reads a tracking store into one frame; ``stats/`` is statistics on plain numbers;
``tables/`` turns the frame into the paper's tables; ``verdicts/`` judges the paper's claims;
``runs.py`` (the query API, ``load`` and ``Runs``) and ``decide.py`` (the one module the
runners may import) stand on those; ``report/`` writes the report from a ``Runs``. Under them
all, ``numbers.py`` writes a number in text. This package reads specs from
``gatelab.registry`` (they are data) and never imports the training code (``gatelab.model``,
``gatelab.runners``) or torch; tag names, statuses and where a tracking URI points come from
``gatelab.contract``, and verdicts are ``gatelab.verdict.Verdict``, which the runners import
too.
"""

from gatelab.dashboards.runs import Runs, load

__all__ = ["Runs", "load"]
