"""Run the project's MONAI bundles in this process: one function per stage, used by the CLI, the main job
(:mod:`.pipeline`), the protocol (:mod:`.protocol`) and the tests.

A stage is a list of config files merged in order, exactly as ``python -m monai.bundle run --config_file
"[...]"`` merges them (see :data:`STAGES`); each bundle runs from its own files. Overrides are the bundle ids
(``arm``, ``epochs``, ``dataset_dir``, ...); a value left ``None`` here is not passed, so the bundle's own default
applies (defaults are stated once, in the bundle).
An override id that the stage's configs do not define is refused by name, with the closest ids.

**Override values are data.** MONAI's parser reads a string that starts with ``$`` as Python, one that is
``@id`` as a reference, one that starts with ``%`` as a macro, and turns every ``#`` in a string into ``::``.
:func:`as_config_literal` passes each value given here (a path, a JSON option of ``--dataset-options``, any
nested string) as the literal it is, so nothing a user types runs as code (``python -m monai.bundle run --id
value`` still evaluates its values: that is MONAI's design, docs/reliability.md).

Logs: inside :func:`quiet_logs` (:mod:`.stage_logs`, re-exported here; what ``pgnm run | finetune | benchmark`` use
unless ``--verbose``) every log line of a stage goes to ``<bundle_root>/logs/<stage>.log`` instead of the console;
outside it, the bundle's ``logging.conf`` applies, as under ``python -m monai.bundle run``.

:func:`run_bundle` raises the error a config check or handler raised (``ValueError``, ``FileNotFoundError``,
``FloatingPointError``, :class:`~pgnm_monai.run_lock.BundleRootInUseError`, ...), not MONAI's
"Failed to evaluate ..." wrapper around it, and releases the run lock of ``bundle_root`` whatever happens.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pgnm_monai.bundle_files import bundles_dir
from pgnm_monai.experiments.stage_logs import (
    DropSpuriousConfigRootWarning,
    logs_are_quiet,
    logs_to_file,
    quiet_logs,
    stage_log_path,
)

__all__ = [
    "STAGES",
    "as_config_literal",
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
    ("pgnm_finetune", "train"): ("pgnm_finetune/configs/train.json",),
    ("pgnm_finetune", "evaluate"): ("pgnm_finetune/configs/train.json", "pgnm_finetune/configs/evaluate.json"),
    ("pgnm_finetune", "inference"): ("pgnm_finetune/configs/inference.json",),
}


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
    own = set(inspect.signature(ConfigWorkflow.__init__).parameters)  # tracking, run_id, ...: not config ids
    overrides = {k: v if k in own else as_config_literal(v) for k, v in overrides.items() if v is not None}
    names = ", ".join(os.path.relpath(f, bundles_dir()) for f in files)
    check_override_ids(ConfigParser.load_config_files(files), [k for k in overrides if k not in own], names)
    workflows_logger, spurious = logging.getLogger("monai.bundle.workflows"), DropSpuriousConfigRootWarning()
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


#: what MONAI's parser reads in a string: ``$`` expressions, ``@`` references, ``%`` macros, ``#`` id separators.
_PARSED_CHARACTERS = ("$", "@", "%", "#")
#: keys that make a dict a component to instantiate (``_target_``) or change how it is (``_disabled_``, ...).
_COMPONENT_KEYS = ("_target_", "_disabled_", "_requires_", "_mode_", "_desc_")


def _parsed_by_monai(value: Any) -> bool:
    """Whether MONAI's parser would read ``value`` (or a string or key inside it) as more than data."""
    if isinstance(value, str):
        return any(c in value for c in _PARSED_CHARACTERS)
    if isinstance(value, dict):
        return any(k in _COMPONENT_KEYS or _parsed_by_monai(k) or _parsed_by_monai(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_parsed_by_monai(v) for v in value)
    return False


def _python_literal(value: Any) -> str:
    """Python source of ``value`` (plain JSON-like data) in which no ``@`` or ``#`` appears (written ``\\x40``,
    ``\\x23`` inside string literals), so that MONAI's parser finds no reference in it."""
    if isinstance(value, str):
        return repr(value).replace("@", "\\x40").replace("#", "\\x23")
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_python_literal(k)}: {_python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_python_literal(v) for v in value)
        return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"
    raise TypeError(f"override value {value!r} of type {type(value).__name__} cannot be passed as a literal")


def as_config_literal(value: Any) -> Any:
    """``value`` as a config value that MONAI's ``ConfigParser`` resolves to ``value`` itself (user values are data).

    A value MONAI would read as more than data (a string holding ``$``, ``@``, ``%`` or ``#``; a dict with a
    ``_target_`` key; a list or dict holding either) becomes the expression ``"$<Python literal of value>"``, with
    every ``@`` and ``#`` written as an escape (``\\x40``, ``\\x23``), which evaluates to ``value``; anything
    else is returned as it is. MONAI has no escape of its own for a literal ``$`` or ``@``.
    """
    if not _parsed_by_monai(value):
        return value
    try:
        return "$" + _python_literal(value)
    except TypeError:  # an object inside (a path object, ...): keep the container, pass its parts as literals
        if isinstance(value, dict) and not any(k in _COMPONENT_KEYS or _parsed_by_monai(k) for k in value):
            return {k: as_config_literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [as_config_literal(v) for v in value]
        raise


def run_bundle(bundle: str, stage: str, **overrides: Any):
    """Initialise, run and finalise :func:`make_workflow` (``bundle``, ``stage``, ``overrides``); return it.

    Raises:
        the error under MONAI's "Failed to evaluate/instantiate" wrapper (see
        :func:`pgnm_monai.components.root_error`); the run lock is released and MONAI's metadata tracking
        restored first (``finalize`` does both after a run that succeeds).
    """
    if not logs_are_quiet():
        return _run_workflow(make_workflow(bundle, stage, **overrides))
    with logs_to_file(stage_log_path(overrides.get("bundle_root"), stage)) as reroute:
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
    except BaseException as e:  # an interruption (Ctrl-C, SIGTERM under pgnm run) releases the lock too
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


def _needs_no_other_id(content: Any) -> bool:
    """A config value that needs no other id: plain JSON, or a ``$`` expression without ``@`` references (and no
    ``_target_`` component, ``@`` reference or ``%`` macro inside)."""
    if isinstance(content, str):
        return not content.startswith(("@", "%")) and not (content.startswith("$") and "@" in content)
    if isinstance(content, dict):
        return "_target_" not in content and all(_needs_no_other_id(v) for v in content.values())
    if isinstance(content, list):
        return all(_needs_no_other_id(v) for v in content)
    return True


def bundle_defaults(
    bundle: str = "pgnm_pretrain", stage: str = "train", overlays: Sequence[str | os.PathLike] = ()
) -> dict[str, Any]:
    """The bundle's defaults: every top-level id of ``stage``'s merged configs (then ``overlays``, config files
    merged last, e.g. ``multi_gpu_train.json``) that needs no other id, resolved by MONAI's ``ConfigParser`` as a
    run resolves it; a default written as an expression (``"$pgnm_monai.settings.POLICY.grid"``) gives its value."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in [*stage_configs(bundle, stage), *overlays]])
    config = parser.get()
    if "imports" in config:  # the modules the expressions name
        parser.get_parsed_content("imports")
    return {
        k: parser.get_parsed_content(k)
        for k, v in config.items()
        if k not in ("imports", "_meta_") and _needs_no_other_id(v)
    }


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
