"""Files written whole or not at all: every writer goes through a temporary file in the target folder and
``os.replace``, so a reader (or a resumed run) never sees a half-written file; and JSON-ready values.

The files get the permission a plain ``open(path, "w")`` would give (:func:`default_file_mode`), not
``mkstemp``'s owner-only one.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_save_figure",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_text",
    "default_file_mode",
    "to_jsonable",
]


def default_file_mode() -> int:
    """``0o666 & ~umask``: the permission a plain ``open(path, "w")`` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The file gets the usual permission (:func:`default_file_mode`), not ``mkstemp``'s owner-only one. A temporary
    file of ``path`` left by a killed process (``.<name>.*.tmp``) is removed once ``path`` is written.

    Raises:
        OSError: the file could not be written (e.g. the disk is full); the error names ``path``, whose previous
            version, if any, is left as it was, and no temporary file is left.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError) and os.fspath(path) not in str(error):
            reason = error.strerror or str(error)
            raise OSError(error.errno, f"{reason}: {path} was not written (its previous version is intact)") from error
        raise
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Write a CSV file atomically (see :func:`atomic_write_text`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _finite(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v


def to_jsonable(obj: Any) -> Any:
    """``obj`` with tensors, numpy scalars and tuples made JSON-ready (NaN becomes ``None``)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if getattr(obj, "ndim", 0) and hasattr(obj, "tolist"):  # tensors and arrays
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return _finite(obj.item())
    return _finite(obj)
