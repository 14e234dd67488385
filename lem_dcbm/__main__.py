"""``python -m lem_dcbm`` is the ``lem-dcbm`` command."""

from __future__ import annotations

import sys

from lem_dcbm.cli import main

sys.exit(main())
