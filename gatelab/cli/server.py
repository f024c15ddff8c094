"""``gatelab server``: the MLflow tracking server a Ray cluster's runs record through.

One URL for every node: runs, metrics and tags go to a SQLite database in ``--store``, and
artifacts (configs, internals, reports) are proxied by the server into ``--store``/artifacts
(``mlflow server --serve-artifacts --artifacts-destination``), so no worker needs the artifact
store mounted and nothing lands in a job's temporary copy. It binds 127.0.0.1 unless ``--host``
says otherwise: on a cluster, ``--host 0.0.0.0`` (or the head's private address) makes it
reachable from the other nodes, and from anything else on that network (MLflow has no
authentication by default: keep it on a private network).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.cli.options import Subparsers, add_port


def server_flags(store: Path) -> tuple[str, ...]:
    """The ``mlflow server`` flags that proxy artifacts into ``store``/artifacts."""
    return ("--serve-artifacts", "--artifacts-destination", str(store / "artifacts"))


def store_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("server", help="an MLflow tracking server with proxied artifacts, for "
                       "sweeps on a Ray cluster")
    p.add_argument("--store", default="mlflow-server",
                   help="folder of its database and artifacts (default ./mlflow-server)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for other nodes)")
    add_port(p)
    return p


def run(args: argparse.Namespace) -> int:
    from gatelab.runners.run.tracking import RunTracker
    from gatelab.tracking_server import serve

    store = Path(args.store).expanduser().resolve()
    store.mkdir(parents=True, exist_ok=True)
    RunTracker.client_for(store_uri(store))  # checked and its tables made, under the lock
    print(f"gatelab server: runs in {store / 'mlflow.db'}, artifacts in {store / 'artifacts'}"
          f"; pass --tracking-uri http://HOST:{args.port} to gatelab sweep/report (HOST: "
          f"{args.host if args.host not in ('0.0.0.0', '::') else 'this machine'}'s address)",
          flush=True)
    return serve(store_uri(store), args.port, host=args.host, extra=server_flags(store),
                 new_store=True, what="MLflow tracking server")
