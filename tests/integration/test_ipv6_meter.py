"""A meter addressed by IPv6: the client and a whole transaction over ``[::1]``."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lem_dcbm.config import config_from_mapping
from lem_dcbm.meter.client import MeterClient
from lem_dcbm.ocmf import verify_ocmf
from tests.support.simulator_inprocess import start_in_process

pytestmark = pytest.mark.integration


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_a_transaction_with_a_meter_at_an_ipv6_address(tmp_path: Path) -> None:
    sim = start_in_process(tmp_path / "meter", host="::1")
    try:
        config = config_from_mapping({"ip_address": "::1", "port": sim.server.port})
        client = MeterClient.connect(config.ip_address, config.port, timeout_s=5.0)
        try:
            status = client.status()
            body = {
                "evseId": "E1",
                "transactionId": "v6",
                "clientId": "c,v6",
                "tariffId": 0,
                "cableId": 0,
                "userData": "",
            }
            assert client.start_transaction(body).running
            assert not client.stop_transaction("v6").still_running
            assert verify_ocmf(client.ocmf("v6"), status.public_key_ocmf)
        finally:
            client.close()
    finally:
        sim.stop()
