"""The ``gatelab`` command: one subcommand per user task, each a module of ``gatelab.cli`` with
``add_parser(subparsers)`` and ``run(args) -> exit code`` (a thin call into a package; every
table and message it prints is formatted in ``gatelab.cli``). Here: the parser built from those
modules, the logging set-up, the dispatch, and the mapping of an error to one line and an exit
code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable
from enum import IntEnum
from types import ModuleType

from gatelab.cli import (
    compare,
    doctor,
    list_variants,
    new,
    report,
    server,
    show,
    sweep,
    train,
    ui,
    validate,
)
from gatelab.cli.options import add_ablations, use_ablations

COMMANDS: tuple[ModuleType, ...] = (list_variants, show, validate, train, sweep, report,
                                    compare, server, new, ui, doctor)
"""Every command's module, in the order ``gatelab --help`` lists them."""

ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, FileNotFoundError,
                                                    RuntimeError)
"""Errors a command raises for the user to fix: printed as one line naming the command."""

DEBUG_ENV = "GATELAB_DEBUG"
"""Set (to anything) to print the traceback above an error's one-line message."""


class ExitCode(IntEnum):
    """What ``main`` returns beside a command's own 0 (done) or 1 (some run failed)."""

    ERROR = 2
    """One of ``ONE_LINE_ERRORS`` (argparse exits with 2 on a usage error too)."""
    INTERRUPTED = 130
    """Ctrl-C: 128 + SIGINT, as a shell reports it."""


def build_parser() -> argparse.ArgumentParser:
    """``gatelab``'s parser: a subcommand per module of ``COMMANDS``, which it runs, and
    ``--ablations`` on each."""
    parser = argparse.ArgumentParser(
        prog="gatelab", description="Gated-attention ablations at small scale."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = command.add_parser(sub)
        p.set_defaults(run=command.run)
        add_ablations(p)
    return parser


def set_up_logging(command: str) -> None:
    """Quiet MLflow (here and in the workers started from here) and print what gatelab's
    packages report on the way as one line each, naming ``command``."""
    # MLflow prints a "View run ... at URL" line for every run ended through a server; gatelab
    # prints its own line per run. Workers started here inherit it (cluster workers: train_task).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow announces every SQLite schema set-up at INFO; users need only its warnings. Its
    # loggers read this at import (which comes later), as do the Ray workers started here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl." ...
    # What gatelab's packages report on the way (a checkpoint moved aside, ...): one line each.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"gatelab {command}: %(message)s"))
    logging.getLogger("gatelab").addHandler(handler)
    logging.getLogger("gatelab").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_ablations(args.ablations)
    set_up_logging(args.command)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ONE_LINE_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"gatelab {args.command}: {message}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print(f"gatelab {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return ExitCode.INTERRUPTED
