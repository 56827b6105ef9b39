"""One live run per output folder: OS file locks on ``bundle_root`` and the other output folders, taken by the
bundles' ``initialize``; and no finished run overwritten by accident (:func:`check_run_folder`).

A folder's lock is ``<folder>/.pgnm_run.lock`` (``filelock.FileLock``, one attempt, no waiting). The OS frees it
when the holding process ends in any way (SIGKILL included), so a lock left by a killed run never blocks the
next one; only a live process blocks. Beside it, ``.pgnm_run.json`` says who holds it (pid, host, start time,
command line), for the error the next run gets. Both files are removed when the lock is released (at the end of
a run, an error or Ctrl-C included; the lock file is unlinked while still held, which ``filelock`` 3.21 and later
detect in a process that opened it just before), so only a killed run leaves them behind.

A second lock, named by the folder's resolved path, lives outside it (``<temp dir>/pgnm-run-locks-<uid>/``): it
survives the deletion of the folder, so a run on a folder deleted and created again while a live run holds it
stops with the same error (the holder's description is kept there too).

The lock belongs to the process: runs in one process on one folder (the main job, a notebook, the tests)
share it. Under ``torch.distributed`` only the global rank 0 takes it, so the single-process config needs
no rank logic. Limits: the OS lock is advisory and local; on a network file system that lacks ``flock``
(``filelock`` then falls back to a plain marker file) a killed run's marker must be deleted by hand.

A finished run (its ``models/model.pt`` or ``eval/metrics.json`` written) is refused as the folder of a new one
unless it is resumed or the user asks to overwrite it; overwriting deletes the old run's outputs first
(:data:`RUN_OUTPUTS`), so two runs' models, metrics and TensorBoard files never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pgnm_monai import distributed
from pgnm_monai.atomic_files import atomic_write_text

__all__ = [
    "FINISHED_MARKERS",
    "INFO_NAME",
    "LOCK_NAME",
    "RUN_OUTPUTS",
    "BundleRootInUseError",
    "BundleRunLock",
    "FinishedRunError",
    "check_run_folder",
    "finished_run",
]

LOCK_NAME = ".pgnm_run.lock"
INFO_NAME = ".pgnm_run.json"
#: files whose presence marks a finished run in its folder: the trained model, the test split's metrics.
FINISHED_MARKERS = ("models/model.pt", "eval/metrics.json")
#: the subfolders a run writes (``ckpt_dir``, ``output_dir``, ``log_dir``; ``pgnm predict``'s CSVs), deleted by
#: an overwrite; nothing else in the folder is touched.
RUN_OUTPUTS = ("models", "eval", "logs", "predictions")


class BundleRootInUseError(RuntimeError):
    """Another live process holds the run lock of this ``bundle_root``."""


class FinishedRunError(FileExistsError):
    """The folder of a new run holds a finished run, and the user did not ask to overwrite it."""


class _FolderLock:
    """The lock of one output folder (``folder/.pgnm_run.lock``), named by its config id in errors."""

    def __init__(self, folder: str | os.PathLike, config_id: str = "bundle_root") -> None:
        self.folder = Path(folder)
        self.config_id = config_id
        self._lock: FileLock | None = None
        self._outside: FileLock | None = None  # the lock outside the folder, which survives its deletion

    @property
    def lock_path(self) -> Path:
        """The lock file, ``folder/.pgnm_run.lock``."""
        return self.folder / LOCK_NAME

    @property
    def info_path(self) -> Path:
        """The holder's description, ``folder/.pgnm_run.json``."""
        return self.folder / INFO_NAME

    def acquire(self) -> bool:
        """Take the lock (global rank 0 only); ``True`` when taken.

        Raises:
            BundleRootInUseError: another live process holds it (the message names it).
            PermissionError: ``bundle_root`` cannot be created or written.
        """
        if self._lock is not None:
            return True
        if _global_rank() != 0:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            folder = str(self.folder)
            raise PermissionError(f"config id {self.config_id!r}: cannot create {folder!r} ({e}).") from e
        outside = _outside_lock(self.folder)
        lock = FileLock(self.lock_path, timeout=0, is_singleton=True, thread_local=False)
        first = not lock.is_locked  # not yet held by this process
        try:
            if outside is not None:
                outside.acquire()
            try:
                lock.acquire()
            except BaseException:
                if outside is not None:
                    outside.release()
                raise
        except Timeout:
            raise BundleRootInUseError(
                f"{self.config_id} {str(self.folder)!r} is in use by another run ({self._holder()}); wait for "
                f"it to end, stop it, or give this run another {self.config_id}."
            ) from None
        except OSError as e:
            raise PermissionError(
                f"config id {self.config_id!r} points to {str(self.folder)!r}, which is not a writable folder "
                f"(its run lock {LOCK_NAME} cannot be written: {e.strerror or e}); choose another {self.config_id} "
                "or bundle_root, or fix its permissions."
            ) from e
        self._lock, self._outside = lock, outside
        if first:
            self._write_info()
        return True

    def release(self) -> None:
        """Release the lock if this object holds it (nothing otherwise); the last holder removes the info file."""
        lock, self._lock = self._lock, None
        outside, self._outside = self._outside, None
        if lock is None:
            return
        last = lock.lock_counter == 1  # the last holder in this process: no lock file is left behind
        if last:
            for info in (self.info_path, _outside_info(self.folder)):
                with suppress(OSError):
                    info.unlink()
            _unlink_held_lock(self.lock_path)
        lock.release()
        if outside is not None:
            if last and outside.lock_counter == 1:
                _unlink_held_lock(Path(outside.lock_file))
            outside.release()

    @property
    def is_held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock is not None

    def __enter__(self) -> _FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        with suppress(Exception):
            self.release()

    def _write_info(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": shlex.join([sys.executable, *sys.argv]),
        }
        for path in (self.info_path, _outside_info(self.folder)):
            try:  # whole or not at all: a full disk names the file and leaves no temporary file
                atomic_write_text(path, json.dumps({**info, "folder": str(self.folder)}, indent=1))
            except OSError:
                if path == self.info_path:
                    raise

    def _holder(self) -> str:
        for path in (self.info_path, _outside_info(self.folder)):  # the second survives the folder's deletion
            try:
                info = json.loads(path.read_text(encoding="utf-8"))
                return f"pid {info['pid']} on host {info['host']}, started {info['started']}: {info['command']}"
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return f"holder unknown: {str(self.info_path)!r} is missing or unreadable"


class BundleRunLock:
    """The run locks of ``bundle_root`` and of every other output folder: :meth:`acquire` at the start of a run,
    :meth:`release` at its end.

    Each distinct folder gets its own lock, so two runs with different roots that share a ``ckpt_dir`` or an
    ``output_dir`` cannot mix their files.

    Args:
        bundle_root: the run's root folder (created if missing).
        folders: other output folders by config id (e.g. ``ckpt_dir``, ``output_dir``); ``None`` ones are skipped.

    Example (what ``configs/train.json`` does)::

        "run_lock": {"_target_": "pgnm_monai.run_lock.BundleRunLock", "bundle_root": "@bundle_root",
                     "ckpt_dir": "@ckpt_dir", "output_dir": "@output_dir"},
        "initialize": [..., "$@run_lock.acquire()", ...],
        "finalize": ["$@run_lock.release()"]
    """

    def __init__(self, bundle_root: str | os.PathLike, **folders: str | os.PathLike | None) -> None:
        self.bundle_root = Path(bundle_root)
        seen: set[str] = set()
        self._locks: list[_FolderLock] = []
        for config_id, folder in {"bundle_root": bundle_root, **folders}.items():
            if folder is None or (key := os.path.realpath(folder)) in seen:
                continue
            seen.add(key)
            self._locks.append(_FolderLock(folder, config_id))

    @property
    def lock_path(self) -> Path:
        """The lock file of ``bundle_root``, ``bundle_root/.pgnm_run.lock``."""
        return self._locks[0].lock_path

    @property
    def info_path(self) -> Path:
        """The holder's description, ``bundle_root/.pgnm_run.json``."""
        return self._locks[0].info_path

    def acquire(self) -> bool:
        """Take every folder's lock (global rank 0 only), or none; ``True`` when taken.

        Raises:
            BundleRootInUseError: another live process holds one of them (the message names it and its holder).
            PermissionError: a folder cannot be created or written.
        """
        taken = []
        try:
            for lock in self._locks:
                if not lock.acquire():
                    return False
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return True

    def release(self) -> None:
        """Release the locks this object holds (nothing otherwise)."""
        for lock in reversed(self._locks):
            lock.release()

    @property
    def is_held(self) -> bool:
        """Whether this object holds the locks."""
        return all(lock.is_held for lock in self._locks)

    def __enter__(self) -> BundleRunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _unlink_held_lock(path: Path) -> None:
    """Remove the lock file ``path`` while its ``flock`` is still held (then released by the caller): a process that
    opened it just before locks an unlinked file, which ``filelock`` refuses, and the next one makes a new file. Only
    an ``flock`` file, which is empty; ``filelock``'s fallback on a file system without ``flock`` keeps its holder in
    the marker file and removes that itself."""
    with suppress(OSError):
        if path.stat().st_size == 0:
            path.unlink()


def finished_run(folder: str | os.PathLike) -> list[str]:
    """The :data:`FINISHED_MARKERS` that ``folder`` holds (``[]``: no finished run in it)."""
    return [name for name in FINISHED_MARKERS if (Path(folder) / name).is_file()]


def check_run_folder(
    folder: str | os.PathLike, overwrite: bool = False, option: str = "--output-dir", flag: str = "--overwrite"
) -> bool:
    """Before a new run in ``folder``: refuse a finished run there, or, with ``overwrite``, delete its outputs.

    The outputs (:data:`RUN_OUTPUTS`: model, checkpoints, metrics, TensorBoard event files, logs, predictions) are
    deleted under the folder's run lock, so a live run there stops this first; other files in ``folder`` stay.
    Returns whether an earlier run was deleted.

    Raises:
        FinishedRunError: ``folder`` holds a finished run and ``overwrite`` is false (naming the folder, what marks
            the run finished, ``option`` and ``flag``).
        BundleRootInUseError: a live run holds the folder.
    """
    markers = finished_run(folder)
    if not markers:
        return False
    if not overwrite:
        raise FinishedRunError(
            f"{option} {os.fspath(folder)!r} holds a finished run ({', '.join(markers)}); give {flag} to delete its "
            f"outputs ({', '.join(f'{d}/' for d in RUN_OUTPUTS)}) and train again, or another {option}."
        )
    with BundleRunLock(folder):
        for name in RUN_OUTPUTS:
            path = Path(folder) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    return True


def _outside_path(folder: Path, suffix: str) -> Path:
    """``<temp dir>/pgnm-run-locks-<uid>/<hash of the folder's resolved path><suffix>`` (its folder created)."""
    root = Path(tempfile.gettempdir()) / f"pgnm-run-locks-{getattr(os, 'getuid', lambda: 'user')()}"
    with suppress(OSError):  # where it cannot be made, the lock and description are left out (their callers' rule)
        root.mkdir(mode=0o700, exist_ok=True)
    key = hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest()[:32]
    return root / (key + suffix)


def _outside_lock(folder: Path) -> FileLock | None:
    """The lock of ``folder`` kept outside it, which survives the folder's deletion (a process-wide singleton);
    ``None`` where the temporary folder cannot hold it (the lock inside the folder still applies)."""
    try:
        return FileLock(_outside_path(folder, ".lock"), timeout=0, is_singleton=True, thread_local=False)
    except OSError:
        return None


def _outside_info(folder: Path) -> Path:
    """The holder's description beside :func:`_outside_lock`."""
    return _outside_path(folder, ".json")


def _global_rank() -> int:
    """The global rank; before the process group exists, torchrun's ``RANK`` (0 outside torchrun)."""
    if distributed.world_size() > 1:
        return distributed.rank()
    return int(os.environ.get("RANK", "0"))
