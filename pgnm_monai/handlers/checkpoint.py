"""Checkpoint handlers with atomic writes (temp file + rename), so no checkpoint is ever half-written.

- :class:`AtomicDiskSaver`: ignite ``DiskSaver`` with ``atomic=True``, the usual file permission and an optional
  fixed file name;
- :class:`AtomicCheckpointSaver`: the file names and events of ``monai.handlers.CheckpointSaver``, built on
  ignite's public ``Checkpoint`` + :class:`AtomicDiskSaver`;
- :class:`TrainingStateSaver`: the full training state (engine included) every N epochs, for resuming;
- :class:`ResumeCheckpointLoader`: MONAI ``CheckpointLoader`` that also restores the engine.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, is_scalar, min_version, optional_import

from pgnm_monai.atomic_files import atomic_torch_save, default_file_mode

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite.distributed", IgniteInfo.OPT_IMPORT_VERSION, min_version)
if TYPE_CHECKING:
    from ignite.engine import Engine
    from ignite.handlers import Checkpoint, DiskSaver
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
    DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "ResumeCheckpointLoader",
    "TrainingStateSaver",
    "keep_last_epochs",
]


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes atomically, with the usual permission and an optional fixed file name.

    ignite serialises to a temporary file (owner-only) and renames it; the file is then given
    ``default_file_mode()`` (``0o666 & ~umask``), as a plain ``open(path, "w")`` would. With ``filename`` every
    checkpoint goes to that one file (as MONAI's internal ``_DiskSaver``); ``remove`` then does nothing, since
    the next save replaces the file atomically and removing it first would leave a moment without it.

    Args:
        dirname: folder of the checkpoints (created if missing; it need not be empty).
        filename: fixed file name for every checkpoint; None keeps ignite's names.
        file_mode: permission of the saved files; None is ``default_file_mode()``.
        kwargs: other arguments of ``ignite.handlers.DiskSaver`` (``save_on_rank``, ``torch.save`` keywords).
    """

    def __init__(
        self, dirname: str | os.PathLike, filename: str | None = None, file_mode: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.filename = filename
        self.file_mode = default_file_mode() if file_mode is None else file_mode

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Save ``checkpoint`` to ``dirname/filename`` (or the fixed file name) atomically, with its permission.

        Raises:
            OSError: naming the file, when it cannot be written (e.g. a full disk); the previous file is intact.
        """
        if idist.get_rank() != self.save_on_rank:
            return
        path = Path(self.dirname) / (self.filename or filename)
        atomic_torch_save(checkpoint, path)
        os.chmod(path, self.file_mode)

    def remove(self, filename: str) -> None:
        """Delete ``dirname/filename``; nothing with a fixed file name (the next save replaces it)."""
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver:
    """``monai.handlers.CheckpointSaver`` with atomic writes, on ignite's public ``Checkpoint`` + ``AtomicDiskSaver``.

    Not MONAI's ``CheckpointSaver``: MONAI 1.6.1 hard-codes ``atomic=False`` (for the file permission) in it.
    Same arguments, events and file names: the final checkpoint on ``COMPLETED`` and ``EXCEPTION_RAISED``
    (``final_filename`` or ``checkpoint_final_iteration=N.pt``), the best ``key_metric`` ones
    (``key_metric_filename`` or ``checkpoint_key_metric=X.XXXX.pt``) and every ``save_interval`` epochs or
    iterations the last ``n_saved`` ones (``checkpoint_epoch=N.pt``); a ``save_dict`` of one item ``key`` names
    them ``key_...`` instead of ``checkpoint_...``, ``file_prefix`` goes in front with ``_``.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: the objects to save, e.g. ``{"network": net, "optimizer": opt}``.
        name: logger name; None uses ``engine.logger``.
        file_prefix: prefix of the file names.
        save_final: save a checkpoint at the end of the run or when an exception is raised (put this handler
            before ``StatsHandler``: ignite calls only the first ``EXCEPTION_RAISED`` handler).
        final_filename: fixed file name of the final checkpoint.
        save_key_metric: save a checkpoint whenever the key metric improves (on ``EPOCH_COMPLETED``).
        key_metric_name: metric of ``engine.state.metrics``; None uses ``engine.state.key_metric_name``.
        key_metric_n_saved: how many best checkpoints to keep.
        key_metric_filename: fixed file name of the best checkpoint (needs ``key_metric_n_saved=1``).
        key_metric_save_state: also save the list of best checkpoints (as ``"checkpointer"``), for
            :meth:`load_state_dict` when resuming.
        key_metric_greater_or_equal: an equal score replaces the saved checkpoint.
        key_metric_negative_sign: smaller metric is better.
        epoch_level: ``save_interval`` counts epochs (True) or iterations (False).
        save_interval: save every N epochs/iterations; 0 saves none.
        n_saved: how many interval checkpoints to keep; None keeps all.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        name: str | None = None,
        file_prefix: str = "",
        save_final: bool = False,
        final_filename: str | None = None,
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_n_saved: int = 1,
        key_metric_filename: str | None = None,
        key_metric_save_state: bool = False,
        key_metric_greater_or_equal: bool = False,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 0,
        n_saved: int | None = None,
    ) -> None:
        if save_dir is None:
            raise ValueError("save_dir is required.")
        if not save_dict:
            raise ValueError("save_dict must hold at least one object to save.")
        if key_metric_filename is not None and key_metric_n_saved > 1:
            raise ValueError("a fixed key_metric_filename keeps one model: key_metric_n_saved must be 1.")
        self.save_dir = save_dir
        self.save_dict = save_dict
        self.logger = logging.getLogger(name)
        self._name = name
        self.file_prefix = file_prefix
        self.final_filename = final_filename
        self.key_metric_name = key_metric_name
        self.key_metric_negative_sign = key_metric_negative_sign
        self.epoch_level = epoch_level
        self.save_interval = save_interval
        self.n_saved = n_saved

        self.final_checkpoint: Checkpoint | None = None
        self.key_metric_checkpoint: Checkpoint | None = None
        self.interval_checkpoint: Checkpoint | None = None
        if save_final:
            self.final_checkpoint = Checkpoint(
                to_save=self.save_dict,
                save_handler=AtomicDiskSaver(self.save_dir, filename=final_filename),
                filename_prefix=file_prefix,
                score_function=_iteration,
                score_name="final_iteration",
            )
        if save_key_metric:
            self.key_metric_checkpoint = Checkpoint(
                to_save=self.save_dict,
                save_handler=AtomicDiskSaver(self.save_dir, filename=key_metric_filename),
                filename_prefix=file_prefix,
                score_function=self._key_metric_score,
                score_name="key_metric",
                n_saved=key_metric_n_saved,
                include_self=key_metric_save_state,
                greater_or_equal=key_metric_greater_or_equal,
            )
        if save_interval > 0:
            self.interval_checkpoint = self.interval_checkpointer(self.save_dict)

    def interval_checkpointer(self, to_save: Mapping) -> Checkpoint:
        """The ignite ``Checkpoint`` of ``to_save`` every ``save_interval`` epochs/iterations.

        It keeps every file: ignite would delete the oldest *before* writing the new one, so a kill in between
        would leave no checkpoint; :meth:`interval_completed` prunes to the last ``n_saved`` after the write.
        """
        return Checkpoint(
            to_save=to_save,
            save_handler=AtomicDiskSaver(self.save_dir),
            filename_prefix=self.file_prefix,
            score_function=self._interval_score,
            score_name=self._unit,
            n_saved=None,
        )

    @property
    def _unit(self) -> str:
        return "epoch" if self.epoch_level else "iteration"

    def _interval_score(self, engine: Engine) -> int:
        return engine.state.epoch if self.epoch_level else engine.state.iteration

    def _key_metric_score(self, engine: Engine) -> Any:
        if isinstance(self.key_metric_name, str):
            metric_name = self.key_metric_name
        elif hasattr(engine.state, "key_metric_name"):
            metric_name = engine.state.key_metric_name
        else:
            raise ValueError(f"Incompatible values: save_key_metric=True and key_metric_name={self.key_metric_name}.")
        metric = engine.state.metrics[metric_name]
        if not is_scalar(metric):
            warnings.warn(f"key metric {metric_name}={metric} is not a scalar: no model saved.", stacklevel=2)
            return -1
        return (-1 if self.key_metric_negative_sign else 1) * metric

    def state_dict(self) -> dict:
        """The list of best key-metric checkpoints and their scores (for a training-state checkpoint)."""
        if self.key_metric_checkpoint is None:
            return {}
        return dict(self.key_metric_checkpoint.state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the list of best key-metric checkpoints (:meth:`state_dict`, or ``key_metric_save_state=True``)."""
        if self.key_metric_checkpoint is None:
            warnings.warn("no key metric checkpoint to resume the key metric tracking list of.", stacklevel=2)
            return
        self.key_metric_checkpoint.load_state_dict(state_dict)

    def attach(self, engine: Engine) -> None:
        """Register the callbacks on ``engine`` (a trainer or an evaluator)."""
        if self._name is None:
            self.logger = engine.logger
        if self.final_checkpoint is not None:
            engine.add_event_handler(Events.COMPLETED, self.completed)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        if self.key_metric_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.metrics_completed)
        if self.interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_completed)

    def _save_final(self, engine: Engine) -> str:
        """Save the final checkpoint, then delete an earlier one of another name; returns its path."""
        if self.final_checkpoint is None:
            raise RuntimeError("save_final=False: no final checkpoint to save.")
        previous = self.final_checkpoint.last_checkpoint
        self.final_checkpoint.reset()  # a second run (or an exception after COMPLETED) saves again
        self.final_checkpoint(engine)
        current = self.final_checkpoint.last_checkpoint
        if previous is not None and current is not None and Path(previous).name != Path(current).name:
            self.final_checkpoint.save_handler.remove(Path(previous).name)
        if self.final_filename is not None:
            return os.path.join(self.save_dir, self.final_filename)
        return str(current)

    def completed(self, engine: Engine) -> None:
        """``COMPLETED``: save the final checkpoint."""
        self.logger.info(f"Train completed, saved final checkpoint: {self._save_final(engine)}")

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """``EXCEPTION_RAISED``: save the final checkpoint and raise ``e`` again."""
        self.logger.info(f"Exception raised, saved the last checkpoint: {self._save_final(engine)}")
        raise e

    def metrics_completed(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: save a checkpoint if the key metric is among the best ones."""
        if self.key_metric_checkpoint is None:
            raise RuntimeError("save_key_metric=False: no key metric checkpoint to save.")
        self.key_metric_checkpoint(engine)

    def interval_completed(self, engine: Engine) -> None:
        """Every ``save_interval`` epochs/iterations: save a checkpoint, keeping the last ``n_saved``."""
        if self.interval_checkpoint is None:
            raise RuntimeError("save_interval=0: no interval checkpoint to save.")
        self.interval_checkpoint(engine)
        if self.n_saved is not None and idist.get_rank() == self.interval_checkpoint.save_handler.save_on_rank:
            # ignite forgets the files of an earlier process: after a resume they are pruned here too (by number;
            # later numbers than this one belong to no live run)
            name = Path(str(self.interval_checkpoint.last_checkpoint)).name
            prefix = name.rpartition(f"_{self._unit}=")[0]
            keep_last_epochs(self.save_dir, prefix, self._interval_score(engine), self.n_saved, unit=self._unit)
        self.logger.info(f"Saved checkpoint at {self._unit}: {self._interval_score(engine)}")


def _iteration(engine: Engine) -> int:
    return engine.state.iteration


def keep_last_epochs(
    folder: str | os.PathLike, prefix: str, epoch: int, keep: int, unit: str = "epoch"
) -> dict[int, Path]:
    """Of the ``<prefix>_<unit>=N.pt`` files in ``folder``, keep the last ``keep`` with ``N <= epoch`` and remove the
    others (later numbers are left by a run that was interrupted and resumed from an earlier one); return the kept
    files by number. Call it after writing the newest file, so that a kill never leaves none."""
    files = {}
    for path in Path(folder).glob(f"{prefix}_{unit}=*.pt"):
        number = path.stem.partition("=")[2]
        if number.isdigit():
            files[int(number)] = path
    kept = sorted(n for n in files if n <= epoch)[-keep:]
    for number, path in files.items():
        if number not in kept:
            path.unlink(missing_ok=True)
    return {n: files[n] for n in kept}


class ResumeCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` that also restores the engine it is attached to (as ``"trainer"``).

    A config cannot list the trainer among its own handlers' arguments (a circular reference), so the
    engine is added to ``load_dict`` at ``attach``. With ``load_path=None`` it does nothing.

    Args:
        load_path: checkpoint to load, or None to do nothing.
        load_dict: the objects to restore, e.g. ``{"model": net, "optimizer": opt}``.
        engine_key: key of the engine in the checkpoint.
        kwargs: other arguments of ``monai.handlers.CheckpointLoader``.
    """

    def __init__(self, load_path: str | None, load_dict: dict, engine_key: str = "trainer", **kwargs: Any) -> None:
        self.enabled = load_path is not None
        self.engine_key = engine_key
        if self.enabled:
            super().__init__(load_path=load_path, load_dict=dict(load_dict), **kwargs)

    def attach(self, engine: Engine) -> None:
        """Add ``engine`` to ``load_dict`` and load the checkpoint on ``STARTED`` (if enabled)."""
        if self.enabled:
            self.load_dict[self.engine_key] = engine
            super().attach(engine)


class TrainingStateSaver(AtomicCheckpointSaver):
    """Atomic checkpoint of the full training state every ``save_interval`` epochs, engine included.

    Writes ``checkpoint_epoch=N.pt`` (keeping the last ``n_saved``) with ``save_dict`` plus the engine under
    ``engine_key`` (a config cannot name the trainer among its own handlers, see :class:`ResumeCheckpointLoader`),
    so its ignite ``Checkpoint`` is built at :meth:`attach`.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: the objects to save besides the engine, e.g. ``{"model": net, "optimizer": opt}``.
        save_interval: save every N epochs (> 0).
        n_saved: how many checkpoints to keep; None keeps all.
        engine_key: key of the engine in the checkpoint.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        save_interval: int = 1,
        n_saved: int | None = 1,
        engine_key: str = "trainer",
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be a positive number of epochs, got {save_interval}.")
        super().__init__(
            save_dir=save_dir, save_dict=dict(save_dict), file_prefix="", n_saved=n_saved, epoch_level=True
        )
        self.save_interval = save_interval
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        """Add ``engine`` to the saved objects, build the interval ``Checkpoint`` and register it."""
        self.save_dict = {**self.save_dict, self.engine_key: engine}
        self.interval_checkpoint = self.interval_checkpointer(self.save_dict)
        super().attach(engine)
