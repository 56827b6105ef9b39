"""Networks of pgnm-monai."""

from __future__ import annotations

from .classifiers import CLASSIFIERS, HEAD_PREFIXES, SmallCNN, build_classifier
from .policy import TRUNKS, NoisePolicy, build_trunk

__all__ = ["NoisePolicy", "build_trunk", "TRUNKS", "CLASSIFIERS", "HEAD_PREFIXES", "SmallCNN", "build_classifier"]
