"""Layer 3 of the dashboards: tables from the run frame, seeds aggregated and variants paired on
seeds (``compare.py``): the paper's tables (``paper_tables.py``) beside its numbers
(``paper_numbers.py``), the families side by side, learning-rate tolerance, long context and
sink onset. It imports the store's columns and the statistics below it."""
