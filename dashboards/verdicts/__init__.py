"""Layer 4 of the dashboards: the paper's claims as data (``claims.py``, ``claims.yaml``), the
evidence each claim's test finds in the runs (``evidence.py``), the procedure that corrects and
decides them into verdicts (``procedure.py``) and how they read (``text.py``). The verdicts
themselves are ``gatelab.verdict.Verdict``. It imports the layers below it."""
