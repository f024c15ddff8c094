"""``gatelab ui``: the MLflow UI for the tracking store, on 127.0.0.1, opening on the
experiment's training runs."""

from __future__ import annotations

import argparse

from gatelab.cli.options import Subparsers, add_experiment, add_port, add_tracking_uri


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("ui", help="the MLflow UI for the tracking store, on 127.0.0.1")
    add_port(p)
    add_experiment(p, "the experiment its link opens")
    add_tracking_uri(p)
    return p


def run(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from gatelab.cli.sweep_text import ui_link
    from gatelab.contract import resolve_tracking_uri, sqlite_path
    from gatelab.tracking_server import check_port, serve

    check_port(args.port)  # before MLflow reads the store for the link
    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    landing = ""
    if db is None or db.is_file():  # the training-runs view of the experiment (see ui_link)
        landing = ui_link(MlflowClient(uri), args.experiment, base="")
    return serve(args.tracking_uri, args.port, landing=landing)
