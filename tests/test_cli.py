"""The command line as a user runs it: ``--verbose`` (the quiet main job: tests/test_packaging.py, from the installed
wheel), help text that gives every option's default, ``--version``, and a ``--help`` that imports neither torch nor
MONAI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from bundle_settings import QUIET_LINES

import pgnm_monai
from pgnm_monai.cli import build_parser, main


@pytest.mark.slow
def test_verbose_streams_the_bundles_logs(pgnm, tmp_path):
    """``--verbose``: the bundles' log lines on the console (without it the main job prints a line per stage and
    the table, and the logs go to each run folder: tests/test_packaging.py::test_installed_cli_runs_end_to_end)."""
    args = ("run", "--output-dir", "out", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--arms", "none")
    verbose = pgnm(*args, "--verbose", cwd=tmp_path)  # one arm: 3 stages
    logged = [line for line in verbose.stdout.splitlines() if " INFO " in line]
    assert "Epoch[1] Metrics" in verbose.stdout and len(logged) > QUIET_LINES  # more than the quiet job prints
    assert "Not all config files" not in verbose.stdout + verbose.stderr
    assert not (tmp_path / "out" / "pretrain_none" / "logs" / "train.log").exists()  # streamed, not filed


def test_every_option_states_its_default():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"run", "finetune", "predict", "benchmark", "demo"} <= set(commands)
    for name, command in commands.items():
        text = command.format_help()
        for action in command._actions:
            if action.dest in ("help",) or action.required:
                continue
            assert action.help, (name, action.dest)
            helped = command._get_formatter()._get_help_string(action) or ""
            assert "default" in helped or "None:" in helped, (name, action.dest, helped)
        assert "--verbose" in text or name == "demo"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"pgnm {pgnm_monai.__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["predict", "--help"]])
def test_help_and_version_import_neither_torch_nor_monai(argv):
    """Only the command that runs builds its options (the vocabularies import torch): ``pgnm --help`` is instant."""
    code = (
        "import sys\nfrom pgnm_monai.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'monai', 'sklearn') if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "heavy: []", proc.stderr[-2000:]
    assert "usage: pgnm" in proc.stdout or pgnm_monai.__version__ in proc.stdout
