"""Packaging: the wheel ships the bundles as ``pgnm_monai.bundles`` and the installed copy runs end to end.

The wheel is built offline from a copy of the checkout, unpacked into a temporary "site" folder (an unpacked
pure-Python wheel is an installed copy) and used from subprocesses that cannot see the checkout:

- ``python -S``: ``site`` is not imported, so no ``.pth`` file runs -- in particular not the editable install's
  ``__editable__.pgnm_monai-<version>.pth``, whose meta-path finder maps ``pgnm_monai`` to the checkout;
- ``PYTHONPATH=<site>:<venv site-packages>``: the installed copy first, the dependencies from the venv;
- ``PYTHONSAFEPATH=1`` and a working directory outside the checkout: no implicit ``''``/cwd entry on sys.path;
- ``PGNM_BUNDLES_DIR`` unset (it would override the packaged bundles), ``PYTHONDONTWRITEBYTECODE=1`` so that
  the site folder can be checked to be left untouched by a run.

Each subprocess reports where ``pgnm_monai`` and its bundles came from, so a leak of the checkout fails loudly.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from bundle_settings import QUIET_LINES

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("pgnm_pretrain", "pgnm_finetune")
BUNDLE_FILES = (
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/metadata.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
)
# fine-tune files that are byte copies of the pretrain bundle's (experiments.bundle_sync)
SHARED_FILES = ("configs/inference.json", "configs/multi_gpu_train.json", "configs/logging.conf")

# top-level entries of the checkout that are not sources (the venv, run outputs, caches, VCS)
_TOP_LEVEL_SKIP = {".git", ".venv", ".ci", "build", "dist", "runs", "results", "logs", "models", "notebooks", "tests"}


def _copy_sources(dst: Path) -> Path:
    """Copy the checkout's sources to ``dst`` (symlinks kept as symlinks) and return it.

    pip builds a local directory in place: setuptools would write ``build/`` and ``pgnm_monai.egg-info/`` into
    the checkout, which other people are editing. Building from a copy leaves the checkout untouched; the
    bundles' relative symlinks (``../../pgnm_pretrain/...``) still resolve inside the copy.
    """

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc")) or n.endswith("_cache")}
        if Path(folder) == REPO:
            skip |= _TOP_LEVEL_SKIP & set(names)
        return skip

    shutil.copytree(REPO, dst, symlinks=True, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from (a copy of) the checkout, offline.

    ``--no-build-isolation``: pip would otherwise create an isolated build env and download ``setuptools>=69``
    (build-system.requires) from the index, which fails offline; with it, the venv's setuptools builds.
    ``--no-index`` makes sure pip never tries the network (it needs nothing from it with ``--no-deps``).
    """
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(tmp / "src")
    out = tmp / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        str(out),
        str(src),
    ]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    wheels = sorted(out.glob("pgnm_monai-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, got {os.listdir(out)}"
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked into a fresh "site" folder: an installed copy of the package."""
    site_dir = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site_dir)
    return site_dir


def _venv_site_packages() -> list[str]:
    """The venv's site-packages folders (dependencies), which ``python -S`` does not put on sys.path."""
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(p for p in paths if os.path.isdir(p)))


def _run_installed(site_dir: Path, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``python -S <args>`` seeing the installed copy in ``site_dir`` and the venv's dependencies only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "PGNM_BUNDLES_DIR"}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site_dir), *_venv_site_packages()]),
        PYTHONSAFEPATH="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
    )
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_wheel_ships_bundles(wheel):
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        names = set(infos)

        missing = [f"pgnm_monai/bundles/{b}/{f}" for b in BUNDLES for f in BUNDLE_FILES]
        missing = [n for n in ["pgnm_monai/bundles/__init__.py", *missing] if n not in names]
        assert not missing, (
            f"{wheel.name} lacks {missing}; bundles-related entries: {sorted(n for n in names if 'bundles' in n)}"
        )
        assert not any(n.startswith("bundles/") for n in names), "bundles/ shipped as a top-level package"

        for b in BUNDLES:
            for f in BUNDLE_FILES:
                name = f"pgnm_monai/bundles/{b}/{f}"
                mode = infos[name].external_attr >> 16
                assert not stat.S_ISLNK(mode), f"{name} is stored as a symlink"
                data = zf.read(name)
                assert data, f"{name} is empty"
                assert data == (REPO / "bundles" / b / f).read_bytes(), f"{name} differs from the checkout's"
        for f in SHARED_FILES:  # the fine-tune bundle's copies of the pretrain bundle's files
            ft, pre = (zf.read(f"pgnm_monai/bundles/{b}/{f}") for b in ("pgnm_finetune", "pgnm_pretrain"))
            assert ft == pre, f"pgnm_finetune/{f} differs from pgnm_pretrain/{f}"

        # every module of the checkout is in the wheel (guards an explicit `packages` list against drift)
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / "pgnm_monai").rglob("*.py")}
        assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"

        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        assert "pgnm = pgnm_monai.cli:main" in entry_points


_PROBE = r"""
import json, sys
from importlib import resources
import pgnm_monai
from pgnm_monai.experiments import runner
root = runner.bundles_dir()
print(json.dumps({
    "package": pgnm_monai.__file__,
    "resources": str(resources.files("pgnm_monai.bundles")),
    "bundles_dir": str(root),
    "train_json": (root / "pgnm_pretrain" / "configs" / "train.json").is_file(),
    "stage_files": [str(p) for key in runner.STAGES for p in runner.stage_configs(*key)],
    "modules": {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.startswith("pgnm_monai")},
    "editable_finder": any("__editable__" in n for n in sys.modules),
    "sys_path": sys.path,
}))
"""


def test_installed_copy_finds_packaged_bundles(installed, tmp_path):
    proc = _run_installed(installed, ["-c", _PROBE], cwd=tmp_path / "elsewhere", timeout=120)
    assert proc.returncode == 0, f"probe failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])

    site_dir = installed.resolve()
    assert not info["editable_finder"], "the editable install's finder was loaded"
    assert str(REPO) not in info["sys_path"] and "" not in info["sys_path"], info["sys_path"]
    assert Path(info["package"]).resolve().is_relative_to(site_dir), f"pgnm_monai imported from {info['package']}"
    outside = {n: f for n, f in info["modules"].items() if f and not Path(f).resolve().is_relative_to(site_dir)}
    assert not outside, f"pgnm_monai modules imported from outside the installed copy: {outside}"

    assert Path(info["resources"]).resolve() == site_dir / "pgnm_monai" / "bundles"
    assert Path(info["bundles_dir"]).resolve() == site_dir / "pgnm_monai" / "bundles"
    assert info["train_json"]
    for f in info["stage_files"]:
        assert Path(f).resolve().is_relative_to(site_dir) and Path(f).is_file(), f


@pytest.mark.slow
def test_installed_cli_runs_end_to_end(installed, tmp_path):
    """``pgnm run`` from the installed copy, in another folder: it finds its bundles, writes nothing into the package,
    and is the quiet main job (``--verbose``: tests/test_cli.py)."""
    out = tmp_path / "out"
    before = _snapshot(installed)
    args = [
        "-m",
        "pgnm_monai",
        "run",
        "--output-dir",
        str(out),
        "--network",
        "small",
        "--image-size",
        "32",
        "--pretrain-epochs",
        "1",
        "--finetune-epochs",
        "1",
    ]
    proc = _run_installed(installed, args, cwd=tmp_path / "elsewhere", timeout=300)
    assert proc.returncode == 0, f"pgnm run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"

    assert (out / "comparison.csv").is_file(), sorted(os.listdir(out))
    with open(out / "comparison.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["arm"] for r in rows) == ["none", "pgnm"], rows
    for r in rows:
        assert int(r["n_test"]) == 9 and 0.0 <= float(r["macro_f1"]) <= 1.0, r  # the embedded test split
    for arm in ("pgnm", "none"):
        assert (out / f"finetune_{arm}" / "eval" / "metrics.json").is_file()
    # the run read its bundles from the installed copy and wrote nothing into it
    log = (out / "pretrain_pgnm" / "logs" / "train.log").read_text()  # the quiet main job logs each stage there
    assert str(installed / "pgnm_monai" / "bundles" / "pgnm_pretrain" / "configs") in log
    assert _snapshot(installed) == before, "the run wrote into the installed package"
    # the main job is quiet: one line per stage, then the table; the bundles' logs in each run folder
    lines = proc.stdout.splitlines()
    stages = [line.split(":")[0] for line in lines if line.startswith("[")]
    assert stages == [f"[{arm}] {stage}" for arm in ("pgnm", "none") for stage in ("pretrain", "fine-tune", "evaluate")]
    assert len(lines) <= QUIET_LINES and "| arm |" in proc.stdout
    assert "Not all config files" not in proc.stdout + proc.stderr
    for folder, stage in (("pretrain_pgnm", "train"), ("finetune_none", "train"), ("finetune_pgnm", "evaluate")):
        log = (out / folder / "logs" / f"{stage}.log").read_text()
        assert "Epoch" in log and "INFO" in log
