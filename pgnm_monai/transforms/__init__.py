"""MONAI transforms of pgnm-monai: array versions in :mod:`.array`, dictionary versions in :mod:`.dictionary`,
the paper's preprocessing chains in :mod:`.chains`."""

from __future__ import annotations

from .array import LoadMedicalImage, PolicyNoiseMask, RandomBetaMask, RandResizedCrop, ResizeShortSide, ToChannels
from .chains import PAPER_MEAN, PAPER_STD, eval_transforms, meta_tracking, train_transforms
from .dictionary import (
    LoadMedicalImageD,
    LoadMedicalImaged,
    LoadMedicalImageDict,
    PolicyNoiseMaskD,
    PolicyNoiseMaskd,
    PolicyNoiseMaskDict,
    RandomBetaMaskD,
    RandomBetaMaskd,
    RandomBetaMaskDict,
    RandResizedCropD,
    RandResizedCropd,
    RandResizedCropDict,
    ResizeShortSideD,
    ResizeShortSided,
    ResizeShortSideDict,
    ToChannelsD,
    ToChannelsd,
    ToChannelsDict,
)

__all__ = [
    "LoadMedicalImage",
    "LoadMedicalImageD",
    "LoadMedicalImageDict",
    "LoadMedicalImaged",
    "PAPER_MEAN",
    "PAPER_STD",
    "PolicyNoiseMask",
    "PolicyNoiseMaskD",
    "PolicyNoiseMaskDict",
    "PolicyNoiseMaskd",
    "RandResizedCrop",
    "RandResizedCropD",
    "RandResizedCropDict",
    "RandResizedCropd",
    "RandomBetaMask",
    "RandomBetaMaskD",
    "RandomBetaMaskDict",
    "RandomBetaMaskd",
    "ResizeShortSide",
    "ResizeShortSideD",
    "ResizeShortSideDict",
    "ResizeShortSided",
    "ToChannels",
    "ToChannelsD",
    "ToChannelsDict",
    "ToChannelsd",
    "eval_transforms",
    "meta_tracking",
    "train_transforms",
]
