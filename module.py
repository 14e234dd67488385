#!/usr/bin/env python3
"""Entry point of the module folder: the EVerest manager runs ``python3 module.py``.

With ``EV_MODULE`` set and no ``--config`` the module takes its configuration from the
manager over MQTT; otherwise it behaves like ``lem-dcbm run`` with the same arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# A module folder may hold the source next to this file instead of an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    """Choose manager mode or standalone mode and run."""
    args = sys.argv[1:] if argv is None else argv
    module_id = os.environ.get("EV_MODULE", "")
    if module_id and "--config" not in args:
        from lem_dcbm.cli import run_under_manager

        return run_under_manager(module_id, os.environ)
    if module_id and "--module-id" not in args:
        args = [*args, "--module-id", module_id]
    from lem_dcbm.cli import main as cli_main

    return cli_main(["run", *args])


if __name__ == "__main__":
    sys.exit(main())
