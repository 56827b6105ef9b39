"""The named components that the bundle configs call, so that the configs read as wiring.

- checks: :func:`check_train_args`, :func:`check_num_classes`, :func:`check_output_dirs`, :func:`check_checkpoint`,
  :func:`require_file`, :func:`check_cli_overrides` / :func:`check_override_ids`;
- data: :func:`load_data` (a checked, optionally subsampled split), :func:`label_map`, :func:`inference_data`;
- checkpoints: :func:`find_checkpoint` (resume), :func:`load_pretrained` (warm start);
- wiring: :func:`subfolder`, :func:`is_off`, :func:`eval_resize`, :func:`policy_of`, :func:`probe_batch`,
  :func:`use_amp`, :func:`amp_kwargs`;
- errors: :func:`root_error`, :func:`show_root_error_last`.

Each takes plain keyword values, so a config calls it as a component (``{"_target_":
"pgnm_monai.config_helpers.load_data", "kind": "@dataset_kind", ...}``), and each check raises an error that names
the config id (or file) at fault and what was expected. The Python API is the library behind them
(:func:`pgnm_monai.data.load_datalist`, :func:`pgnm_monai.arms.build_arm_handler`,
:func:`pgnm_monai.networks.load_weights`, ...); the CLI and the runner use the error helpers and :func:`load_data`.

MONAI wraps an error raised inside a ``$`` expression or a ``_target_`` component in a ``RuntimeError``
("Failed to evaluate ..." / "Failed to instantiate ..."), which Python prints last. :func:`root_error` finds the
error under those wrappers; :func:`show_root_error_last` (the first ``initialize`` step of the bundles) prints
its message again as the last line of an uncaught error's traceback, and
:func:`pgnm_monai.experiments.runner.run_bundle` raises it unwrapped.
"""

from __future__ import annotations

import ast
import difflib
import glob
import inspect
import logging
import os
import re
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn

from pgnm_monai.arms import ARMS, MASK_ARMS
from pgnm_monai.data import Datalist, few_shot_subset, load_datalist
from pgnm_monai.data.schema import IMAGE_PATH
from pgnm_monai.networks.classifiers import CLASSIFIERS
from pgnm_monai.networks.policy import TRUNKS
from pgnm_monai.networks.weights import load_checkpoint_file, load_weights
from pgnm_monai.objectives import ADVANTAGES, OBJECTIVES

__all__ = [
    "AMP_DTYPES",
    "amp_kwargs",
    "as_bool",
    "check_checkpoint",
    "check_cli_overrides",
    "class_names",
    "check_num_classes",
    "check_output_dirs",
    "check_override_ids",
    "check_train_args",
    "label_map",
    "find_checkpoint",
    "inference_data",
    "inference_items",
    "load_data",
    "load_pretrained",
    "require_file",
    "root_error",
    "show_root_error_last",
    "use_amp",
    "eval_resize",
    "is_off",
    "policy_of",
    "probe_batch",
    "subfolder",
]

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"epoch=(\d+)\.pt$")
_TRAINING_STATE_KEYS = ("model", "trainer")  # what every TrainingStateSaver checkpoint of the bundles holds


def as_bool(value: Any) -> bool:
    """A config flag as ``bool``; the strings ``false``/``0``/``no``/``none``/``null``/``""`` are ``False``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "none", "null", "")
    return bool(value)


#: ``amp_dtype`` bundle id -> the autocast dtype.
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def use_amp(amp: Any, device: str | torch.device) -> bool:
    """The bundles' ``amp`` id: mixed precision on a CUDA ``device``; on the CPU ``False`` with a warning.

    MONAI's engines autocast with ``torch.autocast("cuda")`` only, so on the CPU the run goes on in float32.
    """
    if not as_bool(amp):
        return False
    if torch.device(device).type != "cuda":
        warnings.warn(
            f"amp=True is ignored on device {device}: mixed precision is for CUDA GPUs; training runs in float32.",
            stacklevel=2,
        )
        return False
    return True


def amp_kwargs(amp_dtype: str) -> dict[str, torch.dtype]:
    """``amp_kwargs`` of MONAI's engines for the ``amp_dtype`` id (``bfloat16`` or ``float16``)."""
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_dtype!r}.")
    return {"dtype": AMP_DTYPES[amp_dtype]}


def check_train_args(
    arm: str = "none",
    objective: str = "reinforce",
    network: str = "resnet10t",
    grid: int = 16,
    image_size: int = 64,
    in_channels: int = 1,
    epochs: int = 1,
    batch_size: int = 1,
    lr: float = 0.1,
    policy_trunk: str = "resnet10t",
    reward_sign: int = -1,
    advantage: str = "baseline",
) -> bool:
    """Check the plain ids of a training config; raise ``ValueError`` naming the id at fault.

    ``reward_sign`` (-1: reward ``-CE``; +1: adversarial) and ``advantage`` (``"baseline"`` or ``"normalized"``)
    are the ``reinforce`` settings; an arm that fixes them (e.g. ``pgnm-adversarial``) overrides the ids.
    """
    if arm not in ARMS:
        raise ValueError(f"config id 'arm' must be one of {tuple(ARMS)}, got {arm!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"config id 'objective' must be one of {OBJECTIVES}, got {objective!r}.")
    if network not in CLASSIFIERS:
        raise ValueError(f"config id 'network' must be one of {CLASSIFIERS}, got {network!r}.")
    if isinstance(reward_sign, bool) or reward_sign not in (-1, 1):
        raise ValueError(f"config id 'reward_sign' must be -1 or 1, got {reward_sign!r}.")
    if advantage not in ADVANTAGES:
        raise ValueError(f"config id 'advantage' must be one of {ADVANTAGES}, got {advantage!r}.")
    if policy_trunk not in TRUNKS:
        raise ValueError(f"config id 'policy_trunk' must be one of {TRUNKS}, got {policy_trunk!r}.")
    for name, value, low in (("image_size", image_size, 8), ("grid", grid, 1), ("epochs", epochs, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"config id {name!r} must be an integer >= {low}, got {value!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"config id 'batch_size' must be an integer >= 1, got {batch_size!r}.")
    if in_channels not in (1, 3):
        raise ValueError(f"config id 'in_channels' must be 1 or 3, got {in_channels!r}.")
    if not float(lr) > 0:
        raise ValueError(f"config id 'lr' must be > 0, got {lr!r}.")
    if ARMS[arm].mechanism in MASK_ARMS and grid > image_size:
        raise ValueError(f"config id 'grid' ({grid}) must be <= 'image_size' ({image_size}) for arm {arm!r}.")
    return True


def load_data(
    kind: str | None,
    dataset_dir: str | None,
    split: str,
    seed: int = 0,
    max_items: int | None = None,
    few_shot: int | None = None,
    few_shot_seed: int = 0,
    options: dict | None = None,
) -> Datalist:
    """Load a split with :func:`pgnm_monai.data.load_datalist`, checked, optionally subsampled.

    Args:
        kind: dataset kind (``None``: the embedded default when ``dataset_dir`` is ``None``).
        dataset_dir: dataset root; must exist when given.
        split: ``train``/``val``/``test``/``all``.
        seed: seed of the loader's split.
        max_items: keep a stratified, seeded subset of at most this many items (for quick runs).
        few_shot: keep a stratified subset of exactly this many items (the few-shot ``N``).
        few_shot_seed: seed of the few-shot subset.
        options: source-specific options of ``load_datalist``.

    Returns:
        the :class:`~pgnm_monai.data.Datalist`; every item also carries ``image_path`` (a string).
    """
    if dataset_dir is not None:
        if not os.path.exists(os.path.expanduser(str(dataset_dir))):
            raise FileNotFoundError(f"config id 'dataset_dir' points to {dataset_dir!r}, which does not exist.")
        if kind is None:
            raise ValueError(
                f"config id 'dataset_kind' is required with dataset_dir={dataset_dir!r} "
                "(embedded, mednist, medmnist, image_folder, radimagenet or clinical)."
            )
        dataset_dir = os.path.expanduser(str(dataset_dir))
    dl = load_datalist(kind, dataset_dir, split=split, seed=int(seed), **(options or {}))
    items = [dict(it) for it in dl.items]
    for i, it in enumerate(items):
        img = it["image"]
        it[IMAGE_PATH] = img if isinstance(img, str) else f"{dl.kind}:{split}:{i}"
    if few_shot is not None:
        if int(few_shot) > len(items):
            raise ValueError(f"config id 'few_shot' ({few_shot}) exceeds the {len(items)} items of split {split!r}.")
        items = few_shot_subset(items, int(few_shot), seed=int(few_shot_seed))
    if max_items is not None and int(max_items) < len(items):
        items = few_shot_subset(items, int(max_items), seed=int(seed))
    if not items:
        raise ValueError(f"the {split!r} split of dataset {dl.kind!r} ({dataset_dir}) is empty.")
    return Datalist(items, list(dl.class_names), kind=dl.kind, split=split, report=dict(dl.report))


def require_file(path: str, config_id: str) -> bool:
    """``True`` when ``path`` is a file, else ``FileNotFoundError`` naming ``config_id``."""
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"config id {config_id!r} points to {path!r}, which does not exist.")
    return True


def check_output_dirs(**folders: str | os.PathLike | None) -> bool:
    """Check that every output folder (by config id) is writable, before any training; create missing ones.

    A folder is writable when a temporary file can be created and removed in it. ``None`` folders are skipped
    (e.g. ``log_dir`` without TensorBoard).

    Args:
        folders: config id -> folder, e.g. ``ckpt_dir=@ckpt_dir, output_dir=@output_dir``.

    Raises:
        PermissionError: a folder cannot be created or written (the message names its id and path).
    """
    for config_id, folder in folders.items():
        if folder is None:
            continue
        path = os.path.expanduser(os.fspath(folder))
        try:
            os.makedirs(path, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".pgnm_write_check", dir=path)
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise PermissionError(
                f"config id {config_id!r} points to {path!r}, which is not a writable folder "
                f"({e.strerror or e}); choose another {config_id} or bundle_root, or fix its permissions."
            ) from e
    return True


def check_checkpoint(path: str | os.PathLike | None, config_id: str, keys: Sequence[str] = ()) -> str | None:
    """Return ``path`` after checking that it is a readable PyTorch checkpoint (``None`` passes through).

    The file is opened as ``torch.load(..., weights_only=True)`` will open it (memory-mapped when it is a zip
    checkpoint, so large files are not read in full).

    Args:
        path: the checkpoint.
        config_id: the config id that points to it (named in the error).
        keys: top-level keys the checkpoint must hold (e.g. a training state's ``model``, ``trainer``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated, corrupt or non-PyTorch file, or one without ``keys``.
    """
    if path is None:
        return None
    path = os.fspath(path)
    _load_checkpoint(path, config_id, keys)
    return path


def _load_checkpoint(path: str, config_id: str, keys: Sequence[str] = ()) -> Any:
    """:func:`~pgnm_monai.networks.weights.load_checkpoint_file`, then a check that ``keys`` are in it."""
    ckpt = load_checkpoint_file(path, config_id)
    missing = [k for k in keys if not (isinstance(ckpt, Mapping) and k in ckpt)]
    if missing:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"config id {config_id!r} points to {path!r}, which lacks {missing} (it holds {found}); "
            "expected a training-state checkpoint_epoch=N.pt."
        )
    return ckpt


def check_num_classes(num_classes: int, datalist: Datalist) -> int:
    """Return ``num_classes`` after checking it against the class count of ``datalist``."""
    if int(num_classes) != datalist.num_classes:
        raise ValueError(
            f"config id 'num_classes' is {num_classes} but dataset {datalist.kind!r} has "
            f"{datalist.num_classes} classes {list(datalist.class_names)}; leave num_classes unset to use the data's."
        )
    return int(num_classes)


def inference_items(files: Sequence[str], modality: str = "other") -> list[dict]:
    """Unlabelled datalist items (label -1) for a list of image files."""
    from pgnm_monai.data import make_item

    items = []
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"config id 'input_files' lists {f!r}, which does not exist.")
        it = make_item(os.fspath(f), 0, "unknown", modality, patient_id=os.path.basename(f))
        it["label"] = -1
        it[IMAGE_PATH] = os.fspath(f)
        items.append(it)
    if not items:
        raise ValueError("config id 'input_files' is empty.")
    return items


def find_checkpoint(ckpt_dir: str, resume: bool | str | None) -> str | None:
    """The training-state checkpoint to resume from, checked to load (:func:`check_checkpoint`).

    Args:
        ckpt_dir: where :class:`TrainingStateSaver` writes ``checkpoint_epoch=N.pt``.
        resume: ``False``/``None`` (start fresh), ``True`` (the latest ``checkpoint_epoch=N.pt``) or a path.
    """
    if isinstance(resume, str) and resume.strip().lower() in ("true", "latest", "false", "none", "null", ""):
        resume = as_bool(resume)
    if not resume:
        return None
    if isinstance(resume, str):
        return check_checkpoint(resume, "resume", _TRAINING_STATE_KEYS)
    paths = glob.glob(os.path.join(ckpt_dir, "*epoch=*.pt"))
    found = [(int(m.group(1)), p) for p in paths if (m := _CKPT_RE.search(p))]
    if not found:
        raise FileNotFoundError(
            f"config id 'resume' is true but {ckpt_dir!r} holds no training-state checkpoint (checkpoint_epoch=N.pt)."
        )
    return check_checkpoint(max(found)[1], "resume", _TRAINING_STATE_KEYS)


def load_pretrained(
    network: nn.Module,
    path: str | None,
    network_name: str | None = None,
    reset_head: bool = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Warm-start ``network`` from ``path`` (config id ``pretrained_ckpt``) by
    :func:`~pgnm_monai.networks.load_weights`: this project's ``model.pt`` / ``model_avg.pt``, a training-state
    checkpoint, the authors' released weights, torchvision or timm ImageNet weights.

    ``None`` trains from scratch (with a warning); a path that does not exist is refused. The network is returned
    on ``device`` when one is given.
    """
    if device is not None:
        return load_pretrained(network, path, network_name, reset_head).to(device)
    if path is None:
        warnings.warn("config id 'pretrained_ckpt' is null: fine-tuning starts from a random network.", stacklevel=2)
        return network
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config id 'pretrained_ckpt' points to {path!r}, which does not exist; run the pretrain bundle "
            "first, point it to a weight file, or set pretrained_ckpt to null to train from scratch."
        )
    return load_weights(network, path, network_name, reset_head=as_bool(reset_head))


def check_override_ids(config: Mapping, ids: Iterable[str], files: str = "the bundle's configs") -> bool:
    """Refuse override ids that name nothing in ``config`` (the merged config files), with close matches.

    A top-level id must be defined; a nested ``a#b#c`` may add a key to the section ``a#b`` (e.g. a keyword of
    a component) but that section must exist; a list item must exist. ``_meta_#...`` ids are not checked.

    Args:
        config: the merged content of the config files, before the overrides.
        ids: the override ids (``#`` or ``::`` separated).
        files: how to name the config files in the error.

    Raises:
        ValueError: naming the first unknown id and its closest defined ids.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    parser = ConfigParser(dict(config))
    for raw in ids:
        parts = ReferenceResolver.split_id(str(raw))
        if parts[0] == "_meta_" or ReferenceResolver.normalize_id(str(raw)) in parser:
            continue
        depth = 0  # parts[:depth] is defined, parts[: depth + 1] is not
        while "#".join(parts[: depth + 1]) in parser:
            depth += 1
        known = "#".join(parts[:depth])
        section = parser[known] if known else parser.get()
        if isinstance(section, dict) and 0 < depth == len(parts) - 1:
            continue  # a new key of an existing section (e.g. a component's keyword)
        missing = "#".join(parts[: depth + 1])
        if isinstance(section, dict):
            matches = difflib.get_close_matches(parts[depth], [str(k) for k in section], n=3, cutoff=0.6)
            hint = "; did you mean " + " or ".join(repr(f"{known}#{m}".lstrip("#")) for m in matches) + "?"
            where = f"{missing!r} is not defined in {files}" + (hint if matches else ".")
        elif isinstance(section, list):
            where = f"{known!r} is a list of {len(section)} items, which has no item {parts[depth]!r}."
        else:
            where = f"{known!r} is a {type(section).__name__}, which has no item {parts[depth]!r}."
        raise ValueError(f"unknown config id {raw!r}: {where}")
    return True


def check_cli_overrides(argv: Sequence[str] | None = None) -> bool:
    """Refuse unknown override ids given to ``python -m monai.bundle run`` (:func:`check_override_ids`).

    MONAI adds any ``--id value`` to the config, so a misspelt id would be ignored silently. This reads the
    command line (``sys.argv``) of ``python -m monai.bundle run`` and the config files it names; in any other
    process (the Python API, which checks in :func:`pgnm_monai.experiments.runner.make_workflow`) it does
    nothing. Overrides given through ``--args_file`` are not checked.
    """
    from monai.bundle import ConfigParser, scripts

    argv = list(sys.argv if argv is None else argv)
    main = os.path.join("monai", "bundle", "__main__.py")
    if len(argv) < 2 or not os.path.normpath(argv[0]).endswith(main) or argv[1] != "run":
        return True
    args: dict[str, str] = {}
    tokens = argv[2:]
    if "--" in tokens:  # what follows a lone "--" is for fire itself
        tokens = tokens[: tokens.index("--")]
    for i, token in enumerate(tokens):
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            args[name.replace("-", "_")] = value if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
    files = args.get("config_file")
    if files is None:
        return True
    try:
        files = ast.literal_eval(files)
    except (ValueError, SyntaxError):
        pass
    own = set(inspect.signature(scripts.run).parameters) | {"workflow_type", "properties_path"}
    ids = [k for k in args if k not in own]
    return check_override_ids(ConfigParser.load_config_files(files), ids, f"--config_file {args['config_file']}")


def root_error(error: BaseException) -> BaseException:
    """The error under MONAI's config wrappers: the first in ``error``'s chain that is not one of them.

    MONAI raises ``RuntimeError("Failed to evaluate ...")`` / ``RuntimeError("Failed to instantiate ...")``
    from the error of a ``$`` expression or a ``_target_`` component; those wrappers name the config item, not
    the fault. An error that is not such a wrapper is returned as is.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not (type(current) is RuntimeError and str(current).startswith(_MONAI_WRAPPERS)):
            return current
        current = current.__cause__ or current.__context__
    return error


_MONAI_WRAPPERS = ("Failed to evaluate", "Failed to instantiate")


def show_root_error_last() -> bool:
    """Make an uncaught error's report end with the message of :func:`root_error` (the project's message).

    Installs a ``sys.excepthook`` that prints the usual traceback, then, when MONAI wrapped the error, the
    wrapped error's type and message as the last line. It changes only what an uncaught error prints when the
    process ends (``python -m monai.bundle run``); idempotent.
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
            sys.stderr.flush()

    hook._pgnm_root_error_last = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True


def label_map(path: str | os.PathLike | None, *datalists: Datalist, splits: Sequence[Datalist] = ()) -> list[str]:
    """The one label map of a run: the class names shared by ``datalists``, written to (or checked against) ``path``.

    The train stage checks its splits at ``initialize`` (``path`` None) and, once training has finished, writes
    the map atomically as ``class_map.json`` beside the models (a failed run leaves none); the evaluate stage
    finds the file there and refuses data whose classes differ, so train, val and test use one map.

    Args:
        path: the class map JSON (:func:`pgnm_monai.data.save_class_map`); None only checks ``datalists``.
        datalists: the run's splits; their ``class_names`` must be equal.
        splits: more splits (the keyword form, for a config component).

    Raises:
        ValueError: naming the splits (or the file) whose class names differ.
    """
    from pgnm_monai.data import load_class_map, save_class_map

    datalists = (*datalists, *splits)
    names = list(datalists[0].class_names)
    for dl in datalists[1:]:
        if list(dl.class_names) != names:
            raise ValueError(
                f"the {datalists[0].split!r} split has classes {names} but the {dl.split!r} split has "
                f"{list(dl.class_names)}; every split of a dataset must share one label map."
            )
    if path is None:
        return names
    if os.path.isfile(path):
        saved = load_class_map(path)
        if saved != names and all(dl.split != "train" for dl in datalists):
            raise ValueError(
                f"the model was trained with the classes of {os.fspath(path)!r} ({saved}) but the "
                f"{datalists[0].split!r} data has classes {names}."
            )
    if any(dl.split == "train" for dl in datalists):
        from pgnm_monai import distributed

        if distributed.is_main_process():
            save_class_map(path, names, dataset_kind=datalists[0].kind)
    return names


def subfolder(root: str | os.PathLike, name: str) -> str:
    """``root/name`` (a run's ``models``, ``eval``, ``logs`` folder or a file in one)."""
    return os.path.join(os.fspath(root), name)


def is_off(value: Any) -> bool:
    """``True`` for a switch that is off: ``0``, ``False``, ``None`` (a handler's ``_disabled_``)."""
    return not as_bool(value) if isinstance(value, str) else not value


def eval_resize(image_size: int) -> int:
    """The evaluation chain's short side before its centre crop to ``image_size`` (the paper's 256 for 224)."""
    return max(int(image_size), round(int(image_size) * 256 / 224))


def policy_of(handler: Any) -> nn.Module | None:
    """The noise policy of an arm's handler (``None`` for arms without one)."""
    return getattr(handler, "policy", None)


def probe_batch(dataset: Sequence[Mapping], size: int) -> torch.Tensor:
    """The images of the first ``size`` items of ``dataset``, stacked: the policy statistics' fixed probe batch."""
    return torch.stack([dataset[i]["image"] for i in range(min(int(size), len(dataset)))])


def inference_data(
    input_files: Sequence[str] | None,
    input_modality: str,
    kind: str | None,
    dataset_dir: str | None,
    split: str,
    seed: int = 0,
    max_items: int | None = None,
    options: dict | None = None,
) -> list[dict]:
    """The items to predict: ``input_files`` (unlabelled, :func:`inference_items`) when given, else the ``split`` of
    the dataset (:func:`load_data`)."""
    if input_files:
        return inference_items(input_files, input_modality)
    return load_data(kind, dataset_dir, split, seed=seed, max_items=max_items, options=options).items


def class_names(
    ckpt_dir: str | os.PathLike,
    kind: str | None,
    dataset_dir: str | None,
    seed: int = 0,
    options: dict | None = None,
) -> list[str]:
    """The class names of a trained run: its ``ckpt_dir/class_map.json`` (what the train stage saved); without
    one (a checkpoint exported or evaluated apart from its run), those of the dataset's training split."""
    from pgnm_monai.data import load_class_map

    path = os.path.join(os.fspath(ckpt_dir), "class_map.json")
    if os.path.isfile(path):
        return load_class_map(path)
    return list(load_data(kind, dataset_dir, "train", seed=seed, options=options).class_names)
