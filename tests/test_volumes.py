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
from test_resume import assert_same_outputs, resume_in_process

from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.experiments.runner import run_bundle
from pgnm_monai.metrics import label_metrics

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
    with open(ft / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    y, p = [int(r["label"]) for r in rows], [int(r["pred"]) for r in rows]
    assert len(rows) == 298 and report["overall"]["macro_f1"] == pytest.approx(label_metrics(y, p)["macro_f1"])


def test_3d_stop_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    args = {"arm": "pgnm", "epochs": 3, "max_train_items": 24, "max_val_items": 8, **adrenal(), **V3}
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "a"), **args)
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "b"), stop_epoch=1, **args)
    assert resume_in_process(tmp_path / "b", **args) == [2, 3]  # from the epoch after the checkpoint, not epoch 1
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
        dataset_dir=os.fspath(tmp_path / "volumes"), dataset_options={"slices": "none", "time_point": 0},
        **{**V3, "batch_size": 2},
    )  # fmt: skip
    assert (root / "models" / "model.pt").is_file()
    assert torch.load(root / "models" / "policy.pt", weights_only=True)["base_alpha"].shape == (1, V3["grid"] ** 3)
    assert len((root / "eval" / "policy_stats.csv").read_text().splitlines()) == 2  # header + one epoch


def _ct_series(folder: Path, gap_mm: float = 5.0, slices: int = 4) -> Path:
    """A DICOM series folder built from pydicom's CT_small: ``slices`` slices ``gap_mm`` apart."""
    import pydicom
    from pydicom.data import get_testdata_file

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True)
    for k in range(slices):
        ds = base.copy()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, k * gap_mm]
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"{folder}{k}"])
        ds.save_as(folder / f"slice{k}.dcm")
    return folder


def test_spacing_resamples_nifti_and_dicom_series_volumes(tmp_path):
    """``spacing`` resamples a whole volume from its file's affine: (n - 1) * old / new + 1 voxels per axis, the
    original slices kept where the grids meet; sources without a spacing and 2D use are refused by name."""
    import numpy as np

    from pgnm_monai.data.io import read_image
    from pgnm_monai.transforms import LoadMedicalImage

    functional = os.path.join(NIB_DATA, "functional.nii")  # 17 x 21 x 3 voxels of 4 x 4 x 8 mm (its first frame)
    assert read_image(functional, "MR", frame_index=0, spatial_dims=3).shape == (1, 17, 21, 3)
    iso = read_image(functional, "MR", frame_index=0, spatial_dims=3, spacing=(4.0, 4.0, 4.0))
    assert iso.shape == (1, 17, 21, 5) and iso.dtype == np.float32 and 0.0 <= iso.min() <= iso.max() <= 1.0
    anatomical = os.path.join(NIB_DATA, "anatomical.nii")  # 33 x 41 x 25 voxels of 2 mm
    assert LoadMedicalImage(spatial_dims=3, spacing=4.0)(anatomical, "MR").shape == (1, 17, 21, 13)

    series = _ct_series(tmp_path / "series")  # 128 x 128 x 4, 0.66 mm pixels, slices 5 mm apart
    stored = read_image(os.fspath(series), "CT", spatial_dims=3)
    half = read_image(os.fspath(series), "CT", spatial_dims=3, spacing=(0.661468, 0.661468, 2.5))
    assert stored.shape == (1, 128, 128, 4) and half.shape == (1, 128, 128, 7)
    np.testing.assert_allclose(half[..., ::2], stored, atol=1e-5)  # the stored slices, new ones in between

    with pytest.raises(ValueError, match=r"image <array> carries no voxel spacing"):
        read_image(np.zeros((8, 8, 8), np.float32), spatial_dims=3, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing must be .* for volumes \(spatial_dims=3\)"):
        LoadMedicalImage(spatial_dims=2, spacing=1.0)
    with pytest.raises(ValueError, match=r"spacing must be .*got spacing=\[1.0, -1.0, 1.0\]"):
        LoadMedicalImage(spatial_dims=3, spacing=[1.0, -1.0, 1.0])


def test_spacing_through_the_bundle(tmp_path):
    """The ``spacing`` id reaches the bundle's chains (the Python chains' tensors), and a 3D pretrain runs with it on
    a clinical CSV of anisotropic NIfTI volumes and a DICOM series."""
    from test_bundles import workflow

    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import eval_transforms, train_transforms

    folder = tmp_path / "volumes"
    rows = [["path", "label", "patient_id", "modality"]]
    for k in range(6):
        copy = folder / f"f{k}.nii"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(Path(NIB_DATA) / "functional.nii", copy)
        rows.append([copy.name, "a" if k % 2 else "b", f"P{k}", "MR"])
    for k in range(2):
        rows.append([os.fspath(_ct_series(folder / f"s{k}")), "a" if k else "b", f"S{k}", "CT"])
    with open(folder / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    data = {
        "dataset_kind": "clinical",
        "dataset_dir": os.fspath(folder),
        "dataset_options": {"slices": "none", "time_point": 0},
    }
    spacing = [4.0, 4.0, 4.0]
    wf = workflow("pgnm_pretrain", "train", bundle_root=os.fspath(tmp_path / "wf"), spacing=spacing, **data, **V3)
    wf.initialize()
    items = load_datalist("clinical", os.fspath(folder), split="all", slices="none", time_point=0).items
    chains = {
        "train#preprocessing": train_transforms(image_size=16, channels=1, spatial_dims=3, spacing=spacing),
        "validate#preprocessing": eval_transforms(image_size=16, channels=1, spatial_dims=3, spacing=spacing),
    }
    plain = eval_transforms(image_size=16, channels=1, spatial_dims=3)
    for name, python_chain in chains.items():
        config_chain = wf.parser.get_parsed_content(name)
        for chain in (config_chain, python_chain):
            chain.set_random_state(seed=3)
        for item in items:
            a, b = config_chain(dict(item))["image"], python_chain(dict(item))["image"]
            assert a.shape == (1, 16, 16, 16) and torch.equal(a, b), name
    assert not torch.equal(chains["validate#preprocessing"](dict(items[0]))["image"], plain(dict(items[0]))["image"])
    wf.finalize()
    root = tmp_path / "run"
    run_bundle(
        "pgnm_pretrain", "train", bundle_root=os.fspath(root), arm="pgnm", epochs=1, spacing=spacing, **data,
        **{**V3, "batch_size": 2},
    )  # fmt: skip
    assert (root / "models" / "model.pt").is_file()


def test_pgnm_run_on_volumes(tmp_path):
    """``pgnm run`` in 3D: whole NIfTI volumes from a clinical CSV, resampled to 4 mm, both arms end to end."""
    from pgnm_monai.cli import main

    folder = tmp_path / "volumes"
    folder.mkdir()
    rows = [["path", "label", "patient_id", "modality"]]
    for k in range(16):
        source = Path(NIB_DATA) / ("functional.nii" if k % 2 else "anatomical.nii")
        shutil.copy(source, folder / f"v{k}.nii")
        rows.append([f"v{k}.nii", "a" if k % 2 else "b", f"P{k}", "MR"])
    with open(folder / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path / "out"
    args = ["--spatial-dims", "3", "--grid", "4", "--spacing", "4", "--network", "small", "--image-size", "16"]
    args += ["--dataset-kind", "clinical", "--dataset-dir", os.fspath(folder)]
    args += ["--dataset-options", '{"slices": "none", "time_point": 0}']
    assert main(["run", "--output-dir", os.fspath(out), "--pretrain-epochs", "1", "--finetune-epochs", "2", *args]) == 0
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert sorted(r["arm"] for r in rows) == ["none", "pgnm"]
    policy = torch.load(out / "pretrain_pgnm" / "models" / "policy.pt", weights_only=True)
    assert policy["base_alpha"].shape == (1, 4**3)
    predictions = (out / "finetune_pgnm" / "eval" / "predictions.csv").read_text().splitlines()
    assert len(predictions) - 1 == int(rows[0]["n_test"]) > 0  # one prediction per test volume
