"""The one ``lem-dcbm`` parser: every subcommand, its options, their help and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lem_dcbm import health
from lem_dcbm.cli import COMMANDS, build_parser, main, run_command
from lem_dcbm.cli_common import CommandParser, HelpFormatter
from lem_dcbm.simulator import cli as simulator_cli
from lem_dcbm.tools import cli as tools_cli


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand's parser by its full name, arguments loaded."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if isinstance(sub, CommandParser):
                    sub.load()
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in subcommand_parsers(sub).items()})
    return found


def test_every_command_is_a_subcommand_of_one_parser() -> None:
    names = set(subcommand_parsers(build_parser()))

    assert {command.name for command in COMMANDS} <= names
    assert {"run", "simulate", "watch", "call", "health"} <= names


def test_every_option_has_help_that_names_its_default() -> None:
    missing = []
    for name, parser in subcommand_parsers(build_parser()).items():
        formatter = HelpFormatter(parser.prog)
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action) or ""
            needs_default = action.nargs != 0 and not action.required
            if not action.help or (needs_default and "default" not in text):
                missing.append(f"{name} {action.option_strings[0]}")

    assert missing == []


@pytest.mark.parametrize(
    ("argv", "handler"),
    [
        (["run", "--config", "c.yaml"], run_command),
        (["simulate", "--port", "0"], simulator_cli.simulate_command),
        (["watch", "--count", "2"], tools_cli.watch_command),
        (["call", "stop_transaction", "--any"], tools_cli.call_command),
        (["health", "--max-age", "3"], health.health_command),
    ],
)
def test_each_subcommand_parses_to_its_handler(argv: list[str], handler: object) -> None:
    args = build_parser().parse_args(argv)

    assert args.handler is handler


def test_options_keep_their_names_and_defaults() -> None:
    call = build_parser().parse_args(["call", "start_transaction", "--id-data", "04AB"])
    simulate = build_parser().parse_args(["simulate"])

    assert (call.module_id, call.timeout, call.evse_id, call.id_data) == (
        "powermeter_1",
        10.0,
        "DE*LEM*E0001",
        "04AB",
    )
    assert call.broker_host is None
    assert (simulate.host, simulate.port, simulate.api) == ("127.0.0.1", 8080, "v2")


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["simulate", "--port", "eighty"], ["call", "start"], ["run"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert "usage: lem-dcbm" in capsys.readouterr().err


def test_subcommand_help_shows_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lem-dcbm simulate" in out
    assert "--min-transaction-seconds" in out
    assert "(default: 120.0)" in out


def test_standalone_simulator_parser_has_the_same_options() -> None:
    standalone = {a.dest for a in simulator_cli.build_parser()._actions}
    sub = subcommand_parsers(build_parser())["simulate"]

    assert standalone == {a.dest for a in sub._actions}


def test_health_runs_through_the_one_parser() -> None:
    assert main(["health", "--file", "/nonexistent/heartbeat"]) == 1


@pytest.mark.parametrize(
    ("text", "argv", "expected"),
    [
        (
            "active_modules:\n  evse:\n    module: EvseManager\n"
            "  powermeter_1:\n    module: LemDCBM400600Py\n"
            "    config_module: {ip_address: 10.0.0.2}\n",
            ["--module-id", "evse"],
            "option '--module-id': 'evse' in {path} is a module of kind 'EvseManager', "
            "not lem-dcbm; this module's ids there: powermeter_1",
        ),
        ("active_modules: {a: [}\n", [], "config file '{path}': not valid YAML at line 1"),
    ],
)
def test_run_with_a_misleading_config_exits_2_with_one_line_that_says_what_is_wrong(
    text: str,
    argv: list[str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "everest.yaml"
    path.write_text(text)

    assert main(["run", "--config", str(path), *argv]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("lem-dcbm: configuration error: " + expected.format(path=path))


def test_run_with_a_missing_config_file_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2

    assert capsys.readouterr().err == (
        f"lem-dcbm: configuration error: option '--config': cannot read "
        f"{tmp_path / 'nope.yaml'}: No such file or directory\n"
    )


def test_run_takes_log_level_and_format() -> None:
    args = build_parser().parse_args(
        ["run", "--config", "c.yaml", "--log-level", "debug", "--log-format", "JSON"]
    )

    assert (args.log_level, args.log_format) == ("DEBUG", "json")


def test_run_with_a_bad_log_variable_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEM_DCBM_LOG_LEVEL", "chatty")

    assert main(["run", "--config", "c.yaml"]) == 2

    assert capsys.readouterr().err == (
        "lem-dcbm: configuration error: environment variable 'LEM_DCBM_LOG_LEVEL': "
        "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got 'chatty'\n"
    )


def test_stop_without_an_id_is_refused_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1: nothing listens; the refusal must come before any connection attempt.
    argv = ["call", "stop_transaction", "--broker-host", "127.0.0.1", "--broker-port", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stop_transaction needs --transaction-id ID, or --any" in err


def test_tool_timeout_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["watch", "--timeout", "-1"])
    assert exit_info.value.code == 2
    assert "--timeout" in capsys.readouterr().err
