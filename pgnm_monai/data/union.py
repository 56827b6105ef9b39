"""A union of data sources as one labelled set: RadImageNet-like pretraining from several datasets (e.g. MedNIST,
OrganAMNIST and BloodMNIST, or RadImageNet plus your own images).

The sources are listed in a JSON file (the ``dataset_dir`` of kind ``union``) or given as the ``sources``
option; each is ``{"kind": ..., "path": ..., "options": {...}, "prefix": ..., "max_items": N, "flip_allowed": false}``:

- ``kind``, ``path``, ``options``: as :func:`pgnm_monai.data.load_datalist` takes them (``path`` relative to the
  JSON file's folder); each source keeps its own split (official splits, folders, or seeded by patient);
- ``prefix`` (default: the file or folder name without suffixes, else the kind): class ``c`` of the source
  becomes ``prefix/c``, so one label map covers every
  source, in the order listed (a source's classes in its own order); a prefix used twice is refused;
- ``max_items`` (optional): a stratified, seeded subset of at most that many items of each split (a cap per
  source, e.g. to balance a large source against small ones);
- ``flip_allowed`` (optional, default true): false for a source whose classes a horizontal flip changes
  (left/right organs, e.g. OrganAMNIST); its items carry ``flip_allowed: False`` and the training chain's flip
  (:class:`~pgnm_monai.transforms.RandFlipAllowedd`) leaves them as they are. Every union item carries the key.

Items keep their modality, anatomy and patient; the union's report gives each source's item count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.data.registry import register_kind
from pgnm_monai.data.schema import FLIP_ALLOWED, LABEL, LABEL_NAME, Datalist
from pgnm_monai.validation import check_keywords

__all__ = ["load_union", "read_sources"]

_SOURCE_KEYS = ("kind", "path", "options", "prefix", "max_items", "flip_allowed")


def read_sources(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``sources`` of a union JSON file (``{"sources": [...]}`` or the list itself), paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"union sources file {path} does not exist (a JSON list of sources).")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"union sources file {path} is not valid JSON: {e}") from e
    sources = spec.get("sources") if isinstance(spec, Mapping) else spec
    if not isinstance(sources, list):
        raise ValueError(f"union sources file {path}: expected a list of sources (or {{'sources': [...]}}).")
    return _relative_to(sources, path.parent)


def _relative_to(sources: Sequence[Mapping[str, Any]], folder: str | os.PathLike) -> list[dict[str, Any]]:
    """``sources`` with each relative ``path`` joined to ``folder``."""
    return [
        {**s, "path": os.path.join(folder, s["path"])} if s.get("path") and not os.path.isabs(s["path"]) else dict(s)
        for s in sources
    ]


@register_kind("union")
def load_union(
    dataset_dir: str | os.PathLike | None = None,
    split: str = "train",
    seed: int = 0,
    sources: Sequence[Mapping[str, Any]] | None = None,
) -> Datalist:
    """The ``split`` of every source, relabelled into one label map (see the module docstring).

    Args:
        dataset_dir: the union's JSON file (used when ``sources`` is not given); with ``sources``, the folder their
            relative paths start from (e.g. the shared data folder of a profile).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (of every source).
        seed: seed of the sources' own splits and of the caps.
        sources: the sources (instead of a file).
    """
    from pgnm_monai.data import few_shot_subset, load_datalist

    if sources is None:
        if dataset_dir is None:
            raise ValueError("dataset kind 'union' needs dataset_dir (its JSON file of sources) or the sources option.")
        sources = read_sources(dataset_dir)
    elif dataset_dir is not None and os.path.isdir(dataset_dir):
        sources = _relative_to(sources, dataset_dir)
    if not sources:
        raise ValueError("dataset kind 'union': the list of sources is empty.")
    items: list[dict] = []
    class_names: list[str] = []
    counts: dict[str, int] = {}
    for k, source in enumerate(sources):
        where = f"union source {k} ({source.get('kind')!r}, {source.get('path')!r})"
        check_keywords(where, source, _SOURCE_KEYS)
        if "kind" not in source:
            raise ValueError(f"{where}: 'kind' is required.")
        default = Path(source["path"]).name.split(".")[0] if source.get("path") else source["kind"]
        prefix = str(source.get("prefix") or default)
        flip_allowed = source.get("flip_allowed", True)
        if not isinstance(flip_allowed, bool):
            raise ValueError(f"{where}: 'flip_allowed' must be true or false, got {flip_allowed!r}.")
        if prefix in counts:
            raise ValueError(f"{where}: prefix {prefix!r} is used by an earlier source; give each source its own.")
        dl = load_datalist(
            source["kind"], source.get("path"), split=split, seed=seed, **dict(source.get("options", {}))
        )
        part = [dict(it) for it in dl.items]
        if source.get("max_items") is not None and int(source["max_items"]) < len(part):
            part = few_shot_subset(part, int(source["max_items"]), seed=seed)
        offset = len(class_names)
        class_names += [f"{prefix}/{name}" for name in dl.class_names]
        for it in part:
            it[LABEL] = offset + int(it[LABEL])
            it[LABEL_NAME] = class_names[it[LABEL]]
            it[FLIP_ALLOWED] = flip_allowed
        items += part
        counts[prefix] = len(part)
    return Datalist(items, class_names, kind="union", split=split, report={"sources": counts})
