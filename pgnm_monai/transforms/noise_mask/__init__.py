"""The method's transforms: a Beta noise mask on a batch, array (:mod:`.array`) and dictionary
(:mod:`.dictionary`) versions."""

from __future__ import annotations

from .array import BetaNoiseMask, PolicyNoiseMask, RandomBetaMask
from .dictionary import (
    PolicyNoiseMaskD,
    PolicyNoiseMaskd,
    PolicyNoiseMaskDict,
    RandomBetaMaskD,
    RandomBetaMaskd,
    RandomBetaMaskDict,
)

__all__ = [
    "BetaNoiseMask",
    "PolicyNoiseMask",
    "PolicyNoiseMaskD",
    "PolicyNoiseMaskDict",
    "PolicyNoiseMaskd",
    "RandomBetaMask",
    "RandomBetaMaskD",
    "RandomBetaMaskDict",
    "RandomBetaMaskd",
]
