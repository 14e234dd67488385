"""``lem-dcbm meter``: every action against the simulator over real sockets, HTTP and TLS.

The CLI runs in the test process (its parser, handlers and output exactly as a user
runs them) against the in-process simulator, which serves HTTP or pinned HTTPS on a
real port and whose clock and bits the tests move directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.meter.client import MeterClient
from lem_dcbm.meter.tls import certificate_der, normalize_pem, sha256_fingerprint
from tests.support.certs import look_alike
from tests.support.cli_in_process import CliResult, run_cli
from tests.support.simulator_inprocess import InProcessSimulator, meter_server, start_in_process

__all__ = ["meter_server"]  # the fixture, imported to be used here


@dataclass
class Meter:
    """A simulated meter and the options that reach it."""

    sim: InProcessSimulator
    tls: bool

    @property
    def options(self) -> list[str]:
        """``--host``, ``--port`` and, with TLS, ``--cert``."""
        where = ["--host", self.sim.host, "--port", str(self.sim.port)]
        return [*where, "--cert", str(self.sim.cert_path)] if self.tls else where

    def client(self) -> MeterClient:
        """The module's client for this meter."""
        pem = self.sim.cert_pem if self.tls else ""
        return MeterClient.connect(self.sim.host, self.sim.port, tls_certificate_pem=pem)


@pytest.fixture(params=[False, True], ids=["http", "tls"])
def meter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Meter]:
    """The same meter once over plain HTTP, once with TLS on and its certificate pinned."""
    sim = start_in_process(tmp_path / "meter", tls=request.param)
    try:
        yield Meter(sim, request.param)
    finally:
        sim.stop()


def meter_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> CliResult:
    return run_cli(["meter", *argv], capsys)


def meter_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    result = meter_cli(capsys, *argv, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fingerprint(pem: str) -> str:
    return sha256_fingerprint(certificate_der(pem))


def start_transaction(meter: Meter, transaction_id: str, *, stop: bool) -> None:
    """Start a transaction at the meter (and stop it again if ``stop``)."""
    client = meter.client()
    try:
        client.start_transaction(
            {
                "evseId": "DE*LEM*E0001*1",
                "transactionId": transaction_id,
                "clientId": f"card-{transaction_id}",
                "tariffId": 2,
                "cableId": 1,
                "userData": "",
            }
        )
        if stop:
            client.stop_transaction(transaction_id)
    finally:
        client.close()


# -- status ---------------------------------------------------------------------------------


def test_status_decodes_bits_firmware_api_and_clock(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    report = meter_json(capsys, "status", *meter.options)

    scheme = "https" if meter.tls else "http"
    assert report["url"] == f"{scheme}://127.0.0.1:{meter.sim.port}"
    assert report["meter_id"] == meter.sim.device.config.meter_id
    assert report["firmware"] == "MU-2.3.0.1"
    assert report["api"] == "v2"
    assert report["time_sync_ok"] is True
    # The meter's clock reads whole seconds; the host's clock is the simulator's.
    assert abs(report["clock_skew_s"]) <= 2
    assert report["status"]["value"] == 17
    bits = {row["name"]: row for row in report["status"]["bits"]}
    assert bits["suLinkStatusIsOk"] == {
        "bit": 0,
        "name": "suLinkStatusIsOk",
        "value": True,
        "problem": False,
        "meaning": "",
    }
    assert [row["bit"] for row in report["errors"]["bits"]] == list(range(11))
    assert report["problems"] == []
    assert report["stored_transactions"] == 0
    assert report["logbook"]["entries"] >= 1
    assert report["logbook"]["full"] is False


def test_status_names_the_problem_bits_in_table_and_json(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    meter.sim.device.set_bits(status={"tamperingIsDetected": True}, errors={"logbookIsFull": True})

    report = meter_json(capsys, "status", *meter.options)
    # The meter sets its fatal-error bit while any error bit is set.
    assert report["problems"] == [
        "muFatalErrorOccured: the measuring unit reports a fatal error; the meter refuses "
        "transactions",
        "tamperingIsDetected: the meter detected tampering; its records cannot be used for billing",
        "logbookIsFull: the meter's logbook is full; the meter stops for good",
    ]
    assert report["logbook"]["full"] is True

    table = meter_cli(capsys, "status", *meter.options)
    assert table.returncode == 0
    assert "   3 tamperingIsDetected         yes  PROBLEM: the meter detected tampering" in (
        table.stdout
    )
    assert "problems: 3" in table.stdout


def test_clock_skew_after_the_meter_clock_moved_and_sync_time_fixes_it(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    meter.sim.device.set_clock_offset(-3600)

    skewed = meter_json(capsys, "status", *meter.options)
    assert -3602 <= skewed["clock_skew_s"] <= -3598
    table = meter_cli(capsys, "status", *meter.options).stdout
    assert "clock skew                -3" in table

    synced = meter_json(capsys, "sync-time", *meter.options)
    assert -3602 <= synced["clock_skew_before_s"] <= -3598
    assert abs(synced["clock_skew_after_s"]) <= 2
    assert synced["time_sync_ok"] is True
    writes = [write["body"] for write in meter.sim.device.state()["settings_writes"]]
    assert "utc" in writes[0]["time"]  # the module's writes: UTC, then timezone and DST
    assert writes[1:] == [{"time": {"tz": "+00:00"}}, {"time": {"dst": writes[2]["time"]["dst"]}}]


# -- live -----------------------------------------------------------------------------------


def test_live_prints_rows_in_the_meters_units(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    meter.sim.device.set_load(power_kw=50.0, voltage_v=400.0)

    rows = meter_cli(capsys, "live", *meter.options, "--count", "2", "--interval", "0.05", "--json")
    assert rows.returncode == 0, rows.stderr
    values = [json.loads(line) for line in rows.stdout.splitlines()]
    assert len(values) == 2
    assert values[0]["power_kw"] == 50.0
    assert values[0]["voltage_v"] == 400.0
    assert values[1]["energy_import_kwh"] >= values[0]["energy_import_kwh"]

    table = meter_cli(capsys, "live", *meter.options, "--once").stdout.splitlines()
    assert len(table) == 2
    assert table[0].split() == [
        "meter", "time", "voltage", "V", "current", "A", "power", "kW",
        "import", "kWh", "export", "kWh", "temp", "H/L", "C",
    ]  # fmt: skip
    assert table[1].split()[1:4] == ["400.0", "125.0", "50.000"]


# -- certificate ----------------------------------------------------------------------------


def test_cert_repairs_the_pem_and_describes_it(
    meter: Meter, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "meter.pem"
    report = meter_json(capsys, "cert", *meter.options, "--out", str(out))

    expected = normalize_pem(meter.sim.cert_pem)
    assert out.read_text() == expected == report["pem"]
    assert report["sha256"] == fingerprint(expected)
    assert (report["key_type"], report["key_bits"]) == ("RSA", 1024)
    assert report["valid_now"] is True
    assert report["self_signed"] is True
    assert report["pinned_matches"] is (True if meter.tls else None)

    table = meter_cli(capsys, "cert", *meter.options).stdout
    assert f"SHA-256 fingerprint       {report['sha256']}" in table
    assert "key                       RSA 1024 bit" in table


def test_cert_from_the_handshake_of_a_tls_meter_without_a_known_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = start_in_process(tmp_path / "meter", tls=True)
    try:
        where = ["--host", sim.host, "--port", str(sim.port)]
        out = tmp_path / "presented.pem"

        report = meter_json(capsys, "cert", *where, "--from-handshake", "--out", str(out))

        assert report["from_handshake"] is True
        assert report["sha256"] == fingerprint(sim.cert_pem)
        assert out.read_text() == normalize_pem(sim.cert_pem)
        # The certificate read is good for pinning: the meter answers over it.
        assert meter_json(capsys, "status", *where, "--cert", str(out))["meter_id"]
    finally:
        sim.stop()


def test_cert_of_a_tls_meter_without_a_certificate_points_at_from_handshake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The old hint named the module's config key, which means nothing on this command line.
    sim = start_in_process(tmp_path / "meter", tls=True)
    try:
        where = ["--host", sim.host, "--port", str(sim.port)]
        result = meter_cli(capsys, "cert", *where)
        assert result.returncode == 1
        assert "the meter seems to speak HTTPS on this port (its TLS is on)" in result.stderr
        assert "run with --from-handshake to read it, or --cert FILE" in result.stderr
        assert "meter_tls_certificate" not in result.stderr
        status = meter_cli(capsys, "status", *where)
        assert "--cert FILE; 'lem-dcbm meter cert --from-handshake' reads it" in status.stderr
        assert "meter_tls_certificate" not in status.stderr
    finally:
        sim.stop()


def test_cert_from_the_handshake_of_a_plain_meter_says_its_tls_is_off(
    meter_server: InProcessSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--host", meter_server.host, "--port", str(meter_server.port)]
    result = meter_cli(capsys, "cert", *where, "--from-handshake")
    assert result.returncode == 1
    assert result.stderr == (
        f"lem-dcbm meter: TLS handshake with https://127.0.0.1:{meter_server.port}: no "
        "handshake: the meter does not speak HTTPS on this port (its TLS is off: run without "
        "--from-handshake)\n"
    )


# -- TLS switch -----------------------------------------------------------------------------


def test_tls_on_then_off_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = start_in_process(tmp_path / "meter")
    try:
        plain = Meter(sim, tls=False)
        pinned = Meter(sim, tls=True)

        switched_on = meter_json(capsys, "tls", "on", *plain.options)
        assert switched_on["url"] == f"https://127.0.0.1:{sim.port}"
        assert switched_on["verified"] is True
        assert switched_on["already"] is False
        assert switched_on["sha256"] == fingerprint(sim.cert_pem)
        assert sim.device.tls_active

        # Now plain HTTP is refused, with the hint; pinned HTTPS answers.
        refused = meter_cli(capsys, "status", *plain.options)
        assert refused.returncode == 1
        assert "the meter seems to speak HTTPS on this port" in refused.stderr
        assert refused.stderr.count("\n") == 1  # one line: no retry log repeating it
        assert meter_json(capsys, "status", *pinned.options)["url"].startswith("https://")

        switched_off = meter_json(capsys, "tls", "off", *pinned.options)
        assert switched_off["url"] == f"http://127.0.0.1:{sim.port}"
        assert switched_off["verified"] is True
        assert not sim.device.tls_active

        again = meter_json(capsys, "tls", "off", *pinned.options)
        assert again["already"] is True
    finally:
        sim.stop()


def test_tls_on_refuses_a_certificate_that_is_not_the_meters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = start_in_process(tmp_path / "meter")
    try:
        impostor = tmp_path / "impostor.pem"
        impostor.write_text(look_alike(sim.cert_pem).cert_pem)
        where = ["--host", sim.host, "--port", str(sim.port)]

        result = meter_cli(capsys, "tls", "on", *where, "--cert", str(impostor))

        assert result.returncode == 2
        assert result.stderr.startswith(f"lem-dcbm meter: --cert: {impostor} is not the meter's")
        assert fingerprint(sim.cert_pem) in result.stderr
        assert not sim.device.tls_active
        off = meter_cli(capsys, "tls", "off", *where)
        assert (off.returncode, off.stderr.split(":")[1].strip()) == (2, "--cert")
    finally:
        sim.stop()


# -- stored transactions --------------------------------------------------------------------


def test_transactions_and_ocmf_show_verified_records(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    start_transaction(meter, first, stop=True)
    start_transaction(meter, second, stop=True)

    rows = meter_json(capsys, "transactions", "5", *meter.options)
    assert [row["identification"] for row in rows] == [f"card-{second}", f"card-{first}"]
    assert [row["index"] for row in rows] == [-1, -2]
    assert all(row["signature_ok"] for row in rows)
    assert rows[0]["pagination"] == rows[1]["pagination"] + 1
    assert len(meter_json(capsys, "transactions", "1", *meter.options)) == 1
    table = meter_cli(capsys, "transactions", *meter.options).stdout
    assert table.count(" ok") == 2

    record = meter_json(capsys, "ocmf", first, *meter.options)
    assert record["signature_ok"] is True
    assert record["identification"] == f"card-{first}"
    assert record["record"].startswith("OCMF|")
    text = meter_cli(capsys, "ocmf", first, *meter.options).stdout
    assert "signature                 verifies" in text
    assert text.rstrip().endswith(record["record"])


def test_unknown_transaction_is_one_line_naming_the_url(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    result = meter_cli(capsys, "ocmf", "no-such-id", *meter.options)
    assert result.returncode == 1
    scheme = "https" if meter.tls else "http"
    url = f"{scheme}://127.0.0.1:{meter.sim.port}/v1/ocmf?transactionId=no-such-id"
    assert result.stderr == f"lem-dcbm meter: GET {url}: " + result.stderr.split(": ", 2)[2]
    assert "404" in result.stderr
    assert result.stderr.count("\n") == 1


def test_settings_writes_during_a_transaction_are_refused_in_one_line(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    start_transaction(meter, "running", stop=False)
    meter.sim.device.set_clock_offset(-60)

    sync = meter_cli(capsys, "sync-time", *meter.options)
    assert sync.returncode == 1
    assert sync.stderr == (
        "lem-dcbm meter: the meter refused the UTC time (result 0; a transaction may be running)\n"
    )
    switch = meter_cli(capsys, "tls", "off" if meter.tls else "on", *meter.options)
    assert switch.returncode == 1
    assert "the meter refused to switch TLS" in switch.stderr
    assert meter.sim.device.tls_active is meter.tls


# -- stop-foreign ---------------------------------------------------------------------------


def test_stop_foreign_stops_only_the_named_running_transaction(
    meter: Meter, capsys: pytest.CaptureFixture[str]
) -> None:
    transaction_id = f"foreign-{uuid.uuid4().hex[:8]}"
    start_transaction(meter, transaction_id, stop=False)
    other = meter_cli(capsys, "stop-foreign", *meter.options, "--transaction-id", "not-it")
    assert other.returncode == 1
    assert f"does not run transaction not-it (it runs {transaction_id}); nothing stopped" in (
        other.stderr
    )
    assert meter.sim.device.state()["running_transaction"] == transaction_id

    stopped = meter_cli(capsys, "stop-foreign", *meter.options, "--transaction-id", transaction_id)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopping transaction {transaction_id} (evseId 'DE*LEM*E0001*1'" in stopped.stderr
    assert meter.sim.device.state()["running_transaction"] is None
    record = meter.sim.device.state()["transactions"][-1]["ocmf"]
    assert record in stopped.stdout
    assert "hand it to the backend that bills EVSE 'DE*LEM*E0001*1'" in stopped.stdout
    again = meter_cli(capsys, "stop-foreign", *meter.options, "--transaction-id", transaction_id)
    assert again.returncode == 1
    assert "it runs none" in again.stderr
