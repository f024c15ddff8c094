"""The ``gatelab`` command: one subcommand per user task, each a module of ``gatelab.cli`` with
``add_parser(subparsers)`` and ``run(args) -> exit code`` (a thin call into a package; every
table and message it prints is formatted in ``gatelab.cli``). Here: the parser built from those
modules, the logging set-up, the dispatch (after the shared flags are checked, ``checks.py``),
and the mapping of an error to one line and an exit code.

**One line for every error.** An error a user can fix (``ONE_LINE_ERRORS``: a bad value, a
missing or unusable file, store or server) is printed as ``gatelab COMMAND: message``, the
message naming the file, URI, flag or field and the fix, and exits with ``ExitCode.ERROR``. A
spec or sweep with several problems gives one line per problem (``SpecError``). Anything else
is a bug: one line naming the exception, ``ExitCode.INTERNAL``. ``GATELAB_DEBUG=1`` prints the
traceback above either."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
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
from gatelab.cli.checks import check_flags
from gatelab.cli.options import add_ablations, use_ablations

COMMANDS: tuple[ModuleType, ...] = (list_variants, show, validate, train, sweep, report,
                                    compare, server, new, ui, doctor)
"""Every command's module, in the order ``gatelab --help`` lists them."""

ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, RuntimeError,
                                                    OSError, sqlite3.Error)
"""Errors a command raises for the user to fix: printed as one line naming the command
(``OSError``: a path that is missing, a file where a folder was wanted, no permission...)."""

DEBUG_ENV = "GATELAB_DEBUG"
"""Set (to anything) to print the traceback above an error's one-line message."""
LOG_HANDLER = "gatelab-cli"
"""The name of the handler ``set_up_logging`` puts on the ``gatelab`` logger."""


class ExitCode(IntEnum):
    """What ``main`` returns beside a command's own 0 (done) or 1 (some run failed)."""

    ERROR = 2
    """One of ``ONE_LINE_ERRORS`` (argparse exits with 2 on a usage error too)."""
    INTERRUPTED = 130
    """Ctrl-C: 128 + SIGINT, as a shell reports it."""
    INTERNAL = 70
    """Any other exception: a bug in gatelab or below it (``EX_SOFTWARE`` of sysexits.h)."""


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
    # What gatelab's packages report on the way (a checkpoint moved aside, ...): one line each,
    # through one handler however often ``main`` runs in a process (tests call it in turn).
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(LOG_HANDLER)
    handler.setFormatter(logging.Formatter(f"gatelab {command}: %(message)s"))
    logger = logging.getLogger("gatelab")
    for old in [h for h in logger.handlers if h.get_name() == LOG_HANDLER]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def one_line(err: BaseException) -> str:
    """The message of ``err`` as ``main`` prints it: a ``SpecError`` one line per problem,
    anything else on one line (its lines joined); a ``KeyError`` without its quotes."""
    from gatelab.registry.errors import SpecError

    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, SpecError):
        return message
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_up_logging(args.command)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        use_ablations(args.ablations)
        check_flags(args)
        return run(args)
    except ONE_LINE_ERRORS as err:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"gatelab {args.command}: {one_line(err)}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print(f"gatelab {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as err:  # a bug: still one line, and the way to its traceback
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"gatelab {args.command}: unexpected {type(err).__name__}: {one_line(err)} "
              f"(set {DEBUG_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
        return ExitCode.INTERNAL
