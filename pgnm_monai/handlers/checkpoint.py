"""MONAI's ``CheckpointSaver`` with atomic writes (temp file + rename), so no checkpoint is half-written."""

from __future__ import annotations

import os
from pathlib import Path

from monai.handlers import CheckpointSaver

from pgnm_monai.data.utils import default_file_mode

__all__ = ["AtomicCheckpointSaver"]


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
