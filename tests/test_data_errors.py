"""Bad input: one clear error naming the path/field, and nothing half-written (no partial output, no temp file)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path as NIB_DATA
from PIL import Image
from pydicom.data.data_manager import DATA_ROOT

from pgnm_monai.atomic_files import atomic_write_text
from pgnm_monai.data import KINDS, load_datalist, loader_options, parse_options, save_class_map
from pgnm_monai.data.io import read_image
from pgnm_monai.data.schema import load_class_map

PYDICOM_FILES = Path(DATA_ROOT) / "test_files"


def _files(d: Path) -> set[str]:
    return {os.path.relpath(p, d) for p in d.rglob("*")} if d.exists() else set()


def _png(path: Path, value: int = 0, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8) if value < 0 else None
    Image.fromarray(arr if arr is not None else np.full((16, 16), value, np.uint8)).save(path)


def _csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"image folder root \S*nope does not exist"):
        load_datalist("image_folder", str(missing), split="train", split_file=str(tmp_path / "split.csv"))
    assert _files(tmp_path) == set()


def test_empty_class_folder(tmp_path):
    root = tmp_path / "tree"
    _png(root / "a" / "1.png", -1)
    (root / "b").mkdir()
    sf = tmp_path / "split.csv"
    with pytest.raises(ValueError, match=r"class folder .*tree/b holds no image"):
        load_datalist("image_folder", str(root), split="train", split_file=str(sf))
    assert not sf.exists() and _files(tmp_path) == {"tree", "tree/a", "tree/a/1.png", "tree/b"}


def test_csv_row_names_missing_file(tmp_path):
    c = _csv(
        tmp_path / "labels.csv", ["path", "label"], [[str(PYDICOM_FILES / "CT_small.dcm"), "a"], ["gone.dcm", "b"]]
    )
    with pytest.raises(FileNotFoundError, match=r"labels.csv, line 3: file .*gone.dcm"):
        load_datalist("clinical", str(c), split="all")
    assert _files(tmp_path) == {"labels.csv"}


def test_csv_wrong_columns(tmp_path):
    _csv(tmp_path / "labels.csv", ["file", "diagnosis"], [[str(PYDICOM_FILES / "CT_small.dcm"), "a"]])
    with pytest.raises(ValueError, match=r"labels.csv: missing column\(s\) \['path', 'label'\]"):
        load_datalist("clinical", str(tmp_path), split="all")
    assert _files(tmp_path) == {"labels.csv"}


def test_truncated_dicom(tmp_path):
    bad = tmp_path / "MR_truncated.dcm"
    shutil.copy(PYDICOM_FILES / "MR_truncated.dcm", bad)
    c = _csv(tmp_path / "labels.csv", ["path", "label"], [["MR_truncated.dcm", "x"]])
    with pytest.raises(ValueError, match=r"DICOM file .*MR_truncated.dcm cannot be read"):
        load_datalist("clinical", str(c), split="all")
    assert _files(tmp_path) == {"labels.csv", "MR_truncated.dcm"}


def test_corrupt_dicom_bytes(tmp_path):
    bad = tmp_path / "cut.dcm"
    bad.write_bytes((PYDICOM_FILES / "CT_small.dcm").read_bytes()[:300])
    with pytest.raises(ValueError, match=r"DICOM file \S*cut\.dcm cannot be read"):
        read_image(str(bad), "CT")
    c = _csv(tmp_path / "labels.csv", ["path", "label"], [["cut.dcm", "x"]])
    with pytest.raises(ValueError, match=r"DICOM file \S*cut\.dcm holds no image \(no Rows/Columns\)"):
        load_datalist("clinical", str(c), split="all")


def test_nifti_unsupported_dims(tmp_path):
    f = tmp_path / "five_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2, 2), np.float32), np.eye(4)), f)
    c = _csv(tmp_path / "labels.csv", ["path", "label", "modality"], [["five_d.nii.gz", "x", "MR"]])
    with pytest.raises(ValueError, match=r"five_d.nii.gz .*unsupported dimensions \(4, 4, 3, 2, 2\)"):
        load_datalist("clinical", str(c), split="all")
    with pytest.raises(ValueError, match=r"five_d.nii.gz: unsupported dimensions"):
        read_image(str(f), "MR", slice_index=0)


def test_label_not_in_class_map(tmp_path):
    root = tmp_path / "refined"
    _png(root / "train" / "CT__abdomen__cyst" / "1.png", -1)
    _png(root / "train" / "US__nodule" / "1.png", -1, seed=1)
    cmap = tmp_path / "class_map.json"
    save_class_map(cmap, ["CT__abdomen__cyst"])
    before = cmap.read_text()
    with pytest.raises(ValueError, match=r"\['US__nodule'\] are not in the class map .*class_map.json"):
        load_datalist("radimagenet", str(root), split="train", class_map=str(cmap))
    assert cmap.read_text() == before and not [p for p in _files(tmp_path) if p.endswith(".tmp")]


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"image file .*broken.png cannot be read"):
        read_image(str(bad))
    # RadImageNet reports it instead of crashing; the flag drops it
    root = tmp_path / "refined"
    _png(root / "train" / "MR__knee__tear" / "ok.png", -1)
    shutil.copy(bad, root / "train" / "MR__knee__tear" / "broken.png")
    with pytest.warns(UserWarning, match="defective"):
        dl = load_datalist("radimagenet", str(root), split="train", drop_defective=True)
    assert [Path(p).name for p, _ in dl.report["unreadable"]] == ["broken.png"] and len(dl) == 1


def test_unknown_dataset_kind():
    with pytest.raises(ValueError, match=r"dataset kind must be one of .*got .radimagenet21k.; did you mean") as e:
        load_datalist("radimagenet21k", "/tmp")
    assert all(repr(kind) in str(e.value) for kind in KINDS)  # the known kinds, listed
    for where in (lambda k: loader_options(k), lambda k: parse_options(k, {})):
        with pytest.raises(ValueError, match=r"got 'nifti_folder'"):
            where("nifti_folder")
    with pytest.raises(ValueError, match=r"dataset kind 'mednist' needs dataset_dir"):
        load_datalist("mednist")


def test_npz_missing_keys(tmp_path):
    f = tmp_path / "breastmnist.npz"
    np.savez(f, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"breastmnist.npz is missing key\(s\) \['val_images', 'val_labels'\]"):
        load_datalist("medmnist", str(f), split="val")
    assert len(load_datalist("medmnist", str(f), split="train")) == 2


def test_npz_multilabel_rejected(tmp_path):
    f = tmp_path / "chestmnist.npz"
    np.savez(f, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 14), np.int64))
    with pytest.raises(ValueError, match=r"chestmnist.npz: train_labels has shape \(2, 14\)"):
        load_datalist("medmnist", str(f), split="train")


def test_mednist_corrupt_tarball_leaves_nothing(tmp_path):
    tgz = tmp_path / "MedNIST.tar.gz"
    src = tmp_path / "src" / "MedNIST" / "Hand"
    _png(src / "000000.png", -1)
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(src.parent, arcname="MedNIST")
    tgz.write_bytes(tgz.read_bytes()[:60])  # truncated
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"MedNIST tarball .*MedNIST.tar.gz cannot be extracted"):
        load_datalist("mednist", str(tgz), cache_dir=str(cache))
    assert _files(cache) == set()


def test_mednist_unknown_class_folder(tmp_path):
    root = tmp_path / "MedNIST"
    _png(root / "Hand" / "0.jpeg", -1)
    _png(root / "Pelvis" / "0.jpeg", -1, seed=2)
    with pytest.raises(ValueError, match=r"MedNIST folder .*Pelvis: class 'Pelvis' is not in the class map"):
        load_datalist("mednist", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert _files(tmp_path / "cache") == set()


def test_class_map_malformed(tmp_path):
    f = tmp_path / "class_map.json"
    f.write_text(json.dumps({"classes": ["a"]}))
    with pytest.raises(ValueError, match=r"class_map.json: field 'class_names'"):
        load_class_map(f)
    with pytest.raises(FileNotFoundError, match=r"missing.json"):
        load_class_map(tmp_path / "missing.json")


def test_radimagenet_csv_names_missing_file(tmp_path):
    root = tmp_path / "rin"
    _png(root / "radiology_ai" / "US" / "nodule" / "a.png", -1)
    for s in ("train", "val", "test"):
        _csv(root / f"RadiologyAI_{s}.csv", ["filename", "label"], [["radiology_ai/US/nodule/zzz.png", "US-nodule"]])
    with pytest.raises(
        FileNotFoundError, match=r"RadiologyAI_train.csv, line 2: file 'radiology_ai/US/nodule/zzz.png'"
    ):
        load_datalist("radimagenet", str(root), split="train", class_map=str(tmp_path / "cm.json"))


def test_radimagenet_bad_class_folder_name(tmp_path):
    _png(tmp_path / "train" / "CT-abdomen-cyst" / "1.png", -1)
    with pytest.raises(ValueError, match=r"class folder 'CT-abdomen-cyst'"):
        load_datalist("radimagenet", str(tmp_path), split="train")


def test_volume_without_slice_index(tmp_path):
    with pytest.raises(ValueError, match=r"anatomical.nii is a volume .*'slice_index'"):
        read_image(os.path.join(NIB_DATA, "anatomical.nii"), "MR")


def test_dicom_series_folder_without_dicom(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    c = _csv(tmp_path / "labels.csv", ["path", "label"], [["series", "x"]])
    with pytest.raises(ValueError, match=r"DICOM series folder .*series contains no DICOM file"):
        load_datalist("clinical", str(c), split="all")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "split.csv"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "a,b\n")
    assert _files(tmp_path / "out") == set()
