"""The scale ladder (``pgnm_monai.experiments.ladder``, ``.trend``): pooled deltas read from synthetic run folders,
the fitted trend and its sentence (which follows the numbers), the points' table, and bad points named."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from pgnm_monai.experiments import answer, ladder
from pgnm_monai.experiments.trend import fit_trend, pooled_delta, trend_sentence

ARMS = ("pgnm-reinforce", "none", "frozen_policy", "trivialaugment")
ROOT = Path(__file__).resolve().parents[1]


def _probe_rows(deltas: dict[str, float], seeds: int = 4, episodes: int = 12, seed: int = 0) -> pd.DataFrame:
    """Probe rows of 2 tasks x 2 N where ``pgnm-reinforce`` − comparator is ``deltas[comparator]`` plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for task in ("taskA", "taskB"):
        for n in (16, 64):
            base = rng.uniform(0.5, 0.7, size=(seeds, episodes))
            for arm in ARMS:
                shift = -deltas.get(arm, 0.0) + rng.normal(0, 0.002, size=(seeds, 1))  # seed effect: hierarchical
                score = base + shift + rng.normal(0, 0.004, size=(seeds, episodes))
                for s in range(seeds):
                    for e in range(episodes):
                        for probe in ("linear", "linear_bn"):
                            rows.append({"arm": arm, "pretrain_seed": s, "task": task, "n": n, "episode": e,
                                         "probe": probe, "macro_f1": score[s, e]})  # fmt: skip
    return pd.DataFrame(rows)


def _point(root, name, per_source, epochs, px, deltas, invocations=(), curves=None, seed=0):
    """A finished run's folder as the ladder reads it: probe rows, runs.csv's config, invocations, curves."""
    folder = root / name
    folder.mkdir()
    _probe_rows(deltas, seed=seed).to_csv(folder / "probe_runs.csv.gz", index=False)
    sources = [{"kind": "medmnist", "prefix": p, "max_items": per_source} for p in ("a", "b", "c")]
    config = {"profile": name, "pretrain_epochs": epochs, "image_size": px, "pretrain_items": None,
              "pretrain_options": {"sources": sources}, "arm": "none"}  # fmt: skip
    pd.DataFrame([{"arm": "none", "macro_f1": 0.5, "config": json.dumps(config)}]).to_csv(folder / "runs.csv")
    lines = [{"started": "", "ended": "", "seconds": s, "commit": "abc", "command": "pgnm benchmark", "device": d,
              "last_stage": "report"} for s, d in invocations]  # fmt: skip
    if lines:
        (folder / "invocations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if curves is not None:
        curves.to_csv(folder / "pretrain_curves.csv", index=False)
    return folder


def test_pooled_delta_recovers_the_shift_and_pairs_every_cell():
    rows = _probe_rows({"none": 0.03, "frozen_policy": -0.01})
    pooled = pooled_delta(rows, "pgnm-reinforce", "none", "linear_bn", n_boot=300)
    assert pooled["cells"] == 4 and pooled["seeds"] == 4 and pooled["episodes"] == 12
    assert pooled["low"] < pooled["delta"] < pooled["high"] and abs(pooled["delta"] - 0.03) < 0.005
    assert pooled["low"] > 0 and 0 < pooled["se"] < 0.01
    assert pooled_delta(rows, "pgnm-reinforce", "frozen_policy", "linear_bn", n_boot=300)["high"] < 0
    with pytest.raises(ValueError, match="cutmix"):
        pooled_delta(rows, "pgnm-reinforce", "cutmix", "linear_bn")


def test_trend_sentence_follows_the_slope():
    seen, se = [30_000, 60_000, 120_000], [0.002] * 3
    up = fit_trend(seen, [-0.01 + 0.02 * math.log10(x / 30_000) for x in seen], se)
    assert up.slope == pytest.approx(0.02) and up.low > 0 and up.scale == 1.0
    text = trend_sentence("pgnm-reinforce", "none", up)
    assert "moves towards PGNM by 0.020 macro-F1 per decade" in text and "3 points, 30,000 to 120,000" in text
    down = fit_trend(seen, [0.01 - 0.03 * math.log10(x / 30_000) for x in seen], se)
    assert "moves away from PGNM by 0.030 macro-F1 per decade" in trend_sentence("pgnm-reinforce", "none", down)
    flat = fit_trend(seen, [0.001, -0.001, 0.0005], se)
    assert "no detectable trend" in trend_sentence("pgnm-reinforce", "none", flat) and flat.low < 0 < flat.high
    # points off the line beyond their errors widen the interval (never narrow it)
    zigzag = fit_trend([*seen, 240_000], [0.0, 0.05, -0.04, 0.06], [0.002] * 4)
    text = trend_sentence("a", "b", zigzag)  # without the widening its slope would be +0.030 +- 0.006: "towards"
    assert zigzag.scale > 1 and "interval is widened x27.5" in text and "no detectable trend" in text
    assert "no trend can be fitted (one point)" in trend_sentence("a", "b", None, "one point")
    with pytest.raises(ValueError, match="two images-seen values"):
        fit_trend([30_000, 30_000], [0.0, 0.1], [0.01, 0.01])


def test_ladder_report_from_run_folders(tmp_path):
    def deltas(seen):  # towards PGNM against none, flat against frozen_policy, away against trivialaugment
        d = math.log10(seen / 30_000)
        return {"none": -0.01 + 0.03 * d, "frozen_policy": 0.0, "trivialaugment": 0.01 - 0.03 * d}

    curves = pd.DataFrame(
        [
            {"arm": "none", "seed": 0, "epoch": e, "val_macro_f1": f, "kl_to_init": np.nan}
            for e, f in ((1, 0.9), (2, 0.95), (3, 0.995))
        ]
        + [{"arm": "pgnm-reinforce", "seed": 0, "epoch": e, "val_macro_f1": 0.5, "kl_to_init": 0.2} for e in (1, 2, 3)]
    )
    cpu = [(3600, "cpu (2 cores)"), (1200, "cpu (2 cores)")]
    folders = [
        _point(tmp_path, "lite", 1250, 8, 32, deltas(30_000), invocations=cpu),
        _point(tmp_path, "p2000x16", 2000, 16, 32, deltas(96_000), curves=curves, seed=1),
        _point(tmp_path, "p4000x24", 4000, 24, 32, deltas(288_000), invocations=[(600, "NVIDIA H100")], seed=2),
        # another image size: drawn, not fitted (were it fitted, the flat comparison would get a slope)
        _point(tmp_path, "px64", 1250, 4, 64, {"none": 0.2, "frozen_policy": 0.2, "trivialaugment": 0.2}, seed=3),
    ]  # fmt: skip
    (folders[1] / "report.md").write_text("# the run's own report\n")
    out = tmp_path / "scale"
    frame = ladder.main(["--points", *map(str, folders), "--output-dir", str(out), "--n-boot", "300"])
    assert {p.name for p in out.iterdir()} == {"ladder_report.md", "ladder_deltas.csv", "trend.png"}
    assert frame.groupby("point")["images_seen"].first().to_dict() == {
        "lite": 30_000, "p2000x16": 96_000, "p4000x24": 288_000, "px64": 15_000
    }  # fmt: skip
    assert set(frame["probe"]) == {"linear_bn"} and frame.loc[frame["point"] == "px64", "in_fit"].eq(False).all()
    report = (out / "ladder_report.md").read_text()
    assert "`pgnm-reinforce` against `none`: the delta moves towards PGNM by 0.030" in report
    assert "`pgnm-reinforce` against `frozen_policy`: no detectable trend" in report
    assert re.search(r"`pgnm-reinforce` against `trivialaugment`: the delta moves away from PGNM by 0\.03\d", report)
    assert "3 points, 30,000 to 288,000 images seen" in report and "not fitted (another image size): `px64`" in report
    table = report[report.index("## The points") :]
    row = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| cpu (2 cores) | 80.0 min |" in row["lite"] and "| NVIDIA H100 | 10.0 min |" in row["p4000x24"]
    assert "| unknown | n/a |" in row["px64"] and row["p2000x16"].endswith(
        "| 32 px | 96,000 | 4 | unknown | n/a | yes | yes |"
    )
    assert "| 1,250 | 8 | 32 px | 30,000 |" in row["lite"] and row["lite"].endswith("| n/a | n/a |")
    # a point with a report is linked to it, relative to the ladder's report; one without is named only
    assert "- [`p2000x16`](../p2000x16/report.md): " in report and "- `lite`: " in report


def test_flat_ladder_says_no_trend(tmp_path):
    flat = {"none": -0.004, "frozen_policy": 0.002, "trivialaugment": -0.003}
    folders = [_point(tmp_path, f"p{k}", k, 8, 32, flat, seed=k) for k in (1000, 2000, 4000)]
    frame = ladder.main(["--points", *map(str, folders), "--output-dir", str(tmp_path / "out"), "--n-boot", "300"])
    report = (tmp_path / "out" / "ladder_report.md").read_text()
    assert (
        report.count(": no detectable trend with the images seen") == 3
        and "moves" not in report.split("## The trend")[1].split("##")[0]
    )
    assert frame["in_fit"].all()


def test_bad_points_are_named(tmp_path):
    good = _point(tmp_path, "good", 1250, 8, 32, {})
    empty = tmp_path / "no_probes"
    empty.mkdir()
    (empty / "runs.csv").write_text((good / "runs.csv").read_text())
    with pytest.raises(FileNotFoundError, match=r"no_probes has no probe_runs\.csv"):
        ladder.main(["--points", str(good), str(empty), "--output-dir", str(tmp_path / "out")])
    unset = tmp_path / "no_settings"
    unset.mkdir()
    (unset / "probe_runs.csv.gz").write_bytes((good / "probe_runs.csv.gz").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"no_settings/runs\.csv does not exist.*is .*no_settings a finished"):
        ladder.main(["--points", str(good), str(unset), "--output-dir", str(tmp_path / "out")])
    config = json.loads(pd.read_csv(good / "runs.csv")["config"][0])
    config["pretrain_options"]["sources"][1].pop("max_items")
    pd.DataFrame([{"config": json.dumps(config)}]).to_csv(unset / "runs.csv")
    with pytest.raises(ValueError, match=r"no_settings/runs\.csv: a pretraining source has no 'max_items'"):
        ladder.read_point(unset, ARMS)
    with pytest.raises(ValueError, match=r"good: no probe rows of arm\(s\) \['cutmix'\]"):
        ladder.main(["--points", str(good), "--comparators", "cutmix", "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written for a ladder that cannot be read


def test_ladder_profiles_keep_the_protocol_and_grow_the_pretraining():
    from pgnm_monai.experiments.profiles import PROFILES

    lite = PROFILES["radimagenet_lite"]
    ladder_points = {name: cfg for name, cfg in PROFILES.items() if name.startswith("scale_")}
    assert len(ladder_points) >= 3 and {cfg["image_size"] for cfg in ladder_points.values()} >= {32, 64}
    seen = set()
    for name, cfg in ladder_points.items():
        per_source = {s["max_items"] for s in cfg["pretrain_options"]["sources"]}
        assert name == f"scale_{per_source.pop()}x{cfg['pretrain_epochs']}_{cfg['image_size']}px" and not per_source
        assert [s["path"] for s in cfg["pretrain_options"]["sources"]] == [
            s["path"] for s in lite["pretrain_options"]["sources"]
        ]
        assert set(cfg["arms"]) == {*ARMS} and len(cfg["pretrain_seeds"]) >= 4
        for key in ("tasks", "probe_shots", "probe_episodes", "network", "grid", "pretrain_overrides"):
            assert cfg[key] == lite[key], (name, key)
        seen.add(3 * cfg["pretrain_options"]["sources"][0]["max_items"] * cfg["pretrain_epochs"])
    assert len(seen) == len(ladder_points) and 30_000 not in seen  # every point its own images seen, none lite's


def test_ladder_notebook_reads_the_ladder_and_its_points(tmp_path, monkeypatch):
    """notebooks/scale_ladder.ipynb on a ladder's output: the trend sentences it computes are the report's, the
    points are read again from their folders, and a point's answer is shown (or its absence said)."""
    up = {k: {"none": -0.01 + 0.03 * math.log10(k / 1000), "frozen_policy": 0.0} for k in (1000, 2000, 4000)}
    folders = [
        _point(tmp_path, f"p{k}", k, 8, 32, up[k], invocations=[(60 * k / 1000, "cpu (2 cores)")], seed=k)
        for k in (1000, 2000, 4000)
    ]  # fmt: skip
    pairs = answer.pairwise_deltas(answer.read_probe_runs(folders[1]), "linear_bn", n_boot=200)
    pairs.to_csv(folders[1] / "answer_deltas.csv", index=False)
    out = tmp_path / "scale"
    ladder.main(["--points", *map(str, folders), "--output-dir", str(out), "--n-boot", "300"])
    assert set(pd.read_csv(out / "ladder_deltas.csv")["folder"]) == {"../p1000", "../p2000", "../p4000"}
    monkeypatch.setenv("PGNM_RESULTS_DIR", str(out))
    notebook = nbformat.read(ROOT / "notebooks" / "scale_ladder.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    report = (out / "ladder_report.md").read_text()
    sentences = [line for line in report.splitlines() if line.startswith("- `pgnm-reinforce` against")]
    assert len(sentences) == 3 and all(s in shown for s in sentences) and "moves towards PGNM" in sentences[0]
    assert f"ladder of 3 points from {out}" in printed and sum("image/png" in o.get("data", {}) for o in outputs) == 1
    assert "4.0 min" in tables and "4,000" in tables  # the points' table, read from p4000's invocations.jsonl
    assert "**Verdict rule:**" in shown and shown.count("Verdict rule") == 1  # p2000's answer only
    assert all(f"No answer_deltas.csv in {out / '..' / name}" in printed for name in ("p1000", "p4000"))
