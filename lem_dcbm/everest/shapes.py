"""The core's values in EVerest's types, and EVerest's ``TransactionReq`` in the core's.

Both adapters (the module protocol and the external powermeter API) speak these types on
the wire; the core never sees them.
"""

from __future__ import annotations

from collections.abc import Mapping

from lem_dcbm.clock import rfc3339
from lem_dcbm.core.results import PowermeterValue, TransactionRequest
from lem_dcbm.everest.results import signed_meter_value
from lem_dcbm.json_types import JsonObject, JsonValue


def transaction_request(request: JsonValue) -> TransactionRequest:
    """The core's start request from a ``powermeter/TransactionReq`` (validated before)."""
    value = request if isinstance(request, Mapping) else {}
    return TransactionRequest(
        transaction_id=str(value.get("transaction_id", "")),
        evse_id=str(value.get("evse_id", "")),
        identification_data=str(value.get("identification_data", "")),
        tariff_text=str(value.get("tariff_text", "")),
    )


def powermeter_var(value: PowermeterValue) -> JsonObject:
    """The ``powermeter/Powermeter`` of one measurement (with a riding record, if any)."""
    shaped: JsonObject = {
        "timestamp": rfc3339(value.timestamp),
        "meter_id": value.meter_id,
        "energy_Wh_import": {"total": value.energy_import_wh},
        "energy_Wh_export": {"total": value.energy_export_wh},
        "power_W": {"total": value.power_w},
        "voltage_V": {"DC": value.voltage_v},
        "current_A": {"DC": value.current_a},
        "temperatures": [
            {
                "temperature": value.temperature_h_c,
                "identification": "temperatureH",
                "location": "temperatureH",
            },
            {
                "temperature": value.temperature_l_c,
                "identification": "temperatureL",
                "location": "temperatureL",
            },
        ],
    }
    if value.signed is not None:
        shaped["signed_meter_value"] = signed_meter_value(value.signed)
    return shaped
