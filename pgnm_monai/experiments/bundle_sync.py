"""Keep the fine-tune bundle whole and in step with the pretrain bundle: one source for the configs they share.

``bundles/pgnm_finetune`` runs on its own, as a model-zoo bundle does: every file is its own, none a link into or
an overlay of ``../pgnm_pretrain``. Fine-tuning is pretraining with arm ``none``, a warm start, a new head, a
warm-up and a few-shot subset, so each fine-tune config is the pretrain bundle's file of the same name except at
the ids of :data:`FINETUNE_IDS`, whose values live in the fine-tune's file; :data:`COPIED` files are the same
bytes. Edit the pretrain bundle's configs (or a fine-tune id in the fine-tune's file), then::

    python -m pgnm_monai.experiments.bundle_sync           # rewrite the fine-tune's configs in step
    python -m pgnm_monai.experiments.bundle_sync --check   # exit 1, naming every id a rewrite would change

``tests/test_bundles.py`` runs the check. The fine-tune's ``metadata.json`` and ``docs/`` are its own.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.atomic_files import atomic_write_bytes, atomic_write_text

__all__ = ["COPIED", "FINETUNE_IDS", "differences", "main", "merged", "sync"]

_SETTINGS = ("pretrained_ckpt", "reset_head", "few_shot", "few_shot_seed", "warmup_epochs", "warmup_start_factor")
#: config file -> the key paths (a tuple of JSON keys, from the file's top) whose values are the fine-tune's own;
#: every other key is the pretrain bundle's file's
FINETUNE_IDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "train.json": (
        *((k,) for k in ("arm", "lr", *_SETTINGS)),
        ("train_datalist", "few_shot"),
        ("train_datalist", "few_shot_seed"),
        ("model", "network"),  # the warm start
        ("lr_scheduler",),  # linear warm-up
        *(("run_settings", "settings", k) for k in _SETTINGS),
        ("write_run_settings", "metadata"),  # models/metadata.json: the run's description
    ),
    "evaluate.json": (("model#network",),),  # the evaluated network is the checkpoint's, not a warm start
    "inference.json": (),
    "multi_gpu_train.json": (),
}
#: files of the pretrain bundle's ``configs/`` that the fine-tune bundle holds byte for byte
COPIED = ("logging.conf", "metadata_schema.json")


def _key_order(base: Sequence[str], own: Sequence[str]) -> list[str]:
    """``base``'s keys, each key only ``own`` has inserted after the key it follows in ``own``."""
    out = list(base)
    for i, key in enumerate(own):
        if key not in out:
            out.insert(out.index(own[i - 1]) + 1 if i and own[i - 1] in out else len(out), key)
    return out


def merged(base: Any, own: Any, ids: Collection[tuple[str, ...]], path: tuple[str, ...] = ()) -> Any:
    """``base`` (the pretrain bundle's config) with ``own``'s values at the key paths ``ids``; a key of ``own`` that
    is neither in ``base`` nor one of ``ids`` is dropped."""
    if path in ids:
        return copy.deepcopy(own)
    if not (isinstance(base, dict) and isinstance(own, dict)):
        return copy.deepcopy(base)
    out = {}
    for key in _key_order(list(base), list(own)):
        sub = (*path, key)
        if key in base and key in own:
            out[key] = merged(base[key], own[key], ids, sub)
        elif key in base:
            out[key] = copy.deepcopy(base[key])
        elif sub in ids:
            out[key] = copy.deepcopy(own[key])
    return out


def _get(config: Any, path: tuple[str, ...], name: str) -> Any:
    for i, key in enumerate(path):
        if not isinstance(config, dict) or key not in config:
            raise KeyError(f"{name} has no {'#'.join(path[: i + 1])!r}, a fine-tune id of {__name__}.FINETUNE_IDS.")
        config = config[key]
    return config


def _diff(a: Any, b: Any, path: tuple[str, ...] = ()) -> list[str]:
    """The ``#`` ids at which ``a`` and ``b`` differ (values, or the order of a dict's keys)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [d for k in dict.fromkeys([*a, *b]) for d in _diff(a.get(k), b.get(k), (*path, k))]
        if not out and list(a) != list(b):
            out.append("#".join(path) + " (key order)")
        return out
    return [] if a == b and type(a) is type(b) else ["#".join(path) or "(whole file)"]


def _planned(bundles: Path) -> dict[Path, tuple[bytes, list[str]]]:
    """Fine-tune config file -> (its content in step with the pretrain bundle, the ids that differ today)."""
    pre, ft = bundles / "pgnm_pretrain" / "configs", bundles / "pgnm_finetune" / "configs"
    plan = {}
    for name, ids in FINETUNE_IDS.items():
        target = ft / name
        own = json.loads(target.read_text(encoding="utf-8")) if target.is_file() and not target.is_symlink() else {}
        for path in ids:
            _get(own, path, os.fspath(target))
        want = merged(json.loads((pre / name).read_text(encoding="utf-8")), own, set(ids))
        plan[target] = ((json.dumps(want, indent=4) + "\n").encode(), _diff(own, want))
    for name in COPIED:
        plan[ft / name] = ((pre / name).read_bytes(), ["(whole file)"])
    return plan


def differences(bundles: str | os.PathLike | None = None) -> list[str]:
    """``file: id`` for every id of the fine-tune's configs that :func:`sync` would change (``[]``: in step); a
    link is a difference (the bundle must run without ``../pgnm_pretrain``)."""
    from pgnm_monai.experiments.runner import bundles_dir

    root = Path(bundles) if bundles is not None else bundles_dir()
    out = []
    for target, (content, ids) in _planned(root).items():
        if target.is_symlink() or not target.is_file() or target.read_bytes() != content:
            rel = target.relative_to(root).as_posix()
            out += [f"{rel}: {i}" for i in ids] or [f"{rel}: (formatting)"]
    return out


def sync(bundles: str | os.PathLike | None = None) -> list[str]:
    """Rewrite the fine-tune bundle's configs in step with the pretrain bundle's (atomically; a link is replaced by
    a file); return :func:`differences` as they were."""
    from pgnm_monai.experiments.runner import bundles_dir

    root = Path(bundles) if bundles is not None else bundles_dir()
    changed = differences(root)
    for target, (content, _) in _planned(root).items():
        if target.is_symlink() or not target.is_file() or target.read_bytes() != content:
            if target.is_symlink():
                target.unlink()
            if target.suffix == ".json":
                atomic_write_text(target, content.decode())
            else:
                atomic_write_bytes(target, content)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m pgnm_monai.experiments.bundle_sync [--check] [--bundles-dir DIR]``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pgnm_monai.experiments.bundle_sync",
        description="Rewrite bundles/pgnm_finetune/configs from the pretrain bundle's configs and the fine-tune's "
        "own ids (or, with --check, list what a rewrite would change).",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the bundles differ")
    parser.add_argument("--bundles-dir", default=None, help="the folder of both bundles (default: the package's)")
    args = parser.parse_args(argv)
    found = differences(args.bundles_dir) if args.check else sync(args.bundles_dir)
    for line in found:
        print(("differs: " if args.check else "rewritten: ") + line)
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
