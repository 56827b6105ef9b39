"""The first step of every bundle stage, shared by all of them (``"@preflight"`` at the head of ``initialize``)."""

from __future__ import annotations

from monai.data import set_track_meta
from monai.utils import set_determinism

from pgnm_monai import distributed as dist
from pgnm_monai.components.errors import show_root_error_last
from pgnm_monai.components.overrides import check_cli_overrides

__all__ = ["preflight"]


def preflight(seed: int, track_meta: bool, distributed: bool = False) -> bool:
    """Get a stage ready: the project's message as an error's last line (:func:`show_root_error_last`), the
    command line's override ids checked (:func:`check_cli_overrides`), under ``distributed`` the process group
    joined (:func:`pgnm_monai.distributed.init_distributed`), every RNG seeded (``seed``, plus the rank under
    ``distributed``: MONAI's ``set_determinism``) and MONAI's metadata tracking set (``track_meta``).

    Args:
        seed: the stage's ``seed`` id.
        track_meta: the ``track_meta`` id (``False``: plain tensors, faster; the chains read no metadata).
        distributed: join the ``torchrun`` process group first (``multi_gpu_train.json``).

    Returns:
        ``True``, so a config can list it among its checks.
    """
    show_root_error_last()
    check_cli_overrides()
    if distributed:
        dist.init_distributed()
    set_determinism(seed=int(seed) + (dist.rank() if distributed else 0))
    set_track_meta(bool(track_meta))
    return True
