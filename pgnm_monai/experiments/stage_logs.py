"""Where a bundle stage's log lines go: the console (as the bundle's ``logging.conf`` says), or, inside
:func:`quiet_logs` (what ``pgnm run | finetune | benchmark`` use unless ``--verbose``), the stage's own file
``<bundle_root>/logs/<stage>.log`` (:func:`logs_to_file`). :mod:`.runner` runs the stages.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["DropSpuriousConfigRootWarning", "logs_are_quiet", "logs_to_file", "quiet_logs", "stage_log_path"]

_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("pgnm_quiet_bundle_logs", default=False)
#: loggers that MONAI's handlers create when the trainer is built, each with a console handler of its own.
_MONAI_HANDLER_LOGGERS = ("monai.handlers.StatsHandler",)


@contextlib.contextmanager
def quiet_logs(enabled: bool = True) -> Iterator[None]:
    """Within this block, :func:`pgnm_monai.experiments.runner.run_bundle` writes each stage's log lines to
    ``<bundle_root>/logs/<stage>.log`` and not to the console (``enabled=False``: the console, as the bundle's
    ``logging.conf`` says)."""
    token = _QUIET.set(enabled)
    try:
        yield
    finally:
        _QUIET.reset(token)


def logs_are_quiet() -> bool:
    """Whether this code runs inside ``quiet_logs(True)``."""
    return _QUIET.get()


def stage_log_path(bundle_root: str | Path | None, stage: str) -> Path:
    """``<bundle_root>/logs/<stage>.log`` (``bundle_root`` ``None``: the current folder)."""
    return Path(bundle_root or ".") / "logs" / f"{stage}.log"


class DropSpuriousConfigRootWarning(logging.Filter):
    """MONAI warns "Not all config files are in <folder>" for merged configs even when, as here, ``meta_file`` and
    ``logging_file`` are given, which is the case the warning asks for; drop that one message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Not all config files are in")


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[Callable[[], None]]:
    """Send every console handler's records (the root logger's and MONAI's own loggers') to ``path`` instead.

    Yields ``reroute``: call it after something installed new console handlers (a bundle's ``logging.conf``) to
    send those to ``path`` too. Every logger's handlers and level are restored at the end. When the block raises,
    the lines it logged are written to stderr and the file (and a ``logs`` folder this created) removed: a failed
    stage leaves no output behind, and its log is not lost.
    """
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    start = path.stat().st_size if path.exists() else 0
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    saved: dict[logging.Logger, tuple[list[logging.Handler], int]] = {}
    # loggers that MONAI's handlers create when the trainer is built (inside ``run``), with a console handler of
    # their own unless they exist already: made here, so that they log to the file from their first line
    made = [n for n in _MONAI_HANDLER_LOGGERS if n not in logging.Logger.manager.loggerDict]
    for name in made:
        logging.getLogger(name).propagate = False

    def reroute() -> None:
        loggers = [logging.getLogger()] + [
            lg
            for lg in list(logging.Logger.manager.loggerDict.values())
            if isinstance(lg, logging.Logger) and (lg.handlers or lg.name in made) and not lg.propagate
        ]
        for lg in loggers:
            saved.setdefault(lg, (lg.handlers[:], lg.level))
            consoles = [h for h in lg.handlers if isinstance(h, logging.StreamHandler) and _is_console(h)]
            if consoles or lg.name in made or (lg is loggers[0] and file_handler not in lg.handlers):
                kept = [h for h in lg.handlers if h not in consoles and h is not file_handler]
                lg.handlers = [*kept, file_handler]

    reroute()
    try:
        yield reroute
    except BaseException:
        file_handler.flush()
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            sys.stderr.write(f.read())
        if start == 0:
            path.unlink(missing_ok=True)
            if created and not any(path.parent.iterdir()):
                path.parent.rmdir()
        raise
    finally:
        for lg, (handlers, level) in saved.items():
            lg.handlers = handlers
            lg.setLevel(level)
        for name in made:  # as MONAI's get_logger would have made them
            console = logging.StreamHandler(sys.stdout)
            console.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
            logging.getLogger(name).handlers = [console]
        file_handler.close()


def _is_console(handler: logging.StreamHandler) -> bool:
    return getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
