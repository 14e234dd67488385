"""Config messages that point at what to change: the key meant, the indentation, the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from lem_dcbm.cli import main
from lem_dcbm.config import config_from_mapping, config_with_change
from lem_dcbm.config_doc import markdown_table
from lem_dcbm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def check(tmp_path: Path, config_module: str, *extra: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text("active_modules:\n  powermeter_1:\n    module: LemDCBM400600\n" + config_module)
    code = main(["run", "--config", str(path), "--check", *extra])
    return code, str(path)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("ip_adress", "ip_address"),
        ("publish_interval", "publish_interval_ms"),
        ("resilience_transaction_request_retry", "resilience_transaction_request_retries"),
        ("it", "IT"),
    ],
)
def test_an_unknown_key_names_the_key_probably_meant(typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"ip_address": "10.0.0.1", typo: 1})
    assert str(caught.value) == (
        f"config key '{typo}': unknown key (not declared in manifest.yaml); did you mean '{meant}'?"
    )


def test_an_unknown_key_far_from_every_key_gets_no_guess() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"ip_address": "10.0.0.1", "colour": "red"})
    assert "did you mean" not in str(caught.value)


def test_a_runtime_change_of_an_unknown_key_names_the_key_meant() -> None:
    config = config_from_mapping({"ip_address": "10.0.0.1"})
    with pytest.raises(ConfigError, match="did you mean 'tariff_id'"):
        config_with_change(config, "tarif_id", "1")


def test_a_key_beside_config_module_is_named_with_the_indentation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # config_module's keys written at its own level: config_module is empty, and the
    # old message said 'ip_address': missing, with ip_address right there.
    code, _ = check(tmp_path, "    config_module:\n    ip_address: 10.0.0.1\n    port: 80\n")
    err = capsys.readouterr().err
    assert code == 2
    assert "'ip_address': is beside config_module in 'powermeter_1', not under it" in err
    assert "indent it one level deeper" in err
    assert "missing" not in err


def test_a_required_key_nested_one_level_too_deep_says_where_it_is() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"port": 80, "interface": {"ip_address": "10.0.0.1"}})
    message = str(caught.value)
    assert "'ip_address': missing at the level of the other keys" in message
    assert "nested under 'interface' (indented one level too deep?)" in message


def test_check_refuses_an_interface_that_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = check(
        tmp_path, "    config_module:\n      ip_address: 10.0.0.1\n      interface: nope0\n"
    )
    assert code == 2
    assert "config key 'interface': no network interface named 'nope0'" in capsys.readouterr().err
    code, _ = check(
        tmp_path, "    config_module:\n      ip_address: 10.0.0.1\n      interface: lo\n"
    )
    assert code == 0


def test_the_readme_table_shows_the_whole_meter_dst_default() -> None:
    (row,) = [line for line in markdown_table().splitlines() if line.startswith("| `meter_dst`")]
    assert '"month": "october", "hour": "T01:00Z" }}' in row
    assert "..." not in row


def test_a_clamp_warning_waits_for_logging_then_names_the_module(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from lem_dcbm.logsetup import HeldRecords, configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with HeldRecords("lem_dcbm.config") as held:
            config_from_mapping(
                {"ip_address": "10.0.0.1", "resilience_transaction_request_retry_delay": -5}
            )
        assert capsys.readouterr().err == ""  # nothing bare before the module id is known
        configure_logging("powermeter_7")
        held.replay()
        (line,) = capsys.readouterr().err.splitlines()
        assert " WARNING [powermeter_7] lem_dcbm.config: config key " in line
        assert "'resilience_transaction_request_retry_delay': -5 is below 0; using 0" in line
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
