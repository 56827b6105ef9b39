"""``python -m pgnm_monai``: the command line."""

from __future__ import annotations

import sys

from pgnm_monai.cli import main

sys.exit(main())
