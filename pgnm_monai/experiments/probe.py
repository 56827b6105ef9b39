"""The probe protocol: frozen penultimate features of every heated model, hundreds of seeded episodes, tight
intervals (DESIGN.md §6, "Tight intervals").

Full fine-tuning with a few seed pairs gives ±0.05–0.3 macro-F1, far wider than the differences between arms.
Few-shot practice measures a representation instead: freeze it, and on each of many seeded, stratified
episodes of ``N`` training images fit a cheap classifier on the features and score it on the whole test
split. Here:

- features: the input of the classifier head of each pretrained model
  (``<output_dir>/pretrain/<arm>_seed<seed>/models/model.pt``, the layout of :mod:`.run_folders`), the head
  replaced by ``nn.Identity`` (:data:`~pgnm_monai.networks.HEAD_PREFIXES`), images through the evaluation chain
  (:func:`~pgnm_monai.transforms.eval_transforms`). Each task's images are decoded once for all models.
- episodes (:func:`draw_episodes`): depend only on the task's labels, ``N`` and ``seed``, so every arm and
  every pretrain seed sees the same episodes and differences are paired.
- probes: a linear probe (standardise, then multinomial ``LogisticRegression``, lbfgs, C = 1) and a
  nearest-centroid classifier on the same standardised features; scores: macro-F1 and balanced accuracy
  on the whole test split (the same definitions as :func:`pgnm_monai.metrics.classification_metrics`).
- two feature sets per model: the batch-norm statistics as trained (``linear``, ``centroid``), and re-estimated on
  the task's clean, unlabelled training images (:func:`reestimate_batchnorm`; ``linear_bn``, ``centroid_bn``).
- intervals (:func:`~pgnm_monai.experiments.probe_report.probe_summary`): a hierarchical bootstrap that
  resamples pretrain seeds, then episodes within each drawn seed, so the variation between pretrained models is
  part of the interval.

Outputs of :func:`run_probe`: ``probe_runs.csv``, one row per (arm, pretrain seed, task, N, episode, probe).
:func:`pgnm_monai.experiments.probe_report.write_probe_report` adds ``probe_summary.csv`` and
``probe_report.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed, effective_n_jobs
from sklearn import config_context
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from pgnm_monai.arms import ARMS
from pgnm_monai.atomic_files import atomic_write_text
from pgnm_monai.data.few_shot import stratified_class_sequence
from pgnm_monai.data.schema import LABEL
from pgnm_monai.experiments.run_folders import PretrainRun
from pgnm_monai.metrics import label_metrics
from pgnm_monai.networks.classifiers import HEAD_PREFIXES, build_classifier

if TYPE_CHECKING:
    from pgnm_monai.experiments.tasks import Task

__all__ = [
    "BN_SUFFIX",
    "PROBES",
    "RUN_COLUMNS",
    "draw_episodes",
    "episode_hash",
    "extract_features",
    "feature_extractor",
    "preprocess",
    "reestimate_batchnorm",
    "run_probe",
    "stratified_quotas",
]

logger = logging.getLogger(__name__)

#: the columns of ``probe_runs.csv``, in order.
#: the scores of every probe on the test split (definitions: :func:`pgnm_monai.metrics.label_metrics`).
SCORES = ("macro_f1", "balanced_accuracy")

RUN_COLUMNS = (
    "arm",
    "pretrain_seed",
    "task",
    "n",
    "episode",
    "episode_hash",
    "probe",
    *SCORES,
    "n_test",
)


def _linear_probe() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, solver="lbfgs", max_iter=2000))


def _centroid_probe() -> Pipeline:
    return make_pipeline(StandardScaler(), NearestCentroid())


#: probe name -> factory of an unfitted scikit-learn pipeline (standardisation fit on the episode's train set).
PROBES: dict[str, Callable[[], Pipeline]] = {"linear": _linear_probe, "centroid": _centroid_probe}
#: suffix of the probes on features whose batch-norm statistics were re-estimated on the task's clean training
#: images (:func:`reestimate_batchnorm`): ``linear_bn``, ``centroid_bn``. Without it: the statistics as trained.
BN_SUFFIX = "_bn"


# ---------------------------------------------------------------------------------------------- features


def preprocess(items: Sequence[Mapping], image_size: int, in_channels: int, spatial_dims: int) -> torch.Tensor:
    """Every item through the evaluation chain: a float32 ``(len(items), in_channels, S, S[, S])`` tensor."""
    from pgnm_monai.transforms import eval_transforms, meta_tracking

    chain = eval_transforms(image_size=int(image_size), channels=int(in_channels), spatial_dims=int(spatial_dims))
    with meta_tracking(False):
        return torch.stack([chain(dict(it))["image"] for it in items])


def feature_extractor(
    checkpoint: str | os.PathLike, network: str, in_channels: int, spatial_dims: int
) -> tuple[nn.Module, int]:
    """The classifier of ``checkpoint`` with its head replaced by ``nn.Identity`` (penultimate features).

    The class count of the pretraining set is read from the head's weight in the state dict.

    Returns:
        the network in eval mode, on the CPU, and the pretraining class count.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a training-state checkpoint
        state = state["model"]
    heads = HEAD_PREFIXES[network]
    head_weight = [k for k in state if any(k.startswith(h) for h in heads) and k.endswith("weight")]
    if len(head_weight) != 1:
        raise ValueError(f"{checkpoint}: expected one head weight under {heads} for network {network!r}.")
    num_classes = int(state[head_weight[0]].shape[0])
    model = build_classifier(network, in_channels, num_classes, spatial_dims)
    model.load_state_dict(state)
    for prefix in heads:  # e.g. "fc." -> model.fc; "class_layers.out." -> model.class_layers.out
        *parents, leaf = prefix.rstrip(".").split(".")
        owner = model
        for name in parents:
            owner = getattr(owner, name)
        setattr(owner, leaf, nn.Identity())
    return model.eval(), num_classes


@torch.no_grad()
def extract_features(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, device: str | torch.device | None = None
) -> np.ndarray:
    """Penultimate features ``(len(images), F)`` (float64) of ``model`` (see :func:`feature_extractor`).

    Args:
        model: a classifier whose head is ``nn.Identity`` (:func:`feature_extractor`).
        images: the tensor :func:`preprocess` made of the items (the evaluation chain).
        batch_size: images per forward pass.
        device: where the model runs (default: CUDA when available, else CPU).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).flatten(1).numpy().astype(np.float64)


def reestimate_batchnorm(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, device: str | torch.device | None = None
) -> nn.Module:
    """Re-estimate the running mean and variance of every batch-norm layer of ``model`` on ``images`` (clean,
    unlabelled), as the average over all of them (``torch.optim.swa_utils.update_bn``); nothing else changes.

    A model pretrained on masked images holds the statistics of masked images; applied to clean images they shift
    every feature. Fine-tuning re-estimates them; a frozen-feature probe needs this to measure the representation.

    Returns:
        ``model``, in eval mode.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    torch.optim.swa_utils.update_bn(batches, model, device=device)
    return model.eval()


# ---------------------------------------------------------------------------------------------- episodes


def stratified_quotas(counts: Sequence[int], n: int) -> np.ndarray:
    """Items per class of a stratified subset of ``n``: the first ``n`` picks of
    :func:`pgnm_monai.data.few_shot.stratified_class_sequence` (the class counts of ``few_shot_subset``)."""
    counts = np.asarray(counts, dtype=int)
    total = int(counts.sum())
    if not 1 <= n <= total:
        raise ValueError(f"episode size n must be in [1, {total}] (the training split), got {n}.")
    return np.bincount(stratified_class_sequence(counts.tolist())[:n], minlength=len(counts))


def draw_episodes(labels: Sequence[int], n: int, n_episodes: int, seed: int = 0) -> list[np.ndarray]:
    """``n_episodes`` seeded, stratified episodes of ``n`` training indices (sorted int arrays).

    Every episode has the class counts of :func:`stratified_quotas` (every class present when ``n`` is at
    least the class count), drawn without replacement within each class. The episodes depend only on
    ``labels``, ``n``, ``n_episodes`` and ``seed``: every arm and pretrain seed gets the same ones.
    """
    labels = np.asarray(labels, dtype=int)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = stratified_quotas(counts, int(n))
    members = [np.flatnonzero(labels == c) for c in classes]
    rng = np.random.default_rng([int(seed), int(n)])
    episodes = []
    for _ in range(int(n_episodes)):
        picks = [rng.choice(idx, size=q, replace=False) for idx, q in zip(members, quotas, strict=True) if q]
        episodes.append(np.sort(np.concatenate(picks)))
    return episodes


def episode_hash(indices: np.ndarray) -> str:
    """A short hash of an episode's training indices (to check that arms share episodes)."""
    return hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


def _probe_episodes(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    episodes: Sequence[np.ndarray],
    first: int = 0,
    suffix: str = "",
) -> list[dict[str, Any]]:
    """Fit every probe of :data:`PROBES` on each episode (numbered from ``first``); score on the whole test split.
    The rows name the probe with ``suffix`` (:data:`BN_SUFFIX` for re-estimated batch-norm statistics)."""
    (x_train, y_train), (x_test, y_test) = train, test
    rows = []
    # one BLAS thread: the fits are tiny; scikit-learn's input and parameter checks skipped: the features are this
    # module's own finite float arrays
    with (
        threadpool_limits(1),
        config_context(assume_finite=True, skip_parameter_validation=True),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*within_class_std_dev_.*")  # classes with one image
        # NearestCentroid computes shrinkage deviations even without shrinkage: 0/0 and x/0 for dead (all-zero)
        # features, unused
        warnings.filterwarnings("ignore", "(invalid value|divide by zero) encountered in divide", RuntimeWarning)
        for e, idx in enumerate(episodes, start=first):
            # every probe's pipeline starts with the same standardisation of the episode: fit and applied once
            scaler = StandardScaler().fit(x_train[idx])
            train_z, test_z = scaler.transform(x_train[idx]), scaler.transform(x_test)
            for name, factory in PROBES.items():
                probe = factory()[-1].fit(train_z, y_train[idx])  # the pipeline's classifier on the same input
                scores = label_metrics(y_test, probe.predict(test_z), names=SCORES)
                rows.append({"episode": e, "episode_hash": episode_hash(idx), "probe": name + suffix} | scores)
    return rows


def _probe_in_parallel(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    episodes: Sequence[np.ndarray],
    n_jobs: int,
    suffix: str = "",
) -> list[dict[str, Any]]:
    """:func:`_probe_episodes` on contiguous chunks of ``episodes`` in ``n_jobs`` processes (joblib; same rows)."""
    jobs = min(effective_n_jobs(n_jobs), len(episodes))
    if jobs <= 1:
        return _probe_episodes(train, test, episodes, suffix=suffix)
    bounds = np.linspace(0, len(episodes), jobs + 1).astype(int)
    parts = Parallel(n_jobs=jobs)(
        delayed(_probe_episodes)(train, test, episodes[a:b], a, suffix)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )
    return [row for part in parts for row in part]


def _probe_model(
    model: nn.Module,
    key: Mapping[str, Any],
    images: Mapping[str, torch.Tensor],
    labels: Mapping[str, np.ndarray],
    episodes: Mapping[int, Sequence[np.ndarray]],
    batch_size: int,
    device: str | torch.device | None,
    n_jobs: int,
) -> list[dict[str, Any]]:
    """The probe rows of one model on one task (``key``: arm, pretrain seed, task) for every ``N`` of ``episodes``
    (``images``: the task's splits through the evaluation chain): its batch-norm statistics as trained, then
    re-estimated on the clean training images (:data:`BN_SUFFIX`)."""
    rows = []
    for suffix in ("", BN_SUFFIX):
        if suffix:
            reestimate_batchnorm(model, images["train"], batch_size, device)
        feats = {s: extract_features(model, x, batch_size, device) for s, x in images.items()}
        for n, drawn in episodes.items():
            train, test = (feats["train"], labels["train"]), (feats["test"], labels["test"])
            scored = _probe_in_parallel(train, test, drawn, n_jobs, suffix)
            rows += [{**key, "n": n, "n_test": len(labels["test"])} | r for r in scored]
    return rows


def _cache_key(model_digest: str, task: Task, settings: Mapping[str, Any]) -> str:
    """A short hash of everything a model's probe rows depend on: the model's bytes, the task and the settings."""
    digest = hashlib.sha1(model_digest.encode())
    digest.update(repr((task.name, task.kind, task.dataset_dir, sorted(task.options.items()))).encode())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- protocol


def run_probe(
    output_dir: str | os.PathLike,
    tasks: Sequence[Task],
    arms: Sequence[str],
    pretrain_seeds: Sequence[int],
    shots: Sequence[int],
    *,
    network: str,
    image_size: int,
    in_channels: int,
    spatial_dims: int,
    n_episodes: int = 200,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    n_jobs: int = -1,
) -> pd.DataFrame:
    """Probe every pretrained model on every task; write ``<output_dir>/probe_runs.csv`` (atomically).

    Incremental: each model's rows for a task are kept in ``<output_dir>/probe/<task>/<arm>_seed<seed>-<key>.csv``,
    where ``key`` hashes the model file, the task and the settings below; a later call (more seeds, more arms)
    probes only the models it has no rows for. Delete ``probe/`` to recompute everything.

    Args:
        output_dir: the protocol's output folder, holding ``pretrain/<arm>_seed<seed>/models/model.pt``.
        tasks: :class:`~pgnm_monai.experiments.tasks.Task` objects (train and test splits are used).
        arms: arm names (:data:`~pgnm_monai.arms.ARMS`).
        pretrain_seeds: pretrain seeds of the models to probe.
        shots: episode sizes ``N`` (those larger than a task's training split are skipped, with a warning).
        network: the classifier architecture of the pretrained models.
        image_size: evaluation crop side (as in pretraining).
        in_channels: image channels (as in pretraining).
        spatial_dims: 2 (images) or 3 (volumes: 3D models on whole volumes), as in pretraining.
        n_episodes: episodes per (task, N), shared by every arm and pretrain seed.
        seed: seed of the episodes.
        batch_size: images per forward pass of the feature extraction.
        device: where the feature extraction runs (default: CUDA when available, else CPU).
        n_jobs: processes fitting the probes (joblib; -1: one per CPU core). The rows do not depend on it.

    Returns:
        the rows of ``probe_runs.csv`` (columns :data:`RUN_COLUMNS`), deterministic for fixed arguments.
    """
    from pgnm_monai.components import load_data

    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; known: {list(ARMS)}.")
    out = Path(output_dir)
    models = {PretrainRun(a, int(s)): PretrainRun(a, int(s)).model(out) for a in arms for s in pretrain_seeds}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"pretrained models missing (run the protocol's pretraining first): {missing[:3]}")
    settings = {
        "shots": tuple(int(n) for n in shots),
        "n_episodes": int(n_episodes),
        "seed": int(seed),
        "network": network,
        "image_size": int(image_size),
        "in_channels": int(in_channels),
        "features": ("as_trained", "bn_clean"),  # both feature sets of every model (BN_SUFFIX)
        **({"spatial_dims": 3} if int(spatial_dims) == 3 else {}),  # 2D keys unchanged: cached rows stay valid
    }
    digests = {key: hashlib.sha1(path.read_bytes()).hexdigest() for key, path in models.items()}
    parts: list[pd.DataFrame] = []
    for task in tasks:
        t0 = time.perf_counter()
        cache = {run: run.probe_rows(out, task.name, _cache_key(digests[run], task, settings)) for run in models}
        todo = [key for key, path in cache.items() if not path.is_file()]
        if todo:
            splits = {
                s: load_data(task.kind, task.dataset_dir, s, options=dict(task.options)) for s in ("train", "test")
            }
            images = {s: preprocess(dl.items, image_size, in_channels, spatial_dims) for s, dl in splits.items()}
            labels = {s: np.array([int(it[LABEL]) for it in dl.items]) for s, dl in splits.items()}
            sizes = [int(n) for n in shots if int(n) <= len(labels["train"])]
            if len(sizes) < len(shots):
                logger.warning("task %s: shots above its %d training items skipped", task.name, len(labels["train"]))
            episodes = {n: draw_episodes(labels["train"], n, n_episodes, seed) for n in sizes}
        for run in todo:
            model, _ = feature_extractor(models[run], network, in_channels, spatial_dims)
            key = {"arm": run.arm, "pretrain_seed": run.seed, "task": task.name}
            rows = _probe_model(model, key, images, labels, episodes, batch_size, device, n_jobs)
            path = cache[run]
            for stale in path.parent.glob(run.probe_rows_pattern()):
                stale.unlink()
            atomic_write_text(path, pd.DataFrame(rows, columns=list(RUN_COLUMNS)).to_csv(index=False))
        parts += [pd.read_csv(cache[key]) for key in models]
        logger.info(
            "probe of task %s: %.1f s (%d of %d models probed, the rest cached)",
            task.name,
            time.perf_counter() - t0,
            len(todo),
            len(models),
        )
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(RUN_COLUMNS))
    atomic_write_text(out / "probe_runs.csv", frame.to_csv(index=False))
    return frame  # every part was read back from its CSV: the same dtypes whether computed now or cached
