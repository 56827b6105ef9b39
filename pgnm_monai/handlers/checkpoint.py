"""MONAI's ``CheckpointSaver`` with atomic writes (temp file + rename), so no checkpoint is half-written."""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING, Any

from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from pgnm_monai.data.utils import default_file_mode

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AtomicCheckpointSaver", "ResumeCheckpointLoader", "TrainingStateSaver"]


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` whose files are written to a temporary file and renamed.

    MONAI 1.6.1 turns ignite's atomic saving off only to keep group/other read permission; this class
    turns it back on and restores the usual ``0o666 & ~umask`` permission after each rename. Arguments
    are those of ``CheckpointSaver``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        mode = default_file_mode()
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is None:
                continue
            saver = checkpoint.save_handler
            saver._atomic = True  # ignite DiskSaver: serialise to a temp file, then os.replace
            saver.__class__ = _permission_fixing(type(saver), mode)


def _permission_fixing(cls: type, mode: int) -> type:
    """A subclass of the DiskSaver class ``cls`` that chmods the file after saving it."""

    class _Saver(cls):  # type: ignore[misc, valid-type]
        def __call__(self, checkpoint, filename, metadata=None) -> None:
            super().__call__(checkpoint, filename, metadata)
            path = Path(self.dirname) / (getattr(self, "filename", None) or filename)
            if path.exists():
                os.chmod(path, mode)

    _Saver.__name__ = f"Atomic{cls.__name__}"
    return _Saver


class ResumeCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` that also restores the engine it is attached to (as ``"trainer"``).

    A config cannot list the trainer among its own handlers' arguments (a circular reference), so the
    engine is added to ``load_dict`` at ``attach``. With ``load_path=None`` it does nothing.
    """

    def __init__(self, load_path: str | None, load_dict: dict, engine_key: str = "trainer", **kwargs: Any) -> None:
        self.enabled = load_path is not None
        self.engine_key = engine_key
        if self.enabled:
            super().__init__(load_path=load_path, load_dict=dict(load_dict), **kwargs)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            self.load_dict[self.engine_key] = engine
            super().attach(engine)


class TrainingStateSaver(AtomicCheckpointSaver):
    """Atomic ``CheckpointSaver`` of the full training state every ``save_interval`` epochs, engine included.

    Writes ``checkpoint_epoch=N.pt`` (keeping the last ``n_saved``) with ``save_dict`` plus the engine under
    ``"trainer"`` (added at ``attach``, see :class:`ResumeCheckpointLoader`).
    """

    def __init__(
        self, save_dir: str, save_dict: dict, save_interval: int = 1, n_saved: int = 1, engine_key: str = "trainer"
    ) -> None:
        super().__init__(
            save_dir=save_dir,
            save_dict=dict(save_dict),
            file_prefix="",
            save_interval=save_interval,
            n_saved=n_saved,
            epoch_level=True,
        )
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        self.save_dict[self.engine_key] = engine
        if self._interval_checkpoint is not None:
            self._interval_checkpoint.to_save[self.engine_key] = engine
        super().attach(engine)
