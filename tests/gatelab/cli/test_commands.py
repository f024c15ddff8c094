"""The command line's shape: a module per command (``add_parser`` and ``run``), each registered
by ``main`` exactly once; the shared flags, the number format and the verdict table each written
once; an error as one line and an exit code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import gatelab.cli
from gatelab.cli import show
from gatelab.cli.format import number, verdict_table
from gatelab.cli.main import COMMANDS, DEBUG_ENV, ExitCode, build_parser, main

CLI = Path(gatelab.cli.__file__).parent
SHARED_FLAGS = ("--tracking-uri", "--experiment", "--work-dir", "--storage", "--no-progress",
                "--port", "--ablations")
"""Flags that several commands take, declared in ``gatelab/cli/options.py`` only."""


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_module_has_add_parser_and_run_and_is_registered_once() -> None:
    defined = {f"gatelab.cli.{path.stem}" for path in CLI.glob("*.py")
               if "\ndef add_parser(" in path.read_text()}
    assert len(set(COMMANDS)) == len(COMMANDS)
    assert defined == {m.__name__ for m in COMMANDS}, "a command module main does not register"
    names = {}
    for module in COMMANDS:
        assert callable(module.add_parser) and callable(module.run), module.__name__
        alone = argparse.ArgumentParser().add_subparsers()
        module.add_parser(alone)
        assert len(alone.choices) == 1, f"{module.__name__} adds one command"
        names[next(iter(alone.choices))] = module
    parsers = subcommands(build_parser())
    assert list(parsers) == list(names)  # each once, in COMMANDS' order
    for name, parser in parsers.items():
        assert parser.get_default("run") is names[name].run, name
        assert "--ablations" in parser._option_string_actions, name


def test_shared_flags_are_declared_in_options_only() -> None:
    for path in sorted(CLI.glob("*.py")):
        if path.name == "options.py":
            continue
        text = path.read_text()
        for flag in SHARED_FLAGS:
            assert f'add_argument("{flag}"' not in text, f"{path.name} declares {flag}"


def test_one_number_format_for_the_terminal() -> None:
    assert number(None) == "-" and number(3) == "3" and number("x") == "x"
    assert number(0.123456789) == "0.1235" and number(1234567.0) == "1.235e+06"
    assert number(0.0421, 2) == "0.042"
    for path in sorted(CLI.glob("*.py")):
        if path.name != "format.py":
            assert not re.search(r"\.4g\}", path.read_text()), f"{path.name} formats numbers"


def test_the_verdict_table() -> None:
    text = verdict_table([{"claim": "c1", "at": "tiny", "verdict": "holds", "statistic": None,
                           "other": 1}])
    assert text.splitlines() == ["claim  at    verdict  statistic",
                                 "-----  ----  -------  ---------",
                                 "c1     tiny  holds    -"]


def test_an_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert main(["show", "no-such-variant"]) == ExitCode.ERROR == 2
    err = capsys.readouterr().err
    assert err.startswith("gatelab show: ") and err.count("\n") == 1, err
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert main(["show", "no-such-variant"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_how_to_resume(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(show, "run", interrupted)
    assert main(["show", "baseline"]) == ExitCode.INTERRUPTED == 130
    assert "gatelab show: interrupted; run the same command again" in capsys.readouterr().err
