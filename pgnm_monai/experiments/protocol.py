"""The paper's few-shot unseen-concept protocol, run through the bundles, with one command (``pgnm benchmark``).

For every pretraining arm and pretrain seed, the ``pgnm_pretrain`` bundle trains a classifier on the pretraining
set; every heated model is then probed with frozen features (:mod:`.probe`) and fine-tuned with the
``pgnm_finetune`` bundle on each downstream task (:mod:`.tasks`) for every few-shot ``N`` and fine-tune seed, and
evaluated on the task's test split (overall and per modality). Settings come from a named profile
(:mod:`.profiles`); the report is :mod:`.report`'s. Outputs, under ``output_dir``:

- ``pretrain/<arm>_seed<k>/``: each pretrained model (``done.json`` marks it complete; the folder names:
  :mod:`.run_folders`);
- ``runs.csv``: one row per fine-tuned run (arm, task, N, seeds, metrics, per-modality macro-F1, wall time,
  commit, the full configuration as JSON). A run already in it is not redone (resumable);
- ``probe_*``, ``answer_deltas.csv``, ``answer_forest.png``, ``report.md``, ``f1_vs_n.png`` (several N only) and the
  pretraining figures;
- ``invocations.jsonl``: one line per invocation (:mod:`.run_records`); the report's wall time is their sum.

:func:`write_protocol_report` rewrites the report from those files alone (``pgnm benchmark --report-only``), when the
pretrained models are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from pgnm_monai.arms import ARMS, learned_policy_arms
from pgnm_monai.atomic_files import atomic_write_text
from pgnm_monai.data.datasets import MEMORY
from pgnm_monai.experiments import answer, policy_figures, probe, probe_report, runner
from pgnm_monai.experiments.profiles import PROFILES
from pgnm_monai.experiments.report import pretraining_section, write_report
from pgnm_monai.experiments.run_folders import PretrainRun, finetune_folder, read_run_settings
from pgnm_monai.experiments.run_records import Invocation
from pgnm_monai.experiments.tables import number
from pgnm_monai.experiments.tasks import Task, pretrain_source, resolve_tasks

__all__ = ["KEY", "METRICS", "pretrain_settings", "run_protocol", "write_protocol_report"]

METRICS = ("macro_f1", "balanced_accuracy", "auroc", "accuracy", "macro_precision", "macro_recall")
KEY = ("arm", "pretrain_seed", "task", "n", "finetune_seed")
#: the bundle ids the probes take from the pretrained models' own settings (their ``run_settings.json``).
PROBE_SETTINGS = ("network", "image_size", "in_channels", "spatial_dims")


def _bundle_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle ids a profile sets for every stage (pretrain, fine-tune, evaluate); ``None`` (a profile without
    ``in_channels`` or ``spatial_dims``): the bundle's default."""
    return {
        "network": cfg["network"],
        "image_size": cfg["image_size"],
        "batch_size": cfg["batch_size"],
        # evaluation: the bundle's batches, at least as large as training's
        "val_batch_size": max(int(cfg["batch_size"]), runner.bundle_defaults()["val_batch_size"]),
        "in_channels": cfg.get("in_channels"),
        "spatial_dims": cfg.get("spatial_dims"),
        "progress_bar": False,
    }


def pretrain_settings(cfg: Mapping[str, Any], dataset_kind: str | None, dataset_dir: str | None) -> dict[str, Any]:
    """The pretrain bundle's overrides for a profile's settings ``cfg``: everything but ``arm`` and ``seed``."""
    return {
        "epochs": cfg["pretrain_epochs"],
        "lr": cfg["pretrain_lr"],
        "dataset_dir": dataset_dir,
        "dataset_kind": dataset_kind,
        "dataset_options": dict(cfg.get("pretrain_options", {})),
        "max_train_items": cfg["pretrain_items"],
        "max_val_items": cfg["val_items"],
        "grid": cfg["grid"],
        "kernel_size": cfg["kernel_size"],
        "sigma": cfg["sigma"],
        "policy_trunk": cfg["policy_trunk"],
        "policy_input_size": cfg.get("policy_input_size"),
        "tensorboard": False,
        **_bundle_settings(cfg),
        **cfg.get("pretrain_overrides", {}),
    }


def run_protocol(
    output_dir: str | os.PathLike = "results/quick",
    profile: str = "quick",
    tasks: Sequence[str] | None = None,
    pretrain_dir: str | None = None,
    pretrain_kind: str | None = None,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    compare_with: str | os.PathLike | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) the protocol and write ``runs.csv``, ``report.md`` and the figures; the invocation is recorded
    in ``invocations.jsonl`` after every completed stage (:class:`~.run_records.Invocation`).

    Args:
        output_dir: where everything goes (pretrained models under ``pretrain/``).
        profile: a name of :data:`~pgnm_monai.experiments.profiles.PROFILES`.
        tasks: task specs (default names of the profile, or ``name=kind:path[?opt=v]``).
        pretrain_dir: pretraining data (default: the profile's, from ``../shared/data``).
        pretrain_kind: kind of ``pretrain_dir``.
        data_dir: the shared data folder (default ``$PGNM_SHARED_DATA`` or ``../shared/data``).
        overrides: replace profile settings (e.g. ``{"shots": (16, 32)}``).
        compare_with: another run's folder (with ``probe_runs.csv``): the report also compares its verdicts.
        command: the command line, for the report.
    """
    cfg = _settings(profile, overrides)
    root = Path(data_dir) if data_dir else None
    task_list = resolve_tasks(list(tasks) if tasks else list(cfg["tasks"]), root)
    if pretrain_dir and not pretrain_kind:
        raise ValueError("pretrain_kind is required with pretrain_dir.")
    source = (pretrain_kind, pretrain_dir) if pretrain_dir else pretrain_source(cfg["pretrain"], root)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    reference = answer.read_probe_runs(compare_with) if compare_with else None  # refused before hours of work
    command = command or " ".join(sys.argv)
    with Invocation(out, command) as invocation:
        commit = invocation.record["commit"]
        pretrain_seconds = _pretrain_all(out, cfg, source, commit, invocation.stage)
        probes = None
        if cfg.get("probe_shots"):
            probes = probe.run_probe(
                out, task_list, cfg["arms"], cfg["pretrain_seeds"], cfg["probe_shots"],
                n_episodes=cfg["probe_episodes"], **_trained_settings(out, cfg, PROBE_SETTINGS),
            )  # fmt: skip
            invocation.stage("probe")
        sections = [
            *_probe_sections(out, cfg["arms"], probes, reference, compare_with),
            _pretraining_section(out, cfg, task_list),
        ]
        context = {"profile": profile, "pretrain_kind": source[0], "pretrain_dir": source[1], "commit": commit}
        frame = _finetune_all(out, cfg, task_list, pretrain_seconds, context, invocation.stage)
        write_report(frame, out, command, profile, cfg, commit, sections)
        invocation.stage("report")
    return frame


def write_protocol_report(
    output_dir: str | os.PathLike,
    profile: str | None = None,
    compare_with: str | os.PathLike | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Rewrite a protocol run's report from the files in its folder alone: ``runs.csv``, ``probe_runs.csv(.gz)``, and
    ``pretrain/`` or, when the models are gone, ``pretrain_curves.csv`` (and an earlier ``masks.png``). Nothing is
    trained or probed; the settings are the run's own (``runs.csv``'s ``config``), ``profile``'s only when it has
    none. Recorded in ``invocations.jsonl`` like every invocation.

    Raises:
        FileNotFoundError: ``output_dir`` has neither ``runs.csv`` nor ``probe_runs.csv(.gz)`` (naming the folder).
        ValueError: no recorded settings and no ``profile``.
    """
    out = Path(output_dir).resolve()
    runs_csv = out / "runs.csv"
    frame = pd.read_csv(runs_csv) if runs_csv.is_file() else pd.DataFrame(columns=list(KEY))
    has_probes = any((out / name).is_file() for name in ("probe_runs.csv", "probe_runs.csv.gz"))
    if not len(frame) and not has_probes:
        raise FileNotFoundError(f"{out} has neither runs.csv nor probe_runs.csv(.gz): is it a protocol run's folder?")
    reference = answer.read_probe_runs(compare_with) if compare_with else None
    profile, cfg, tasks = _recorded_settings(frame, profile, runs_csv)
    with Invocation(out, command or " ".join(sys.argv), cuda=False) as invocation:
        probes = answer.read_probe_runs(out) if has_probes else None
        present = set(frame["arm"]) | (set(probes["arm"]) if probes is not None else set())
        arms = cfg.get("arms") or [a for a in ARMS if a in present]
        sections = [*_probe_sections(out, arms, probes, reference, compare_with)]
        if len(policy_figures.read_pretrain_curves(out)):
            sections.append(_pretraining_section(out, cfg, tasks))
        elif (out / "pretrain_curves.csv").is_file():
            curves = pd.read_csv(out / "pretrain_curves.csv")
            sections.append(pretraining_section(out, curves, from_records=True))
        invocation.stage("report sections")  # the header's sum counts this invocation up to here
        write_report(frame, out, command, profile, cfg, invocation.record["commit"], sections)
        invocation.stage("report")
    return frame


def _recorded_settings(
    frame: pd.DataFrame, profile: str | None, runs_csv: Path
) -> tuple[str, dict[str, Any], list[Task]]:
    """The profile, settings and tasks a run was made with: those of its ``runs.csv`` (the ``config`` of its rows),
    else ``profile``'s."""
    if len(frame) and "config" in frame:
        config = json.loads(frame["config"].iloc[0])
        recorded_tasks = [c["task"] for c in map(json.loads, frame["config"].unique()) if "task" in c]
        tasks = {t["name"]: Task(**t) for t in recorded_tasks}
        recorded = config.pop("profile", profile) or ""
        for key in ("task", "arm", "pretrain_dir", "pretrain_kind"):  # one run's, not the run's settings
            config.pop(key, None)
        return recorded, {**config, "tasks": list(tasks)}, list(tasks.values())
    if profile is None:
        raise ValueError(f"{runs_csv} is absent or has no config column: name the run's profile.")
    cfg = _settings(profile, None)
    return profile, cfg, resolve_tasks(list(cfg["tasks"]), None)


def _settings(profile: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The profile's settings with ``overrides``, checked."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}.")
    cfg = {**PROFILES[profile], **(overrides or {})}
    unknown = set(cfg["arms"]) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; known: {list(ARMS)}.")
    return cfg


def _pretrain_all(
    out: Path,
    cfg: Mapping[str, Any],
    source: tuple[str | None, str | None],
    commit: str,
    completed: Callable[[str], None] = lambda stage: None,
) -> dict[tuple[str, int], float]:
    """Pretrain every (arm, seed) not yet marked done (``completed`` is told each model trained, and the stage's
    end); return each model's pretraining seconds."""
    seconds: dict[tuple[str, int], float] = {}
    jobs = [(a, s) for a in cfg["arms"] for s in cfg["pretrain_seeds"]]
    for arm, seed in tqdm(jobs, desc="pretrain", unit="model"):
        pre_root = PretrainRun(arm, seed).folder(out)
        marker = pre_root / "done.json"
        if marker.exists():
            seconds[(arm, seed)] = json.loads(marker.read_text())["seconds"]
            continue
        t0 = time.perf_counter()
        runner.pretrain(pre_root, arm=arm, seed=seed, **pretrain_settings(cfg, *source))
        seconds[(arm, seed)] = round(time.perf_counter() - t0, 1)
        atomic_write_text(marker, json.dumps({"seconds": seconds[(arm, seed)], "commit": commit}) + "\n")
        completed(f"pretrain {pre_root.name}")
    completed("pretrain")
    return seconds


def _probe_sections(
    out: Path,
    arms: Sequence[str],
    frame: pd.DataFrame | None,
    reference: pd.DataFrame | None = None,
    reference_dir: str | os.PathLike | None = None,
) -> list[str]:
    """The report's probe sections from the probe rows ``frame`` (none without them): the answer (learned policies
    against every other arm, ``answer_deltas.csv`` and ``answer_forest.png``), against another run's verdicts when
    ``reference`` (its probe rows) is given, against ``none``, and learned policies against the frozen one."""
    if frame is None:
        return []
    summary = probe_report.write_probe_report(frame, out)
    primary = probe_report.primary_probe(summary)
    pairs = answer.pairwise_deltas(frame, primary)
    atomic_write_text(out / "answer_deltas.csv", pairs.to_csv(index=False))
    answer.plot_forest(pairs, out / "answer_forest.png")
    sections = [answer.answer_markdown(pairs, primary, figure="answer_forest.png")]
    if reference is not None:
        name = f"`{os.fspath(reference_dir)}`"
        sections.append(answer.regime_markdown(frame, reference, name, answer_pairs=pairs))
    sections.append(probe_report.probe_report_markdown(summary))
    learned = learned_policy_arms(arms)
    if "frozen_policy" in arms and learned:  # does *learning* the mask matter?
        versus = probe_report.probe_summary(
            frame[frame["arm"].isin([*learned, "frozen_policy"])], baseline="frozen_policy"
        )
        atomic_write_text(out / "probe_summary_vs_frozen.csv", versus.to_csv(index=False))
        title = "Does learning matter? Learned policies against the frozen initial policy (probes)"
        sections.append(probe_report.probe_report_markdown(versus, baseline="frozen_policy", title=title))
    return sections


def _trained_settings(out: Path, cfg: Mapping[str, Any], ids: Sequence[str]) -> dict[str, Any]:
    """The values of ``ids`` that every pretrained model of ``cfg`` was trained with (its ``run_settings.json``).

    Raises:
        FileNotFoundError: a model without ``run_settings.json`` (naming the file).
        ValueError: models trained with different values.
    """
    runs = [PretrainRun(a, s) for a in cfg["arms"] for s in cfg["pretrain_seeds"]]
    found = {run: {k: read_run_settings(run.folder(out)).get(k) for k in ids} for run in runs}
    first, values = next(iter(found.items()))
    for run, other in found.items():
        if other != values:
            raise ValueError(f"pretrained models {first.name} and {run.name} were trained with {values} and {other}.")
    return values


def _pretraining_section(out: Path, cfg: Mapping[str, Any], tasks: Sequence[Task]) -> str:
    """The report's pretraining section, from what the pretrain runs kept (read with each run's own settings): the
    curves of every run, the masks of the first pretrain seed's policies on each task's first test image."""
    curves = policy_figures.read_pretrain_curves(out)
    if not len(curves):
        return ""
    seed = cfg["pretrain_seeds"][0]
    policies = policy_figures.mask_policies(out, seed)
    first = PretrainRun(cfg["arms"][0], seed).folder(out)
    images = policy_figures.task_images(first, tasks) if len(policies) > 1 else {}
    return pretraining_section(out, curves, policies, images, seed)


def _finetune_all(
    out: Path,
    cfg: Mapping[str, Any],
    tasks: Sequence[Task],
    pretrain_seconds: Mapping[tuple[str, int], float],
    context: Mapping[str, Any],
    completed: Callable[[str], None] = lambda stage: None,
) -> pd.DataFrame:
    """Fine-tune and evaluate every (task, N, fine-tune seed, arm, pretrain seed) not yet in ``runs.csv``
    (``completed`` is told each run written, and the stage's end)."""
    runs_csv = out / "runs.csv"
    frame = pd.read_csv(runs_csv) if runs_csv.exists() else pd.DataFrame()
    done = {tuple(r) for r in frame[list(KEY)].astype(str).itertuples(index=False)} if len(frame) else set()
    rows = frame.to_dict("records") if len(frame) else []
    jobs = [
        (task, n, fseed, arm, pseed)
        for task in tasks
        for n in cfg["shots"]
        for fseed in cfg["finetune_seeds"]
        for arm in cfg["arms"]
        for pseed in cfg.get("finetune_pretrain_seeds") or cfg["pretrain_seeds"]
    ]
    for task, n, fseed, arm, pseed in tqdm(jobs, desc="fine-tune", unit="run"):
        if (arm, str(pseed), task.name, str(n), str(fseed)) in done:
            continue
        row = _finetune_one(out, cfg, task, n, fseed, arm, pseed)
        config = {k: v for k, v in cfg.items() if k != "tasks"}
        config.update(task=task.__dict__, arm=arm, pretrain_dir=context["pretrain_dir"])
        config.update(pretrain_kind=context["pretrain_kind"])
        row.update(pretrain_seconds=pretrain_seconds[(arm, pseed)], commit=context["commit"])
        row["config"] = json.dumps({"profile": context["profile"], **config}, default=list)
        rows.append(row)
        atomic_write_text(runs_csv, pd.DataFrame(rows).to_csv(index=False))
        completed(f"fine-tune {len(rows)} runs")
    completed("fine-tune")
    return pd.DataFrame(rows)


def _finetune_one(
    out: Path, cfg: Mapping[str, Any], task: Task, n: int, fseed: int, arm: str, pseed: int
) -> dict[str, Any]:
    """One fine-tune + test evaluation through the bundles; its row of ``runs.csv`` (without the context)."""
    t0 = time.perf_counter()
    pretrained = PretrainRun(arm, pseed)
    ft_root = finetune_folder(out, task.name, n, fseed, pretrained)
    # preprocessed once for every arm, seed and N (``finetune_cache: False``: per run): image files on disk (kept
    # for later invocations), MedMNIST arrays in this process's memory (reading tensors back costs more than the chain)
    cache = (
        (os.fspath(out / "cache") if task.kind != "medmnist" else MEMORY) if cfg.get("finetune_cache", True) else None
    )
    ft = {
        "dataset_dir": task.dataset_dir,
        "dataset_kind": task.kind,
        "dataset_options": dict(task.options),
        "seed": fseed,
        "cache_dir": cache,
        "tensorboard": False,  # the run's folder is deleted after its row is written
        **_bundle_settings(cfg),
    }
    runner.finetune(
        ft_root,
        pretrained.model(out),
        epochs=cfg["finetune_epochs"],
        lr=cfg["finetune_lr"],
        warmup_epochs=max(1, min(cfg["warmup_epochs"], cfg["finetune_epochs"] - 1)),
        few_shot=n,
        few_shot_seed=fseed,
        max_val_items=cfg["val_items"],
        val_interval=cfg.get("finetune_val_interval", 1),
        checkpoint_interval=0,  # no training state: an interrupted few-second run is redone, its folder deleted
        **ft,
    )
    report = runner.evaluate(ft_root, **ft)
    shutil.rmtree(ft_root, ignore_errors=True)  # checkpoints of every fine-tune would fill the disk
    row: dict[str, Any] = {"arm": arm, "pretrain_seed": pseed, "task": task.name, "n": n, "finetune_seed": fseed}
    row |= {m: number(report["overall"].get(m)) for m in METRICS}
    row["n_test"] = report["overall"].get("n")
    for modality, values in sorted(report.get("by_modality", {}).items()):
        row[f"macro_f1[{modality}]"] = number(values.get("macro_f1"))
    row["finetune_seconds"] = round(time.perf_counter() - t0, 1)
    return row
