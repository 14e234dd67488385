"""EvseManager's part towards a powermeter, as an everestpy module under the real manager.

It runs what EvseManager's ``Charger.cpp`` runs against its billing meter: at boot
``stop_transaction(<remembered id>)`` and ``stop_transaction("")``, then one transaction
(start, a few publications, stop), then the runtime configuration changes it was given
(2026 framework only). It records everything it sees (answers, variables, raised and
cleared errors, configuration results) in the JSON file named by
``LEM_REAL_OBSERVATIONS``, rewritten atomically after every event, for the test to read.
It uses the standard library and everestpy only: it runs on the Python everestpy was
built for, not in lem-dcbm's venv.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from everest.framework import Module, RuntimeSession

#: How long the transaction waits for fresh publications between start and stop.
SAMPLE_WAIT_S = 10.0
SAMPLES_DURING_TRANSACTION = 2


class Observations:
    """What the role saw, kept in one JSON file that is replaced whole on every change."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Condition()
        self.data: dict[str, Any] = {
            "phase": "starting",
            "config": {},
            "powermeter_count": 0,
            "last_powermeter": None,
            "public_keys": [],
            "calls": [],
            "errors_raised": [],
            "errors_cleared": [],
            "set_results": [],
            "failures": [],
        }

    def change(self, mutate: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``mutate`` to the data and write the file."""
        with self._lock:
            mutate(self.data)
            tmp = self._path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(self.data, handle, indent=1, default=str)
            os.replace(tmp, self._path)
            self._lock.notify_all()

    def wait(self, condition: Callable[[dict[str, Any]], bool], timeout_s: float) -> bool:
        """Wait until ``condition(data)`` holds; False after ``timeout_s``."""
        with self._lock:
            return self._lock.wait_for(lambda: condition(self.data), timeout_s)


def error_summary(err: Any) -> dict[str, Any]:
    """The fields of an everestpy ``Error`` the test looks at."""
    origin = getattr(err, "origin", None)
    return {
        "type": str(err.type),
        "sub_type": str(err.sub_type),
        "message": str(err.message),
        "origin": getattr(origin, "module_id", None),
        "at": time.time(),
    }


class EvseManagerRole:
    """One module instance: the handshake, the subscriptions, then the sequence."""

    def __init__(self, observations: Observations) -> None:
        self.obs = observations
        self.module = Module(RuntimeSession())
        setup = self.module.say_hello()
        self.config = dict(setup.configs.module)
        self.meter = setup.connections["powermeter"][0]
        self.ready = threading.Event()
        self.stopping = threading.Event()
        observations.change(lambda d: d.update(config=self.config, module_id=self.module.info.id))
        self.module.subscribe_variable(self.meter, "powermeter", self._on_powermeter)
        self.module.subscribe_variable(self.meter, "public_key_ocmf", self._on_public_key)
        self.module.subscribe_all_errors(self.meter, self._on_raised, self._on_cleared)
        if hasattr(self.module, "shutdown_handler"):  # the 2026 framework's graceful shutdown
            self.module.shutdown_handler(self._on_shutdown)
        self.module.init_done(self.ready.set)

    # --- callbacks --------------------------------------------------------------

    def _on_powermeter(self, value: Any) -> None:
        def add(d: dict[str, Any]) -> None:
            d["powermeter_count"] += 1
            d["last_powermeter"] = value

        self.obs.change(add)

    def _on_public_key(self, value: Any) -> None:
        self.obs.change(lambda d: d["public_keys"].append(value))

    def _on_raised(self, err: Any) -> None:
        self.obs.change(lambda d: d["errors_raised"].append(error_summary(err)))

    def _on_cleared(self, err: Any) -> None:
        self.obs.change(lambda d: d["errors_cleared"].append(error_summary(err)))

    def _on_shutdown(self) -> None:
        self.obs.change(lambda d: d.update(shutdown_handler_called=True))
        self.stopping.set()

    # --- the sequence -------------------------------------------------------------

    def call(self, step: str, command: str, args: dict[str, Any]) -> Any:
        """Call a powermeter command and record its answer (or the exception)."""
        started = time.monotonic()
        entry: dict[str, Any] = {"step": step, "command": command, "args": args}
        try:
            entry["result"] = self.module.call_command(self.meter, command, args)
        except Exception as exc:  # recorded for the test, which fails on it
            entry["exception"] = f"{type(exc).__name__}: {exc}"
        entry["seconds"] = round(time.monotonic() - started, 3)
        self.obs.change(lambda d: d["calls"].append(entry))
        return entry.get("result")

    def run(self) -> None:
        """Boot clean-up, one transaction, the configuration changes; then idle."""
        self.ready.wait()
        self.obs.change(lambda d: d.update(phase="ready"))
        remembered = self.config["remembered_transaction_id"]
        self.call("boot_stop_remembered", "stop_transaction", {"transaction_id": remembered})
        self.call("boot_stop_all", "stop_transaction", {"transaction_id": ""})
        transaction_id = str(uuid.uuid4())
        request = {
            # What Charger.cpp fills in: no identification flags, no identification level.
            "evse_id": "DE*LEM*E0001",
            "transaction_id": transaction_id,
            "identification_status": "ASSIGNED",
            "identification_flags": [],
            "identification_type": "ISO14443",
            "identification_data": "04A2B3C4D5E6F7",
        }
        self.call("start", "start_transaction", {"value": request})
        seen = self.obs.data["powermeter_count"]
        if not self.obs.wait(
            lambda d: d["powermeter_count"] >= seen + SAMPLES_DURING_TRANSACTION, SAMPLE_WAIT_S
        ):
            missing = "no publications during the transaction"
            self.obs.change(lambda d: d["failures"].append(missing))
        if self.config["leave_running"]:
            self.obs.change(lambda d: d.update(phase="left_running"))
            return
        self.call("stop", "stop_transaction", {"transaction_id": transaction_id})
        self.obs.change(lambda d: d.update(phase="transaction_done"))
        for name, value in json.loads(self.config["set_requests"]):
            self.set_config(str(name), str(value))
        self.obs.change(lambda d: d.update(phase="done"))

    def set_config(self, name: str, value: str) -> None:
        """Ask the manager to set ``name`` of the powermeter module; record its answer."""
        entry: dict[str, Any] = {"parameter": name, "value": value}
        started = time.monotonic()
        try:
            entry["result"] = self.module.set_config_value(self.meter.module_id, name, value)
            entry["seconds"] = round(time.monotonic() - started, 3)
            entry["after"] = self.module.get_config_value(self.meter.module_id, name)
        except Exception as exc:  # recorded for the test, which fails on it
            entry["exception"] = f"{type(exc).__name__}: {exc}"
        entry["powermeter_count"] = self.obs.data["powermeter_count"]
        self.obs.change(lambda d: d["set_results"].append(entry))


def main() -> None:
    """Run the role until the manager shuts it down (2026) or terminates it (0.25)."""
    observations = Observations(os.environ["LEM_REAL_OBSERVATIONS"])
    # 0.25 ends modules with SIGTERM; the role has nothing to tidy up.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    role = EvseManagerRole(observations)
    worker = threading.Thread(target=role.run, name="sequence", daemon=True)
    worker.start()
    role.stopping.wait()
    observations.change(lambda d: d.update(phase="shut_down"))
    # everestpy's own threads would keep a normal interpreter exit waiting.
    os._exit(0)


if __name__ == "__main__":
    main()
