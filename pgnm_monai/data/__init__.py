"""Data sources as MONAI datalists with modality metadata, and one item schema.

Entry point (the transform chains are in :mod:`pgnm_monai.transforms`)::

    from pgnm_monai.data import load_datalist
    from pgnm_monai.transforms import train_transforms
    dl = load_datalist("embedded", split="train")          # a Datalist: dl.items, dl.class_names
    ds = monai.data.Dataset(dl.items, transform=train_transforms(image_size=64, channels=1))

``load_datalist(kind, dataset_dir=None, split="train", seed=0, **options) -> Datalist`` calls the loader
registered as ``kind`` (:mod:`pgnm_monai.data.registry`: :data:`LOADERS`, its names :data:`KINDS`;
``"embedded"`` when ``dataset_dir`` is ``None``; else, when ``kind`` is ``None``, the kind :func:`guess_kind`
reads from ``dataset_dir``). A :class:`Datalist` is a sequence of items (see
:mod:`pgnm_monai.data.schema` for the item keys) with ``class_names``, ``num_classes``, ``kind``, ``split`` and a
``report`` dict. Options are plain values (strings, ints, floats, bools) so bundle JSON configs can pass them; each
source documents its own:

- ``embedded``: ``max_per_volume``, ``fractions`` (:func:`pgnm_monai.data.embedded.load_embedded`).
- ``mednist``: ``cache_dir``, ``split_file``, ``fractions`` (:func:`pgnm_monai.data.mednist.load_mednist`).
- ``medmnist``: ``name``, ``slices`` (:func:`pgnm_monai.data.medmnist.load_medmnist`).
- ``image_folder``: ``modality``, ``anatomy``, ``split_file``, ``fractions``, ``drop_cross_split_duplicates``,
  ``class_map`` (:func:`pgnm_monai.data.image_folder.load_image_folder`).
- ``radimagenet``: ``layout``, ``class_map``, ``drop_defective``
  (:func:`pgnm_monai.data.radimagenet.load_radimagenet`).
- ``clinical``: ``csv_file``, ``slices``, ``every_k``, ``fractions``, ``time_point``
  (:func:`pgnm_monai.data.clinical.load_clinical`).
- ``union``: several sources as one labelled set, ``dataset_dir`` a JSON file listing them (or ``sources``)
  (:func:`pgnm_monai.data.union.load_union`).

Guarantees (each source's docstring gives its details):

- One label map per dataset: ``class_names`` is built once from every split (or the user's class map) and is
  the same for train, val and test; a label outside it, a non-whole numeric label and class names that differ
  only in case are ``ValueError`` naming the file, split (or CSV line) and value.
- Splits that come from folders are kept exactly (:mod:`pgnm_monai.data.image_folder`).
- The pixel rule and non-finite pixels (refused at load time): :mod:`pgnm_monai.data.io`; files that are not
  images: skipped with a warning when a folder is listed (:mod:`pgnm_monai.data.image_files`), refused by name
  when named directly (:mod:`pgnm_monai.data.io`).
- CSVs: UTF-8 with or without BOM, or Latin-1; repeated rows are used once (warning), contradicting rows are
  errors naming the file, lines and values (:func:`pgnm_monai.data.utils.read_csv`).

Few-shot subsets: :func:`few_shot_subset` (stratified, seeded, nested).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping
from typing import Any

from pgnm_monai.data.datasets import cached_dataset
from pgnm_monai.data.guess import guess_kind
from pgnm_monai.data.registry import KINDS, LOADERS, get_loader, register_kind
from pgnm_monai.data.schema import (
    IMAGE_PATH,
    ITEM_KEYS,
    MODALITIES,
    Datalist,
    load_class_map,
    make_item,
    save_class_map,
)
from pgnm_monai.data.utils import shared_data_dir
from pgnm_monai.validation import check_keywords

# isort: off
# each source module registers its loader when imported (pgnm_monai.data.registry), in this order: that of KINDS
from pgnm_monai.data import embedded, mednist, medmnist, image_folder, radimagenet, clinical, union  # noqa: F401
# isort: on

__all__ = [
    "KINDS",
    "LOADERS",
    "IMAGE_PATH",
    "ITEM_KEYS",
    "MODALITIES",
    "Datalist",
    "cached_dataset",
    "few_shot_subset",
    "guess_kind",
    "load_class_map",
    "load_datalist",
    "loader_options",
    "make_item",
    "parse_options",
    "register_kind",
    "save_class_map",
    "shared_data_dir",
]

_COMMON = ("dataset_dir", "split", "seed")


def loader_options(kind: str) -> dict[str, Any]:
    """The options of dataset ``kind`` (the keywords of its loader besides ``dataset_dir``, ``split``, ``seed``)
    with their defaults."""
    params = inspect.signature(get_loader(kind)).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON}


def parse_options(kind: str, options: Mapping[str, str]) -> dict[str, Any]:
    """Options of dataset ``kind`` given as text (a task's query ``?every_k=2&validate=false``) converted to the
    type of each option's default: ``bool`` (``true``/``false``), ``int``, ``float``, a tuple of floats
    (``0.8,0.1,0.1``); an option whose default is ``None`` keeps its text.

    Raises:
        TypeError: an option that dataset ``kind`` does not have (with close matches).
        ValueError: a value that is not of the option's type, naming the option.
    """
    defaults = loader_options(kind)
    check_keywords(f"dataset kind {kind!r}", options, defaults)
    parsed: dict[str, Any] = {}
    for key, text in options.items():
        default = defaults[key]
        try:
            if isinstance(default, bool):
                parsed[key] = {"true": True, "false": False}[str(text).strip().lower()]
            elif isinstance(default, (int, float)):
                parsed[key] = type(default)(text)
            elif isinstance(default, tuple):
                parsed[key] = tuple(float(v) for v in str(text).split(","))
            else:
                parsed[key] = text
        except (KeyError, ValueError):
            kind_of = "true/false" if isinstance(default, bool) else type(default).__name__
            raise ValueError(
                f"option {key!r} of dataset kind {kind!r} must be {kind_of} (like its default {default!r}), "
                f"got {text!r}."
            ) from None
    return parsed


def load_datalist(
    kind: str | None = None,
    dataset_dir: str | None = None,
    split: str = "train",
    seed: int = 0,
    **options: Any,
) -> Datalist:
    """Load the ``split`` of a data source as a :class:`Datalist` (see the module docstring).

    Args:
        kind: one of :data:`KINDS`; ``None`` means ``"embedded"`` when ``dataset_dir`` is ``None`` too, else the
            kind :func:`guess_kind` reads from ``dataset_dir`` (``.npz``, ``.csv``, class folders, DICOM series).
        dataset_dir: the source's root (folder, tarball, ``.npz`` or CSV file); unused for ``"embedded"``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        seed: seed of any split the loader makes.
        options: source-specific keyword options (:func:`loader_options`); an unknown one is a ``TypeError``
            naming it, with close matches.
    """
    if kind is None:
        kind = "embedded" if dataset_dir is None else guess_kind(dataset_dir, "kind")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"the split seed is {seed!r}; give a whole number >= 0 (the bundles' config id 'split_seed').")
    loader = get_loader(kind)
    check_keywords(f"dataset kind {kind!r}", options, loader_options(kind))
    root = inspect.signature(loader).parameters.get("dataset_dir")
    if root is None:  # a source without files (embedded)
        return loader(split=split, seed=seed, **options)
    if dataset_dir is None and root.default is inspect.Parameter.empty:
        raise ValueError(f"dataset kind {kind!r} needs dataset_dir (its root folder or file)")
    return loader(dataset_dir, split=split, seed=seed, **options)


def few_shot_subset(items, n: int, seed: int = 0):
    """Stratified, seeded, nested subset of ``n`` items.

    See :func:`pgnm_monai.data.few_shot.few_shot_subset`.
    """
    from pgnm_monai.data.few_shot import few_shot_subset as _fs

    return _fs(items, n, seed=seed)
