"""Helpers the bundle configs call: device and ``torch.distributed`` set-up, data with checks, resume,
warm-start from a heated model, and handlers that write metrics and per-item predictions atomically.

Every function takes plain values, so a JSON config calls it with ``"$pgnm_monai.bundle_utils.f(@id, ...)"``;
every check raises an error that names the config id at fault.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from pgnm_monai import distributed
from pgnm_monai.arms import ARMS
from pgnm_monai.data import Datalist, few_shot_subset, load_datalist
from pgnm_monai.data.utils import atomic_write_csv, atomic_write_text
from pgnm_monai.handlers.checkpoint import AtomicCheckpointSaver
from pgnm_monai.metrics import SCALAR_METRICS, ClassificationEpochMetric, metrics_report, to_probabilities
from pgnm_monai.networks.classifiers import CLASSIFIERS, HEAD_PREFIXES
from pgnm_monai.networks.policy import TRUNKS
from pgnm_monai.objectives import OBJECTIVES

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "IMAGE_PATH",
    "MetricsHistoryWriter",
    "PredictionWriter",
    "ProgressBar",
    "ResumeCheckpointLoader",
    "StopAtEpoch",
    "TrainingStateSaver",
    "additional_val_metrics",
    "as_bool",
    "check_num_classes",
    "check_train_args",
    "cleanup_distributed",
    "distributed_sampler",
    "find_checkpoint",
    "get_device",
    "inference_items",
    "init_distributed",
    "is_main_process",
    "key_val_metric",
    "load_data",
    "load_pretrained",
    "needs_drop_last",
    "require_file",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

IMAGE_PATH = "image_path"  # item key added by :func:`load_data`: where the image came from (for the CSVs)
_CKPT_RE = re.compile(r"epoch=(\d+)\.pt$")


def as_bool(value: Any) -> bool:
    """A config flag as ``bool``; the strings ``false``/``0``/``no``/``none``/``null``/``""`` are ``False``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "none", "null", "")
    return bool(value)


# ----------------------------------------------------------------------------------------------- devices / DDP
def get_device(distributed: bool = False) -> torch.device:
    """``cuda`` (``cuda:LOCAL_RANK`` when ``distributed``) when a GPU is visible, else ``cpu``."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", 0)) if distributed else 0
    return torch.device(f"cuda:{index % torch.cuda.device_count()}")


def init_distributed(backend: str | None = None) -> int:
    """Initialise ``torch.distributed`` from the ``torchrun`` environment; return this process's rank.

    The backend is ``nccl`` when every local process can have its own GPU, else ``gloo`` (CPU), unless
    ``backend`` is given. Idempotent.
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build.")
    if dist.is_initialized():
        return dist.get_rank()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "configs/multi_gpu_train.json must run under torchrun (RANK/WORLD_SIZE are not set), e.g. "
            "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/train.json',"
            "'configs/multi_gpu_train.json']\""
        )
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= local_world else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, init_method="env://")
    logger.info(f"torch.distributed initialised: backend={backend}, rank {dist.get_rank()}/{dist.get_world_size()}")
    return dist.get_rank()


def cleanup_distributed() -> None:
    """Destroy the process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    """``True`` on rank 0 and outside ``torch.distributed``."""
    return distributed.rank() == 0


def wrap_ddp(module: nn.Module, device: str | torch.device) -> nn.Module:
    """``DistributedDataParallel(module)`` under ``torch.distributed`` (``device_ids`` on GPUs), else ``module``."""
    if not (dist.is_available() and dist.is_initialized()):
        return module
    device = torch.device(device)
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(module, device_ids=[device])
    return nn.parallel.DistributedDataParallel(module)


def distributed_sampler(dataset: Any, shuffle: bool, seed: int = 0) -> Any:
    """A ``DistributedSampler`` under ``torch.distributed`` (padded to equal shards), else ``None``."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=int(seed))


def needs_drop_last(n_items: int, batch_size: int) -> bool:
    """Drop the last batch only when it would hold a single item per rank (batch norm fails on it)."""
    per_rank = -(-int(n_items) // distributed.world_size())
    return per_rank > batch_size and per_rank % int(batch_size) == 1


# ----------------------------------------------------------------------------------------------- checks / data
def check_train_args(
    arm: str = "none",
    objective: str = "reinforce",
    network: str = "resnet10",
    grid: int = 16,
    image_size: int = 64,
    in_channels: int = 1,
    epochs: int = 1,
    batch_size: int = 1,
    lr: float = 0.1,
    policy_trunk: str = "resnet10",
) -> bool:
    """Check the plain ids of a training config; raise ``ValueError`` naming the id at fault."""
    if arm not in ARMS:
        raise ValueError(f"config id 'arm' must be one of {ARMS}, got {arm!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"config id 'objective' must be one of {OBJECTIVES}, got {objective!r}.")
    if network not in CLASSIFIERS:
        raise ValueError(f"config id 'network' must be one of {CLASSIFIERS}, got {network!r}.")
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
    if arm in ("pgnm", "random_mask") and grid > image_size:
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


def key_val_metric(name: str = "macro_f1") -> dict[str, ClassificationEpochMetric]:
    """``{"val_<name>": metric}`` for ``SupervisedEvaluator(key_val_metric=...)``."""
    if name not in SCALAR_METRICS:
        raise ValueError(f"config id 'val_key_metric' must be one of {SCALAR_METRICS}, got {name!r}.")
    return {f"val_{name}": ClassificationEpochMetric(name)}


def additional_val_metrics(key: str = "macro_f1") -> dict[str, ClassificationEpochMetric]:
    """The validation metrics other than ``key`` (accuracy, balanced accuracy, macro-F1, AUROC)."""
    names = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
    return {f"val_{n}": ClassificationEpochMetric(n) for n in names if n != key}


# ----------------------------------------------------------------------------------------------- checkpoints
def find_checkpoint(ckpt_dir: str, resume: bool | str | None) -> str | None:
    """The training-state checkpoint to resume from.

    Args:
        ckpt_dir: where :class:`TrainingStateSaver` writes ``checkpoint_epoch=N.pt``.
        resume: ``False``/``None`` (start fresh), ``True`` (the latest ``checkpoint_epoch=N.pt``) or a path.
    """
    if isinstance(resume, str) and resume.strip().lower() in ("true", "latest", "false", "none", "null", ""):
        resume = as_bool(resume)
    if not resume:
        return None
    if isinstance(resume, str):
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"config id 'resume' points to {resume!r}, which does not exist.")
        return resume
    paths = glob.glob(os.path.join(ckpt_dir, "*epoch=*.pt"))
    found = [(int(m.group(1)), p) for p in paths if (m := _CKPT_RE.search(p))]
    if not found:
        raise FileNotFoundError(
            f"config id 'resume' is true but {ckpt_dir!r} holds no training-state checkpoint (checkpoint_epoch=N.pt)."
        )
    return max(found)[1]


def load_pretrained(
    network: nn.Module, path: str | None, network_name: str | None = None, reset_head: bool = True
) -> nn.Module:
    """Load a heated classifier checkpoint into ``network``, keeping ``network``'s (new) head.

    Every non-head tensor must be in the checkpoint with the same shape (else ``ValueError``: the
    checkpoint is of another architecture); the head (see :data:`~pgnm_monai.networks.HEAD_PREFIXES`) is
    skipped when ``reset_head`` or when its shape differs (a new class count). The equivalent of MONAI's
    ``CheckpointLoader(strict_shape=False)``, but it refuses a checkpoint that loads only partly.

    Args:
        network: the classifier to initialise (modified in place and returned).
        path: a ``model.pt`` (state dict) or a training-state checkpoint (``{"model": ...}``); ``None``
            trains from scratch (with a warning).
        network_name: the architecture name (to know its head); ``None``: skip only mismatched shapes.
        reset_head: skip the head even where its shape matches.
    """
    if path is None:
        warnings.warn("config id 'pretrained_ckpt' is null: fine-tuning starts from a random network.", stacklevel=2)
        return network
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config id 'pretrained_ckpt' points to {path!r}, which does not exist; run the pretrain bundle "
            "first or set pretrained_ckpt to null to train from scratch."
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        ckpt = ckpt["model"]
    own = network.state_dict()
    heads = HEAD_PREFIXES.get(network_name or "", ())

    def is_head(k: str) -> bool:
        return any(k.startswith(h) for h in heads)

    loaded, skipped, missing = {}, [], []
    for k, v in own.items():
        c = ckpt.get(k)
        if as_bool(reset_head) and is_head(k):
            skipped.append(k)
        elif c is not None and tuple(c.shape) == tuple(v.shape):
            loaded[k] = c
        elif heads and is_head(k):
            skipped.append(k)
        else:
            missing.append(k)
    if missing:
        raise ValueError(
            f"pretrained_ckpt {path!r} does not fit network {network_name!r}: {len(missing)} tensors missing or of "
            f"another shape (e.g. {missing[:3]}); pretrain and fine-tune must use the same 'network' and 'in_channels'."
        )
    network.load_state_dict(loaded, strict=False)
    logger.info(f"loaded {len(loaded)} tensors from {path}; new head: {skipped}")
    return network


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


class ProgressBar:
    """An ignite ``ProgressBar`` (tqdm) of a trainer's iterations with the running loss; ``enabled=False``: none.

    Args:
        enabled: attach the bar at all.
        kwargs: arguments of ``ignite.handlers.ProgressBar`` (e.g. ``persist``).
    """

    def __init__(self, enabled: bool = True, **kwargs: Any) -> None:
        self.enabled = as_bool(enabled)
        self.kwargs = kwargs

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        from ignite.handlers import ProgressBar as _Bar

        def loss(output: Any) -> dict:
            value = output.get("loss") if isinstance(output, dict) else None
            return {"loss": float(torch.as_tensor(value).detach())} if value is not None else {}

        _Bar(**self.kwargs).attach(engine, output_transform=loss)


class StopAtEpoch:
    """Terminate the engine after epoch ``epoch`` (an interruption that ``resume`` continues); ``None``: never."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch

    def attach(self, engine: Engine) -> None:
        if self.epoch is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch >= int(self.epoch):
            logger.info(f"stop_epoch={self.epoch}: stopping after epoch {engine.state.epoch}")
            engine.terminate()


# ----------------------------------------------------------------------------------------------- writers
def _finite(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return _finite(obj.item())
    return _finite(obj)


class MetricsHistoryWriter:
    """Write the evaluator's metrics of every epoch to a JSON list (atomically, rank 0 only).

    Entries of epochs at or after the first one of this run are replaced, so a resumed run continues the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.history: list[dict] = []

    def attach(self, engine: Engine) -> None:
        if os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.history = list(json.load(f))
            except (OSError, ValueError):
                self.history = []
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        entry = {"epoch": int(engine.state.epoch), **_jsonable(dict(engine.state.metrics))}
        self.history = [h for h in self.history if h.get("epoch", 0) < entry["epoch"]] + [entry]
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.history, indent=2) + "\n")


class PredictionWriter:
    """Collect per-item predictions of an evaluator and write them (CSV) and their metrics (JSON) atomically.

    Needs ``SupervisedEvaluator(decollate=False)``: reads logits from ``engine.state.output["pred"]`` and the
    item metadata (``image_path``, ``modality``, ``anatomy``, ``patient_id``, ``slice_index``, ``frame_index``,
    ``label``) from ``engine.state.batch``. Metrics (overall, per modality and per anatomy, see
    :func:`pgnm_monai.metrics.metrics_report`) are written when every item has a label ``>= 0``. Under
    ``torch.distributed`` the rows are gathered and rank 0 writes (padded duplicates included).

    Args:
        output_dir: folder of the files.
        class_names: class index -> name.
        filename: CSV name.
        metrics_filename: JSON name (``None``: no metrics file).
    """

    META = (IMAGE_PATH, "patient_id", "slice_index", "frame_index", "modality", "anatomy")

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        filename: str = "predictions.csv",
        metrics_filename: str | None = "metrics.json",
    ) -> None:
        self.output_dir = output_dir
        self.class_names = [str(c) for c in class_names]
        self.filename = filename
        self.metrics_filename = metrics_filename
        self.rows: list[dict] = []
        self.report: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def collect(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        if not isinstance(output, dict) or "pred" not in output:
            raise ValueError("PredictionWriter needs SupervisedEvaluator(decollate=False) (a batched output dict).")
        probs = to_probabilities(output["pred"])
        n = len(probs)
        labels = torch.as_tensor(batch.get("label", torch.full((n,), -1))).reshape(-1).tolist()
        for i in range(n):
            row = {}
            for key in self.META:
                values = batch.get(key)
                v = values[i] if values is not None else ""
                row[key] = v.item() if isinstance(v, torch.Tensor) else v
            label = int(labels[i])
            pred = int(probs[i].argmax())
            row.update(
                label=label,
                label_name=self.class_names[label] if 0 <= label < len(self.class_names) else "",
                pred=pred,
                pred_name=self.class_names[pred] if pred < len(self.class_names) else str(pred),
            )
            for c, p in enumerate(probs[i]):
                name = self.class_names[c] if c < len(self.class_names) else str(c)
                row[f"prob_{name}"] = float(p)
            self.rows.append(row)

    def write(self, engine: Engine | None = None) -> None:
        rows = self.rows
        if dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not is_main_process() or not rows:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        header = list(rows[0])
        atomic_write_csv(os.path.join(self.output_dir, self.filename), header, [[r[h] for h in header] for r in rows])
        labels = [r["label"] for r in rows]
        if self.metrics_filename is None or min(labels) < 0:
            return
        prob_cols = [h for h in header if h.startswith("prob_")]
        probs = [[r[c] for c in prob_cols] for r in rows]
        groups = {"modality": [r["modality"] for r in rows], "anatomy": [r["anatomy"] for r in rows]}
        self.report = metrics_report(labels, probs, groups, len(self.class_names), self.class_names)
        self.report["n_items"] = len(rows)
        atomic_write_text(
            os.path.join(self.output_dir, self.metrics_filename), json.dumps(_jsonable(self.report), indent=2) + "\n"
        )
        o = self.report["overall"]
        logger.info(
            f"evaluation on {len(rows)} items: macro-F1 {o['macro_f1']:.4f}, balanced accuracy "
            f"{o['balanced_accuracy']:.4f}, AUROC {o['auroc']:.4f} -> {self.output_dir}"
        )
