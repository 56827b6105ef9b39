"""The protocol command: statistics, task parsing, the micro profile end to end, and the analysis notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient

from pgnm_monai.cli import main as cli_main
from pgnm_monai.experiments.report import delta_table, per_modality_table, summary_table
from pgnm_monai.experiments.run_records import read_invocations
from pgnm_monai.experiments.statistics import mean_ci
from pgnm_monai.experiments.tasks import parse_task

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "runs_fixture.csv"


def test_mean_ci_is_the_t_interval():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([0.5])[0] == 0.5
    assert mean_ci([float("nan"), 1.0, 3.0])[2] == 2  # NaN runs are left out


def test_delta_table_pairs_by_seed_and_counts_wins():
    rows = []
    for ps in (0, 1):
        for fs in (0, 1):
            rows.append(
                {"arm": "none", "task": "t", "n": 16, "pretrain_seed": ps, "finetune_seed": fs, "macro_f1": 0.5}
            )
            rows.append(
                {
                    "arm": "pgnm-reinforce",
                    "task": "t",
                    "n": 16,
                    "pretrain_seed": ps,
                    "finetune_seed": fs,
                    "macro_f1": 0.6 + 0.01 * fs,
                }
            )
            rows.append(
                {
                    "arm": "gaussian",
                    "task": "t",
                    "n": 16,
                    "pretrain_seed": ps,
                    "finetune_seed": fs,
                    "macro_f1": 0.5 + (0.1 if fs else -0.1),
                }
            )
    deltas, tally = delta_table(pd.DataFrame(rows))
    assert tally == {"pgnm-reinforce": (1, 0, 0), "gaussian": (0, 1, 0)}
    assert deltas.set_index("arm").loc["pgnm-reinforce", "delta"].startswith("0.105 ±")
    assert (deltas["pairs"] == 4).all()


def test_parse_task():
    task = parse_task("brain=image_folder:/data/brain?drop_cross_split_duplicates=true&modality=MR")
    assert (task.name, task.kind, task.dataset_dir) == ("brain", "image_folder", "/data/brain")
    assert task.options == {"drop_cross_split_duplicates": True, "modality": "MR"}
    assert parse_task("embedded").kind is None
    with pytest.raises(ValueError, match="name=kind:path"):
        parse_task("breast=/data/breast.npz")


def test_tables_from_the_fixture():
    runs = pd.read_csv(FIXTURE)
    table = summary_table(runs)
    assert list(table.columns) == ["none", "pgnm-reinforce"]
    assert table.shape == (4, 2)
    assert table.loc[("taskA", 16), "none"] == "0.507 ± 0.044"
    assert table.loc[("taskB", 64), "pgnm-reinforce"] == "0.631 ± 0.035"
    assert list(per_modality_table(runs).columns) == ["US", "X-ray"]


def test_report_only_rewrites_a_run_report_from_its_files(tmp_path):
    """``pgnm benchmark --report-only``: the report of a folder whose models are gone, from its committed files; the
    header's wall time summed over every recorded invocation; the settings as a table; ``f1_vs_n`` with several N
    only, as the second measure."""
    from pgnm_monai.experiments.report import write_report
    from pgnm_monai.experiments.run_records import summed_wall_seconds

    out = tmp_path / "run"
    out.mkdir()
    runs = pd.read_csv(FIXTURE)  # none and pgnm-reinforce, taskA and taskB, N 16 and 64
    config = {"profile": "quick", "arms": ["none", "pgnm-reinforce", "frozen_policy"], "shots": [16, 64]}
    runs["config"] = [
        json.dumps({**config, "task": {"name": t, "kind": "medmnist", "dataset_dir": f"{t}.npz"}, "arm": a})
        for t, a in zip(runs["task"], runs["arm"], strict=True)
    ]
    runs.to_csv(out / "runs.csv", index=False)
    shift = {"none": 0.0, "pgnm-reinforce": 0.05, "frozen_policy": 0.0}
    probes = [
        {"arm": arm, "pretrain_seed": s, "task": task, "n": 16, "episode": e, "probe": probe,
         "macro_f1": 0.5 + shift[arm] + 0.01 * math.sin(7 * s + 3 * e + len(arm))}
        for task in ("taskA", "taskB") for arm in shift for probe in ("linear", "linear_bn") for s in range(2)
        for e in range(6)
    ]  # fmt: skip
    pd.DataFrame(probes).to_csv(out / "probe_runs.csv.gz", index=False)
    curves = [
        {"arm": arm, "seed": s, "epoch": e, "train_loss": 1 / e, "weight_norm": 10.0, "val_macro_f1": 0.5 + 0.1 * e,
         "kl_to_init": 0.1 * e if arm != "none" else None}
        for arm in shift for s in range(2) for e in range(1, 4)
    ]  # fmt: skip
    pd.DataFrame(curves).to_csv(out / "pretrain_curves.csv", index=False)
    kept = (out / "pretrain_curves.csv").read_bytes()
    earlier = [
        {"started": "2026-12-02T03:18:46+00:00", "ended": "2026-12-02T04:08:46+00:00", "seconds": 3000.0,
         "commit": "abc1234", "command": "pgnm benchmark", "device": "AMD EPYC (2 cores)", "last_stage": "fine-tune"},
        {"started": "2026-12-02T04:10:00+00:00", "ended": "2026-12-02T04:30:00+00:00", "seconds": 1200.0,
         "commit": "def5678", "command": "pgnm benchmark", "device": "NVIDIA H100", "last_stage": "report"},
    ]  # fmt: skip
    (out / "invocations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in earlier))
    assert cli_main(["benchmark", "--report-only", "--output-dir", str(out)]) == 0
    report = (out / "report.md").read_text()
    total = summed_wall_seconds(out)
    assert 4200 < total < 4260 and len(read_invocations(out)) == 3  # this invocation is recorded too
    # this invocation counts up to the report's writing: 4200 s and the few seconds before it
    assert "- wall time: **70.0 min**, summed over the 3 invocations that made this folder" in report
    assert "on AMD EPYC (2 cores); NVIDIA H100" in report and "commits: `abc1234`, `def5678`" in report
    assert "profile `quick`" in report and "| setting | value |" in report
    assert '| arms | `["none", "pgnm-reinforce", "frozen_policy"]` |' in report
    assert '| tasks | `["taskA", "taskB"]` |' in report
    assert "## The answer" in report and "Holm-adjusted over all 4 cells of this answer" in report
    assert "(answer_forest.png)" in report and "![trained masks" not in report
    assert {"delta_p", "delta_p_holm", "result_interval"} <= set(pd.read_csv(out / "answer_deltas.csv").columns)
    assert "the second measure; the answer above is from the probes" in report and "## What pretraining did" in report
    for figure in ("answer_forest.png", "f1_vs_n.png", "policy_curves.png", "pretrain_curves.png"):
        assert (out / figure).stat().st_size > 1000, figure
    assert (out / "pretrain_curves.csv").read_bytes() == kept  # the run's record, left as it is
    # one N: no curve against N (an earlier figure is removed), and the report says why
    write_report(runs[runs["n"] == 16], out, profile="quick")
    assert not (out / "f1_vs_n.png").exists()
    assert "The fine-tunes have one N (16): no curve against N is drawn." in (out / "report.md").read_text()
    with pytest.raises(FileNotFoundError, match="has neither runs.csv nor probe_runs.csv"):
        cli_main(["benchmark", "--report-only", "--output-dir", str(tmp_path / "empty")])


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    """The folder of ``pgnm benchmark --profile micro`` (one run for the tests of this module)."""
    out = tmp_path_factory.mktemp("benchmark") / "micro"
    assert cli_main(["benchmark", "--profile", "micro", "--output-dir", str(out)]) == 0
    return out


@pytest.mark.slow
def test_benchmark_command_micro_profile_end_to_end(micro_run):
    out = micro_run
    runs = pd.read_csv(out / "runs.csv")
    expected = {"arm", "pretrain_seed", "task", "n", "finetune_seed", "macro_f1", "balanced_accuracy", "auroc"}
    assert expected | {"finetune_seconds", "pretrain_seconds", "commit", "config"} <= set(runs.columns)
    assert any(c.startswith("macro_f1[") for c in runs.columns)  # per-modality values
    assert sorted(runs["arm"]) == ["frozen_policy", "none", "pgnm-reinforce"] and set(runs["n"]) == {16}
    assert any((out / "cache").iterdir())  # image files: preprocessed once, on disk, for every fine-tune
    report = (out / "report.md").read_text()
    for section in ("## Macro-F1 after fine-tuning", "## Macro-F1: arm − baseline", "## Win / tie / loss", "command:"):
        assert section in report
    assert not (out / "f1_vs_n.png").exists() and "The fine-tunes have one N (16): no curve" in report
    assert read_invocations(out)["last_stage"].tolist() == ["report"]  # recorded after every stage
    # the probe protocol and the pretraining evidence, through the same command
    probe = pd.read_csv(out / "probe_runs.csv")
    assert set(probe["arm"]) == {"none", "pgnm-reinforce", "frozen_policy"}
    assert set(probe["probe"]) == {"linear", "centroid", "linear_bn", "centroid_bn"}
    assert probe.groupby(["arm", "probe"]).size().eq(20).all()  # the micro profile's 20 episodes
    for section in ("## Frozen-feature probes", "## Does learning matter?", "## What pretraining did", "masks.png"):
        assert section in report, section
    assert "probe `linear_bn` (mean ± half-width" in report and "`linear_bn` is the primary measure" in report
    assert {"kl_to_init", "train_loss", "val_macro_f1"} <= set(pd.read_csv(out / "pretrain_curves.csv").columns)
    for figure in ("policy_curves.png", "pretrain_curves.png", "masks.png"):
        assert (out / figure).stat().st_size > 1000, figure
    # resumable: a second call redoes nothing
    stamp = (out / "runs.csv").stat().st_mtime_ns
    assert cli_main(["benchmark", "--profile", "micro", "--output-dir", str(out)]) == 0
    assert (out / "runs.csv").stat().st_mtime_ns == stamp and len(pd.read_csv(out / "runs.csv")) == 3
    assert len(read_invocations(out)) == 2 and "summed over the 2 invocations" in (out / "report.md").read_text()
    # deterministic for a fixed seed: a fresh run of the probe on the same models gives the same rows
    shutil.rmtree(out / "probe")  # the per-model probe rows: recomputed
    (out / "probe_runs.csv").unlink()
    assert cli_main(["benchmark", "--profile", "micro", "--output-dir", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "probe_runs.csv"), probe)


@pytest.mark.slow
def test_benchmark_command_micro3d_profile_volumes_end_to_end(tmp_path, monkeypatch):
    """The 3D path of the protocol: whole AdrenalMNIST3D volumes, 3D pretrain, 3D probes and fine-tunes."""
    from pgnm_monai.data.utils import shared_data_dir

    if not (shared_data_dir() / "medmnist" / "adrenalmnist3d.npz").exists():
        pytest.skip("AdrenalMNIST3D is not in the shared data folder (set PGNM_SHARED_DATA)")
    out = tmp_path / "micro3d"
    assert cli_main(["benchmark", "--profile", "micro3d", "--output-dir", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["arm"]) == ["frozen_policy", "none", "pgnm-reinforce"]
    assert set(runs["n_test"]) == {298}  # one item per test volume
    assert not (out / "cache").exists()  # MedMNIST arrays: nothing to decode, no on-disk cache
    from pgnm_monai.data import datasets

    assert datasets._shared and not os.path.exists(datasets.MEMORY)  # preprocessed once, in this process's memory
    probe = pd.read_csv(out / "probe_runs.csv")
    assert probe.groupby(["arm", "probe"]).size().eq(20).all() and set(probe["n_test"]) == {298}
    policy = torch.load(out / "pretrain" / "pgnm-reinforce_seed0" / "models" / "policy.pt", weights_only=True)
    assert policy["base_alpha"].shape == (1, 4**3)
    assert (out / "masks.png").stat().st_size > 1000  # middle slices of the volumes and of their 3D masks
    # the notebook on the 3D run: it draws the trained 3D policies' mask slices itself
    monkeypatch.setenv("PGNM_RESULTS_DIR", str(out))
    notebook = nbformat.read(ROOT / "notebooks" / "per_modality_results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert "mask figure the protocol saved" not in "".join(o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_the_fixture(micro_run, monkeypatch):
    """The notebook on a micro run (arms none, pgnm-reinforce and frozen_policy: the other mask rows are absent)."""
    results = micro_run
    monkeypatch.setenv("PGNM_RESULTS_DIR", str(results))
    monkeypatch.setenv("PGNM_FIXTURE", "1")
    notebook = nbformat.read(ROOT / "notebooks" / "per_modality_results.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # f1 vs N, policy-learning curves, collapse diagnosis, trained masks
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
    printed = "".join(o.get("text", "") for o in outputs)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "This notebook shows FIXTURE data" in printed and "**This notebook shows FIXTURE data" in shown
    assert os.fspath(results) in printed


@pytest.mark.slow
def test_radimagenet_micro_profile_end_to_end(tmp_path):
    """radimagenet_lite at micro size: its union of sources (one label map, OrganAMNIST never flipped), every arm
    of the profile through the bundles, probes with and without re-estimated BN statistics, fine-tunes, report."""
    from pgnm_monai.data.utils import shared_data_dir
    from pgnm_monai.experiments.profiles import PROFILES

    needed = [shared_data_dir() / "medmnist" / f"{n}.npz" for n in ("organamnist", "bloodmnist", "breastmnist")]
    if not all(p.exists() for p in needed):
        pytest.skip("OrganAMNIST, BloodMNIST or BreastMNIST is not in the shared data folder (set PGNM_SHARED_DATA)")
    out = tmp_path / "rin"
    assert cli_main(["benchmark", "--profile", "radimagenet_micro", "--output-dir", str(out)]) == 0
    arms = PROFILES["radimagenet_lite"]["arms"]
    assert PROFILES["radimagenet_micro"]["arms"] == arms
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["arm"]) == sorted(arms) and set(runs["task"]) == {"breastmnist"}
    names = json.loads((out / "pretrain" / "none_seed0" / "models" / "class_map.json").read_text())["class_names"]
    assert len(names) == 4 + 11 + 8 and names[0] == "embedded/CT" and names[4].startswith("organ/")
    assert names[-1].startswith("blood/")
    probe = pd.read_csv(out / "probe_runs.csv")
    assert set(probe["probe"]) == {"linear", "centroid", "linear_bn", "centroid_bn"}
    assert probe.groupby(["arm", "probe"]).size().eq(20).all() and set(probe["arm"]) == set(arms)
    for arm in ("trivialaugment", "cutmix"):  # the practitioner's arms trained through the bundle
        state = torch.load(out / "pretrain" / f"{arm}_seed0" / "models" / "model.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    report = (out / "report.md").read_text()
    assert "## The answer" in report and "`linear_bn` is the primary measure" in report
    assert set(pd.read_csv(out / "answer_deltas.csv")["comparator"]) == set(arms) - {"pgnm-reinforce", "pgnm-paper"}
    # --compare-with another run's folder (here: itself, every stage cached): its verdicts beside this run's
    command = ["benchmark", "--profile", "radimagenet_micro", "--output-dir", str(out)]
    with pytest.raises(FileNotFoundError, match="has no probe_runs.csv"):
        cli_main([*command, "--compare-with", str(tmp_path)])
    assert cli_main([*command, "--compare-with", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert f"## Against `{out}`" in report and "10 of 10 verdicts are the same." in report
