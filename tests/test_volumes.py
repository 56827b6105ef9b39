"""Volumes through the bundles (``spatial_dims: 3``): a tiny 3D pretrain -> fine-tune -> evaluate on AdrenalMNIST3D
(``../shared/data``) and on NIfTI volumes that nibabel ships, kept whole; exact resume in 3D."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from nibabel.testing import data_path as NIB_DATA
from test_resume import assert_same_outputs

from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.experiments.runner import run_bundle

ADRENAL = shared_data_dir() / "medmnist" / "adrenalmnist3d.npz"
V3 = {
    "spatial_dims": 3,
    "image_size": 16,
    "network": "small",
    "policy_trunk": "small",
    "grid": 4,
    "kernel_size": 3,
    "sigma": 1.0,
    "batch_size": 8,
    "progress_bar": False,
    "tensorboard": False,
}


def adrenal() -> dict:
    if not ADRENAL.exists():
        pytest.skip(f"AdrenalMNIST3D is not available at {ADRENAL} (set PGNM_SHARED_DATA to the shared data folder)")
    return {"dataset_kind": "medmnist", "dataset_dir": os.fspath(ADRENAL), "dataset_options": {"slices": "none"}}


def test_3d_pretrain_finetune_evaluate_on_adrenalmnist3d(tmp_path):
    data = adrenal()
    pre, ft = tmp_path / "pretrain", tmp_path / "finetune"
    run_bundle(
        "pgnm_pretrain", "train", bundle_root=os.fspath(pre), arm="pgnm", epochs=2, max_train_items=32,
        max_val_items=16, **data, **V3,
    )  # fmt: skip
    policy = torch.load(pre / "models" / "policy.pt", weights_only=True)
    assert policy["base_alpha"].shape == (1, 4**3)  # a G^3 policy
    stats = (pre / "eval" / "policy_stats.csv").read_text().splitlines()
    assert len(stats) == 3  # header + one row per epoch
    common = {**data, **V3, "arm": "none"}
    run_bundle(
        "pgnm_finetune", "train", bundle_root=os.fspath(ft), pretrained_ckpt=os.fspath(pre / "models" / "model.pt"),
        few_shot=16, epochs=2, warmup_epochs=1, max_val_items=16, **common,
    )  # fmt: skip
    run_bundle("pgnm_finetune", "evaluate", bundle_root=os.fspath(ft), **common)
    report = json.loads((ft / "eval" / "metrics.json").read_text())
    assert report["overall"]["n"] == 298  # the whole AdrenalMNIST3D test split, one item per volume
    assert 0.0 <= report["overall"]["macro_f1"] <= 1.0


def test_3d_stop_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    args = {"arm": "pgnm", "epochs": 3, "max_train_items": 24, "max_val_items": 8, **adrenal(), **V3}
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "a"), **args)
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), stop_epoch=1, **args)
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), resume=True, **args)
    assert_same_outputs(tmp_path / "a", tmp_path / "b")


def test_nifti_volumes_kept_whole_through_the_bundles(tmp_path):
    """A clinical CSV of whole NIfTI volumes (copies of nibabel's, one patient each) pretrains in 3D."""
    rows = []
    for k in range(12):
        source = Path(NIB_DATA) / ("anatomical.nii" if k % 2 else "example4d.nii.gz")
        copy = tmp_path / "volumes" / f"v{k}{''.join(source.suffixes)}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(source, copy)
        rows.append([copy.name, "a" if k % 2 else "b", f"P{k}", "MR"])
    with open(tmp_path / "volumes" / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "patient_id", "modality"], *rows])
    root = tmp_path / "run"
    run_bundle(
        "pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="pgnm", epochs=1, dataset_kind="clinical",
        dataset_dir=os.fspath(tmp_path / "volumes"), dataset_options={"slices": "none"},
        **{**V3, "batch_size": 2},
    )  # fmt: skip
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "policy.pt").is_file()
