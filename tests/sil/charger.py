"""The simulated AC charger of ``build-sil.sh``, with a billing meter of our choice and a CSMS.

EVerest's own C++ modules make the charger: ``EvseManager`` (AC), ``YetiSimulator`` (the
board), ``EvManager`` (the car, driven over its external MQTT commands), ``Auth`` with
``DummyTokenProvider``/``DummyTokenValidator``, ``EnergyManager``/``EnergyNode`` (without
them the current limit stays 0 A), and ``OCPP201`` (or the 1.6 ``OCPP``) with
``EvseSecurity``, ``System`` and ``PersistentStore``. EvseManager's
``powermeter_car_side`` is one of

- ``lem-dcbm``: this module, installed as docs/install.md says (a folder with its own
  ``.venv``) and started by the manager;
- ``cpp``: EVerest's C++ ``LemDCBM400600`` (``EXTRA_MODULES=LemDCBM400600``);
- ``api``: EVerest's ``powermeter_API`` bridge (``EXTRA_MODULES=powermeter_API``), with
  lem-dcbm in ``--everest-api`` mode as a process of its own on the same broker;

and all three talk to the project's meter simulator. The manager runs below
``tests/real_everest/reaper.py``; each start appends to ``manager.log`` in the run's
folder, which pytest keeps for failed tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from lem_dcbm.harness import (
    Broker,
    HarnessError,
    ModuleProcess,
    Simulator,
    simulator_config,
    start_module,
    wait_until,
)
from tests.real_everest.everest_run import HERE as REAL_EVEREST_DIR
from tests.real_everest.everest_run import LOGGING_INI, MODULE_NAME, end_process_group
from tests.sil.csms import Csms

#: The variable naming the install prefix of ``build-sil.sh`` (``<prefix>/bin/manager``).
SIL_ENV = "LEM_DCBM_EVEREST_SIL_PREFIX"
#: The board simulator's module id; its powermeter var is what the car draws.
YETI_ID = "yeti_driver"
LEM_DCBM = "lem-dcbm"
CPP = "cpp"
API = "api"
#: The module each meter choice needs in the build (lem-dcbm is installed by the tier).
NEEDS = {CPP: "LemDCBM400600", API: "powermeter_API"}
OCPP201 = "2.0.1"
OCPP16 = "1.6"
METER_ID = "powermeter"
EVSE_ID = "DE*LEM*E0001*1"
STATION_ID = "cp001"
#: The car: plugged in, charging 16 A on three phases until the test unplugs it.
PLUG_AND_CHARGE = "sleep 1;iec_wait_pwr_ready;sleep 1;draw_power_regulated 16,3;sleep 86400"
UP_LINE = "All modules are initialized"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class SilBuild:
    """The install prefix of ``build-sil.sh``."""

    prefix: Path

    @property
    def manager(self) -> Path:
        """``<prefix>/bin/manager``."""
        return self.prefix / "bin" / "manager"

    def has_module(self, name: str) -> bool:
        """True when the build installed EVerest module ``name``."""
        return (self.prefix / "libexec" / "everest" / "modules" / name).is_dir()

    def share(self, module: str) -> Path:
        """``<prefix>/share/everest/modules/<module>``."""
        return self.prefix / "share" / "everest" / "modules" / module

    def origin(self) -> str:
        """The EVerest commit the build was made from (``build-sil.sh``'s source anchor)."""
        anchor = self.prefix.parent / "src" / "EVerest" / ".anchor-src"
        if anchor.exists():
            fields = anchor.read_text().split()
            if len(fields) >= 2:
                return f"EVerest {fields[1][:12]}"
        return "unknown"


def find_sil_build() -> SilBuild | str:
    """The build named by ``LEM_DCBM_EVEREST_SIL_PREFIX``, or why there is none."""
    value = os.environ.get(SIL_ENV)
    if not value:
        return f"{SIL_ENV} is not set (no build of build-sil.sh; see docs/everest-sil.md)"
    build = SilBuild(Path(value).expanduser())
    if not os.access(build.manager, os.X_OK):
        return f"{SIL_ENV}={value} has no bin/manager"
    for name in ("EvseManager", "YetiSimulator", "EvManager"):
        if not build.has_module(name):
            return f"{SIL_ENV}={value} lacks the module {name}"
    return build


def _conn(module_id: str, implementation: str) -> list[dict[str, str]]:
    return [{"module_id": module_id, "implementation_id": implementation}]


@dataclass
class Charger:
    """One simulated charger: its config, its manager (restartable) and its car."""

    build: SilBuild
    workdir: Path
    #: The parent of the installed lem-dcbm module folder.
    modules_dir: Path
    broker: Broker
    simulator: Simulator
    csms: Csms
    meter: str = LEM_DCBM
    ocpp: str = OCPP201
    #: ``SampledDataCtrlr.SignReadings`` in OCPP 2.0.1's device model.
    sign_readings: bool = True
    #: ``AlignedDataCtrlr.Interval`` in OCPP 2.0.1's device model (None: as shipped, 900 s).
    aligned_interval_s: int | None = None
    #: More ``config_module`` for the meter module (lem-dcbm or the C++ one).
    meter_config: dict[str, Any] = field(default_factory=dict)
    #: The manager's ``mqtt_external_prefix`` (also given to lem-dcbm in API mode).
    external_prefix: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: lem-dcbm in API mode, outside the manager.
    api_module: ModuleProcess | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    # --- paths ----------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """The EVerest config."""
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        """The manager's output (every start appends)."""
        return self.workdir / "manager.log"

    @property
    def journal_dir(self) -> Path:
        """lem-dcbm's journal; kept across restarts of the charger."""
        return self.workdir / "journal"

    # --- config ---------------------------------------------------------------------

    def meter_module(self) -> dict[str, Any]:
        """The ``active_modules`` entry of EvseManager's billing meter."""
        if self.meter == LEM_DCBM:
            values = simulator_config(self.simulator, journal_dir=str(self.journal_dir))
            return {"module": MODULE_NAME, "config_module": {**values, **self.meter_config}}
        if self.meter == CPP:
            values = {
                "ip_address": self.simulator.host,
                "port": self.simulator.port,
                "resilience_initial_connection_retries": 3,
                "resilience_initial_connection_retry_delay": 1000,
            }
            return {"module": "LemDCBM400600", "config_module": {**values, **self.meter_config}}
        return {"module": "powermeter_API", "config_module": {"cfg_request_reply_to_s": 120}}

    def document(self) -> dict[str, Any]:
        """The whole EVerest config of this charger."""
        store = str(self.workdir / "persistent_store.db")
        modules: dict[str, Any] = {
            METER_ID: self.meter_module(),
            "evse_manager": {
                "module": "EvseManager",
                "mapping": {"module": {"evse": 1}},
                "config_module": {
                    "connector_id": 1,
                    "evse_id": EVSE_ID,
                    "connector_type": "cType2",
                    "charge_mode": "AC",
                    "ac_hlc_enabled": False,
                    "session_logging": False,
                },
                "connections": {
                    "bsp": _conn(YETI_ID, "board_support"),
                    "powermeter_car_side": _conn(METER_ID, "main"),
                    "store": _conn("persistent_store", "main"),
                },
            },
            YETI_ID: {
                "module": "YetiSimulator",
                "mapping": {"module": {"evse": 1}},
                "config_module": {"connector_id": 1},
            },
            "ev_manager": {
                "module": "EvManager",
                "config_module": {
                    "connector_id": 1,
                    "auto_enable": True,
                    "auto_exec": False,
                    # After a power loss the car is still plugged in.
                    "keep_cross_boot_plugin_state": True,
                },
                "connections": {
                    "ev_board_support": _conn(YETI_ID, "ev_board_support"),
                    "kvs": _conn("persistent_store", "main"),
                },
            },
            "token_provider": {
                "module": "DummyTokenProvider",
                "config_implementation": {"main": {"token": "DEADBEEF", "timeout": 20}},
                "connections": {"evse": _conn("evse_manager", "evse")},
            },
            "token_validator": {
                "module": "DummyTokenValidator",
                "config_implementation": {"main": {"sleep": 0.2}},
            },
            "auth": {
                "module": "Auth",
                "config_module": {"connection_timeout": 30, "selection_algorithm": "FindFirst"},
                "connections": {
                    "token_provider": _conn("token_provider", "main"),
                    "token_validator": _conn("token_validator", "main"),
                    "evse_manager": _conn("evse_manager", "evse"),
                },
            },
            "energy_manager": {
                "module": "EnergyManager",
                "connections": {"energy_trunk": _conn("grid_connection_point", "energy_grid")},
            },
            "grid_connection_point": {
                "module": "EnergyNode",
                # OCPP 1.6 refuses an energy sink without an EVSE mapping.
                "mapping": {"module": {"evse": 0}},
                "config_module": {"fuse_limit_A": 32.0, "phase_count": 3},
                "connections": {"energy_consumer": _conn("evse_manager", "energy_grid")},
            },
            "persistent_store": {
                "module": "PersistentStore",
                "config_module": {"sqlite_db_file_path": store},
            },
        }
        if not self.build.has_module("PersistentStore"):  # a partial build: no memory
            del modules["persistent_store"]
            del modules["evse_manager"]["connections"]["store"]
            del modules["ev_manager"]["connections"]["kvs"]
        if self.ocpp:
            modules.update(self._ocpp_modules())
        settings: dict[str, Any] = {
            "mqtt_broker_host": self.broker.host,
            "mqtt_broker_port": self.broker.port,
            "modules_dir": str(self.workdir / "modules"),
            "logging_config_file": str(self.workdir / "logging.ini"),
        }
        if self.external_prefix:
            settings["mqtt_external_prefix"] = self.external_prefix
        return {"settings": settings, "active_modules": modules}

    def _ocpp_modules(self) -> dict[str, Any]:
        common = {
            "evse_security": {
                "module": "EvseSecurity",
                "config_module": {"private_key_password": "123456"},
            },
            "system": {"module": "System"},
        }
        connections = {
            "evse_manager": _conn("evse_manager", "evse"),
            "auth": _conn("auth", "main"),
            "system": _conn("system", "main"),
            "security": _conn("evse_security", "main"),
            "evse_energy_sink": _conn("grid_connection_point", "external_limits"),
        }
        if self.ocpp == OCPP16:
            connections["reservation"] = _conn("auth", "reservation")  # required by 1.6
            config = self._ocpp16_config()
            ocpp = {"module": "OCPP", "config_module": config, "connections": connections}
        else:
            config = self._ocpp201_config()
            ocpp = {"module": "OCPP201", "config_module": config, "connections": connections}
        return {**common, "ocpp": ocpp}

    def _ocpp201_config(self) -> dict[str, Any]:
        """OCPP 2.0.1's paths in the run's folder and its device model, CSMS and SignReadings."""
        components = self.workdir / "ocpp201" / "component_config"
        if not components.exists():
            shutil.copytree(self.build.share("OCPP201") / "component_config", components)
            for extra in components.glob("custom/*_2*.json"):  # one EVSE only
                extra.unlink()
            _set_variable(
                components / "standardized" / "InternalCtrlr.json",
                "NetworkConnectionProfiles",
                json.dumps(
                    [
                        {
                            "configurationSlot": 1,
                            "connectionData": {
                                "messageTimeout": 30,
                                "ocppCsmsUrl": self.csms.url,
                                "ocppInterface": "Wired0",
                                "ocppTransport": "JSON",
                                "ocppVersion": "OCPP20",
                                "securityProfile": 1,
                            },
                        }
                    ]
                ),
            )
            sampled = components / "standardized" / "SampledDataCtrlr.json"
            _set_variable(sampled, "SignReadings", True if self.sign_readings else None)
            if self.aligned_interval_s is not None:
                aligned = components / "standardized" / "AlignedDataCtrlr.json"
                _set_variable(aligned, "Interval", self.aligned_interval_s)
        root = self.workdir / "ocpp201"
        for folder in ("core", "messages"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        return {
            "DeviceModelConfigPath": str(components),
            "DeviceModelDatabasePath": str(root / "device_model_storage.db"),
            "EverestDeviceModelDatabasePath": str(root / "everest_device_model_storage.db"),
            "CoreDatabasePath": str(root / "core"),
            "MessageLogPath": str(root / "messages"),
        }

    def _ocpp16_config(self) -> dict[str, Any]:
        """OCPP 1.6's charge point config (JSON) with the CSMS's URL, in the run's folder."""
        root = self.workdir / "ocpp16"
        user_config = root / "user_config.json"
        if not root.exists():
            root.mkdir(parents=True)
            user_config.write_text(
                json.dumps(
                    {
                        "Internal": {
                            "ChargePointId": STATION_ID,
                            # Without a scheme: security profile 0 makes it ws://.
                            "CentralSystemURI": f"{self.csms.host}:{self.csms.port}/",
                        },
                        "Core": {"MeterValueSampleInterval": 0},
                    }
                )
            )
        for folder in ("db", "messages"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        return {
            # The module's default (ocpp-config.json) is not installed; libocpp's is.
            "ChargePointConfigPath": "config.json",
            "UserConfigPath": str(user_config),
            "DatabasePath": str(root / "db"),
            "MessageLogPath": str(root / "messages"),
        }

    def link_modules(self) -> Path:
        """One ``modules_dir`` for the manager: the build's modules and lem-dcbm's folder.

        Links to folders, not files: the manager resolves ``module.py`` and finds the
        ``.venv`` beside the real file, and the build's prefix stays untouched.
        """
        folder = self.workdir / "modules"
        if not folder.exists():
            folder.mkdir(parents=True)
            built = self.build.prefix / "libexec" / "everest" / "modules"
            for module in [*built.iterdir(), self.modules_dir / MODULE_NAME]:
                (folder / module.name).symlink_to(module, target_is_directory=True)
        return folder

    def write_config(self) -> None:
        """Write the config and the logging settings."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.link_modules()
        (self.workdir / "logging.ini").write_text(LOGGING_INI)
        self.config_path.write_text(yaml.safe_dump(self.document(), sort_keys=False))

    # --- life -----------------------------------------------------------------------

    def start(self) -> Charger:
        """Start the manager (below the reaper) in a session of its own."""
        if self.meter == API and self.api_module is None:
            self.start_api_module()
        self.write_config()
        manager = [str(self.build.manager), "--prefix", str(self.build.prefix)]
        manager += ["--config", str(self.config_path), "--graceful-shutdown"]
        env = dict(os.environ)
        env["PATH"] = f"/usr/bin{os.pathsep}{env.get('PATH', '')}"
        env["LEM_DCBM_HEALTH_DIR"] = str(self.workdir / "health")
        for variable in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(variable, None)
        self.starts += 1
        exits = self.workdir / f"exits-{self.starts}.json"
        argv = [sys.executable, str(REAL_EVEREST_DIR / "reaper.py"), str(exits), "--", *manager]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self.workdir,
            )
        return self

    def wait_up(self, timeout_s: float = 180.0) -> None:
        """Wait for the manager's "All modules are initialized" of this start."""

        def up() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise HarnessError("the manager ended while starting")
            return UP_LINE in self.this_start_log()

        try:
            wait_until(up, timeout_s, interval=0.2, what="the charger to be up")
        except HarnessError as err:
            raise HarnessError(f"{err}; {self.tail()}") from None

    def shutdown(self, timeout_s: float = 60.0) -> int | None:
        """SIGINT (graceful shutdown of the manager); its exit code, None when it was gone."""
        process, self.process = self.process, None
        if process is None:
            return None
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process = process
            self.kill()
            raise HarnessError(f"the manager did not end within {timeout_s:g} s") from None

    def power_loss(self) -> None:
        """SIGKILL to the manager and every module at once (the meter keeps its power)."""
        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def kill(self) -> None:
        """End whatever is left (after a failure)."""
        process, self.process = self.process, None
        if process is not None:
            end_process_group(process)
        if self.api_module is not None:
            self.api_module.stop()
            self.api_module = None

    # --- lem-dcbm in API mode -------------------------------------------------------

    def start_api_module(self) -> ModuleProcess:
        """lem-dcbm ``--everest-api`` for the bridge, as its own process on the broker."""
        site = self.workdir / "api-site.yaml"
        values = simulator_config(self.simulator, journal_dir=str(self.journal_dir))
        document = {
            "active_modules": {
                METER_ID: {"module": MODULE_NAME, "config_module": {**values, **self.meter_config}}
            }
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        site.write_text(yaml.safe_dump(document, sort_keys=False))
        env = {"EV_MQTT_EXTERNAL_PREFIX": self.external_prefix} if self.external_prefix else {}
        self.api_module = start_module(
            self.workdir / "api-module",
            site,
            self.broker.port,
            broker_host=self.broker.host,
            extra_args=["--everest-api", "--module-id", METER_ID],
            env=env,
            module_id=METER_ID,
        )
        return self.api_module

    def kill_api_module(self) -> None:
        """SIGKILL lem-dcbm in API mode, as a crash would."""
        if self.api_module is not None:
            self.api_module.kill()
            self.api_module = None

    # --- the car --------------------------------------------------------------------

    def _car(self, command: str, payload: str) -> None:
        topic = f"{self.external_prefix}everest_external/nodered/1/carsim/cmd/{command}"
        # Not paho's publish.single: its loop logs an error for its own disconnect.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()

    def plug_in(self, commands: str = PLUG_AND_CHARGE) -> None:
        """The car plugs in and charges (EvManager's ``execute_charging_session``)."""
        self._car("execute_charging_session", commands)

    def unplug(self) -> None:
        """The car leaves (``modify_charging_session`` with ``unplug``)."""
        self._car("modify_charging_session", "unplug")

    # --- reading --------------------------------------------------------------------

    def log(self) -> str:
        """The manager's output of every start, without terminal colours."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return _ANSI.sub("", text)

    def this_start_log(self) -> str:
        """The manager's output since the last start."""
        return self.log().rsplit(f"===== start {self.starts} =====", 1)[-1]

    def tail(self, lines: int = 60) -> str:
        """The end of the manager's log (and lem-dcbm's in API mode), for failures."""
        text = "manager log:\n" + "\n".join(self.log().splitlines()[-lines:])
        if self.api_module is not None:
            text += "\nlem-dcbm (API mode):\n" + self.api_module.log_tail(20)
        return text

    def late_records(self, timeout_s: float = 10.0) -> dict[str, str]:
        """Records lem-dcbm published on the late road (retained), by topic."""
        return retained_messages(
            self.broker, f"{self.external_prefix}lem_dcbm/{METER_ID}/records/#", timeout_s
        )


def retained_messages(broker: Broker, pattern: str, timeout_s: float) -> dict[str, str]:
    """The retained messages under ``pattern``, by topic.

    A marker published after the subscription arrives after every retained message the
    broker had, so there is no guessing how long to listen.
    """
    marker = f"lem-dcbm-sil/marker/{uuid.uuid4().hex}"
    found: dict[str, str] = {}
    done = threading.Event()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        if message.topic == marker:
            done.set()
        else:
            found[message.topic] = message.payload.decode(errors="replace")

    def on_subscribe(client: Any, *_: Any) -> None:
        client.publish(marker, b"", qos=1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_: c.subscribe([(pattern, 1), (marker, 1)])
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            raise HarnessError(f"no answer from the broker within {timeout_s:g} s")
    finally:
        client.loop_stop()
        client.disconnect()
    return found


def _set_variable(path: Path, name: str, value: Any) -> None:
    """Set (or, with None, remove) the Actual value of variable ``name`` in a component file."""
    document = json.loads(path.read_text())
    for variable in document["properties"].values():
        if variable.get("variable_name") != name:
            continue
        for attribute in variable.get("attributes", []):
            if attribute.get("type", "Actual") == "Actual":
                if value is None:
                    attribute.pop("value", None)
                else:
                    attribute["value"] = value
        path.write_text(json.dumps(document, indent=2))
        return
    raise HarnessError(f"{path.name} has no variable {name}")


def wait_seconds(seconds: float) -> None:
    """Let the session run: the scenario's own duration, not a wait for an event."""
    time.sleep(seconds)
