"""``python -m lem_dcbm.simulator``."""

from __future__ import annotations

import sys

from lem_dcbm.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
