"""Where the project's MONAI bundles are: the folder holding ``pgnm_pretrain`` and ``pgnm_finetune``."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["BUNDLES_DIR_ENV", "bundles_dir"]

#: the environment variable naming another bundles folder
BUNDLES_DIR_ENV = "PGNM_BUNDLES_DIR"


def bundles_dir() -> Path:
    """The folder holding ``pgnm_pretrain`` and ``pgnm_finetune``.

    ``$PGNM_BUNDLES_DIR`` when set, else the copy shipped in the package (``pgnm_monai.bundles``, which is the
    repository's ``bundles/`` folder in an editable install).
    """
    env = os.environ.get(BUNDLES_DIR_ENV)
    path = Path(env) if env else _packaged_bundles()
    if not (path / "pgnm_pretrain" / "configs" / "train.json").is_file():
        raise FileNotFoundError(
            f"bundles folder {path} has no pgnm_pretrain/configs/train.json; reinstall pgnm-monai or set "
            f"{BUNDLES_DIR_ENV} to a folder holding pgnm_pretrain/ and pgnm_finetune/."
        )
    return path


def _packaged_bundles() -> Path:
    try:
        return Path(str(resources.files("pgnm_monai.bundles")))
    except ModuleNotFoundError:  # an editable install maps only the top-level package: the checkout's bundles/
        return Path(__file__).resolve().parents[1] / "bundles"
