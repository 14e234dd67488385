"""lem-dcbm: an EVerest powermeter module for the LEM DCBM 400/600 DC energy meter."""

from __future__ import annotations

__version__ = "0.1.0"

#: The module's name under EVerest: its folder in ``libexec/everest/modules`` and the
#: ``module:`` of its config entry. A name of its own, not the C++ ``LemDCBM400600``:
#: the manager starts an executable named after the folder when there is one, so a shared
#: folder would run the C++ build.
MODULE_NAME = "LemDCBM400600Py"

__all__ = ["MODULE_NAME", "__version__"]
