"""The top layer of the dashboards: ``gatelab report``'s folder of tables, plots and pages
(``write.py``; what it holds: ``parts.py``), its headline figures and plots, the tables and
pages as text (``table_text.py``, ``page.py`` and ``templates/``, which ``gatelab compare``'s
page uses too) and the summary run that attaches it to MLflow (``summary_run.py``). It reads
runs through the query API (``dashboards/runs.py``) and every layer below."""
