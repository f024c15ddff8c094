"""Layer 1 of the dashboards: reading a tracking store into one Polars frame, a row per training
run with typed columns (``frame.py``, ``columns.py``), through SQL for a local SQLite store or
``MlflowClient`` for any other (``open_store.py``), and the per-run arrays of ``internals.npz``
(``artifacts.py``). It imports no other part of the dashboards."""
