"""gatelab: rerun and extend the gated-attention study of Qiu et al. (2025) at small scale.

One installed namespace, mapped from the repository's folders (pyproject.toml):
``gatelab.registry`` (registry/), ``gatelab.model`` (model/), ``gatelab.runners`` (runners/),
``gatelab.dashboards`` (dashboards/), the shipped YAML ``gatelab.ablations`` and
``gatelab.recipes``, and here: the command line (``gatelab.cli``), a run's identity
(``gatelab.identity``), the contract between runners and dashboards (``gatelab.contract``) and
where the YAML is found (``gatelab.shipped``). Importing ``gatelab`` imports nothing else.
"""
