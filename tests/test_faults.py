"""Fault injection: bad input goes through the public entry points and each outcome is asserted.

Data (``load_datalist``, ``bundle.load_data``, ``LoadMedicalImage``), one case per kind of fault; an
error case asserts the type, the file/split/line/value named in the message and that nothing was written; a
skip case asserts the warning naming the path and what was left out.

Errors:
- MedMNIST: a stray label in train (unknown set), a stray label in val (known set), a negative label, a
  float label 1.5, NaN pixels in a float image array; the stray label through ``bundle.load_data``.
- Image folders: class folders differing only in case, a test-only class folder, two folders for one split,
  a class outside the declared class map, a split file moving a Training image to test, a split file
  giving one image two splits.
- RadImageNet: an image listed in two split CSVs, class folders differing only in case.
- Clinical CSV: labels differing only in case, a float label, one file with two labels, modality ``ct``, a
  UTF-16 (NUL bytes) CSV, a row with an unquoted comma, NaN pixels in a listed NIfTI, a FIFO listed as an
  image, the CSV itself a FIFO, a DICOM series folder holding a FIFO.
- ``LoadMedicalImage``: a FIFO named ``.png``, a float TIFF with +Inf.

Skipped with a warning naming the path: a text file named ``.png``, a FIFO named ``.png``, a symlink to a
folder named ``.png``, a folder named ``.png``, an empty ``.png``, a broken symlink ``.png`` (image folder); a
text file named ``.jpeg`` (MedNIST), a text file named ``.png`` (RadImageNet); a repeated clinical row and a
repeated split-file row (used once).

Also checked: one label map for every split (MedMNIST, image folder, clinical), folder splits kept exactly
(Training/Testing: val from Training only, test is Testing), CSV encodings (UTF-8, UTF-8 with BOM, Latin-1),
whole-number float labels accepted, and the pixel rule of :mod:`pgnm_monai.data.io` on every Pillow pixel
type (8-bit, 16-bit, int32, float, palette, CMYK, LA, RGBA, 1-bit) and on NIfTI/DICOM.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data.data_manager import DATA_ROOT

from pgnm_monai.components import load_data
from pgnm_monai.data import load_datalist, save_class_map
from pgnm_monai.transforms import LoadMedicalImage

PYDICOM_FILES = Path(DATA_ROOT) / "test_files"


# ---- helpers ----


def _files(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed, nothing opened)."""
    out = set()
    for d, dirs, files in os.walk(root):
        out |= {os.path.relpath(os.path.join(d, n), root) for n in dirs + files}
    return out


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
    return path


def _tree(root: Path, counts: dict[str, int]) -> Path:
    """``{"Training/a": 3, ...}`` -> that many distinct PNGs in each folder."""
    seed = 0
    for folder, n in counts.items():
        for i in range(n):
            seed += 1
            _png(root / folder / f"{i}.png", seed)
    return root


def _nii(path: Path, arr: np.ndarray | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr is None:
        arr = np.random.default_rng(seed).normal(100, 20, (8, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    return path


def _csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _clinical(tmp: Path, labels: list[str], extra: dict[str, list[str]] | None = None) -> Path:
    """A labels CSV with one small NIfTI per row (``x<i>.nii.gz``) and the given labels."""
    extra = extra or {}
    rows = []
    for i, lab in enumerate(labels):
        _nii(tmp / f"x{i}.nii.gz", seed=i)
        rows.append([f"x{i}.nii.gz", lab, f"P{i}", *(v[i] for v in extra.values())])
    return _csv(tmp / "labels.csv", ["path", "label", "patient_id", *extra], rows)


def _npz(path: Path, images_dtype=np.uint8, nan_at: tuple[str, int] | None = None, **labels) -> Path:
    """A MedMNIST-style file: ``labels`` per split (default ``[0, 1]``), blank 4x4 images, one NaN at ``nan_at``."""
    arrays = {}
    for s in ("train", "val", "test"):
        y = np.asarray(labels.get(s, [0, 1]))
        arrays[f"{s}_labels"] = y.reshape(-1, 1)
        arrays[f"{s}_images"] = np.zeros((len(y), 4, 4), images_dtype)
    if nan_at is not None:
        arrays[f"{nan_at[0]}_images"][nan_at[1], 1, 1] = np.nan
    np.savez(path, **arrays)
    return path


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# ---- data (load_datalist) ----
# Each builder makes the bad input under ``tmp`` and returns (the call, the regex its error must match).

Case = Callable[[Path], tuple[Callable[[], object], str]]


def medmnist_stray_train_label(tmp):
    f = _npz(tmp / "mydata.npz", train=[0, 1, 7, 1, 0], val=[0, 1], test=[1, 0])
    return lambda: load_datalist("medmnist", str(f), split="val"), (
        r"mydata\.npz: train_labels row 2 \(split 'train'\) is 7, but class\(es\) \[2, 3, 4, 5, 6\] never occur"
    )


def medmnist_stray_val_label(tmp):
    f = _npz(tmp / "breastmnist.npz", train=[0, 1, 0], val=[0, 2], test=[1, 0])
    return lambda: load_datalist("medmnist", str(f), split="train"), (
        r"breastmnist\.npz: val_labels row 1 \(split 'val'\) is 2, outside 0\.\.1"
    )


def medmnist_negative_label(tmp):
    f = _npz(tmp / "pneumoniamnist.npz", train=[0, 1], val=[0, 1], test=[-1, 0])
    return lambda: load_datalist("medmnist", str(f), split="test"), (
        r"pneumoniamnist\.npz: test_labels row 0 \(split 'test'\) is -1, outside 0\.\.1"
    )


def medmnist_float_label(tmp):
    f = _npz(tmp / "mydata.npz", train=[0.0, 1.0, 1.0], val=[1.5, 0.0], test=[0.0, 1.0])
    return lambda: load_datalist("medmnist", str(f), split="train"), (
        r"mydata\.npz: val_labels row 0 \(split 'val'\) is 1\.5; labels must be whole numbers"
    )


def medmnist_nan_pixels(tmp):
    f = _npz(tmp / "mydata.npz", np.float32, train=[0, 1], val=[0, 1], test=[0, 1], nan_at=("test", 1))
    return lambda: load_datalist("medmnist", str(f), split="test"), (
        r"mydata\.npz: test_images row 1 \(split 'test'\) has NaN or infinite pixel values"
    )


def load_data_medmnist_stray_label(tmp):
    f = _npz(tmp / "mydata.npz", train=[0, 1, 1], val=[0, 1], test=[0, 3])
    return lambda: load_data("medmnist", str(f), split="train"), (
        r"mydata\.npz: test_labels row 1 \(split 'test'\) is 3, outside 0\.\.1 \(the classes of split 'train'\)"
    )


def folder_class_case_only(tmp):
    root = _tree(tmp / "brain", {"Training/Glioma": 2, "Training/meningioma": 2, "Testing/glioma": 1})
    sf = tmp / "split.csv"
    return lambda: load_datalist("image_folder", str(root), split="train", split_file=str(sf)), (
        r"class names 'glioma' \(folder \S*Testing/glioma, split 'test'\) and 'Glioma' \(folder"
        r" \S*Training/Glioma, split 'train'\) differ only in case"
    )


def folder_class_only_in_test(tmp):
    root = _tree(tmp / "brain", {"Training/a": 2, "Training/b": 2, "Testing/a": 1, "Testing/pituitry": 1})
    return lambda: load_datalist("image_folder", str(root), split="test", split_file=str(tmp / "split.csv")), (
        r"class 'pituitry' \(folder \S*Testing/pituitry, split 'test'\) has no class folder in split 'train'"
    )


def folder_two_folders_one_split(tmp):
    root = _tree(tmp / "brain", {"train/a": 2, "Training/a": 2, "Testing/a": 1})
    return lambda: load_datalist("image_folder", str(root), split="train"), (
        r"brain: folders 'Training' and 'train' both name split 'train'"
    )


def folder_class_outside_class_map(tmp):
    root = _tree(tmp / "brain", {"Training/a": 2, "Training/b": 2, "Testing/c": 1})
    cmap = Path(save_class_map(tmp / "class_map.json", ["a", "b"]))
    return lambda: load_datalist("image_folder", str(root), split="val", class_map=str(cmap)), (
        r"class 'c' \(folder \S*Testing/c, split 'test'\) is not in the class map \S*class_map\.json"
    )


def folder_split_file_moves_train_to_test(tmp):
    root = _tree(tmp / "brain", {"Training/a": 4, "Testing/a": 1})
    sf = tmp / "split.csv"
    load_datalist("image_folder", str(root), split="train", split_file=str(sf))
    text = sf.read_text().splitlines()
    line = next(i for i, t in enumerate(text) if "Training" in t and t.endswith(",train"))
    text[line] = text[line][: -len("train")] + "test"
    sf.write_text("\n".join(text) + "\n")
    return lambda: load_datalist("image_folder", str(root), split="test", split_file=str(sf)), (
        rf"split\.csv, line {line + 1}: \S*Training/a/\d\.png is in the 'train' split folder but the file puts it"
        r" in split 'test'"
    )


def folder_split_file_contradiction(tmp):
    root = _tree(tmp / "tree", {"a": 4, "b": 4})
    sf = tmp / "split.csv"
    load_datalist("image_folder", str(root), split="train", split_file=str(sf))
    first = sf.read_text().splitlines()[1].split(",")
    other = "test" if first[2] != "test" else "train"
    with open(sf, "a") as fh:
        fh.write(f"{first[0]},{first[1]},{other}\n")
    return lambda: load_datalist("image_folder", str(root), split="train", split_file=str(sf)), (
        rf"split\.csv: \S*/0\.png is in split '{first[2]}' on line 2 and '{other}' on line 10"
    )


def radimagenet_image_in_two_split_csvs(tmp):
    root = tmp / "rin"
    for i, n in enumerate(("a", "b", "c")):
        _png(root / "radiology_ai" / "US" / "nodule" / f"{n}.png", i)
    for s, name in (("train", "a"), ("val", "b"), ("test", "a")):
        _csv(root / f"RadiologyAI_{s}.csv", ["filename", "label"], [[f"radiology_ai/US/nodule/{name}.png", "x"]])
    return lambda: load_datalist("radimagenet", str(root), split="train", check_defects=False), (
        r"list \S*nodule/a\.png twice: \S*RadiologyAI_train\.csv, line 2 and \S*RadiologyAI_test\.csv, line 2"
    )


def radimagenet_class_case_only(tmp):
    root = _tree(tmp / "refined", {"train/CT__abdomen__cyst": 2, "val/CT__Abdomen__cyst": 1})
    return lambda: load_datalist("radimagenet", str(root), split="val", check_defects=False), (
        r"'CT__abdomen__cyst' \(folder \S*train/CT__abdomen__cyst, split 'train'\) and 'CT__Abdomen__cyst'"
        r" \(folder \S*val/CT__Abdomen__cyst, split 'val'\) differ only in case"
    )


def clinical_label_case_only(tmp):
    c = _clinical(tmp, ["CT", "MR", "ct", "MR"])
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"labels\.csv, field 'label': class names 'CT' \(line 2\) and 'ct' \(line 4\) differ only in case"
    )


def clinical_float_label(tmp):
    c = _clinical(tmp, ["0", "1", "1.5", "0"])
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"labels\.csv, line 4: field 'label' is '1\.5'; numeric labels must be whole numbers"
    )


def clinical_one_file_two_labels(tmp):
    c = _clinical(tmp, ["a", "b", "c"])
    with open(c, "a") as fh:
        fh.write("x0.nii.gz,b,P0\n")
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"labels\.csv: file 'x0\.nii\.gz' is listed on line 2 with label 'a' and on line 5 with label 'b'"
    )


def clinical_modality_wrong_case(tmp):
    c = _clinical(tmp, ["a", "b"], {"modality": ["MR", "ct"]})
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"labels\.csv, line 3: field 'modality' is 'ct', expected one of .* \(did you mean 'CT'\?\)"
    )


def clinical_csv_utf16_without_bom(tmp):
    _nii(tmp / "x0.nii.gz")
    c = tmp / "labels.csv"
    c.write_bytes("path,label\nx0.nii.gz,a\n".encode("utf-16-le"))
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"clinical labels CSV \S*labels\.csv holds NUL characters"
    )


def clinical_csv_unquoted_comma(tmp):
    c = _clinical(tmp, ["a", "b"])
    with open(c, "a") as fh:
        fh.write("scan,2.nii.gz,a,P9\n")
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"labels\.csv, line 4: 4 fields but the header has 3"
    )


def clinical_nan_pixels(tmp):
    c = _clinical(tmp, ["a", "b"])
    arr = np.ones((8, 8), np.float32)
    arr[2, 3] = np.nan
    _nii(tmp / "x1.nii.gz", arr)
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"image file \S*x1\.nii\.gz: 1 of 64 pixel values are NaN or infinite"
    )


def clinical_fifo_listed(tmp):
    c = _clinical(tmp, ["a", "b"])
    os.remove(tmp / "x1.nii.gz")
    _fifo(tmp / "x1.nii.gz")
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"labels\.csv, line 3: \S*x1\.nii\.gz is a FIFO \(named pipe\), not a regular file; refused"
    )


def clinical_csv_is_fifo(tmp):
    c = _fifo(tmp / "labels.csv")
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"clinical labels CSV \S*labels\.csv is a FIFO \(named pipe\), not a regular file"
    )


def clinical_series_folder_with_fifo(tmp):
    series = tmp / "series"
    series.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", series / "1.dcm")
    _fifo(series / "pipe.dcm")
    c = _csv(tmp / "labels.csv", ["path", "label"], [["series", "a"]])
    return lambda: load_datalist("clinical", str(c), split="all"), (
        r"DICOM series folder \S*series: entry \S*pipe\.dcm is a FIFO \(named pipe\), not a regular file"
    )


def load_image_fifo(tmp):
    p = _fifo(tmp / "pipe.png")
    return lambda: LoadMedicalImage()(str(p)), r"image file \S*pipe\.png is a FIFO \(named pipe\), not a regular file"


def load_image_inf_float_tiff(tmp):
    arr = np.ones((4, 4), np.float32)
    arr[0, 0] = np.inf
    p = tmp / "inf.tif"
    Image.fromarray(arr).save(p)
    return lambda: LoadMedicalImage()(str(p)), r"image file \S*inf\.tif: 1 of 16 pixel values are NaN or infinite"


ERROR_CASES: list[tuple[Case, type[Exception]]] = [
    (medmnist_stray_train_label, ValueError),
    (medmnist_stray_val_label, ValueError),
    (medmnist_negative_label, ValueError),
    (medmnist_float_label, ValueError),
    (medmnist_nan_pixels, ValueError),
    (load_data_medmnist_stray_label, ValueError),
    (folder_class_case_only, ValueError),
    (folder_class_only_in_test, ValueError),
    (folder_two_folders_one_split, ValueError),
    (folder_class_outside_class_map, ValueError),
    (folder_split_file_moves_train_to_test, ValueError),
    (folder_split_file_contradiction, ValueError),
    (radimagenet_image_in_two_split_csvs, ValueError),
    (radimagenet_class_case_only, ValueError),
    (clinical_label_case_only, ValueError),
    (clinical_float_label, ValueError),
    (clinical_one_file_two_labels, ValueError),
    (clinical_modality_wrong_case, ValueError),
    (clinical_csv_utf16_without_bom, ValueError),
    (clinical_csv_unquoted_comma, ValueError),
    (clinical_nan_pixels, ValueError),
    (clinical_fifo_listed, ValueError),
    (clinical_csv_is_fifo, ValueError),
    (clinical_series_folder_with_fifo, ValueError),
    (load_image_fifo, ValueError),
    (load_image_inf_float_tiff, ValueError),
]


@pytest.mark.timeout(60)  # a loader that opens a FIFO would block: fail instead of hanging
@pytest.mark.parametrize("build,error", [pytest.param(b, e, id=b.__name__.replace("_", "-")) for b, e in ERROR_CASES])
def test_bad_input_is_refused_by_name(tmp_path, build, error):
    call, pattern = build(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(error, match=pattern):
        call()
    assert _files(tmp_path) == before  # no partial output (split file, class map, temp file)


# Each builder returns (the call, the regex of the warning, a check of the result).


def _folder_with(tmp, bad: Callable[[Path], None]):
    root = _tree(tmp / "tree", {"a": 3, "b": 3})
    bad(root / "a" / "bad.png")
    return lambda: load_datalist("image_folder", str(root), split="all", split_file=str(tmp / "split.csv"))


def _no_bad(dl) -> None:
    assert len(dl) == 6 and not any(it["image"].endswith("bad.png") for it in dl)


def folder_text_file_named_png(tmp):
    call = _folder_with(tmp, lambda p: p.write_text("not an image"))
    return call, r"\S*a/bad\.png is not a PNG, JPEG, BMP, TIFF or GIF image \(it starts with b'not an i'\)", _no_bad


def folder_fifo_named_png(tmp):
    call = _folder_with(tmp, _fifo)
    return call, r"\S*a/bad\.png is a FIFO \(named pipe\), not a regular file", _no_bad


def folder_symlink_to_folder_named_png(tmp):
    call = _folder_with(tmp, lambda p: p.symlink_to(tmp / "tree" / "b", target_is_directory=True))
    return call, r"\S*a/bad\.png is a directory \(through a symbolic link\), not a regular file", _no_bad


def folder_folder_named_png(tmp):
    call = _folder_with(tmp, lambda p: p.mkdir())
    return call, r"\S*a/bad\.png is a directory, not a regular file", _no_bad


def folder_empty_png(tmp):
    call = _folder_with(tmp, lambda p: p.write_bytes(b""))
    return call, r"\S*a/bad\.png is empty", _no_bad


def folder_broken_symlink_png(tmp):
    call = _folder_with(tmp, lambda p: p.symlink_to(tmp / "gone.png"))
    return call, r"\S*a/bad\.png is a broken symbolic link", _no_bad


def mednist_text_file_named_jpeg(tmp):
    root = _tree(tmp / "MedNIST", {"Hand": 3, "HeadCT": 3})
    (root / "Hand" / "bad.jpeg").write_text("<html>404</html>")
    return (
        lambda: load_datalist("mednist", str(root), split="all", cache_dir=str(tmp / "cache")),
        r"MedNIST folder \S*MedNIST: skipped 1 path\(s\) .*Hand/bad\.jpeg is not a PNG",
        _no_bad_mednist,
    )


def _no_bad_mednist(dl) -> None:
    assert len(dl) == 6 and not any(it["image"].endswith("bad.jpeg") for it in dl)


def radimagenet_text_file_named_png(tmp):
    root = _tree(tmp / "refined", {"train/US__nodule": 2, "val/US__nodule": 1})
    (root / "train" / "US__nodule" / "bad.png").write_text("x")
    return (
        lambda: load_datalist("radimagenet", str(root), split="train"),
        r"RadImageNet class folder \S*US__nodule: skipped 1 path\(s\) .*bad\.png is not a PNG",
        lambda dl: len(dl) == 2 and dl.report["unreadable"] == [],
    )


def clinical_repeated_row(tmp):
    c = _clinical(tmp, ["a", "b", "a"])
    with open(c, "a") as fh:
        fh.write("x0.nii.gz,a,P0\n")
    return (
        lambda: load_datalist("clinical", str(c), split="all"),
        r"labels\.csv: 1 repeated row\(s\) used once: \['x0\.nii\.gz \(lines 2 and 5\)'\]",
        lambda dl: len(dl) == 3,
    )


def folder_split_file_repeated_row(tmp):
    root = _tree(tmp / "tree", {"a": 4, "b": 4})
    sf = tmp / "split.csv"
    load_datalist("image_folder", str(root), split="train", split_file=str(sf))
    with open(sf, "a") as fh:
        fh.write(sf.read_text().splitlines()[1] + "\n")
    return (
        lambda: load_datalist("image_folder", str(root), split="all", split_file=str(sf)),
        r"split\.csv: rows listed twice, used once: \['\S*/0\.png \(lines 2 and 10\)'\]",
        lambda dl: len(dl) == 8,
    )


WARNING_CASES = [
    folder_text_file_named_png,
    folder_fifo_named_png,
    folder_symlink_to_folder_named_png,
    folder_folder_named_png,
    folder_empty_png,
    folder_broken_symlink_png,
    mednist_text_file_named_jpeg,
    radimagenet_text_file_named_png,
    clinical_repeated_row,
    folder_split_file_repeated_row,
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("build", [pytest.param(b, id=b.__name__.replace("_", "-")) for b in WARNING_CASES])
def test_bad_entry_is_skipped_with_a_named_warning(tmp_path, build):
    call, pattern, check = build(tmp_path)
    with pytest.warns(UserWarning, match=pattern):
        dl = call()
    assert check(dl) is not False


# ---- data: what must keep working next to the faults ----


def test_one_label_map_for_every_split(tmp_path):
    f = _npz(tmp_path / "mydata.npz", train=[0, 1, 2, 1], val=[0, 0], test=[2])
    root = _tree(tmp_path / "brain", {"Training/a": 3, "Training/b": 3, "Training/c": 3, "Testing/a": 1})
    (tmp_path / "clin").mkdir()
    c = _clinical(tmp_path / "clin", ["x", "y", "z", "x", "y", "z"])
    for kind, src in (("medmnist", f), ("image_folder", root), ("clinical", c)):
        names = {s: load_datalist(kind, str(src), split=s).class_names for s in ("train", "val", "test", "all")}
        assert len({tuple(n) for n in names.values()}) == 1, (kind, names)
    assert load_datalist("medmnist", str(f), split="val").num_classes == 3


def test_folder_splits_are_kept_exactly(tmp_path):
    """Training/Testing only: val comes from Training, no Training image reaches test (small strata too)."""
    root = _tree(tmp_path / "brain", {"Training/a": 2, "Training/b": 3, "Training/c": 5, "Testing/a": 2})
    sf = tmp_path / "split.csv"

    def images(split: str) -> set[str]:
        return {it["image"] for it in load_datalist("image_folder", str(root), split, split_file=str(sf))}

    parts = {s: images(s) for s in ("train", "val", "test")}
    assert parts["test"] == {os.fspath(p) for p in (root / "Testing").rglob("*.png")}
    training = {os.fspath(p) for p in (root / "Training").rglob("*.png")}
    assert parts["train"] | parts["val"] == training and not parts["train"] & parts["val"] and parts["val"]
    assert {s: images(s) for s in parts} == parts  # the same when re-read from the split file


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1"])
def test_csv_encodings_are_read(tmp_path, encoding):
    _nii(tmp_path / "tête.nii.gz")
    _nii(tmp_path / "x.nii.gz", seed=1)
    rows = [["tête.nii.gz", "a", "cœur" if encoding != "latin-1" else "côte"], ["x.nii.gz", "b", "brain"]]
    c = _csv(tmp_path / "labels.csv", ["path", "label", "anatomy"], rows, encoding)
    dl = load_datalist("clinical", str(c), split="all")
    assert [it["anatomy"] for it in dl] == [rows[0][2], "brain"] and dl.class_names == ["a", "b"]


def test_whole_number_float_labels_are_accepted(tmp_path):
    c = _clinical(tmp_path, ["0", "1.0", "1", "0.0"])
    dl = load_datalist("clinical", str(c), split="all")
    assert dl.class_names == ["0", "1"] and [it["label"] for it in dl] == [0, 1, 1, 0]
    f = _npz(tmp_path / "mydata.npz", train=[0.0, 1.0], val=[1.0], test=[0.0])
    assert [it["label"] for it in load_datalist("medmnist", str(f), split="train")] == [0, 1]


def _pil(mode: str, suffix: str, pixels, palette=None) -> Callable[[Path], Path]:
    dtypes = {"I;16": np.uint16, "I": np.int32, "F": np.float32, "L": np.uint8}

    def make(tmp: Path) -> Path:
        if mode in dtypes:
            im = Image.fromarray(np.asarray(pixels, dtypes[mode]))
        else:
            im = Image.new(mode, (len(pixels), 1))
            for x, v in enumerate(pixels):
                im.putpixel((x, 0), v)
            if palette:
                im.putpalette(palette + [0] * (768 - len(palette)))
        p = tmp / f"img{suffix}"
        im.save(p)
        return p

    return make


RED_BLACK = [0, 0, 0, 255, 0, 0]
PIXEL_RULE = [
    # id, file maker, channels, expected (C, W) of the single row
    ("8-bit-L", _pil("L", ".png", [[0, 51, 255]]), 1, [[0.0, 0.2, 1.0]]),
    ("16-bit-I;16", _pil("I;16", ".png", [[0, 13107, 65535]]), 1, [[0.0, 0.2, 1.0]]),
    ("int32-I", _pil("I", ".tif", [[-5, 2**30, 2**31 - 1]]), 1, [[0.0, 0.5, 1.0]]),
    ("float-in-0-1", _pil("F", ".tif", [[0.0, 0.25, 1.0]]), 1, [[0.0, 0.25, 1.0]]),
    ("float-beyond-0-1", _pil("F", ".tif", [[-100.0, 400.0, 900.0]]), 1, [[0.0, 0.5, 1.0]]),
    ("palette-P", _pil("P", ".png", [0, 1], RED_BLACK), 3, [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]),
    ("palette-GIF", _pil("P", ".gif", [0, 1], RED_BLACK), 3, [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]),
    ("CMYK-TIFF", _pil("CMYK", ".tif", [(0, 255, 0, 0), (0, 0, 0, 255)]), 3, [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]),
    ("CMYK-JPEG", _pil("CMYK", ".jpg", [(0, 255, 0, 0), (0, 255, 0, 0)]), 3, [[1, 1], [0, 0], [1, 1]]),
    ("LA-alpha-dropped", _pil("LA", ".png", [(255, 0), (0, 255)]), 1, [[1.0, 0.0]]),
    ("RGBA-alpha-dropped", _pil("RGBA", ".png", [(255, 0, 0, 0), (0, 0, 255, 255)]), 3, [[1, 0], [0, 0], [0, 1]]),
    ("1-bit", _pil("1", ".png", [0, 1]), 1, [[0.0, 1.0]]),
    ("1-bit-BMP", _pil("1", ".bmp", [1, 0]), 1, [[1.0, 0.0]]),
]


@pytest.mark.parametrize("make,channels,expected", [pytest.param(*c[1:], id=c[0]) for c in PIXEL_RULE])
def test_pixel_rule_for_every_pillow_type(tmp_path, make, channels, expected):
    out = LoadMedicalImage(channels=channels)(str(make(tmp_path)))
    assert out.dtype == torch.float32 and out.shape == (channels, 1, len(expected[0]))
    assert torch.allclose(out[:, 0, :], torch.tensor(expected, dtype=torch.float32), atol=2e-3), out


def test_pixel_rule_for_nifti_and_dicom(tmp_path):
    import pydicom

    load = LoadMedicalImage()
    as_is = _nii(tmp_path / "unit.nii.gz", np.array([[0.0, 0.5], [0.25, 1.0]], np.float32))
    assert torch.allclose(load(str(as_is), "MR")[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))  # c: as is
    ct = _nii(tmp_path / "ct.nii.gz", np.array([[-160, 40], [240, 1000]], np.int16))
    assert torch.allclose(load(str(ct), "CT")[0], torch.tensor([[0.0, 0.5], [1.0, 1.0]]))  # a: HU window
    mr = _nii(tmp_path / "mr.nii.gz", np.arange(400, dtype=np.int16).reshape(20, 20) * 10)
    t = load(str(mr), "MR")
    assert float(t.min()) == 0.0 and float(t.max()) == 1.0 and 0.45 < float(t.mean()) < 0.55  # c: percentiles
    u8 = _nii(tmp_path / "u8.nii.gz", np.array([[0, 51], [102, 255]], np.uint8))
    assert torch.allclose(load(str(u8), "MR")[0], torch.tensor([[0.0, 0.2], [0.4, 1.0]]))  # b: 8-bit / 255
    ct_dcm = load(str(PYDICOM_FILES / "CT_small.dcm"), "CT")
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(ct_dcm[0].numpy(), np.clip((hu + 160.0) / 400.0, 0.0, 1.0))  # a: HU window
