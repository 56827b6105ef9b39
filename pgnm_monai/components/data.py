"""The data a bundle reads: a checked split, the items to predict, and the run's one label map."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

from pgnm_monai.data import Datalist, few_shot_subset, guess_kind, load_datalist
from pgnm_monai.data.image_files import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES, usable_image_files
from pgnm_monai.data.schema import IMAGE_PATH
from pgnm_monai.data.utils import read_csv

__all__ = [
    "INPUT_SUFFIXES",
    "check_num_classes",
    "class_names",
    "inference_data",
    "inference_items",
    "input_files_list",
    "label_map",
    "load_data",
]


def load_data(
    kind: str | None,
    dataset_dir: str | None,
    split: str,
    seed: int = 0,
    max_items: int | None = None,
    few_shot: int | None = None,
    few_shot_seed: int = 0,
    options: dict | None = None,
) -> Datalist:
    """Load a split with :func:`pgnm_monai.data.load_datalist`, checked, optionally subsampled.

    Args:
        kind: dataset kind (``None``: the embedded default when ``dataset_dir`` is ``None``, else guessed from
            ``dataset_dir``: :func:`pgnm_monai.data.guess_kind`).
        dataset_dir: dataset root; must exist when given.
        split: ``train``/``val``/``test``/``all``.
        seed: seed of the loader's split.
        max_items: keep a stratified, seeded subset of at most this many items (for quick runs).
        few_shot: keep a stratified subset of exactly this many items (the few-shot ``N``).
        few_shot_seed: seed of the few-shot subset.
        options: source-specific options of ``load_datalist``.

    Returns:
        the :class:`~pgnm_monai.data.Datalist`; every item also carries ``image_path`` (a string).
    """
    if dataset_dir is not None:
        if not os.path.exists(os.path.expanduser(str(dataset_dir))):
            raise FileNotFoundError(f"config id 'dataset_dir' points to {dataset_dir!r}, which does not exist.")
        dataset_dir = os.path.expanduser(str(dataset_dir))
        if kind is None:
            kind = guess_kind(dataset_dir, "config id 'dataset_kind'")
            logging.getLogger(__name__).info(f"dataset_kind guessed from {dataset_dir!r}: {kind!r}")
    dl = load_datalist(kind, dataset_dir, split=split, seed=int(seed), **(options or {}))
    items = [dict(it) for it in dl.items]
    for i, it in enumerate(items):
        img = it["image"]
        it[IMAGE_PATH] = img if isinstance(img, str) else f"{dl.kind}:{split}:{i}"
    if few_shot is not None:
        if int(few_shot) > len(items):
            raise ValueError(f"config id 'few_shot' ({few_shot}) exceeds the {len(items)} items of split {split!r}.")
        if int(few_shot) < len(dl.class_names):
            raise ValueError(
                f"config id 'few_shot' ({few_shot}) is smaller than the {len(dl.class_names)} classes of dataset "
                f"{dl.kind!r}: a subset of {few_shot} items would leave classes out; give few_shot >= "
                f"{len(dl.class_names)}."
            )
        items = few_shot_subset(items, int(few_shot), seed=int(few_shot_seed))
    if max_items is not None and int(max_items) < len(items):
        items = few_shot_subset(items, int(max_items), seed=int(seed))
    if not items:
        raise ValueError(f"the {split!r} split of dataset {dl.kind!r} ({dataset_dir}) is empty.")
    return Datalist(items, list(dl.class_names), kind=dl.kind, split=split, report=dict(dl.report))


def check_num_classes(num_classes: int, datalist: Datalist) -> int:
    """Return ``num_classes`` after checking it against the class count of ``datalist``."""
    if int(num_classes) != datalist.num_classes:
        raise ValueError(
            f"config id 'num_classes' is {num_classes} but dataset {datalist.kind!r} has "
            f"{datalist.num_classes} classes {list(datalist.class_names)}; leave num_classes unset to use the data's."
        )
    return int(num_classes)


#: the files a folder given to ``input_files`` is searched for (recursively): the kinds ``load_datalist`` reads.
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, *DICOM_SUFFIXES, *NIFTI_SUFFIXES, ".npy")


def _folder_files(folder: str) -> list[str]:
    """The image and volume files under ``folder`` (recursively, hidden entries skipped), sorted; a file with an
    image suffix that is not an image is skipped with a warning (:func:`~pgnm_monai.data.image_files.
    usable_image_files`)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and f.lower().endswith(INPUT_SUFFIXES)
        ]
    images = set(usable_image_files([f for f in found if f.lower().endswith(IMAGE_SUFFIXES)], f"input folder {folder}"))
    found = [f for f in found if f in images or not f.lower().endswith(IMAGE_SUFFIXES)]
    if not found:
        raise ValueError(
            f"config id 'input_files' names the folder {folder!r}, which holds no image or volume file "
            f"({', '.join(INPUT_SUFFIXES)})."
        )
    return found


def _csv_rows(path: str) -> list[tuple[str, str | None]]:
    """``(file, label or None)`` of each row of a CSV with a ``path`` column (relative paths: from the CSV's
    folder) and an optional ``label`` column."""
    header, rows = read_csv(path, "input CSV")
    if "path" not in header:
        raise ValueError(f"input CSV {path} has no 'path' column (and optionally 'label'); its columns: {header}.")
    if not rows:
        raise ValueError(f"input CSV {path} has no data row.")
    out = []
    for line, r in rows:
        if not r["path"]:
            raise ValueError(f"input CSV {path}, line {line}: the 'path' field is empty.")
        file = r["path"] if os.path.isabs(r["path"]) else os.path.join(os.path.dirname(path), r["path"])
        if not os.path.exists(file):
            raise FileNotFoundError(f"input CSV {path}, line {line}: file {file!r} does not exist.")
        out.append((file, r.get("label") or None))
    return out


def input_files_list(input_files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, str | None, str]]:
    """The files an ``input_files`` value names, in order: ``(file, label or None, where it was listed)``.

    ``input_files`` is a path or a list of paths; each is an image or volume file, a folder (searched recursively
    for the files of :data:`INPUT_SUFFIXES`), or a ``.csv`` file with a ``path`` column and an optional ``label``
    column (a class name).

    Raises:
        FileNotFoundError: a path does not exist. ValueError: a CSV without a ``path`` column, a folder without
            images, an empty list.
    """
    paths = [input_files] if isinstance(input_files, (str, os.PathLike)) else list(input_files)
    if not paths:
        raise ValueError("config id 'input_files' is an empty list: list the image files to predict.")
    out = []
    for p in paths:
        p = os.path.expanduser(os.fspath(p))
        if os.path.isdir(p):
            out += [(f, None, f"folder {p}") for f in _folder_files(p)]
        elif p.lower().endswith(".csv") and os.path.isfile(p):
            out += [(f, label, f"input CSV {p}") for f, label in _csv_rows(p)]
        elif os.path.isfile(p):
            out.append((p, None, "input_files"))
        else:
            raise FileNotFoundError(f"config id 'input_files' lists {p!r}, which does not exist.")
    return out


def _label_index(label: str | None, class_names: Sequence[str] | None, source: str, file: str) -> int:
    """The class index of a CSV's ``label`` value (a class name, or an index), -1 without one."""
    if label is None or class_names is None:
        return -1
    names = [str(c) for c in class_names]
    if label in names:
        return names.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(names):
        return int(label)
    raise ValueError(f"{source}: the label {label!r} of {file!r} is not a class of the model; its classes: {names}.")


def inference_items(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    modality: str = "other",
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """Datalist items for the files that ``files`` names (:func:`input_files_list`: files, folders, CSVs), each
    file once: a file listed again under another spelling (relative or absolute, through ``..`` or a symbolic link)
    is dropped with a warning naming it.

    Args:
        files: a path or a list of paths (image or volume files, folders, CSVs with a ``path`` column).
        modality: the items' modality.
        class_names: the model's classes: a CSV's ``label`` column (class names) gives the items' labels, so the
            predictions are also evaluated. Without it, or without a label, an item's label is -1.

    Raises:
        FileNotFoundError / ValueError: a listed path does not exist, a CSV lacks its ``path`` column or names an
            unknown label, a folder holds no image, or nothing is listed.
    """
    from pgnm_monai.data import make_item

    items, seen, repeats = [], {}, []
    for f, label, source in input_files_list(files):
        key = os.path.normcase(os.path.realpath(f))
        if key in seen:
            repeats.append(f"{f!r} (the file {seen[key]!r})")
            continue
        seen[key] = f
        index = _label_index(label, class_names, source, f)
        name = str(class_names[index]) if index >= 0 else "unknown"
        it = make_item(f, max(index, 0), name, modality, patient_id=os.path.basename(f))
        it["label"] = index
        it[IMAGE_PATH] = f
        items.append(it)
    if repeats:
        warnings.warn(
            f"config id 'input_files' lists {len(repeats)} file(s) twice under another name, predicted once: "
            + "; ".join(repeats[:5]),
            stacklevel=2,
        )
    return items


def inference_data(
    input_files: str | os.PathLike | Sequence[str | os.PathLike] | None,
    input_modality: str,
    kind: str | None,
    dataset_dir: str | None,
    split: str,
    seed: int = 0,
    max_items: int | None = None,
    options: dict | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """The items to predict, named explicitly: ``input_files`` (files, folders or CSVs: :func:`inference_items`;
    labelled by a CSV's ``label`` column when ``class_names`` is given), or the ``split`` of the dataset
    ``kind``/``dataset_dir`` (:func:`load_data`; ``kind`` ``"embedded"`` for the embedded set). With neither there
    is nothing to predict: no default set is read in their place.

    Raises:
        ValueError: ``input_files`` is an empty list, or neither inputs nor a dataset are given.
    """
    if input_files is not None:
        return inference_items(input_files, input_modality, class_names)
    if kind is None and dataset_dir is None:
        raise ValueError(
            "nothing to predict: give config id 'input_files' (a list of image files) or a dataset "
            "(config ids 'dataset_kind' and 'dataset_dir', and 'infer_split'; dataset_kind 'embedded' for the "
            "embedded set)."
        )
    return load_data(kind, dataset_dir, split, seed=seed, max_items=max_items, options=options).items


def label_map(path: str | os.PathLike | None, *datalists: Datalist, splits: Sequence[Datalist] = ()) -> list[str]:
    """The one label map of a run: the class names shared by ``datalists``, written to (or checked against) ``path``.

    The train stage checks its splits at ``initialize`` (``path`` None) and, once training has finished, writes
    the map atomically as ``class_map.json`` beside the models (a failed run leaves none); the evaluate stage
    finds the file there and refuses data whose classes differ, so train, val and test use one map.

    Args:
        path: the class map JSON (:func:`pgnm_monai.data.save_class_map`); None only checks ``datalists``.
        datalists: the run's splits; their ``class_names`` must be equal.
        splits: more splits (the keyword form, for a config component).

    Raises:
        ValueError: naming the splits (or the file) whose class names differ.
    """
    from pgnm_monai.data import load_class_map, save_class_map

    datalists = (*datalists, *splits)
    names = list(datalists[0].class_names)
    for dl in datalists[1:]:
        if list(dl.class_names) != names:
            raise ValueError(
                f"the {datalists[0].split!r} split has classes {names} but the {dl.split!r} split has "
                f"{list(dl.class_names)}; every split of a dataset must share one label map."
            )
    if path is None:
        return names
    if os.path.isfile(path):
        saved = load_class_map(path)
        if saved != names and all(dl.split != "train" for dl in datalists):
            raise ValueError(
                f"the model was trained with the classes of {os.fspath(path)!r} ({saved}) but the "
                f"{datalists[0].split!r} data has classes {names}."
            )
    if any(dl.split == "train" for dl in datalists):
        from pgnm_monai import distributed

        if distributed.is_main_process():
            save_class_map(path, names, dataset_kind=datalists[0].kind)
    return names


def class_names(ckpt_dir: str | os.PathLike) -> list[str]:
    """The class names of a trained run: its ``ckpt_dir/class_map.json``, which the train stage saves beside the
    models (:func:`label_map`).

    Raises:
        FileNotFoundError: naming the file, when the model was copied without it.
    """
    from pgnm_monai.data import load_class_map

    path = os.path.join(os.fspath(ckpt_dir), "class_map.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist: the class names of the model in {os.fspath(ckpt_dir)!r} are unknown. Copy the "
            "training run's class_map.json beside the model (pgnm_monai.data.save_class_map writes one)."
        )
    return load_class_map(path)
