"""The project's message as the last line of an error that MONAI's wrappers hide.

MONAI wraps an error raised inside a ``$`` expression or a ``_target_`` component in a ``RuntimeError``
("Failed to evaluate ..." / "Failed to instantiate ..."), and one raised inside a transform in
``RuntimeError("applying transform ...")``, which Python prints last. :func:`root_error` finds the
error under those wrappers; :func:`show_root_error_last` (the first ``initialize`` step of the bundles) prints
its message again as the last line of an uncaught error's traceback, and
:func:`pgnm_monai.experiments.runner.run_bundle` raises it unwrapped.

Under ``torchrun`` each rank's error also ends with one line naming the rank and that error
(:func:`rank_error_line`), which is written to the rank's ``TORCHELASTIC_ERROR_FILE`` too, so that torchrun's
summary of the failed ranks shows each rank's reason instead of "To enable traceback see: ...".
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from types import TracebackType

__all__ = ["rank_error_line", "record_rank_error", "root_error", "show_root_error_last"]

#: the messages of MONAI's wrapping ``RuntimeError``: a config item, a transform of a chain.
_MONAI_WRAPPERS = ("Failed to evaluate", "Failed to instantiate", "applying transform")


def root_error(error: BaseException) -> BaseException:
    """The error under MONAI's wrappers: the first in ``error``'s chain that is not one of them.

    MONAI raises ``RuntimeError("Failed to evaluate ...")`` / ``RuntimeError("Failed to instantiate ...")``
    from the error of a ``$`` expression or a ``_target_`` component, and ``RuntimeError("applying transform
    <object at 0x...>")`` from the error of a transform (once per nested ``Compose``); those wrappers name the
    config item or the transform object, not the fault. An error that is not such a wrapper is returned as is.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not (type(current) is RuntimeError and str(current).startswith(_MONAI_WRAPPERS)):
            return current
        current = current.__cause__ or current.__context__
    return error


def rank_error_line(error: BaseException) -> str | None:
    """``"[rank R of W] Type: message"`` (on one line) of :func:`root_error` of ``error`` in a process that
    ``torchrun`` started (``RANK`` and ``WORLD_SIZE`` set); ``None`` in any other process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    root = root_error(error)
    message = " ".join(str(root).split())
    text = f"{type(root).__name__}: {message}" if message else type(root).__name__
    return f"[rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}] {text}"


def record_rank_error(error: BaseException) -> str | None:
    """Write :func:`rank_error_line` of ``error`` to the rank's ``TORCHELASTIC_ERROR_FILE`` (the file torchrun reads
    for its summary, in the layout of ``torch.distributed.elastic``'s ``ErrorHandler``); return the line, or ``None``
    outside ``torchrun``."""
    line = rank_error_line(error)
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if line is None or not path:
        return line
    data = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass  # the line on stderr still names the reason
    return line


def show_root_error_last() -> bool:
    """Make an uncaught error's report end with the message of :func:`root_error` (the project's message).

    Installs a ``sys.excepthook`` that prints the usual traceback, then, when MONAI wrapped the error, the
    wrapped error's type and message as the last line; under ``torchrun``, the last line names the rank
    (:func:`record_rank_error`). It changes only what an uncaught error prints when the process ends
    (``python -m monai.bundle run``); idempotent.
    """
    if getattr(sys.excepthook, "_pgnm_root_error_last", False):
        return True
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        previous(kind, error, tb)
        root = root_error(error)
        if root is not error:
            sys.stderr.write("\nThe error under MONAI's wrapper:\n")
            sys.stderr.write("".join(traceback.format_exception_only(type(root), root)))
        line = record_rank_error(error)
        if line is not None:
            sys.stderr.write(f"{line}\n")
        sys.stderr.flush()

    hook._pgnm_root_error_last = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
