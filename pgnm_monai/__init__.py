"""pgnm-monai: the Policy Gradient-Driven Noise Mask (Yavuz & Yang, ICPR 2024) for MONAI."""

from __future__ import annotations

__version__ = "0.6.0"
