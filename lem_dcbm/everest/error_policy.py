"""Which conditions reach EVerest as errors, per EVerest release (config key ``error_profile``).

The module raises ``CommunicationFault`` and ``VendorError`` only where billing or safety
is gone (the meter unreachable, a blocking or failure bit, tampering, a temperature
error); EvseManager then stops charging, in every release. The other conditions (an
indicator bit, a temperature warning, a non-billable transaction, a record whose
signature or content checks fail) still allow billing, and are ``VendorWarning``: what
EvseManager does with that depends on the release, with ``fail_on_powermeter_errors``
(its default) on:

- EVerest 2025.12: every powermeter error, ``VendorWarning`` included, makes the EVSE
  inoperative (``ignore_errors.powermeter`` is empty).
- EVerest 2026.02: ``powermeter/VendorWarning`` is ignored; charging goes on.
- EVerest main (2026-08): only ``generic/VendorWarning`` is ignored, which the powermeter
  interface does not declare; ``powermeter/VendorWarning`` makes the EVSE inoperative.

So ``VendorWarning`` is raised only with the ``everest-2026.02`` profile; with the others
(the default is ``everest-main``) the condition is logged once instead, and the journal
and the late-record message still carry what the records' checks found.
"""

from __future__ import annotations

import logging

from lem_dcbm.core.ports import EverestOutputs
from lem_dcbm.core.results import PowermeterValue

_LOGGER = logging.getLogger(__name__)

#: The profiles, by the EVerest release whose EvseManager they suit.
PROFILES = ("everest-2025.12", "everest-2026.02", "everest-main")
DEFAULT_PROFILE = "everest-main"
#: Profiles under which a raised ``VendorWarning`` leaves charging alone.
WARNINGS_TOLERATED = frozenset({"everest-2026.02"})
VENDOR_WARNING = "VendorWarning"


class PolicedOutputs:
    """``EverestOutputs`` that keep ``VendorWarning`` off the bus where it would stop charging."""

    def __init__(self, outputs: EverestOutputs, profile: str = DEFAULT_PROFILE) -> None:
        if profile not in PROFILES:
            raise ValueError(f"error profile must be one of {PROFILES}, got {profile!r}")
        self._outputs = outputs
        self._profile = profile
        self._logged: set[str] = set()

    def publish_powermeter(self, value: PowermeterValue) -> object:
        """Publish a measurement."""
        return self._outputs.publish_powermeter(value)

    def publish_public_key_ocmf(self, key: str) -> object:
        """Publish the ``public_key_ocmf`` var."""
        return self._outputs.publish_public_key_ocmf(key)

    def raise_error(self, name: str, sub_type: str, message: str, severity: str = "High") -> None:
        """Raise the error, or log a warning once that this EVerest would take as fatal."""
        if name == VENDOR_WARNING and self._profile not in WARNINGS_TOLERATED:
            if sub_type not in self._logged:
                self._logged.add(sub_type)
                _LOGGER.warning(
                    "%s (%s; not raised as VendorWarning: EvseManager of %s would stop "
                    "charging for it, see error_profile)",
                    message,
                    sub_type,
                    self._profile,
                )
            return
        self._outputs.raise_error(name, sub_type, message, severity)

    def clear_error(self, name: str, sub_type: str) -> None:
        """Clear the error (a warning that was only logged is forgotten)."""
        if name == VENDOR_WARNING and self._profile not in WARNINGS_TOLERATED:
            if sub_type in self._logged:
                self._logged.discard(sub_type)
                _LOGGER.info("%s cleared", sub_type)
            return
        self._outputs.clear_error(name, sub_type)
