"""The record of every invocation that made a run (``pgnm_monai.experiments.run_records``): one line per invocation,
rewritten after every completed stage, summed into the report's wall time."""

from __future__ import annotations

import json

import pytest

from pgnm_monai.experiments import run_records
from pgnm_monai.experiments.run_records import FIELDS, Invocation, read_invocations, summed_wall_seconds


@pytest.fixture
def clock(monkeypatch):
    """The monotonic clock the records read, set by the test."""
    now = [100.0]
    monkeypatch.setattr(run_records.time, "monotonic", lambda: now[0])
    return now


def test_each_invocation_rewrites_its_own_line_and_a_killed_one_counts_to_its_last_stage(tmp_path, clock):
    earlier = {
        "started": "2026-12-02T03:18:46+00:00",
        "ended": "2026-12-02T04:39:35+00:00",
        "seconds": 4849.0,
        "commit": "b0c8f62",
        "command": "pgnm benchmark",
        "device": "CPU (2 cores)",
        "last_stage": "probe",
    }
    (tmp_path / "invocations.jsonl").write_text(json.dumps(earlier) + "\n")
    with Invocation(tmp_path, "pgnm benchmark --profile micro", cuda=False) as invocation:
        frame = read_invocations(tmp_path)
        assert list(frame.columns) == list(FIELDS) and len(frame) == 2 and frame["last_stage"].tolist() == ["probe", ""]
        clock[0] += 30
        invocation.stage("pretrain")
        clock[0] += 12
        invocation.stage("probe")
        assert read_invocations(tmp_path).iloc[1][["seconds", "last_stage"]].tolist() == [42.0, "probe"]
        clock[0] += 5
    frame = read_invocations(tmp_path)
    assert len(frame) == 2 and frame.iloc[0].to_dict() == earlier  # the earlier line is left as it was
    assert frame.iloc[1][["seconds", "last_stage"]].tolist() == [47.0, "probe"]
    assert frame.iloc[1]["command"] == "pgnm benchmark --profile micro"
    assert "cores" in frame.iloc[1]["device"] and frame.iloc[1]["commit"]
    assert summed_wall_seconds(tmp_path) == 4849.0 + 47.0
    # killed (SIGKILL: no exit runs) after its first stage: it still counts up to that stage
    killed = Invocation(tmp_path, "pgnm benchmark", cuda=False).__enter__()
    clock[0] += 20
    killed.stage("pretrain none_seed0")
    clock[0] += 1000  # then killed: nothing more is written
    assert read_invocations(tmp_path).iloc[2][["seconds", "last_stage"]].tolist() == [20.0, "pretrain none_seed0"]
    assert summed_wall_seconds(tmp_path) == 4849.0 + 47.0 + 20.0
    # stopped by an error: the time to the error, and what stopped it; the error goes on
    with pytest.raises(KeyboardInterrupt), Invocation(tmp_path, "pgnm benchmark", cuda=False) as stopped:
        stopped.stage("pretrain")
        clock[0] += 7
        raise KeyboardInterrupt
    last = read_invocations(tmp_path).iloc[3]
    assert (last["seconds"], last["last_stage"]) == (7.0, "pretrain; stopped by KeyboardInterrupt")


def test_no_record_and_a_broken_line(tmp_path):
    assert len(read_invocations(tmp_path)) == 0 and summed_wall_seconds(tmp_path) == 0.0
    (tmp_path / "invocations.jsonl").write_text('{"seconds": 1.0}\n\nnot json\n')
    with pytest.raises(ValueError, match=r"invocations.jsonl, line 3: expected a JSON object with 'seconds'"):
        read_invocations(tmp_path)
