"""A config written for the C++ LemDCBM400600 module, every key at that module's extremes,
passes ``lem-dcbm run --check``: a drop-in C++ config never stops the charger with exit 2.

The extremes: a key's minimum and maximum where the C++ manifest has them; for the
integers it leaves unbounded, the ends of the C++ ``int`` the module reads them into,
except where lem-dcbm holds a key to what can work at all (ports 1..65535, and the
meter's own cable 0..7 and tariff 0..4, which it refuses at every transaction start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lem_dcbm.cli import main
from lem_dcbm.config import CLAMPS, load_everest_config_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
#: Unbounded in the C++ manifest, held here to what works (and refused outside: exit 2).
WORKING_RANGE = {
    "port": (1, 65535),
    "ntp_server_1_port": (1, 65535),
    "ntp_server_2_port": (1, 65535),
    "cable_id": (0, 7),
    "tariff_id": (0, 4),
}
#: Strings at their ends: the shortest and the longest that mean something.
STRINGS = {
    "ip_address": ("10.0.0.1", "dcbm-" + "a" * 58 + ".charger.example.com"),
    "interface": ("", "lo"),
    "meter_tls_certificate": ("", ""),
    "ntp_server_1_ip_addr": ("", "255.255.255.254"),
    "ntp_server_2_ip_addr": ("", "ntp.example.com"),
    "meter_timezone": ("-11:00", "+14:00"),
    "meter_dst": ("{}", '{"activated": true, "offset": 120, "start": {}, "end": {}}'),
    "UV": ("", "v" * 200),
    "UD": ("", "u" * 200),
}


def cpp_config() -> dict[str, Any]:
    return dict(yaml.safe_load((FIXTURES / "LemDCBM400600-manifest.yaml").read_text())["config"])


def extreme(key: str, spec: dict[str, Any], end: int) -> Any:
    """``key`` at its lower (end 0) or upper (end 1) extreme."""
    if key in STRINGS:
        return STRINGS[key][end]
    if key in WORKING_RANGE:
        return WORKING_RANGE[key][end]
    bound = spec.get(("minimum", "maximum")[end])
    if spec["type"] == "integer":
        return bound if bound is not None else (INT_MIN, INT_MAX)[end]
    assert spec["type"] == "number", key
    return float(bound) if bound is not None else (-1e9, 1e9)[end]


@pytest.mark.parametrize("end", [0, 1], ids=["lowest", "highest"])
def test_every_cpp_key_at_its_extreme_passes_check(
    end: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEM_DCBM_STATE_DIR", str(tmp_path / "state"))
    values = {key: extreme(key, spec, end) for key, spec in cpp_config().items()}
    path = tmp_path / "config.yaml"
    entry = {"module": "LemDCBM400600", "config_module": values}
    path.write_text(yaml.safe_dump({"active_modules": {"powermeter_1": entry}}))

    assert main(["run", "--config", str(path), "--check"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("lem-dcbm: config of powermeter_1 is valid")
    # One warning line per clamped key, naming it, the value used and (above) the reason.
    clamped = {
        key: clamp.lowest if end == 0 else clamp.highest
        for key, clamp in CLAMPS.items()
        if end == 0 or clamp.highest is not None
    }
    warnings = err.splitlines()
    assert len(warnings) == len(clamped), err
    for key, used in clamped.items():
        (line,) = [w for w in warnings if f"'{key}'" in w]
        assert line.startswith("lem-dcbm: warning: config key"), line
        assert f"using {used}" in line, line
        if end == 1:
            assert CLAMPS[key].reason in line, line

    _, config = load_everest_config_file(path, None)
    for key, clamp in CLAMPS.items():
        wanted = clamp.lowest if end == 0 else (clamp.highest or values[key])
        assert getattr(config, key) == wanted, key
