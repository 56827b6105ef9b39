"""Every source on real files: MedNIST/MedMNIST/brain-tumour MRI from ../shared/data (skipped when absent),
RadImageNet layouts built from real MedNIST JPEGs, clinical DICOM/NIfTI from the files pydicom/nibabel ship."""

from __future__ import annotations

import csv
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.data.data_manager import DATA_ROOT

from pgnm_monai.data import load_class_map, load_datalist
from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.transforms import eval_transforms, train_transforms

SHARED = shared_data_dir()
MEDNIST_TGZ = SHARED / "mednist" / "MedNIST.tar.gz"
MEDMNIST = SHARED / "medmnist"
BRAIN = SHARED / "brain_tumor_mri_4class"
PYDICOM_FILES = Path(DATA_ROOT) / "test_files"


def test_a_kind_is_one_registration():
    """KINDS is the registry's keys; every loader of the source modules is registered, under the kind its
    datalists carry; and a kind registered later is loadable by name, its options those of its loader."""
    import importlib
    import inspect
    import pkgutil

    import pgnm_monai.data as data
    from pgnm_monai.data import KINDS, LOADERS, Datalist, loader_options, make_item, register_kind

    assert list(KINDS) == list(LOADERS) and len(KINDS) == len(set(KINDS)) and "embedded" in KINDS
    loaders = set()
    for info in pkgutil.iter_modules(data.__path__):
        module = importlib.import_module(f"pgnm_monai.data.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and name.startswith("load_"):
                loaders |= {fn} if inspect.signature(fn).return_annotation == "Datalist" else set()
    assert loaders == set(LOADERS.values())
    for kind, loader in LOADERS.items():  # the kind its datalists carry is the name it is registered under
        assert f'kind="{kind}"' in inspect.getsource(loader), kind

    @register_kind("tiny")
    def load_tiny(split: str = "train", seed: int = 0, n: int = 1) -> Datalist:
        items = [make_item(np.zeros((4, 4), np.uint8), 0, "a", "other") for _ in range(n)]
        return Datalist(items, ["a"], kind="tiny", split=split)

    try:
        assert "tiny" in KINDS and loader_options("tiny") == {"n": 1}
        assert len(load_datalist("tiny", split="val", n=2)) == 2
        with pytest.raises(ValueError, match="already registered"):
            register_kind("tiny")(lambda split="train", seed=0: None)
    finally:
        del LOADERS["tiny"]
    assert "tiny" not in KINDS


def need(path: Path):
    if not path.exists():
        pytest.skip(f"real data {path} is absent (set PGNM_SHARED_DATA or provide ../shared/data)")


@pytest.fixture(scope="module")
def mednist_cache(tmp_path_factory):
    need(MEDNIST_TGZ)
    cache = tmp_path_factory.mktemp("mednist_cache")
    dl = load_datalist("mednist", str(MEDNIST_TGZ), split="train", seed=0, cache_dir=str(cache))
    return cache, dl


@pytest.fixture(scope="module")
def mednist_jpegs(tmp_path_factory):
    """A few real MedNIST JPEGs per class, extracted from the tarball (no full extraction)."""
    need(MEDNIST_TGZ)
    out = tmp_path_factory.mktemp("mednist_few")
    want = {"AbdomenCT": 4, "HeadCT": 4, "BreastMRI": 4, "CXR": 4}
    got: dict[str, list[Path]] = {c: [] for c in want}
    with tarfile.open(MEDNIST_TGZ) as tf:
        for m in tf:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 2 and parts[-2] in want and len(got[parts[-2]]) < want[parts[-2]]:
                dst = out / parts[-2] / parts[-1]
                dst.parent.mkdir(exist_ok=True)
                dst.write_bytes(tf.extractfile(m).read())
                got[parts[-2]].append(dst)
                if all(len(v) == want[k] for k, v in got.items()):
                    break
    return got


@pytest.mark.slow
def test_mednist_tarball_split_saved_and_reused(mednist_cache):
    cache, train = mednist_cache
    assert train.class_names == ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
    sf = Path(train.report["split_file"])
    assert sf.is_file() and (cache / "MedNIST" / ".complete").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".mednist-")]  # no half-extracted folder
    mod = {it["label_name"]: (it["modality"], it["anatomy"]) for it in train}
    assert mod["AbdomenCT"] == ("CT", "abdomen") and mod["CXR"] == ("X-ray", "chest")
    assert mod["BreastMRI"] == ("MR", "breast") and mod["Hand"] == ("X-ray", "hand")
    # the unpacked folder + the saved split give the same lists; splits are disjoint and cover everything
    splits = {
        s: load_datalist("mednist", str(cache / "MedNIST"), split=s, cache_dir=str(cache))
        for s in ("train", "val", "test")
    }
    assert [it["image"] for it in splits["train"]] == [it["image"] for it in train]
    paths = [set(it["image"] for it in d) for d in splits.values()]
    assert sum(map(len, paths)) == 58954 and len(set.union(*paths)) == 58954
    assert 0.65 < len(train) / 58954 < 0.75
    it = splits["test"][0]
    assert eval_transforms(image_size=32, channels=1)(it)["image"].shape == (1, 32, 32)


@pytest.mark.parametrize(
    "name,modality,n_train,n_classes",
    [("breastmnist", "US", 546, 2), ("pneumoniamnist", "X-ray", 4708, 2), ("retinamnist", "fundus", 1080, 5)],
)
def test_medmnist_2d(name, modality, n_train, n_classes):
    need(MEDMNIST / f"{name}.npz")
    dl = load_datalist("medmnist", str(MEDMNIST / f"{name}.npz"), split="train")
    assert len(dl) == n_train and dl.num_classes == n_classes and dl[0]["modality"] == modality
    assert isinstance(dl[0]["image"], np.ndarray)
    out = train_transforms(image_size=32, channels=3)(dl[0])["image"]
    assert out.shape == (3, 32, 32)
    test = load_datalist("medmnist", str(MEDMNIST), split="test", name=name)
    assert len(test) > 0 and test.class_names == dl.class_names


def test_medmnist_arrays_are_decompressed_once_per_file_version(tmp_path, monkeypatch):
    """A second load of a split reuses the read-only arrays; a rewritten file is read again; bounded."""
    from pgnm_monai.data import medmnist

    monkeypatch.setattr(medmnist, "_npz_cache", type(medmnist._npz_cache)())
    rng = np.random.default_rng(0)
    f = tmp_path / "tinymnist.npz"

    def write(offset: int) -> None:
        arrays = {}
        for s, n in (("train", 6), ("val", 2), ("test", 3)):
            arrays[f"{s}_images"] = rng.integers(0, 255, (n, 8, 8), dtype=np.uint8) + offset
            arrays[f"{s}_labels"] = np.arange(n)[:, None] % 2
        np.savez_compressed(f, **arrays)

    write(0)
    first = load_datalist("medmnist", str(f), split="train")
    again = load_datalist("medmnist", str(f), split="train")
    assert first[0]["image"].base is again[0]["image"].base is not None  # the same decompressed array
    with np.load(f) as npz:
        np.testing.assert_array_equal(np.stack([it["image"] for it in again]), npz["train_images"])
    assert not again[0]["image"].flags.writeable
    write(1)  # the same path, new contents (and size or modification time)
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    reread = load_datalist("medmnist", str(f), split="train")
    with np.load(f) as npz:
        np.testing.assert_array_equal(np.stack([it["image"] for it in reread]), npz["train_images"])
    assert len(medmnist._npz_cache) == 2
    monkeypatch.setattr(medmnist, "ARRAY_CACHE_BYTES", 0)  # nothing kept beyond the bound
    assert len(load_datalist("medmnist", str(f), split="test")) == 3 and not medmnist._npz_cache


def test_medmnist_3d_volume_and_slices():
    need(MEDMNIST / "adrenalmnist3d.npz")
    f = str(MEDMNIST / "adrenalmnist3d.npz")
    vol = load_datalist("medmnist", f, split="val")
    assert len(vol) == 98 and vol[0]["image"].shape == (28, 28, 28) and vol[0]["modality"] == "CT"
    assert eval_transforms(image_size=24, channels=1, spatial_dims=3)(vol[0])["image"].shape == (1, 24, 24, 24)
    mid = load_datalist("medmnist", f, split="val", slices="middle")
    assert len(mid) == 98 and mid[0]["slice_index"] == 14
    allsl = load_datalist("medmnist", f, split="val", slices="all")
    assert len(allsl) == 98 * 28
    assert eval_transforms(image_size=32, channels=1)(allsl[3])["image"].shape == (1, 32, 32)


def test_image_folder_brain_tumour_duplicates():
    need(BRAIN)
    kw = dict(modality="MR", anatomy="brain")
    test = load_datalist("image_folder", str(BRAIN), split="test", **kw)
    assert len(test) == 1311 and test.class_names == ["glioma", "meningioma", "notumor", "pituitary"]
    train = load_datalist("image_folder", str(BRAIN), split="train", **kw)
    val = load_datalist("image_folder", str(BRAIN), split="val", **kw)
    assert len(train) + len(val) == 5708 and not {i["image"] for i in train} & {i["image"] for i in val}
    clean = load_datalist("image_folder", str(BRAIN), split="test", drop_cross_split_duplicates=True, **kw)
    assert len(clean) == 1311 - 216
    assert sum("Testing" in p for p in clean.report["cross_split_duplicates"]) == 216


def test_image_folder_class_layout_seeded_split_saved(tmp_path, mednist_jpegs):
    root = tmp_path / "tree"
    for c, files in mednist_jpegs.items():
        (root / c).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / c / f.name)
    sf = tmp_path / "split.csv"
    a = load_datalist("image_folder", str(root), split="all", seed=3, split_file=str(sf), modality="other")
    assert len(a) == 16 and sf.is_file()
    tr = load_datalist("image_folder", str(root), split="train", seed=3, split_file=str(sf))
    te = load_datalist("image_folder", str(root), split="test", seed=3, split_file=str(sf))
    assert len(tr) > 0 and len(te) > 0 and not {i["image"] for i in tr} & {i["image"] for i in te}


def _refined_tree(root: Path, jpegs) -> None:
    names = {
        "AbdomenCT": "CT__abdomen__normal",
        "HeadCT": "CT__brain__normal",
        "BreastMRI": "MR__breast__mass",
        "CXR": "US__thyroid_nodule",
    }
    for c, files in jpegs.items():
        for i, f in enumerate(files):
            s = "train" if i < 2 else ("val" if i == 2 else "test")
            (root / s / names[c]).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / s / names[c] / f"{c}_{i}.png")


def test_radimagenet_refined_layout_and_class_map(tmp_path, mednist_jpegs):
    root = tmp_path / "refined"
    _refined_tree(root, mednist_jpegs)
    cmap = tmp_path / "ckpt" / "class_map.json"
    dl = load_datalist("radimagenet", str(root), split="train", class_map=str(cmap))
    assert dl.report["layout"] == "refined" and len(dl) == 8
    assert load_class_map(cmap) == dl.class_names == sorted(dl.class_names)
    us = [it for it in dl if it["modality"] == "US"]
    assert us and us[0]["anatomy"] == "unknown" and us[0]["label_name"] == "US__thyroid_nodule"
    ct = [it for it in dl if it["label_name"] == "CT__brain__normal"]
    assert ct[0]["modality"] == "CT" and ct[0]["anatomy"] == "brain"
    again = load_datalist("radimagenet", str(root), split="test", class_map=str(cmap))
    assert again.class_names == dl.class_names


def test_radimagenet_original_layout_with_csvs_and_defects(tmp_path, mednist_jpegs):
    root = tmp_path / "rin"
    rows = {"train": [], "val": [], "test": []}
    layout = {"AbdomenCT": "CT/abdomen/normal", "HeadCT": "MR/brain/normal", "CXR": "US/thyroid_nodule"}
    for c, sub in layout.items():
        d = root / "radiology_ai" / sub
        d.mkdir(parents=True)
        for i, f in enumerate(mednist_jpegs[c]):
            shutil.copy(f, d / f"{c}_{i}.png")
            s = "train" if i < 2 else ("val" if i == 2 else "test")
            rows[s].append((f"radiology_ai/{sub}/{c}_{i}.png", sub.replace("/", "-")))
    # defects: a blank image and an exact duplicate in train
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "radiology_ai/CT/abdomen/normal/blank.png")
    shutil.copy(
        root / "radiology_ai/CT/abdomen/normal/AbdomenCT_0.png", root / "radiology_ai/CT/abdomen/normal/dup.png"
    )
    rows["train"] += [
        ("radiology_ai/CT/abdomen/normal/blank.png", "x"),
        ("radiology_ai/CT/abdomen/normal/dup.png", "x"),
    ]
    for s, r in rows.items():
        with open(root / f"RadiologyAI_{s}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["filename", "label"])
            w.writerows(r)
    with pytest.warns(UserWarning, match="defective"):
        dl = load_datalist("radimagenet", str(root), split="train")
    assert dl.report["layout"] == "original" and dl.report["split_source"] == "csv"
    assert len(dl) == 8 and dl.class_names == ["CT__abdomen__normal", "MR__brain__normal", "US__thyroid_nodule"]
    assert [Path(p).name for p in dl.report["blank"]] == ["blank.png"]
    assert [Path(b).name for _, b in dl.report["duplicates"]] == ["dup.png"]
    with pytest.warns(UserWarning):
        kept = load_datalist("radimagenet", str(root), split="train", drop_defective=True)
    assert len(kept) == 6 and kept.report["dropped"] == 2
    assert {it["modality"] for it in kept} == {"CT", "MR", "US"}
    assert len(load_datalist("radimagenet", str(root), split="val")) == 3


def test_clinical_dicom_nifti_slices_and_chain(clinical_csv):
    csv_path = clinical_csv
    dl = load_datalist("clinical", str(csv_path), split="all", slices="all", time_point=0)
    assert dl.class_names == ["lesion", "normal"]
    by = {}
    for it in dl:
        by.setdefault(Path(it["image"]).name, []).append(it)
    assert len(by["series_ct"]) == 4 and by["series_ct"][0]["modality"] == "CT"
    assert len(by["anatomical.nii"]) == 25 and len(by["examples_ybr_color.dcm"]) == 30
    assert by["examples_rgb_color.dcm"][0]["modality"] == "US" and by["MR_small.dcm"][0]["modality"] == "MR"
    mid = load_datalist("clinical", str(csv_path), split="all", slices="middle", time_point=0)
    assert len(mid) == 7
    k3 = load_datalist("clinical", str(csv_path), split="all", slices="every_k", every_k=3, time_point=0)
    assert len([i for i in k3 if i["image"].endswith("anatomical.nii")]) == 9
    chain = eval_transforms(image_size=32, channels=1)
    for name in ("series_ct", "anatomical.nii", "examples_ybr_color.dcm", "CT_small.dcm"):
        out = chain(by[name][1] if len(by[name]) > 1 else by[name][0])["image"]
        assert out.shape == (1, 32, 32) and torch.isfinite(out).all()
    # CT windowing: HU in [40 - 200, 40 + 200] maps to [0, 1] before normalisation
    raw = eval_transforms(image_size=32, channels=1, mean=0.0, std=1.0)(by["CT_small.dcm"][0])["image"]
    assert -1e-5 <= float(raw.min()) and float(raw.max()) <= 1.0 + 1e-5


def test_clinical_split_by_patient(clinical_csv):
    csv_path = clinical_csv
    parts = {
        s: load_datalist("clinical", str(csv_path), split=s, seed=1, slices="all", time_point=0)
        for s in ("train", "val", "test")
    }
    pids = {s: {i["patient_id"] for i in d} for s, d in parts.items()}
    assert not (pids["train"] & pids["val"]) and not (pids["train"] & pids["test"]) and not (pids["val"] & pids["test"])
    # P1's series slices and its single file stay together
    p1 = [s for s, p in pids.items() if "P1" in p]
    assert len(p1) == 1
    assert sum(len(d) for d in parts.values()) == len(
        load_datalist("clinical", str(csv_path), split="all", slices="all", time_point=0)
    )


def test_clinical_volumes_kept_whole(clinical_csv, tmp_path):
    """``slices="none"``: one 3D item per volume (DICOM series, NIfTI, a 4D NIfTI's time point ``time_point``),
    split by patient; a 2D file in the CSV is refused naming its line."""
    csv_path = clinical_csv
    with pytest.raises(ValueError, match=r"line 3: .*MR_small.dcm is not a volume"):
        load_datalist("clinical", str(csv_path), split="all", slices="none", time_point=0)
    volumes = tmp_path / "volumes.csv"
    with open(csv_path) as src, open(volumes, "w", newline="") as dst:
        keep = [r for r in csv.reader(src) if r[0] == "path" or r[0].endswith(("series_ct", ".nii", ".nii.gz"))]
        csv.writer(dst).writerows(keep)
    dl = load_datalist("clinical", str(volumes), split="all", slices="none", time_point=0)
    assert sorted(Path(it["image"]).name for it in dl) == ["anatomical.nii", "example4d.nii.gz", "series_ct"]
    assert all(it["slice_index"] == -1 for it in dl)
    assert [it["frame_index"] for it in dl if it["image"].endswith("example4d.nii.gz")] == [0]
    chain = eval_transforms(image_size=16, channels=1, spatial_dims=3)
    for item in dl:
        out = chain(dict(item))["image"]
        assert out.shape == (1, 16, 16, 16) and torch.isfinite(out).all()
    parts = [
        load_datalist("clinical", str(volumes), split=s, slices="none", time_point=0) for s in ("train", "val", "test")
    ]
    assert sum(len(p) for p in parts) == 3
