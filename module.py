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


#: Import name -> distribution of each runtime dependency (pyproject.toml ``dependencies``).
DEPENDENCIES = {
    "paho": "paho-mqtt",
    "yaml": "PyYAML",
    "jsonschema": "jsonschema",
    "cryptography": "cryptography",
}
#: Exit code when the module cannot start as installed (as for a bad configuration).
EXIT_NOT_INSTALLED = 2


def main(argv: list[str] | None = None) -> int:
    """Run the module; a missing dependency is one line saying how to install, exit 2."""
    try:
        return _run(argv)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        # The package itself missing: module.py copied (from a wheelhouse, say) without it.
        package = "lem-dcbm" if top == "lem_dcbm" else DEPENDENCIES.get(top)
        if package is None:
            raise
        folder = Path(__file__).resolve().parent
        print(
            f"lem-dcbm: {sys.executable} has no {package} (import {exc.name!r}): install "
            f"the module with its dependencies into {folder / '.venv'} (the manager uses "
            f"that venv when it exists): {folder / '.venv/bin/pip'} install --constraint "
            "constraints.txt <lem-dcbm checkout>, or --no-index --find-links <wheelhouse> "
            "lem-dcbm; docs/install.md, 'Install into an EVerest installation'",
            file=sys.stderr,
        )
        return EXIT_NOT_INSTALLED


def _run(argv: list[str] | None) -> int:
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
