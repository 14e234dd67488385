"""The simulated meter in this process, on real sockets: quick to start, state at hand."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lem_dcbm.clock import Clock, SystemClock
from lem_dcbm.simulator.certs import CertificatePair, generate_certificate, meter_pem_form
from lem_dcbm.simulator.device import MeterConfig, SimulatedMeter
from lem_dcbm.simulator.ocmf_signer import OcmfSigner
from lem_dcbm.simulator.server import MeterServer, server_tls_context


@cache
def _identity() -> tuple[CertificatePair, OcmfSigner]:
    """One certificate and signing key for every in-process meter of a test run."""
    return generate_certificate("DCBM 12024072805"), OcmfSigner.generate()


@dataclass
class InProcessSimulator:
    """A ``MeterServer`` serving from a background thread."""

    server: MeterServer
    cert_path: Path
    thread: threading.Thread

    @property
    def device(self) -> SimulatedMeter:
        """The meter behind the server."""
        return self.server.device

    @property
    def host(self) -> str:
        """The address it listens on."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT`` for the scheme the meter serves now."""
        return f"{self.server.scheme}://{self.host}:{self.port}"

    @property
    def cert_pem(self) -> str:
        """The meter's TLS certificate (ordinary PEM)."""
        return self.cert_path.read_text()

    @property
    def public_key_path(self) -> Path:
        """The certificate's public key as a PEM file, for ``curl --pinnedpubkey``."""
        path = self.cert_path.with_name("meter-public-key.pem")
        if not path.exists():
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            path.write_bytes(
                cert.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return path

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_in_process(
    workdir: Path,
    *,
    tls: bool = False,
    host: str = "127.0.0.1",
    clock: Clock | None = None,
    **config: object,
) -> InProcessSimulator:
    """Serve a fresh meter on a free port (minimum duration and settings window 0).

    ``clock`` drives the meter (default: the system clock); tests share a manual one with
    the controller to reach hours-long limits at once.
    """
    pair, signer = _identity()
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path = workdir / "meter-cert.pem"
    cert_path.write_bytes(pair.cert_pem)
    config.setdefault("min_transaction_seconds", 0.0)
    config.setdefault("settings_window_seconds", 0.0)
    meter_config = MeterConfig(
        tls_on=tls,
        certificate_pem=meter_pem_form(pair.cert_pem),
        **config,  # type: ignore[arg-type]
    )
    clock = clock or SystemClock()
    device = SimulatedMeter(clock, signer, meter_config)
    server = MeterServer((host, 0), device, clock, server_tls_context(pair))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return InProcessSimulator(server, cert_path, thread)


@pytest.fixture
def meter_server(tmp_path: Path) -> Iterator[InProcessSimulator]:
    """A plain-HTTP in-process meter for one test."""
    sim = start_in_process(tmp_path / "meter")
    try:
        yield sim
    finally:
        sim.stop()
