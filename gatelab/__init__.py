"""gatelab: rerun and extend the gated-attention study of Qiu et al. (2025) at small scale.

The command line lives in ``gatelab/cli.py``; the work lives in ``registry``, ``model``,
``runners`` and ``dashboards``.
"""
