"""What a run trained on and with: a fingerprint of each split's items and the versions of the package and the
bundle, saved in the training state (``"record"``) and compared when the run is resumed.

A resume on other data (files added to or removed from a split, or changed: another size, modification time,
label or item field) is refused, naming the files, unless config id ``allow_data_change`` is true (then it
warns); a resume under another package or bundle version warns. The fingerprint of an item is its file's size
and modification time (``os.stat``: nothing is read), or a hash of its pixels for an in-memory array (MedMNIST),
with a hash of its label and fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pgnm_monai.components.wiring import as_bool
from pgnm_monai.data.schema import FRAME_INDEX, IMAGE, IMAGE_PATH, SLICE_INDEX

__all__ = ["RunRecord", "check_resumed_run", "data_differences", "fingerprint"]

#: how many files of each kind of difference a refusal names.
_SHOWN = 3


def _item_key(item: Mapping[str, Any]) -> str:
    """The item's name in a fingerprint: its file (or ``kind:split:index`` of an array), slice and frame."""
    image = item.get(IMAGE)
    key = image if isinstance(image, str) else str(item.get(IMAGE_PATH, "<array>"))
    for field in (SLICE_INDEX, FRAME_INDEX):
        if int(item.get(field, -1)) >= 0:
            key += f" [{field} {int(item[field])}]"
    return key


def _item_print(item: Mapping[str, Any]) -> list:
    """``[size, mtime_ns, hash of the fields (and of the pixels of an array)]`` of one item."""
    fields = {k: v for k, v in item.items() if k not in (IMAGE, IMAGE_PATH) and isinstance(v, (str, int, float, bool))}
    digest = hashlib.blake2b(json.dumps(fields, sort_keys=True, default=str).encode(), digest_size=8)
    image = item.get(IMAGE)
    if isinstance(image, (str, os.PathLike)):
        try:
            st = os.stat(image)
            return [int(st.st_size), int(st.st_mtime_ns), digest.hexdigest()]
        except OSError:
            return [-1, -1, digest.hexdigest()]
    array = np.ascontiguousarray(np.asarray(image))
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(array.tobytes())
    return [int(array.nbytes), 0, digest.hexdigest()]


def fingerprint(items: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """``{item name: [size, mtime_ns, hash of its fields]}`` of a split's items (see the module docstring)."""
    return {_item_key(it): _item_print(it) for it in items}


def data_differences(saved: Mapping[str, Mapping], current: Mapping[str, Mapping]) -> list[str]:
    """One line per split whose fingerprint differs: the files added, removed and changed, a few of each named."""

    def named(keys: list[str], what: str) -> str:
        shown = ", ".join(keys[:_SHOWN]) + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")
        return f"{len(keys)} {what} ({shown})"

    lines = []
    for split in sorted(set(saved) | set(current)):
        old, new = saved.get(split, {}), current.get(split, {})
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if list(old[k]) != list(new[k]))
        kinds = ((added, "added"), (removed, "removed"), (changed, "changed"))
        shown = [named(keys, what) for keys, what in kinds if keys]
        if shown:
            lines.append(f"{split} split: " + ", ".join(shown))
    return lines


class RunRecord:
    """The data and code of a run: a fingerprint of each split and the package and bundle versions, saved in its
    training state (``state_dict``) and compared on resume (:func:`check_resumed_run`).

    Args:
        splits: split name -> its items (a :class:`~pgnm_monai.data.Datalist` or a list of item dicts).
        bundle_version: the bundle's ``metadata.json`` version (config ``"$@_meta_.get('version')"``).
    """

    def __init__(self, splits: Mapping[str, Any], bundle_version: str | None = None) -> None:
        import pgnm_monai

        self.record = {
            "package_version": pgnm_monai.__version__,
            "bundle_version": None if bundle_version is None else str(bundle_version),
            "data": {name: fingerprint(getattr(dl, "items", dl)) for name, dl in splits.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        """The record (plain values, loadable with ``torch.load(..., weights_only=True)``)."""
        return dict(self.record)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore: a resumed run records its own data and versions (compared at start)."""


def check_resumed_run(resume_ckpt: str | None, record: RunRecord, allow_data_change: bool | str = False) -> bool:
    """Compare this run's data and versions with those recorded in the training state it resumes from.

    Args:
        resume_ckpt: the training state (``None``: a fresh run, nothing to compare).
        record: this run's :class:`RunRecord`.
        allow_data_change: go on (with a warning) when the data differs.

    Raises:
        ValueError: the data differs, naming the files added, removed and changed and the way out.
    """
    if resume_ckpt is None:
        return True
    from pgnm_monai.networks.weights import load_checkpoint_file

    saved = load_checkpoint_file(resume_ckpt, "resume")
    saved = saved.get("record") if isinstance(saved, Mapping) else None
    if not isinstance(saved, Mapping):
        warnings.warn(
            f"{resume_ckpt} holds no record of its data and versions (written before they were recorded): the data "
            "is not checked.",
            stacklevel=2,
        )
        return True
    current = record.record
    versions = ("package_version", "bundle_version")
    if any(saved.get(k) != current[k] for k in versions):
        warnings.warn(
            f"the training state {resume_ckpt} was written by pgnm-monai {saved.get('package_version')} (bundle "
            f"{saved.get('bundle_version')}); this run is pgnm-monai {current['package_version']} (bundle "
            f"{current['bundle_version']}): the resumed run may not continue as the original would have.",
            stacklevel=2,
        )
    differences = data_differences(saved.get("data", {}), current["data"])
    if not differences:
        return True
    what = f"the data differs from the data of the training state {resume_ckpt}: " + "; ".join(differences)
    if as_bool(allow_data_change):
        warnings.warn(f"{what}; the run goes on (allow_data_change is true).", stacklevel=2)
        return True
    raise ValueError(
        f"{what}. Resume on the data the run was trained on, give --allow_data_change True to go on with this data, "
        "or start a new run in another bundle_root."
    )
