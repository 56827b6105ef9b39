"""Run the project's MONAI bundles in this process: one function per stage, used by the CLI, the main job
(:mod:`.pipeline`), the protocol (:mod:`.protocol`) and the tests.

A stage is a list of config files merged in order, exactly as ``python -m monai.bundle run --config_file
"[...]"`` merges them (see :data:`STAGES`); the fine-tune bundle is an overlay of the pretrain bundle's
``train.json``. Overrides are the bundle ids (``arm``, ``epochs``, ``dataset_dir``, ...); a value left
``None`` here is not passed, so the bundle's own default applies (defaults are stated once, in the bundle).
An override id that the stage's configs do not define is refused by name, with the closest ids.

Logs: inside :func:`quiet_logs` (what ``pgnm run | finetune | benchmark`` use unless ``--verbose``) every log line
of a stage goes to ``<bundle_root>/logs/<stage>.log`` instead of the console; outside it, the bundle's
``logging.conf`` applies, as under ``python -m monai.bundle run``.

:func:`run_bundle` raises the error a config check or handler raised (``ValueError``, ``FileNotFoundError``,
``FloatingPointError``, :class:`~pgnm_monai.run_lock.BundleRootInUseError`, ...), not MONAI's
"Failed to evaluate ..." wrapper around it, and releases the run lock of ``bundle_root`` whatever happens.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "STAGES",
    "bundle_defaults",
    "bundles_dir",
    "evaluate",
    "finetune",
    "make_workflow",
    "pretrain",
    "quiet_logs",
    "read_json",
    "run_bundle",
    "stage_configs",
]

logger = logging.getLogger(__name__)

#: (bundle, stage) -> config files, relative to the bundles folder, merged in order.
STAGES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pgnm_pretrain", "train"): ("pgnm_pretrain/configs/train.json",),
    ("pgnm_pretrain", "evaluate"): ("pgnm_pretrain/configs/train.json", "pgnm_pretrain/configs/evaluate.json"),
    ("pgnm_pretrain", "inference"): ("pgnm_pretrain/configs/inference.json",),
    ("pgnm_finetune", "train"): ("pgnm_pretrain/configs/train.json", "pgnm_finetune/configs/train.json"),
    ("pgnm_finetune", "evaluate"): (
        "pgnm_pretrain/configs/train.json",
        "pgnm_finetune/configs/train.json",
        "pgnm_pretrain/configs/evaluate.json",
        "pgnm_finetune/configs/evaluate.json",
    ),
    ("pgnm_finetune", "inference"): ("pgnm_finetune/configs/inference.json",),
}


_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("pgnm_quiet_bundle_logs", default=False)


@contextlib.contextmanager
def quiet_logs(enabled: bool = True) -> Iterator[None]:
    """Within this block, :func:`run_bundle` writes each stage's log lines to ``<bundle_root>/logs/<stage>.log``
    and not to the console (``enabled=False``: the console, as the bundle's ``logging.conf`` says)."""
    token = _QUIET.set(enabled)
    try:
        yield
    finally:
        _QUIET.reset(token)


class _DropSpuriousConfigRootWarning(logging.Filter):
    """MONAI warns "Not all config files are in <folder>" for merged configs even when, as here, ``meta_file`` and
    ``logging_file`` are given, which is the case the warning asks for; drop that one message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Not all config files are in")


@contextlib.contextmanager
def _logs_to_file(path: Path) -> Iterator[Callable[[], None]]:
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


_MONAI_HANDLER_LOGGERS = ("monai.handlers.StatsHandler",)


def _is_console(handler: logging.StreamHandler) -> bool:
    return getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def bundles_dir() -> Path:
    """The folder holding ``pgnm_pretrain`` and ``pgnm_finetune``.

    ``$PGNM_BUNDLES_DIR`` when set, else the copy shipped in the package (``pgnm_monai.bundles``, which is the
    repository's ``bundles/`` folder in an editable install).
    """
    env = os.environ.get("PGNM_BUNDLES_DIR")
    path = Path(env) if env else _packaged_bundles()
    if not (path / "pgnm_pretrain" / "configs" / "train.json").is_file():
        raise FileNotFoundError(
            f"bundles folder {path} has no pgnm_pretrain/configs/train.json; reinstall pgnm-monai or set "
            "PGNM_BUNDLES_DIR to a folder holding pgnm_pretrain/ and pgnm_finetune/."
        )
    return path


def _packaged_bundles() -> Path:
    try:
        return Path(str(resources.files("pgnm_monai.bundles")))
    except ModuleNotFoundError:  # an editable install maps only the top-level package: the checkout's bundles/
        return Path(__file__).resolve().parents[2] / "bundles"


def stage_configs(bundle: str, stage: str) -> list[Path]:
    """The config files of ``stage`` (``train``, ``evaluate``, ``inference``) of ``bundle``, in merge order."""
    if (bundle, stage) not in STAGES:
        raise ValueError(f"unknown bundle stage {(bundle, stage)!r}; known: {sorted(STAGES)}.")
    root = bundles_dir()
    return [root / c for c in STAGES[(bundle, stage)]]


def make_workflow(bundle: str, stage: str, **overrides: Any):
    """The ``ConfigWorkflow`` of ``stage`` of ``bundle`` with ``overrides`` (``None`` values dropped), not yet run.

    The same as ``python -m monai.bundle run --config_file "[<stage configs>]" --meta_file
    <bundle>/configs/metadata.json --logging_file <bundle>/configs/logging.conf --<id> <value> ...``.
    """
    from monai.bundle import ConfigParser, ConfigWorkflow

    from pgnm_monai.components import check_override_ids

    files = [os.fspath(p) for p in stage_configs(bundle, stage)]
    configs = bundles_dir() / bundle / "configs"
    overrides = {k: v for k, v in overrides.items() if v is not None}
    own = set(inspect.signature(ConfigWorkflow.__init__).parameters)  # tracking, run_id, ...: not config ids
    names = ", ".join(os.path.relpath(f, bundles_dir()) for f in files)
    check_override_ids(ConfigParser.load_config_files(files), [k for k in overrides if k not in own], names)
    workflows_logger, spurious = logging.getLogger("monai.bundle.workflows"), _DropSpuriousConfigRootWarning()
    workflows_logger.addFilter(spurious)
    try:
        return ConfigWorkflow(
            config_file=files if len(files) > 1 else files[0],
            meta_file=os.fspath(configs / "metadata.json"),
            logging_file=os.fspath(configs / "logging.conf"),
            workflow_type="infer" if stage == "inference" else "train",
            **overrides,
        )
    finally:
        workflows_logger.removeFilter(spurious)


def run_bundle(bundle: str, stage: str, **overrides: Any):
    """Initialise, run and finalise :func:`make_workflow` (``bundle``, ``stage``, ``overrides``); return it.

    Raises:
        the error under MONAI's "Failed to evaluate/instantiate" wrapper (see
        :func:`pgnm_monai.components.root_error`); the run lock is released and MONAI's metadata tracking
        restored first (``finalize`` does both after a run that succeeds).
    """
    if not _QUIET.get():
        return _run_workflow(make_workflow(bundle, stage, **overrides))
    with _logs_to_file(Path(overrides.get("bundle_root") or ".") / "logs" / f"{stage}.log") as reroute:
        wf = make_workflow(bundle, stage, **overrides)
        reroute()  # the console handler the bundle's logging.conf just installed
        return _run_workflow(wf, initialized=reroute)  # and those of the loggers its handlers create


def _run_workflow(wf: Any, initialized: Callable[[], None] | None = None) -> Any:
    """``initialize`` (then ``initialized()``), ``run``, ``finalize``; on an error, release the run lock and raise
    the root error."""
    from monai.data import set_track_meta

    from pgnm_monai.components import root_error

    try:
        wf.initialize()
        if initialized is not None:
            initialized()
        wf.run()
    except Exception as e:
        error = root_error(e)
        _release_run_lock(wf)
        set_track_meta(True)  # what finalize restores: the bundles switch MONAI's metadata tracking off
        if error is e:
            raise
    else:
        wf.finalize()
        return wf
    raise error  # outside the except block: the project's error, not MONAI's wrapper, is the last one printed


def _release_run_lock(wf: Any) -> None:
    """Release the ``run_lock`` of a failed workflow (``finalize`` is not run after a failure)."""
    if "run_lock" not in wf.parser:
        return
    try:
        wf.parser.get_parsed_content("run_lock").release()
    except Exception as e:  # the run failed already: report that error, not this one
        logger.warning(f"could not release the run lock: {e}")


def bundle_defaults(bundle: str = "pgnm_pretrain", stage: str = "train") -> dict[str, Any]:
    """The plain (non-expression) top-level ids of ``stage``'s configs after merging: the bundle's defaults."""
    merged: dict[str, Any] = {}
    for path in stage_configs(bundle, stage):
        merged.update(read_json(path))
    return {k: v for k, v in merged.items() if not (isinstance(v, str) and v[:1] in "$@%") and not isinstance(v, dict)}


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of ``path``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pretrain(bundle_root: str | os.PathLike, **overrides: Any) -> Path:
    """Pretrain into ``bundle_root`` (any arm); return the heated ``models/model.pt``."""
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(bundle_root), **overrides)
    return Path(bundle_root) / "models" / "model.pt"


def finetune(bundle_root: str | os.PathLike, pretrained_ckpt: str | os.PathLike, **overrides: Any) -> Path:
    """Fine-tune the heated ``pretrained_ckpt`` into ``bundle_root``; return the fine-tuned ``models/model.pt``."""
    run_bundle(
        "pgnm_finetune",
        "train",
        bundle_root=os.fspath(bundle_root),
        pretrained_ckpt=os.fspath(pretrained_ckpt),
        **overrides,
    )
    return Path(bundle_root) / "models" / "model.pt"


def evaluate(bundle_root: str | os.PathLike, bundle: str = "pgnm_finetune", **overrides: Any) -> dict:
    """Evaluate ``bundle_root/models/model.pt`` on the test split; return its ``eval/metrics.json`` report."""
    run_bundle(bundle, "evaluate", bundle_root=os.fspath(bundle_root), **overrides)
    return read_json(Path(bundle_root) / "eval" / "metrics.json")
