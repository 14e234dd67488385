"""Recorded exchanges replayed against the simulator, by two clients.

``tests/fixtures/exchanges/*.json`` hold request/answer facts taken from EVerest's C++
driver tests, its tests against a real meter, its API mock and a published real record
(the README there describes the format). Each scenario runs on a fresh meter, once with
Python's ``http.client`` (``Content-Length`` bodies) and once with curl (chunked bodies
with ``Expect: 100-continue``, as libcurl sends them).
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lem_dcbm.harness import pinned_context
from tests.support.curl import NO_ANSWER, needs_curl, run_curl
from tests.support.simulator_inprocess import InProcessSimulator, meter_server

pytestmark = pytest.mark.integration

__all__ = ["meter_server"]

EXCHANGES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
_MISSING = object()


def _scenarios() -> Iterator[Any]:
    for path in sorted(EXCHANGES.glob("*.json")):
        for index, scenario in enumerate(json.loads(path.read_text())["scenarios"]):
            yield pytest.param(scenario, id=f"{path.stem}-{index}")


class PythonClient:
    """``http.client`` on a fresh connection per request; bodies with ``Content-Length``."""

    def __init__(self, sim: InProcessSimulator) -> None:
        self.sim = sim

    def send(self, method: str, path: str, body: str | None, scheme: str) -> tuple[int, str]:
        """Status and body text; ``NO_ANSWER`` when the connection gives none."""
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = pinned_context(self.sim.cert_path)
            conn = http.client.HTTPSConnection(
                self.sim.host, self.sim.port, timeout=5, context=context
            )
        else:
            conn = http.client.HTTPConnection(self.sim.host, self.sim.port, timeout=5)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, path, body=body.encode() if body else None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except (OSError, http.client.HTTPException):
            return NO_ANSWER, ""
        finally:
            conn.close()


class CurlClient:
    """curl; a body goes in through stdin (``-T -``), so it is sent chunked."""

    def __init__(self, sim: InProcessSimulator) -> None:
        self.sim = sim

    def send(self, method: str, path: str, body: str | None, scheme: str) -> tuple[int, str]:
        """Status and body text; ``NO_ANSWER`` when curl got no HTTP answer."""
        https = scheme == "https"
        pin = self.sim.public_key_path if https else None
        result = run_curl(self.sim.host, self.sim.port, method, path, body, https=https, pin=pin)
        return result.status, result.body


def lookup(data: Any, dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; ``_MISSING`` when any part is absent."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def check_ocmf(record: str, expect: dict[str, Any], where: str) -> None:
    """The record's payload and signature have the expected keys, order and values."""
    payload_text = record[len("OCMF|") : record.rindex("|")]
    payload = json.loads(payload_text)
    signature = json.loads(record[record.rindex("|") + 1 :])
    assert list(payload) == expect["payload_keys"], where
    assert [list(reading) for reading in payload["RD"]] == expect["reading_keys"], where
    for key, value in expect["values"].items():
        assert payload[key] == value, f"{where}: {key}"
    assert list(signature) == expect["signature_keys"], where
    assert signature["SA"] == expect["algorithm"], where


def check(status: int, text: str, expect: dict[str, Any], where: str) -> None:
    """Hold one answer to the expectations of its step."""
    wanted = expect["status"]
    if wanted == "no_answer":
        assert status == NO_ANSWER, f"{where}: expected no answer, got {status} {text[:200]}"
        return
    if wanted == "any":
        assert status != NO_ANSWER, f"{where}: expected an answer"
        return
    assert status == wanted, f"{where}: status {status}, body {text[:300]}"
    if "text" in expect:
        assert re.fullmatch(expect["text"], text, re.DOTALL), f"{where}: {text[:200]}"
    if "ocmf" in expect:
        check_ocmf(text, expect["ocmf"], where)
    if not {"fields", "values", "patterns"} & set(expect):
        return
    data = json.loads(text)
    for field in expect.get("fields", []):
        assert lookup(data, field) is not _MISSING, f"{where}: {field} is missing"
    for field, value in expect.get("values", {}).items():
        assert lookup(data, field) == value, f"{where}: {field} = {lookup(data, field)!r}"
    for field, pattern in expect.get("patterns", {}).items():
        found = lookup(data, field)
        assert isinstance(found, str), f"{where}: {field} = {found!r}"
        assert re.fullmatch(pattern, found, re.DOTALL), f"{where}: {field} = {found!r}"


def replay(client: PythonClient | CurlClient, scenario: dict[str, Any]) -> None:
    """Send each step's request and check its answer."""
    for number, step in enumerate(scenario["steps"], 1):
        request = step["request"]
        where = f"{scenario['name']}, step {number}: {request['method']} {request['path']}"
        status, text = client.send(
            request["method"], request["path"], request.get("body"), request.get("scheme", "http")
        )
        check(status, text, step["expect"], where)


@pytest.mark.parametrize("scenario", list(_scenarios()))
def test_replay_with_python(meter_server: InProcessSimulator, scenario: dict[str, Any]) -> None:
    replay(PythonClient(meter_server), scenario)


@needs_curl
@pytest.mark.parametrize("scenario", list(_scenarios()))
def test_replay_with_curl(meter_server: InProcessSimulator, scenario: dict[str, Any]) -> None:
    replay(CurlClient(meter_server), scenario)


def test_every_exchange_file_names_its_source_and_each_scenario_its_basis() -> None:
    files = sorted(EXCHANGES.glob("*.json"))
    assert len(files) >= 4
    for path in files:
        data = json.loads(path.read_text())
        for key in ("repository", "commit", "files"):
            assert data["source"][key], f"{path.name}: source.{key}"
        assert data["note"], path.name
        for scenario in data["scenarios"]:
            for key in ("origin", "real_meter", "steps"):
                assert scenario[key], f"{path.name}: {scenario['name']}: {key}"


def test_the_checker_rejects_a_wrong_answer() -> None:
    """The replay can fail: a missing field, a wrong value or status each trip it."""
    expect = {"status": 200, "fields": ["a.b"], "values": {"c": 1}}
    check(200, '{"a": {"b": 0}, "c": 1}', expect, "ok")
    for status, text in ((200, '{"a": {}, "c": 1}'), (200, '{"a": {"b": 0}, "c": 2}'), (201, "")):
        with pytest.raises(AssertionError):
            check(status, text, expect, "bad")
    with pytest.raises(AssertionError):
        check(200, "", {"status": "no_answer"}, "answered")
