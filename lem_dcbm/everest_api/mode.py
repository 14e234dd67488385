"""Choosing the API mode: ``lem-dcbm run --everest-api`` or ``LEM_DCBM_EVEREST_API=1``."""

from __future__ import annotations

from collections.abc import Mapping

from lem_dcbm.errors import ConfigError

#: The environment variable that switches a container (whose command is fixed) to API mode.
ENV = "LEM_DCBM_EVEREST_API"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def api_mode(flag: bool, environ: Mapping[str, str]) -> bool:
    """True with the flag, else as ``LEM_DCBM_EVEREST_API`` says; ``ConfigError`` if unclear."""
    if flag:
        return True
    text = environ.get(ENV, "").strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ConfigError(ENV, f"must be 1 or 0 (true/false, yes/no, on/off), got {text!r}")
