"""Networks of pgnm-monai: the classifiers, the noise policy, and loading the weights people have."""

from __future__ import annotations

from .classifiers import CLASSIFIERS, HEAD_PREFIXES, SmallCNN, build_classifier
from .policy import TRUNKS, NoisePolicy, build_trunk
from .weights import NORMALIZATION, average_state_dicts, load_weights

__all__ = [
    "CLASSIFIERS",
    "HEAD_PREFIXES",
    "NORMALIZATION",
    "NoisePolicy",
    "SmallCNN",
    "TRUNKS",
    "average_state_dicts",
    "build_classifier",
    "build_trunk",
    "load_weights",
]
