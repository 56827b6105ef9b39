"""Shared fixtures: paths to the real data in ../shared/data and small real-image tensors from it."""

from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pgnm_monai.data.utils import shared_data_dir

# The tests use tiny tensors: one intra-op thread is faster for them and keeps the suite's time stable when
# the machine is shared (thread barriers on an oversubscribed CPU made tiny-op tests 10-40x slower). The
# processes the tests start (bundles, torchrun, pgnm) inherit it: two pytest workers fill the two cores already.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# For the same reason joblib counts one CPU: the probes' default process pool (``n_jobs=-1``) would only add its
# workers' start-up; tests/test_probe.py asks for two processes explicitly (the rows do not depend on it).
os.environ.setdefault("LOKY_MAX_CPU_COUNT", "1")


def pytest_collection_modifyitems(config, items):
    """Modules with more slow tests first, each module's tests together and in their order: ``make test``
    (``--dist loadscope --no-loadscope-reorder``) hands each module to one worker, heavy modules before light ones,
    so that the two workers finish together and a module's fixtures are built once."""

    def module(item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow: dict[str, int] = {}
    for item in items:
        slow[module(item)] = slow.get(module(item), 0) + bool(item.get_closest_marker("slow"))
    first = {name: index for index, name in enumerate(dict.fromkeys(map(module, items)))}
    items.sort(key=lambda item: (-slow[module(item)], first[module(item)]))


MEDNIST_CLASSES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")


def mednist_tarball():
    path = shared_data_dir() / "mednist" / "MedNIST.tar.gz"
    if not path.exists():
        pytest.skip(f"MedNIST is not available at {path} (set PGNM_SHARED_DATA to the shared data folder)")
    return path


def read_mednist_subset(per_class: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of each MedNIST class, resized to ``size`` and normalised (paper mean/std)."""
    counts = dict.fromkeys(MEDNIST_CLASSES, 0)
    images, labels = [], []
    with tarfile.open(mednist_tarball(), "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or counts.get(parts[1], per_class) >= per_class:
                continue
            counts[parts[1]] += 1
            image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("L").resize((size, size))
            images.append(np.asarray(image, dtype=np.float32) / 255.0)
            labels.append(MEDNIST_CLASSES.index(parts[1]))
            if all(c >= per_class for c in counts.values()):
                break
    x = (torch.from_numpy(np.stack(images))[:, None] - 0.3162) / 0.3213
    return x, torch.tensor(labels)


@pytest.fixture(scope="session")
def mednist_small(tmp_path_factory) -> tuple[torch.Tensor, torch.Tensor, str]:
    """240 real MedNIST images (40 per class) at 32 px, and the path of a ``.pt`` file holding them."""
    x, y = read_mednist_subset(per_class=40, size=32)
    path = tmp_path_factory.mktemp("mednist") / "mednist_240_32px.pt"
    torch.save({"image": x, "label": y}, path)
    return x, y, str(path)


@pytest.fixture(autouse=True)
def _monai_metadata_tracking_restored():
    """Bundles switch MONAI's global metadata tracking off while they run; no test sees another's setting."""
    from monai.data import set_track_meta

    yield
    set_track_meta(True)


@pytest.fixture
def clinical_csv(tmp_path) -> Path:
    """A clinical labels CSV (path, label, patient_id, modality) over real DICOM/NIfTI files that pydicom and
    nibabel ship: a series folder built from CT_small, multi-frame MR, RGB/YBR ultrasound, NIfTI volumes."""
    import pydicom
    from nibabel.testing import data_path as nib_data
    from pydicom.data.data_manager import DATA_ROOT

    files = Path(DATA_ROOT) / "test_files"
    series = tmp_path / "series_ct"
    series.mkdir()
    base = pydicom.dcmread(files / "CT_small.dcm")
    for k in range(4):
        ds = base.copy()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * 5.0]
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f"s{k}"])
        ds.save_as(series / f"slice{k}.dcm")
    rows = [
        (str(series), "lesion", "P1", ""),
        (str(files / "MR_small.dcm"), "normal", "P2", ""),
        (str(files / "examples_rgb_color.dcm"), "lesion", "P3", ""),
        (str(files / "examples_ybr_color.dcm"), "normal", "P4", ""),
        (str(Path(nib_data) / "anatomical.nii"), "normal", "P5", "MR"),
        (str(Path(nib_data) / "example4d.nii.gz"), "lesion", "P6", "MR"),
        (str(files / "CT_small.dcm"), "normal", "P1", ""),
    ]
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id", "modality"])
        w.writerows(rows)
    return csv_path


def run_pgnm(*args: str, cwd: Path, timeout: int = 300):
    """``python -m pgnm_monai ARGS`` in ``cwd`` as a user runs it; the completed process (asserted to succeed)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pgnm_monai", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture
def pgnm():
    """:func:`run_pgnm`: the ``pgnm`` command line in a subprocess."""
    return run_pgnm
