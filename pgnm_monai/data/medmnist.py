"""MedMNIST ``.npz`` files (``{train,val,test}_{images,labels}``), 2D and 3D; items hold the arrays.

Modality and anatomy come from the dataset name (:data:`MEDMNIST_INFO`); class names for the sets at hand
are in :data:`MEDMNIST_CLASSES` (others get ``"0"``, ``"1"``, ...). 3D volumes (``(N, D, H, W)``) are kept as
3D items (``slices="none"``) or cut into 2D items: the middle slice (``"middle"``) or every slice
(``"all"``) along D, the item's ``slice_index`` telling which.

Channels. An image array ``(N, H, W, C)`` whose last axis holds 1, 3 or 4 values (as BloodMNIST ships its
``(N, 28, 28, 3)`` ``uint8`` images) is read as 2D images with ``C`` channels, channels last (grey, RGB, RGB with
an alpha that is dropped), never as volumes of width ``C``. Where either reading fits (``H`` or ``W`` of 4 or
less too), the file is refused naming the array and both readings; the option ``layout`` picks one:
``"channels_last"`` (2D images ``(H, W, C)``) or ``"volumes"`` (3D volumes ``(D, H, W)``). Arrays of Python
objects are refused by name: ``allow_pickle`` is never used (a pickle can run code).

One label map for the file, whatever split is asked for: labels are whole numbers ``0..K-1`` (``1.0`` counts as
1; ``1.5``, NaN or a negative label is an error naming the file, the split's key, the row and the value). ``K``
is the official class count for the known MedMNIST names (:data:`MEDMNIST_NUM_CLASSES`); for any other name it
comes from the train split: ``K = 1 + its largest label``, and every class ``0..K-1`` must occur in train. A
label outside ``0..K-1`` in any split is an error naming the file, split, row and value. Float images with
NaN/Inf values are refused, naming the file, key and row.

Each array of a file is decompressed once per process and kept read-only (keyed on the file's path, size and
modification time; the least recently used files are dropped beyond :data:`ARRAY_CACHE_BYTES`): the
protocol's runs load the same task's splits many times.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import Datalist, make_item

__all__ = ["ARRAY_CACHE_BYTES", "LAYOUTS", "MEDMNIST_INFO", "MEDMNIST_CLASSES", "MEDMNIST_NUM_CLASSES", "load_medmnist"]

#: bytes of decompressed arrays kept in this process (least recently used files dropped first)
ARRAY_CACHE_BYTES = 1 << 30
_npz_cache: OrderedDict[tuple[str, int, int], tuple[list[str], dict[str, np.ndarray]]] = OrderedDict()

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
# official class counts (MedMNIST v2); chestmnist is multi-label, which this loader refuses
MEDMNIST_NUM_CLASSES: dict[str, int] = {
    "pathmnist": 9,
    "chestmnist": 14,
    "dermamnist": 7,
    "octmnist": 4,
    "pneumoniamnist": 2,
    "retinamnist": 5,
    "breastmnist": 2,
    "bloodmnist": 8,
    "tissuemnist": 8,
    "organamnist": 11,
    "organcmnist": 11,
    "organsmnist": 11,
    "organmnist3d": 11,
    "nodulemnist3d": 2,
    "adrenalmnist3d": 2,
    "fracturemnist3d": 3,
    "vesselmnist3d": 2,
    "synapsemnist3d": 2,
}
_SPLITS = ("train", "val", "test")
#: the values of the ``layout`` option (module docstring, "Channels").
LAYOUTS = ("auto", "channels_last", "volumes")
_CHANNELS = (1, 3, 4)
_EXAMPLE = {"images": "np.stack(images).astype(np.uint8)", "labels": "np.asarray(labels, dtype=np.int64)"}


def _resolve(dataset_dir: str | os.PathLike, name: str | None) -> tuple[Path, str]:
    p = Path(dataset_dir)
    if p.is_dir():
        if not name:
            raise ValueError(f"MedMNIST folder {p}: give name= (e.g. 'breastmnist') to pick the .npz file")
        p = p / f"{name.lower()}.npz"
    if not p.is_file():
        raise FileNotFoundError(f"MedMNIST file {p} does not exist")
    return p, (name or p.name[: -len(".npz")] if p.name.endswith(".npz") else p.stem).lower()


class _NpzArrays:
    """The arrays of one ``.npz`` file, each decompressed once per process and kept read-only (module docstring)."""

    def __init__(self, path: Path) -> None:
        st = path.stat()
        self.path = path
        self.key = (os.fspath(path.resolve()), st.st_size, st.st_mtime_ns)
        if self.key not in _npz_cache:
            try:
                with np.load(path, allow_pickle=False) as npz:
                    _npz_cache[self.key] = (list(npz.files), {})
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                raise ValueError(f"MedMNIST file {path} cannot be read as .npz: {e}") from e
        _npz_cache.move_to_end(self.key)
        self.files, self._arrays = _npz_cache[self.key]

    def __getitem__(self, key: str) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None:
            with np.load(self.path, allow_pickle=False) as npz:
                try:
                    array = npz[key]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise ValueError(f"MedMNIST file {self.path}: array {key!r} cannot be read: {e}") from e
                    raise ValueError(
                        f"MedMNIST file {self.path}: array {key!r} holds Python objects (dtype object), which are never"
                        " read (loading them would unpickle, which can run code); expected a numeric array, e.g."
                        f" np.savez(..., {key}={_EXAMPLE['labels' if key.endswith('labels') else 'images']})."
                    ) from None
            array.flags.writeable = False
            self._arrays[key] = array
            while _npz_cache and sum(a.nbytes for _, arrays in _npz_cache.values() for a in arrays.values()) > (
                ARRAY_CACHE_BYTES
            ):
                _npz_cache.popitem(last=False)
        return array


@register_kind("medmnist")
def load_medmnist(
    dataset_dir: str | os.PathLike,
    split: str = "train",
    seed: int = 0,
    name: str | None = None,
    slices: str = "none",
    layout: str = "auto",
) -> Datalist:
    """Load one split of a MedMNIST ``.npz`` file (``dataset_dir`` is the file, or its folder plus ``name``).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the official splits; ``seed`` is unused).
        name: dataset name (e.g. ``"breastmnist"``); defaults to the file name.
        slices: for 3D sets: ``"none"`` (3D items), ``"middle"`` or ``"all"`` (2D items).
        layout: how an ``(N, A, B, C)`` image array is read (module docstring, "Channels"): ``"auto"``,
            ``"channels_last"`` (2D images with ``C`` channels) or ``"volumes"`` (3D volumes).
    """
    del seed  # the official split is used
    path, name = _resolve(dataset_dir, name)
    if split not in _SPLITS + ("all",):
        raise ValueError(f"split must be one of train/val/test/all, got {split!r}")
    if slices not in ("none", "middle", "all"):
        raise ValueError(f"slices must be 'none', 'middle' or 'all', got {slices!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"MedMNIST option 'layout' must be one of {LAYOUTS}, got {layout!r}")
    modality, anatomy = MEDMNIST_INFO.get(name, ("other", "unknown"))
    npz = _NpzArrays(path)
    wanted = _SPLITS if split == "all" else (split,)
    missing = [f"{s}_{k}" for s in wanted for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
    if missing:
        raise ValueError(f"MedMNIST file {path} is missing key(s) {missing}; it has {sorted(npz.files)}")
    # the label map comes from every split in the file, not only the one asked for
    labels = {s: _labels(path, s, npz[f"{s}_labels"]) for s in _SPLITS if f"{s}_labels" in npz.files}
    arrays = {s: (npz[f"{s}_images"], labels[s]) for s in wanted}
    class_names = _class_names(path, name, labels)
    items: list[dict] = []
    for s, (x, y) in arrays.items():
        if len(x) != len(y):
            raise ValueError(f"MedMNIST file {path}: {s}_images has {len(x)} rows but {s}_labels has {len(y)}")
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
            raise ValueError(
                f"MedMNIST file {path}: {s}_images row {row} (split {s!r}) has NaN or infinite pixel values;"
                " images with non-finite pixels are refused"
            )
        is3d = _is_volumes(path, f"{s}_images", x, layout)
        for i in range(len(x)):
            pid = f"{name}-{s}-{i}"
            lab = int(y[i])
            if is3d and slices != "none":
                idx = [x.shape[1] // 2] if slices == "middle" else range(x.shape[1])
                for k in idx:
                    items.append(make_item(x[i], lab, class_names[lab], modality, anatomy, pid, slice_index=k))
            elif is3d:  # (D, H, W); (1, D, H, W) where the last axis could be read as channels
                volume = x[i][None] if x.shape[-1] in _CHANNELS else x[i]
                items.append(make_item(volume, lab, class_names[lab], modality, anatomy, pid))
            else:
                image = x[i][..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x[i]  # (H, W) or (H, W, 3|4)
                items.append(make_item(image, lab, class_names[lab], modality, anatomy, pid))
    report = {
        "file": os.fspath(path),
        "name": name,
        "is_3d": _is_volumes(path, f"{wanted[0]}_images", arrays[wanted[0]][0], layout),
    }
    return Datalist(items, class_names, kind="medmnist", split=split, report=report)


def _is_volumes(path: Path, key: str, x: np.ndarray, layout: str) -> bool:
    """Whether the image array ``key`` holds 3D volumes ``(N, D, H, W)`` rather than 2D images ``(N, H, W)`` or
    ``(N, H, W, C)`` (module docstring, "Channels"); an ambiguous array is refused, naming both readings."""
    if x.ndim == 3:
        return False
    if x.ndim != 4:
        raise ValueError(
            f"MedMNIST file {path}: array {key!r} has shape {tuple(x.shape)}; expected 2D images (N, H, W), 2D images "
            "with channels (N, H, W, C) or 3D volumes (N, D, H, W)"
        )
    channels_last = x.shape[-1] in _CHANNELS
    if layout == "channels_last" and not channels_last:
        raise ValueError(
            f"MedMNIST file {path}: array {key!r} has shape {tuple(x.shape)}, whose last axis is not 1, 3 or 4 "
            "channels; layout 'channels_last' reads (N, H, W, C) images with C in (1, 3, 4): give layout 'volumes'"
            " or 'auto'"
        )
    if layout != "auto":
        return layout == "volumes"
    if channels_last and min(x.shape[1:3]) <= max(_CHANNELS):
        n, a, b, c = x.shape
        raise ValueError(
            f"MedMNIST file {path}: array {key!r} of shape {tuple(x.shape)} reads two ways: {n} 2D images of {a} x {b}"
            f" with {c} channel(s) (channels last), or {n} volumes of {a} x {b} x {c} voxels; pick one with the "
            "dataset option 'layout': 'channels_last' or 'volumes' (e.g. dataset_options={'layout': 'channels_last'}"
            ' in a bundle, --dataset-options \'{"layout": "channels_last"}\' of pgnm).'
        )
    return not channels_last


def _labels(path: Path, s: str, y: np.ndarray) -> np.ndarray:
    """The ``{s}_labels`` array as ``int64`` of shape (N,); non-integer values are errors naming row and value."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"MedMNIST file {path}: {s}_labels has shape {y.shape}; expected (N,) or (N, 1) (multi-label sets"
            " are not supported)"
        )
    if y.dtype == np.bool_:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"MedMNIST file {path}: {s}_labels has dtype {y.dtype}; expected integer class indices")
    if np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"MedMNIST file {path}: {s}_labels row {i} (split {s!r}) is {y[i].item()!r}; labels must be whole"
                f" numbers 0..K-1 ({bad.size} such row(s))"
            )
    return y.astype(np.int64)


def _class_names(path: Path, name: str, labels: dict[str, np.ndarray]) -> list[str]:
    """One class list for the file: declared (known name) or from the train split; stray labels are errors."""
    declared = MEDMNIST_CLASSES.get(name)
    k = len(declared) if declared else MEDMNIST_NUM_CLASSES.get(name)
    if k is None:
        ref = "train" if "train" in labels else next(iter(labels))
        k = int(labels[ref].max()) + 1 if labels[ref].size else 0
        present = set(np.unique(labels[ref]).tolist())
        absent = [c for c in range(k) if c not in present]
        if absent:  # a gap: the labels above it are strays (or the classes below them are missing)
            stray = min(c for c in present if c > absent[0])
            i = int(np.flatnonzero(labels[ref] == stray)[0])
            raise ValueError(
                f"MedMNIST file {path}: {ref}_labels row {i} (split {ref!r}) is {stray}, but class(es) {absent[:10]}"
                f" never occur in split {ref!r}; labels must be 0..K-1 with every class present in {ref!r}"
                f" (give name= of a known MedMNIST set to use its official class count)"
            )
        source = f"the classes of split {ref!r}"
    else:
        source = f"the official class count of {name!r}"
    for s, y in labels.items():
        bad = np.flatnonzero((y < 0) | (y >= k))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"MedMNIST file {path}: {s}_labels row {i} (split {s!r}) is {int(y[i])}, outside 0..{k - 1}"
                f" ({source}); {bad.size} such row(s)"
            )
    return list(declared) if declared else [str(i) for i in range(k)]
