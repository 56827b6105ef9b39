"""The dataset kind of a path, guessed when none is given (``--dataset-kind`` / config id ``dataset_kind`` left out).

Only unambiguous layouts are guessed; anything else is an error listing the kinds:

- a ``.npz`` file: ``medmnist``; a ``.csv`` file: ``clinical``; a ``.json`` file: ``union`` (its list of sources);
- a folder holding ``labels.csv`` or DICOM files (a DICOM series folder): ``clinical`` (which reads its
  ``labels.csv``);
- a folder of class folders holding images (``<root>/<class>/*.png``), or of split folders of them
  (``<root>/train/<class>/*.png``): ``image_folder``.

MedNIST and RadImageNet are never guessed (a MedNIST folder is read as an ``image_folder`` too); name them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pgnm_monai.data.image_files import DICOM_SUFFIXES, IMAGE_SUFFIXES
from pgnm_monai.data.registry import KINDS

__all__ = ["guess_kind"]

_SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing")
_FILE_KINDS = {".npz": "medmnist", ".csv": "clinical", ".json": "union"}


def guess_kind(path: str | os.PathLike, config_id: str = "dataset_kind") -> str:
    """The dataset kind of ``path`` (see the module docstring).

    Args:
        path: the dataset's file or folder (``dataset_dir``).
        config_id: the id (or CLI option) that names the kind, for the error message.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no kind fits ``path``; the message lists the kinds and what each is guessed from.
    """
    root = Path(os.path.expanduser(os.fspath(path)))
    if not root.exists():
        raise FileNotFoundError(f"dataset {os.fspath(path)!r} does not exist, so its kind cannot be guessed.")
    if root.is_file():
        kind = _FILE_KINDS.get(root.suffix.lower())
        if kind is not None:
            return kind
        why = f"a file with suffix {root.suffix or '(none)'!r}"
    else:
        if (root / "labels.csv").is_file() or _has_dicom(root):
            return "clinical"
        if _holds_class_folders(root) or any(
            _holds_class_folders(d) for d in _subfolders(root) if d.name.lower() in _SPLIT_NAMES
        ):
            return "image_folder"
        why = "a folder with no labels.csv, no DICOM file and no class folder of images"
    raise ValueError(
        f"cannot guess the kind of dataset {os.fspath(path)!r} ({why}); give {config_id}, one of {tuple(KINDS)}. "
        "Guessed: .npz -> medmnist, .csv or a folder with labels.csv or DICOM files -> clinical, .json -> union, "
        "a folder of class folders of images (optionally under train/val/test) -> image_folder."
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_dicom(folder: Path) -> bool:
    """Whether ``folder`` directly holds a DICOM file (by suffix, or by the ``DICM`` marker of a suffix-less file)."""
    for f in folder.iterdir():
        if not f.is_file():
            continue
        if f.suffix.lower() in DICOM_SUFFIXES:
            return True
        if not f.suffix:
            try:
                with open(f, "rb") as handle:
                    head = handle.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM":
                return True
    return False


def _holds_class_folders(folder: Path) -> bool:
    """Whether some subfolder of ``folder`` (a class) directly holds a file with an image suffix."""
    return any(
        f.suffix.lower() in IMAGE_SUFFIXES
        for d in _subfolders(folder)
        if d.name.lower() not in _SPLIT_NAMES
        for f in d.iterdir()
    )
