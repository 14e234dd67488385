"""An MQTT broker process on a free port: mosquitto, or amqtt where there is no mosquitto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lem_dcbm.config import BrokerSettings
from lem_dcbm.harness.processes import log_tail, spawn, stop_processes
from lem_dcbm.harness.waiting import HarnessError, free_port, wait_listening, wait_until

#: Environment variable naming the mosquitto binary (scripts/setup exports it).
MOSQUITTO_ENV = "LEM_MOSQUITTO"
#: Where package managers put mosquitto when it is not on PATH (it is a daemon).
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
START_TIMEOUT_S = 15.0

BrokerKind = Literal["mosquitto", "amqtt"]


@dataclass(frozen=True)
class BrokerTls:
    """The broker's TLS files: its certificate and key, and the CA its clients trust."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    #: Ask every client for a certificate signed by ``ca_file`` (mosquitto's option).
    require_certificate: bool = False


def find_mosquitto() -> str | None:
    """Path of mosquitto: ``$LEM_MOSQUITTO``, else PATH, else the usual sbin folders."""
    explicit = os.environ.get(MOSQUITTO_ENV)
    if explicit:
        return explicit
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=os.pathsep.join(SBIN_DIRS))


def mosquitto_binary() -> str:
    """Path of mosquitto; ``HarnessError`` saying how to get it when there is none."""
    found = find_mosquitto()
    if not found:
        raise HarnessError(
            f"mosquitto not found on PATH or in {', '.join(SBIN_DIRS)}: install it "
            f"(./scripts/setup does) or name it in ${MOSQUITTO_ENV}"
        )
    return found


def amqtt_binary() -> str:
    """Path of amqtt's broker command, on PATH or next to this Python."""
    found = shutil.which("amqtt") or shutil.which("amqtt", path=str(Path(sys.executable).parent))
    if not found:
        raise HarnessError("amqtt not found: pip install amqtt (./scripts/demo does)")
    return found


@dataclass
class Broker:
    """A broker on ``host:port``; ``stop``/``start`` cut it away and bring it back there.

    ``port`` 0 picks a free port at the first start, kept for every restart. Its
    configuration and log live in ``workdir``.
    """

    workdir: Path
    port: int = 0
    host: str = "127.0.0.1"
    kind: BrokerKind = "mosquitto"
    #: mosquitto's ``set_tcp_nodelay``; its default (and EVerest's config) leaves Nagle on.
    no_delay: bool = False
    #: A unix socket mosquitto listens on as well (keep its path short: about 100 bytes).
    socket_path: Path | None = None
    #: Users and their passwords; when given, anonymous clients are refused.
    users: dict[str, str] | None = None
    #: TLS on the TCP listener.
    tls: BrokerTls | None = None
    process: subprocess.Popen[Any] | None = field(default=None, init=False)

    @property
    def settings(self) -> BrokerSettings:
        """The broker as the project's ``BrokerSettings``."""
        return BrokerSettings(
            host=self.host,
            port=self.port,
            tls_ca_file=str(self.tls.ca_file) if self.tls else None,
        )

    @property
    def description(self) -> str:
        """Which broker this is, for a reader."""
        if self.kind == "amqtt":
            return "amqtt (embedded pure-Python broker)"
        return "mosquitto"

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.workdir / f"{self.kind}-{self.port}.log"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Broker:
        """Start the broker and wait until it accepts connections."""
        if self.process is not None:
            raise HarnessError("the broker is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        argv = self._amqtt_argv() if self.kind == "amqtt" else self._mosquitto_argv()
        self.process = spawn(argv, self.log_path)
        try:
            wait_listening(self.host, self.port, self.process, self.description, timeout_s)
            if self.socket_path is not None:
                wait_until(self.socket_path.exists, timeout_s, what=str(self.socket_path))
        except HarnessError as err:
            self.stop()
            raise HarnessError(f"{err}; log:\n{log_tail(self.log_path)}") from None
        return self

    def stop(self) -> None:
        """Stop the broker (the port stays reserved for ``start``)."""
        process, self.process = self.process, None
        if process is not None:
            stop_processes([process], 5)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _mosquitto_argv(self) -> list[str]:
        lines = [f"listener {self.port} {self.host}"]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {str(self.tls.require_certificate).lower()}",
            ]
        if self.socket_path is not None:
            lines.append(f"listener 0 {self.socket_path}")
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to its own user, which can neither bind a
            # socket in a private folder nor read the password and key files made here.
            lines.append("user root")
        if self.users is not None:
            lines += [f"password_file {self._password_file()}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            "persistence false",
            # Many modules on one broker: no inflight or queue limit gets in the way.
            "max_inflight_messages 100",
            "max_queued_messages 10000",
        ]
        if self.no_delay:
            lines.append("set_tcp_nodelay true")
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [mosquitto_binary(), "-c", str(conf)]

    def _password_file(self) -> Path:
        """mosquitto's hashed password file for ``users``, hashed by ``mosquitto_passwd``."""
        path = self.workdir / f"mosquitto-{self.port}.passwd"
        # Plain "user:password" lines hashed in place: no password on a command line.
        path.write_text("".join(f"{user}:{word}\n" for user, word in (self.users or {}).items()))
        path.chmod(0o600)
        tool = shutil.which("mosquitto_passwd") or str(
            Path(mosquitto_binary()).parent.parent / "bin" / "mosquitto_passwd"
        )
        done = subprocess.run(  # noqa: S603 - a fixed tool on our own file
            [tool, "-U", str(path)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise HarnessError(f"mosquitto_passwd -U failed: {done.stderr.strip()}")
        return path

    def _amqtt_argv(self) -> list[str]:
        if self.users is not None or self.tls is not None:
            raise HarnessError("users and TLS need mosquitto, not amqtt")
        conf = self.workdir / f"amqtt-{self.port}.yaml"
        document = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "auth": {"allow-anonymous": True},
            "topic-check": {"enabled": False},
        }
        conf.write_text(yaml.safe_dump(document))
        return [amqtt_binary(), "-c", str(conf)]
