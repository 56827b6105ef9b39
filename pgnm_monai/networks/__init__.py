"""Networks of pgnm-monai."""

from __future__ import annotations

from .policy import TRUNKS, NoisePolicy, build_trunk

__all__ = ["NoisePolicy", "build_trunk", "TRUNKS"]
