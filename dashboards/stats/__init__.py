"""Layer 2 of the dashboards: statistics on plain numbers, with no frame of runs in sight:
intervals and tests (``inference.py``), their power (``power.py``) and the group-sequential
design behind ``--until-decided`` (``sequential.py``). It imports no other part of the
dashboards."""
