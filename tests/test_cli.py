"""The command line as a user runs it: ``--verbose`` (the quiet main job: tests/test_packaging.py, from the installed
wheel), and help text that gives every option's default."""

from __future__ import annotations

import pytest
from bundle_settings import QUIET_LINES

from pgnm_monai.cli import build_parser


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
    assert {"run", "finetune", "benchmark", "demo"} <= set(commands)
    for name, command in commands.items():
        text = command.format_help()
        for action in command._actions:
            if action.dest in ("help",) or action.required:
                continue
            assert action.help, (name, action.dest)
            helped = command._get_formatter()._get_help_string(action) or ""
            assert "default" in helped or "None:" in helped, (name, action.dest, helped)
        assert "--verbose" in text or name == "demo"
