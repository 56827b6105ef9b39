"""The command line as a user runs it: a quiet main job (one line per stage, then the table; the bundles' logs in
each run folder), ``--verbose``, and help text that gives every option's default."""

from __future__ import annotations

import pytest

from pgnm_monai.cli import build_parser


@pytest.mark.slow
def test_main_job_is_quiet_and_logs_each_stage_to_its_run_folder(pgnm, tmp_path):
    args = ("run", "--output-dir", "out", "--pretrain-epochs", "1", "--finetune-epochs", "1")
    quiet = pgnm(*args, cwd=tmp_path)
    lines = quiet.stdout.splitlines()
    stages = [line for line in lines if line.startswith("[")]
    assert [line.split(":")[0] for line in stages] == [
        f"[{arm}] {stage}" for arm in ("pgnm", "none") for stage in ("pretrain", "fine-tune", "evaluate")
    ]
    assert len(lines) <= 20 and "| arm |" in quiet.stdout
    assert "Not all config files" not in quiet.stdout + quiet.stderr
    for folder, stage in (("pretrain_pgnm", "train"), ("finetune_none", "train"), ("finetune_pgnm", "evaluate")):
        log = (tmp_path / "out" / folder / "logs" / f"{stage}.log").read_text()
        assert "Epoch" in log and "INFO" in log
    verbose = pgnm(*args[:2], "out_verbose", *args[3:], "--arms", "none", "--verbose", cwd=tmp_path)  # 3 stages
    assert "Epoch[1] Metrics" in verbose.stdout and len(verbose.stdout.splitlines()) > 3 * len(lines)
    assert "Not all config files" not in verbose.stdout + verbose.stderr


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
