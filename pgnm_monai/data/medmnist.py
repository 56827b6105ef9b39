"""MedMNIST ``.npz`` files (``{train,val,test}_{images,labels}``), 2D and 3D; items hold the arrays.

Modality and anatomy come from the dataset name (:data:`MEDMNIST_INFO`); class names for the sets at hand
are in :data:`MEDMNIST_CLASSES` (others get ``"0"``, ``"1"``, ...). 3D volumes (``(N, D, H, W)``) are kept as
3D items (``slices="none"``) or cut into 2D items: the middle slice (``"middle"``) or every slice
(``"all"``) along D, the item's ``slice_index`` telling which.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from pgnm_monai.data.schema import Datalist, make_item

__all__ = ["MEDMNIST_INFO", "MEDMNIST_CLASSES", "load_medmnist"]

# name -> (modality, anatomy)
MEDMNIST_INFO: dict[str, tuple[str, str]] = {
    "pathmnist": ("other", "colon"),
    "chestmnist": ("X-ray", "chest"),
    "dermamnist": ("other", "skin"),
    "octmnist": ("other", "retina"),
    "pneumoniamnist": ("X-ray", "chest"),
    "retinamnist": ("fundus", "retina"),
    "breastmnist": ("US", "breast"),
    "bloodmnist": ("other", "blood"),
    "tissuemnist": ("other", "kidney"),
    "organamnist": ("CT", "abdomen"),
    "organcmnist": ("CT", "abdomen"),
    "organsmnist": ("CT", "abdomen"),
    "organmnist3d": ("CT", "abdomen"),
    "nodulemnist3d": ("CT", "chest"),
    "adrenalmnist3d": ("CT", "adrenal"),
    "fracturemnist3d": ("CT", "chest"),
    "vesselmnist3d": ("MR", "brain"),
    "synapsemnist3d": ("other", "brain"),
}
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "breastmnist": ["malignant", "normal_benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["grade0", "grade1", "grade2", "grade3", "grade4"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
}
_SPLITS = ("train", "val", "test")


def _resolve(dataset_dir: str | os.PathLike, name: str | None) -> tuple[Path, str]:
    p = Path(dataset_dir)
    if p.is_dir():
        if not name:
            raise ValueError(f"MedMNIST folder {p}: give name= (e.g. 'breastmnist') to pick the .npz file")
        p = p / f"{name.lower()}.npz"
    if not p.is_file():
        raise FileNotFoundError(f"MedMNIST file {p} does not exist")
    return p, (name or p.name[: -len(".npz")] if p.name.endswith(".npz") else p.stem).lower()


def load_medmnist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    name: str | None = None,
    slices: str = "none",
) -> Datalist:
    """Load one split of a MedMNIST ``.npz`` file (``dataset_dir`` is the file, or its folder plus ``name``).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the official splits; ``seed`` is unused).
        name: dataset name (e.g. ``"breastmnist"``); defaults to the file name.
        slices: for 3D sets: ``"none"`` (3D items), ``"middle"`` or ``"all"`` (2D items).
    """
    del seed  # the official split is used
    path, name = _resolve(dataset_dir, name)
    if split not in _SPLITS + ("all",):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if slices not in ("none", "middle", "all"):
        raise ValueError(f"slices must be 'none', 'middle' or 'all', got {slices!r}")
    modality, anatomy = MEDMNIST_INFO.get(name, ("other", "unknown"))
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"MedMNIST file {path} cannot be read as .npz: {e}") from e
    with npz:
        wanted = _SPLITS if split == "all" else (split,)
        missing = [f"{s}_{k}" for s in wanted for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
        if missing:
            raise ValueError(f"MedMNIST file {path} is missing key(s) {missing}; it has {sorted(npz.files)}")
        arrays = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in wanted}
    labels_all = np.concatenate([_labels(path, s, y) for s, (_, y) in arrays.items()])
    class_names = MEDMNIST_CLASSES.get(name) or [str(i) for i in range(int(labels_all.max()) + 1)]
    items: list[dict] = []
    for s, (x, y) in arrays.items():
        y = _labels(path, s, y)
        if len(x) != len(y):
            raise ValueError(f"MedMNIST file {path}: {s}_images has {len(x)} rows but {s}_labels has {len(y)}")
        if np.any(y < 0) or np.any(y >= len(class_names)):
            raise ValueError(f"MedMNIST file {path}: {s}_labels outside [0, {len(class_names)})")
        is3d = x.ndim == 4 and x.shape[-1] not in (3,)
        for i in range(len(x)):
            pid = f"{name}-{s}-{i}"
            lab = int(y[i])
            if is3d and slices != "none":
                idx = [x.shape[1] // 2] if slices == "middle" else range(x.shape[1])
                for k in idx:
                    items.append(make_item(x[i], lab, class_names[lab], modality, anatomy, pid, slice_index=k))
            else:
                items.append(make_item(x[i], lab, class_names[lab], modality, anatomy, pid))
    report = {"file": os.fspath(path), "name": name, "is_3d": bool(arrays[wanted[0]][0].ndim == 4)}
    return Datalist(items, class_names, kind="medmnist", split=split, report=report)


def _labels(path: Path, s: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"MedMNIST file {path}: {s}_labels has shape {y.shape}; expected (N,) or (N, 1) (multi-label sets"
            " are not supported)"
        )
    return y.astype(np.int64)
