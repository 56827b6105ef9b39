"""From a trained run to a clinical answer: ``pgnm predict`` on folders, file lists and CSVs; the inference bundle on
a folder (never overwriting an earlier prediction file); the per-class report (equal to scikit-learn's figures) and
its two figures, from ``pgnm finetune`` and from ``pgnm predict`` on a labelled CSV."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_settings import QUIET
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support, roc_curve

from pgnm_monai.clinical_metrics import FIGURES, write_clinical_report
from pgnm_monai.experiments.runner import run_bundle

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def images(folder: Path, n: int, nested: bool = True) -> list[Path]:
    """``n`` random grey PNGs in ``folder`` (every other one in ``folder/sub``), and a text file to skip."""
    from PIL import Image

    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        path = folder / ("sub" if nested and i % 2 else "") / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
        paths.append(path)
    (folder / "notes.txt").write_text("not an image")
    return paths


def assert_same_as_sklearn(rows: list[dict], y: np.ndarray, pred: np.ndarray, names: list[str]) -> None:
    """The per-class rows hold scikit-learn's precision/recall/F1/support and the confusion matrix's
    specificity and NPV, each inside its interval."""
    labels = list(range(len(names)))
    ppv, sens, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    mcm = multilabel_confusion_matrix(y, pred, labels=labels)
    tn, fp, fn = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0]
    with np.errstate(invalid="ignore"):  # 0/0: a figure that is undefined, NaN in the CSV too
        expected = {"sensitivity": sens, "ppv": ppv, "f1": f1, "specificity": tn / (tn + fp), "npv": tn / (tn + fn)}
    assert [r["class"] for r in rows] == names
    for c, r in enumerate(rows):
        assert int(r["support"]) == support[c]
        for f in FIGURES:
            value, low, high = (float(r[k]) for k in (f, f"{f}_ci_low", f"{f}_ci_high"))
            np.testing.assert_allclose(value, expected[f][c], equal_nan=True, err_msg=f"{names[c]} {f}")
            assert np.isnan(value) or low - 1e-12 <= value <= high + 1e-12, (names[c], f, low, value, high)


def assert_figures(folder: Path) -> None:
    for name in ("confusion_matrix.png", "roc.png"):
        assert (folder / name).read_bytes().startswith(PNG) and (folder / name).stat().st_size > 5000, name


# ------------------------------------------------------------------------------------------------ the report


def test_per_class_csv_is_scikit_learns_figures_and_both_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    names = ["glioma", "meningioma", "notumor"]
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    probs[np.arange(60), y] += 0.4  # better than chance
    report = write_clinical_report(y, probs, names, tmp_path, n_bootstrap=100, seed=3)

    rows = read_rows(tmp_path / "per_class_metrics.csv")
    assert_same_as_sklearn(rows, y, probs.argmax(1), names)
    assert {r["role"] for r in rows} == {"one-vs-rest"} and report["positive_class"] is None
    assert rows[0]["interval"] == "95% percentile bootstrap, 100 resamples, seed 3"
    assert_figures(tmp_path)
    points = read_rows(tmp_path / "roc_points.csv")
    for c, name in enumerate(names):
        fpr, tpr, _ = roc_curve(y == c, probs[:, c])
        np.testing.assert_allclose([float(p["fpr"]) for p in points if p["class"] == name], fpr)
        np.testing.assert_allclose([float(p["tpr"]) for p in points if p["class"] == name], tpr)
    again = tmp_path / "again"
    write_clinical_report(y, probs, names, again, n_bootstrap=100, seed=3)
    assert (again / "per_class_metrics.csv").read_text() == (tmp_path / "per_class_metrics.csv").read_text()  # seeded


def test_the_positive_class_of_a_binary_task_is_stated(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    probs = rng.dirichlet(np.ones(2), 40)
    names = ["normal", "tumour"]
    default = write_clinical_report(y, probs, names, tmp_path / "default", n_bootstrap=20)
    assert default["positive_class"] == "tumour"  # index 1
    chosen = write_clinical_report(y, probs, names, tmp_path / "chosen", positive_class="normal", n_bootstrap=20)
    rows = read_rows(tmp_path / "chosen" / "per_class_metrics.csv")
    assert chosen["positive_class"] == "normal" and [r["role"] for r in rows] == ["positive", "negative"]
    assert {p["class"] for p in read_rows(tmp_path / "chosen" / "roc_points.csv")} == {"normal"}
    with pytest.raises(ValueError, match=r"--positive-class 'lesion' is not a class of this model; its classes: "):
        write_clinical_report(y, probs, names, tmp_path / "x", positive_class="lesion")
    with pytest.raises(ValueError, match=r"--positive-class 'a' applies to two-class tasks; this model has 3"):
        write_clinical_report([0, 1, 2], np.eye(3), ["a", "b", "c"], tmp_path / "x", positive_class="a")


# ----------------------------------------------------------------------------------- the inputs a user names


def test_input_files_take_folders_and_csvs(tmp_path, monkeypatch):
    """A folder is searched recursively (a text file and hidden files skipped); a CSV gives paths (relative to
    itself) and labels by class name; a single path need not be a list."""
    from pgnm_monai.components import inference_items

    paths = images(tmp_path / "new", 4)
    (tmp_path / "new" / ".hidden.png").write_bytes(paths[0].read_bytes())
    items = inference_items(os.fspath(tmp_path / "new"))
    assert sorted(it["image"] for it in items) == sorted(os.fspath(p) for p in paths)
    assert {it["label"] for it in items} == {-1}

    (tmp_path / "new" / "labels.csv").write_text("path,label\nim0.png,CT\nsub/im1.png,MR\nim2.png,\n")
    items = inference_items([os.fspath(tmp_path / "new" / "labels.csv")], class_names=["CT", "MR"])
    assert [(Path(it["image"]).name, it["label"]) for it in items] == [("im0.png", 0), ("im1.png", 1), ("im2.png", -1)]
    assert [it["label"] for it in inference_items(os.fspath(tmp_path / "new" / "labels.csv"))] == [-1, -1, -1]

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("path,label\nnew/im0.png,PET\n")
    with pytest.raises(ValueError, match=r"input CSV bad\.csv: the label 'PET' of 'new/im0\.png' is not a class"):
        inference_items("bad.csv", class_names=["CT", "MR"])
    (tmp_path / "nopath.csv").write_text("file,label\nnew/im0.png,CT\n")
    with pytest.raises(ValueError, match=r"input CSV nopath\.csv has no 'path' column"):
        inference_items("nopath.csv")
    (tmp_path / "gone.csv").write_text("path\nnew/gone.png\n")
    with pytest.raises(FileNotFoundError, match=r"input CSV gone\.csv, line 2: file 'new/gone\.png' does not exist"):
        inference_items("gone.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"names the folder 'empty', which holds no image or volume file"):
        inference_items(["empty"])
    with pytest.raises(FileNotFoundError, match=r"config id 'input_files' lists 'nothing', which does not exist"):
        inference_items("nothing")


def test_unused_name_numbers_files_written_together():
    from pgnm_monai.handlers.prediction_writer import unused_name

    with pytest.MonkeyPatch.context() as m:
        existing = {"/d/p.csv", "/d/p_1.json"}
        m.setattr(os.path, "exists", lambda path: path in existing)
        assert unused_name("/d", ["q.csv", "q.json"]) == ["q.csv", "q.json"]
        assert unused_name("/d", ["p.csv", "p.json"]) == ["p_2.csv", "p_2.json"]


# -------------------------------------------------------------------------------- a tiny fine-tuned run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """``pgnm finetune`` (1 epoch, the embedded data, 4 classes) from a tiny pretrained ``small`` network."""
    from pgnm_monai.cli import main

    root = tmp_path_factory.mktemp("predict")
    run_bundle("pgnm_pretrain", "train", bundle_root=os.fspath(root / "pre"), arm="none", epochs=1, **QUIET)
    assert main([
        "finetune", "--pretrained", os.fspath(root / "pre" / "models" / "model.pt"), "--network", "small",
        "--epochs", "1", "--image-size", "32", "--output-dir", os.fspath(root / "ft"),
    ]) == 0  # fmt: skip
    return root / "ft"


@pytest.mark.slow
def test_pgnm_finetune_writes_the_per_class_report_and_figures(run):
    from pgnm_monai.clinical_metrics import read_predictions

    y, probs, names = read_predictions(run / "eval" / "predictions.csv")
    rows = read_rows(run / "eval" / "per_class_metrics.csv")
    assert_same_as_sklearn(rows, y, probs.argmax(1), names)
    assert_figures(run / "eval")
    assert read_rows(run / "eval" / "roc_points.csv")


@pytest.mark.slow
def test_pgnm_predict_on_a_folder_a_file_list_and_a_csv(run, tmp_path, capsys):
    from pgnm_monai.cli import main
    from pgnm_monai.data import load_class_map

    names = load_class_map(run / "models" / "class_map.json")
    paths = images(tmp_path / "new", 6)
    assert main(["predict", os.fspath(run), os.fspath(tmp_path / "new")]) == 0  # a folder
    first = sorted((run / "predictions").glob("*.csv"))
    assert len(first) == 1
    rows = read_rows(first[0])
    assert list(rows[0]) == ["path", "prediction", *(f"prob_{c}" for c in names)]
    assert sorted(r["path"] for r in rows) == sorted(os.fspath(p) for p in paths)
    for r in rows:
        probs = [float(r[f"prob_{c}"]) for c in names]
        assert r["prediction"] == names[int(np.argmax(probs))] and abs(sum(probs) - 1) < 1e-5

    out = tmp_path / "two.csv"
    assert main(["predict", os.fspath(run), os.fspath(paths[0]), os.fspath(paths[3]), "--output", os.fspath(out)]) == 0
    assert [r["path"] for r in read_rows(out)] == [os.fspath(paths[0]), os.fspath(paths[3])]  # a file list, in order
    with pytest.raises(FileExistsError, match=r"--output '\S+two\.csv': '\S+two\.csv' exists; give another file"):
        main(["predict", os.fspath(run), os.fspath(paths[0]), "--output", os.fspath(out)])

    labels = [names[i % len(names)] for i in range(len(paths))]
    (tmp_path / "new" / "labels.csv").write_text(
        "path,label\n" + "".join(f"{p.relative_to(tmp_path / 'new')},{c}\n" for p, c in zip(paths, labels, strict=True))
    )
    capsys.readouterr()
    assert main(["predict", os.fspath(run), os.fspath(tmp_path / "new" / "labels.csv")]) == 0  # a labelled CSV
    printed = capsys.readouterr().out
    assert "| class | n | sensitivity |" in printed and "each class against the rest" in printed
    second = sorted((run / "predictions").glob("*.csv"))
    assert len(second) == 2 and first[0] in second  # the earlier file is kept
    written = next(p for p in second if p != first[0])
    rows = read_rows(written)
    assert [r["label"] for r in rows] == labels
    evaluation = written.with_name(written.stem + "_eval")
    y = np.array([names.index(r["label"]) for r in rows])
    pred = np.array([names.index(r["prediction"]) for r in rows])
    assert_same_as_sklearn(read_rows(evaluation / "per_class_metrics.csv"), y, pred, names)
    assert_figures(evaluation)
    assert (evaluation / "metrics.json").is_file() and (evaluation / "roc_points.csv").is_file()
    assert not list((run / "predictions").glob(".pgnm_predict-*"))  # the bundle's scratch folder is gone


@pytest.mark.slow
def test_the_inference_bundle_reads_the_run_takes_a_folder_and_keeps_earlier_predictions(run, tmp_path):
    """``python -m monai.bundle run --config_file configs/inference.json --bundle_root RUN --input_files newimgs``:
    the network and preprocessing come from the run's ``run_settings.json`` (no override), a folder is an input,
    and a second inference writes ``inference_predictions_1.csv`` beside the first."""
    paths = images(tmp_path / "newimgs", 3, nested=False)
    run_bundle("pgnm_pretrain", "inference", bundle_root=os.fspath(run), input_files=os.fspath(tmp_path / "newimgs"))
    first = run / "eval" / "inference_predictions.csv"
    before = first.read_text()
    assert sorted(r["image_path"] for r in read_rows(first)) == sorted(os.fspath(p) for p in paths)

    configs = ROOT / "bundles" / "pgnm_pretrain" / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs / "inference.json", "--meta_file",
           configs / "metadata.json", "--logging_file", configs / "logging.conf", "--bundle_root", run,
           "--input_files", "newimgs"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(list(map(str, cmd)), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert first.read_text() == before
    assert len(read_rows(run / "eval" / "inference_predictions_1.csv")) == 3
