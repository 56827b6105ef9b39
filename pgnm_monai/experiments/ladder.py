"""The scale ladder: does PGNM's paired delta move as the pretraining grows? (docs/scale_ladder.md)

Usage::

    python -m pgnm_monai.experiments.ladder --points results/radimagenet_lite results/scale/scale_2000x8_32px \\
        results/scale/scale_2000x14_32px results/scale/scale_1250x4_64px --output-dir results/scale

Each point is a finished protocol run's folder (``pgnm benchmark``); it is read from its committed files only: the
probe rows (``probe_runs.csv`` or ``probe_runs.csv.gz``), the settings every fine-tune recorded (``runs.csv``'s
``config``: images per source, epochs, image size), ``invocations.jsonl`` (device and summed wall time) and
``pretrain_curves.csv`` (whether ``none`` saturates and the policy settles, as the run's report says it). Writes
to ``--output-dir``:

- ``ladder_deltas.csv``: per point and comparator, the pooled paired delta (:func:`.trend.pooled_delta`) and the
  point's folder relative to ``--output-dir``;
- ``trend.png``: those deltas with their intervals against the images seen (log axis) and the fitted slopes;
- ``ladder_report.md``: the computed trend sentences, the figure, the deltas and a table of the points.

The trend is fitted over the points at the ladder's most common image size (ties: the smallest), so that the slope
is one of images seen alone; points at another size are drawn and tabled, not fitted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pgnm_monai.atomic_files import atomic_save_figure, atomic_write_text
from pgnm_monai.experiments.answer import read_probe_runs
from pgnm_monai.experiments.probe_report import primary_probe
from pgnm_monai.experiments.report import convergence_sentences, convergence_states
from pgnm_monai.experiments.run_records import read_invocations, summed_wall_seconds
from pgnm_monai.experiments.tables import markdown_table
from pgnm_monai.experiments.trend import CONFIDENCE, Trend, fit_trend, pooled_delta, trend_sentence

__all__ = [
    "COMPARATORS",
    "LadderPoint",
    "build_parser",
    "deltas_table",
    "fit_trends",
    "ladder_deltas",
    "ladder_markdown",
    "main",
    "points_table",
    "pretraining_sentences",
    "read_point",
    "trend_figure",
    "trend_sentences",
]

#: the arms PGNM is compared with along the ladder
COMPARATORS = ("none", "frozen_policy", "trivialaugment")


@dataclass(frozen=True)
class LadderPoint:
    """One finished protocol run on the ladder, as its own records describe it."""

    folder: Path
    profile: str
    images_per_source: tuple[int, ...]
    images_per_epoch: int
    epochs: int
    image_size: int
    #: the devices of its invocations (``unknown`` without ``invocations.jsonl``)
    device: str
    #: every invocation's wall time, summed (NaN without ``invocations.jsonl``)
    wall_seconds: float
    #: the run report's sentences on whether pretraining was long enough (empty without ``pretrain_curves.csv``)
    pretraining: str
    #: the same as values (:func:`~.report.convergence_states`): per arm, ``saturated`` / ``settled`` and more
    convergence: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The point's label: its folder's name."""
        return self.folder.name

    @property
    def images_seen(self) -> int:
        """Images per epoch x epochs."""
        return self.images_per_epoch * self.epochs


def _settings(folder: Path) -> dict[str, Any]:
    """The pretraining settings every row of ``<folder>/runs.csv`` recorded in its ``config`` (they must agree)."""
    path = folder / "runs.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: a ladder point's settings (images per source, epochs, image size) are read "
            f"from the config its fine-tunes recorded; is {folder} a finished protocol run?"
        )
    frame = pd.read_csv(path)
    if "config" not in frame or not len(frame):
        raise ValueError(f"{path} has no rows with a 'config' column: the settings of {folder} cannot be read.")
    keys = ("profile", "pretrain_epochs", "image_size", "pretrain_items", "pretrain_options")
    found = {json.dumps({k: json.loads(c).get(k) for k in keys}, sort_keys=True) for c in frame["config"]}
    if len(found) > 1:
        raise ValueError(f"{path}: its rows record different pretraining settings: {sorted(found)}.")
    cfg = json.loads(found.pop())
    for key in ("pretrain_epochs", "image_size"):
        if cfg[key] is None:
            raise ValueError(f"{path}: the config has no {key!r}; expected the run's pretraining settings there.")
    return cfg


def _images_per_source(cfg: dict[str, Any], folder: Path) -> tuple[tuple[int, ...], int]:
    """The training images of each source per epoch and their sum (the caps the run set: ``max_items`` of each source
    of a union, else ``pretrain_items``; ``pretrain_items`` also caps a union's sum)."""
    sources = (cfg.get("pretrain_options") or {}).get("sources")
    cap = cfg.get("pretrain_items")
    if sources:
        per = tuple(s.get("max_items") for s in sources)
        if any(v is None for v in per):
            raise ValueError(
                f"{folder}/runs.csv: a pretraining source has no 'max_items' ({per}): its images per epoch are not "
                "in the run's records."
            )
        per = tuple(int(v) for v in per)
        return per, min(sum(per), int(cap)) if cap is not None else sum(per)
    if cap is None:
        raise ValueError(
            f"{folder}/runs.csv: the config has neither per-source 'max_items' nor 'pretrain_items': the images per "
            "epoch are not in the run's records."
        )
    return (int(cap),), int(cap)


def read_point(folder: str | Path, arms: Sequence[str]) -> tuple[LadderPoint, pd.DataFrame]:
    """A ladder point and its probe rows of ``arms``, read from the run folder ``folder``.

    Raises:
        FileNotFoundError: ``folder`` has no probe rows, or no ``runs.csv`` (naming it).
        ValueError: its records lack a setting the ladder needs, or disagree (naming the file).
    """
    folder = Path(folder)
    rows = read_probe_runs(folder)
    rows = rows[rows["arm"].isin(arms)]
    cfg = _settings(folder)
    per_source, per_epoch = _images_per_source(cfg, folder)
    invocations = read_invocations(folder)
    devices = list(dict.fromkeys(invocations["device"].dropna().astype(str))) if len(invocations) else []
    curves_csv = folder / "pretrain_curves.csv"
    curves = pd.read_csv(curves_csv) if curves_csv.is_file() else None
    sentences = convergence_sentences(curves) if curves is not None else []
    point = LadderPoint(
        folder=folder,
        profile=str(cfg.get("profile") or ""),
        images_per_source=per_source,
        images_per_epoch=per_epoch,
        epochs=int(cfg["pretrain_epochs"]),
        image_size=int(cfg["image_size"]),
        device=" + ".join(devices) or "unknown",
        wall_seconds=summed_wall_seconds(folder) if len(invocations) else math.nan,
        pretraining=sentences[0] if sentences else "",
        convergence=convergence_states(curves) if curves is not None else {},
    )
    return point, rows


def _state(point: LadderPoint, arm: str, key: str) -> str:
    """``yes`` / ``no``: what :func:`~.report.convergence_states` found of ``arm``'s ``key``; ``n/a`` when nothing."""
    value = point.convergence.get(arm, {}).get(key)
    return "n/a" if value is None else "yes" if value else "no"


def ladder_deltas(
    points: Sequence[tuple[LadderPoint, pd.DataFrame]], arm: str, comparators: Sequence[str], n_boot: int = 2000
) -> tuple[pd.DataFrame, str]:
    """Per point and comparator: the pooled delta ``arm − comparator`` on the probe every point has (``linear_bn``
    when all have it); ``in_fit`` marks the points at the most common image size. Returns the table and the probe.

    Raises:
        ValueError: the points share no linear probe, or a point lacks an arm (naming its folder).
    """
    shared = set.intersection(*(set(rows["probe"]) for _, rows in points))
    probe = primary_probe(pd.DataFrame({"probe": sorted(shared)}))
    if probe not in shared:
        raise ValueError(f"the points share no linear probe (shared: {sorted(shared)}); they cannot be compared.")
    sizes = Counter(p.image_size for p, _ in points)
    fit_size = min(sizes, key=lambda s: (-sizes[s], s))
    records = []
    for point, rows in points:
        for comparator in comparators:
            try:
                pooled = pooled_delta(rows, arm, comparator, probe, n_boot)
            except ValueError as e:
                raise ValueError(f"{point.folder}: {e}") from e
            records.append(
                {
                    "point": point.name,
                    "folder": str(point.folder),
                    "profile": point.profile,
                    "image_size": point.image_size,
                    "images_per_epoch": point.images_per_epoch,
                    "epochs": point.epochs,
                    "images_seen": point.images_seen,
                    "probe": probe,
                    "arm": arm,
                    "comparator": comparator,
                    **pooled,
                    "in_fit": point.image_size == fit_size,
                }
            )
    return pd.DataFrame(records), probe


def fit_trends(deltas: pd.DataFrame) -> dict[str, tuple[Trend | None, str]]:
    """Per comparator of :func:`ladder_deltas`' table: the trend of its fitted points (``in_fit``), or ``None`` and
    why it cannot be fitted."""
    found = {}
    for comparator, group in deltas[deltas["in_fit"]].groupby("comparator", sort=False):
        try:
            found[comparator] = (fit_trend(group["images_seen"], group["delta"], group["se"]), "")
        except ValueError as e:
            found[comparator] = (None, str(e).rstrip("."))
    return found


def trend_figure(deltas: pd.DataFrame, trends: dict[str, tuple[Trend | None, str]]):
    """The pooled deltas with their intervals against the images seen (log axis), one colour per comparator,
    points outside the fit hollow, each fitted line dashed over its points' range."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    comparators = list(dict.fromkeys(deltas["comparator"]))
    for i, comparator in enumerate(comparators):
        color = f"C{i}"
        sub = deltas[deltas["comparator"] == comparator]
        shift = 10 ** (0.012 * (i - (len(comparators) - 1) / 2))  # side by side, not on top of each other
        for in_fit, part in sub.groupby("in_fit"):
            x = part["images_seen"].to_numpy(float) * shift
            err = np.vstack([part["delta"] - part["low"], part["high"] - part["delta"]])
            ax.errorbar(
                x, part["delta"], yerr=err, fmt="o" if in_fit else "s", color=color, capsize=3,
                mfc=color if in_fit else "white",
            )  # fmt: skip
        trend, _ = trends.get(comparator, (None, ""))
        label = f"vs {comparator}"
        if trend is not None:
            xs = np.logspace(*np.log10(trend.x_range), 20)
            ax.plot(xs * shift, trend.intercept + trend.slope * np.log10(xs), "--", color=color)
            label += f": {trend.slope:+.3f} [{trend.low:+.3f}, {trend.high:+.3f}] per decade"
        ax.plot([], [], "o-", color=color, label=label)
    for _, part in deltas[~deltas["in_fit"]].groupby("point"):  # one label per point, above its highest interval
        ax.annotate(
            f"{part['image_size'].iloc[0]} px", (float(part["images_seen"].iloc[0]), float(part["high"].max())),
            textcoords="offset points", xytext=(0, 6), ha="center",
        )  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("images seen in pretraining (images per epoch x epochs)")
    ax.set_ylabel(f"{deltas['arm'].iloc[0]} − comparator, {deltas['probe'].iloc[0]} macro-F1")
    ax.set_title("pooled paired delta over task x N (95% interval) and its slope", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _interval(row: pd.Series) -> str:
    return f"{row['delta']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def points_table(points: Sequence[LadderPoint], deltas: pd.DataFrame) -> pd.DataFrame:
    """One row per point, by images seen: its settings, its pretrain seeds (the fewest any comparison of
    :func:`ladder_deltas`' table paired), device, summed wall time, whether ``none`` saturates and the arm settles."""
    arm = deltas["arm"].iloc[0]
    seeds = deltas.groupby("point")["seeds"].min().to_dict()
    rows = []
    for p in sorted(points, key=lambda p: p.images_seen):
        rows.append(
            {
                "point": p.name,
                "profile": p.profile,
                "images per source": "/".join(f"{v:,}" for v in dict.fromkeys(p.images_per_source)),
                "epochs": p.epochs,
                "image size": f"{p.image_size} px",
                "images seen": f"{p.images_seen:,}",
                "pretrain seeds": seeds[p.name],
                "device": p.device,
                "wall time (all invocations)": "n/a"
                if p.wall_seconds != p.wall_seconds
                else f"{p.wall_seconds / 60:.1f} min",
                "`none` saturates": _state(p, "none", "saturated"),
                f"`{arm}` settles": _state(p, arm, "settled"),
            }
        )
    return pd.DataFrame(rows)


def deltas_table(deltas: pd.DataFrame) -> pd.DataFrame:
    """:func:`ladder_deltas`' table as one row per point (by images seen) and one ``delta [low, high]`` column per
    comparator, after the point's images seen and image size."""
    comparators = list(dict.fromkeys(deltas["comparator"]))
    table = deltas.assign(interval=deltas.apply(_interval, axis=1)).sort_values(["images_seen", "point"], kind="stable")
    table = table.pivot(index="point", columns="comparator", values="interval").reindex(
        index=list(dict.fromkeys(table["point"])), columns=comparators
    )
    first = deltas.groupby("point")[["images_seen", "image_size"]].first()
    table.insert(0, "images seen", first["images_seen"].reindex(table.index).map(lambda v: f"{v:,}"))
    table.insert(1, "image size", first["image_size"].reindex(table.index).map(lambda v: f"{v} px"))
    table.columns.name = None
    return table


def trend_sentences(deltas: pd.DataFrame, trends: dict[str, tuple[Trend | None, str]]) -> list[str]:
    """One Markdown bullet per comparator of :func:`fit_trends`: does the arm's delta move with the images seen."""
    arm = deltas["arm"].iloc[0]
    return [f"- {trend_sentence(arm, c, *trends[c])}" for c in trends]


def pretraining_sentences(points: Sequence[LadderPoint], output_dir: str | Path | None = None) -> list[str]:
    """One Markdown bullet per point: its run report's sentences on whether pretraining was long enough; with
    ``output_dir`` (where the bullets are written), a point that has a ``report.md`` is linked to it."""

    def label(p: LadderPoint) -> str:
        if output_dir is None or not (p.folder / "report.md").is_file():
            return f"`{p.name}`"
        return f"[`{p.name}`]({Path(os.path.relpath(p.folder / 'report.md', output_dir)).as_posix()})"

    return [f"- {label(p)}: {p.pretraining or 'not known (no `pretrain_curves.csv`).'}" for p in points]


def ladder_markdown(
    points: Sequence[LadderPoint],
    deltas: pd.DataFrame,
    trends: dict[str, tuple[Trend | None, str]],
    command: str,
    output_dir: str | Path | None = None,
) -> str:
    """``ladder_report.md``: the trend sentences first, the figure, the pooled deltas, the points, the method; with
    ``output_dir`` (where the report goes), each point that has a ``report.md`` is linked to it."""
    arm, probe = deltas["arm"].iloc[0], deltas["probe"].iloc[0]
    fit = deltas[deltas["in_fit"]]
    sizes = sorted(set(fit["image_size"]))
    left_out = sorted(set(deltas.loc[~deltas["in_fit"], "point"]))
    comparators = list(dict.fromkeys(deltas["comparator"]))
    lines = [
        "# The scale ladder: does PGNM's effect change as the pretraining grows?",
        "",
        f"- command: `{command}`",
        f"- {_count(len(points), 'point')}; `{arm}` against {', '.join(f'`{c}`' for c in comparators)} "
        f"on the probe `{probe}` (macro-F1), pooled over each point's task x N cells",
        f"- trend fitted over {_count(fit['point'].nunique(), 'point')} at {', '.join(map(str, sizes))} px"
        + (f"; drawn, not fitted (another image size): {', '.join(f'`{p}`' for p in left_out)}" if left_out else ""),
        "",
        "## The trend",
        "",
        *trend_sentences(deltas, trends),
        "",
        "![pooled deltas against images seen](trend.png)",
        "",
        f"## Pooled delta `{arm}` − comparator per point",
        "",
        markdown_table(deltas_table(deltas).reset_index()),
        "",
        "## The points",
        "",
        markdown_table(points_table(points, deltas)),
        "",
        *pretraining_sentences(points, output_dir),
        "",
        "## How it is computed",
        "",
        f"Each point's delta pairs every probe row of `{arm}` with the comparator's on the same pretrain seed, task, N "
        "and episode, averages the pairs over the task x N cells per pretrain seed and episode, and takes the "
        f"{CONFIDENCE:.0%} percentile interval of the hierarchical bootstrap over that (pretrain seeds x episodes) "
        "matrix (seeds, then episodes within each drawn seed: the run reports' intervals). The slope is the weighted "
        "least-squares line of the deltas over log10(images seen), each point weighted by 1 / SE² (SE: its interval's "
        "width / 3.92); when the points lie off the line beyond their errors (reduced chi-square above 1) the slope's "
        "variance is multiplied by that chi-square. A trend *moves towards PGNM* when the slope's interval lies "
        "above 0, *away from PGNM* below 0; otherwise there is no detectable trend. Images seen = training images "
        "per epoch (the per-source caps each run recorded in `runs.csv`) x its pretraining epochs. `none` saturates "
        "and the policy settles as each run's own report decides it from `pretrain_curves.csv`.",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = argparse.ArgumentParser(prog="python -m pgnm_monai.experiments.ladder", description=__doc__.split("\n")[0])
    parser.add_argument("--points", nargs="+", required=True, help="finished protocol run folders, one per point")
    parser.add_argument("--output-dir", default="results/scale", help="where the ladder's report goes")
    parser.add_argument("--arm", default="pgnm-reinforce", help="the PGNM arm")
    parser.add_argument("--comparators", nargs="+", default=list(COMPARATORS), help="the arms it is compared with")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates per point and comparator")
    return parser


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Read the points, write ``ladder_deltas.csv``, ``trend.png`` and ``ladder_report.md``; return the deltas."""
    import matplotlib

    matplotlib.use("Agg")
    args = build_parser().parse_args(argv)
    names = [Path(p).name for p in args.points]
    if len(set(names)) < len(names):
        raise ValueError(f"the points' folder names label them and must differ, got {names}.")
    points = [read_point(folder, [args.arm, *args.comparators]) for folder in args.points]
    deltas, _ = ladder_deltas(points, args.arm, args.comparators, args.n_boot)
    trends = fit_trends(deltas)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # each point's folder relative to the ladder's: the two move together
    relative = deltas.assign(folder=[Path(os.path.relpath(f, out)).as_posix() for f in deltas["folder"]])
    atomic_write_text(out / "ladder_deltas.csv", relative.to_csv(index=False))
    atomic_save_figure(trend_figure(deltas, trends), out / "trend.png", dpi=110)
    command = "python -m pgnm_monai.experiments.ladder " + shlex.join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(out / "ladder_report.md", ladder_markdown([p for p, _ in points], deltas, trends, command, out))
    return deltas


if __name__ == "__main__":
    main()
