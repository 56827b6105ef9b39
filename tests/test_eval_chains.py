"""The evaluation chain is written three times: ``pgnm_monai.transforms.eval_transforms`` (the protocol, the probes,
the demo), ``validate#preprocessing`` of the pretrain ``train.json`` (validation and ``evaluate.json``, and so the
fine-tune bundle's too) and ``preprocessing`` of ``inference.json`` (both bundles: the fine-tune one links it).
All of them are the same chain: the same transforms in the same order, and the same tensor from a real image, at
the bundles' defaults and at other values of the ids they read."""

from __future__ import annotations

import os

import pytest
import torch
from monai.bundle import ConfigParser
from pydicom.data import get_testdata_file

from pgnm_monai.experiments.runner import bundle_defaults, stage_configs
from pgnm_monai.transforms import eval_transforms

#: (bundle, stage, id of the chain in that stage's merged configs)
CONFIG_CHAINS = [
    ("pgnm_pretrain", "train", "validate#preprocessing"),
    ("pgnm_pretrain", "inference", "preprocessing"),
    ("pgnm_finetune", "train", "validate#preprocessing"),
    ("pgnm_finetune", "inference", "preprocessing"),
]
#: other values of the ids the chains read (the defaults are the first case)
OTHER = {"image_size": 40, "in_channels": 3, "intensity_mean": 0.449, "intensity_std": 0.226}
#: real images: a CT (HU window) and an MR (percentile scaling) of pydicom's test files
IMAGES = [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")]


def _config_chain(bundle: str, stage: str, chain_id: str, overrides: dict):
    parser = ConfigParser()
    parser.read_config([os.fspath(p) for p in stage_configs(bundle, stage)])
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content(chain_id)


def _python_chain(d: dict):
    return eval_transforms(
        image_size=d["image_size"],
        channels=d["in_channels"],
        mean=d["intensity_mean"],
        std=d["intensity_std"],
        spatial_dims=d["spatial_dims"],
        spacing=d["spacing"],
    )


@pytest.mark.parametrize("overrides", [{}, OTHER], ids=["defaults", "other_values"])
@pytest.mark.parametrize("bundle, stage, chain_id", CONFIG_CHAINS)
def test_config_chains_are_eval_transforms(bundle, stage, chain_id, overrides):
    # inference's input ids: the trained run's settings, else the training defaults (no run here)
    d = {**bundle_defaults(bundle, "train"), **bundle_defaults(bundle, stage), **overrides}
    ours = _python_chain(d)
    theirs = _config_chain(bundle, stage, chain_id, overrides)
    assert [type(t) for t in theirs.transforms] == [type(t) for t in ours.transforms]
    for name, modality in IMAGES:
        item = {"image": get_testdata_file(name), "modality": modality, "label": 0}
        a, b = ours(dict(item))["image"], theirs(dict(item))["image"]
        assert type(a) is torch.Tensor and type(b) is torch.Tensor  # plain tensors, no MONAI metadata
        assert a.shape == (d["in_channels"], *[d["image_size"]] * d["spatial_dims"]) and a.dtype == torch.float32
        assert torch.equal(a, b), (name, (a - b).abs().max())
