"""The record of every invocation that made a run's folder: ``<output_dir>/invocations.jsonl``.

Each invocation (``pgnm benchmark``, also with ``--report-only``) appends one JSON line when it starts and rewrites
that line, with the whole file written atomically, after every completed stage and when it ends; so a killed
invocation still counts up to its last completed stage, and the run's wall time is the sum over its lines. Fields
(:data:`FIELDS`): ``started`` and ``ended`` (ISO 8601, UTC), ``seconds`` (between them, by the monotonic clock),
``commit`` (short git hash or ``unknown``), ``command``, ``device`` (the CUDA device's name when CUDA is used, else
the CPU's model and cores) and ``last_stage`` (the last completed stage; ``stopped by <error>`` is added when an
error or an interruption ended it).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from pgnm_monai.atomic_files import atomic_write_text

__all__ = [
    "FIELDS",
    "INVOCATIONS",
    "Invocation",
    "device_name",
    "git_commit",
    "read_invocations",
    "summed_wall_seconds",
]

#: the file name, in the run's folder
INVOCATIONS = "invocations.jsonl"
#: the fields of each line, in order
FIELDS = ("started", "ended", "seconds", "commit", "command", "device", "last_stage")


def git_commit() -> str:
    """The project's current commit, short (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent,
            check=True,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(cuda: bool | None = None) -> str:
    """A readable name of the device a run computes on: the CUDA device's name when ``cuda`` (``None``: when CUDA is
    available, as the bundles choose), else the CPU's model (``/proc/cpuinfo``, else ``platform.processor()``) and
    its cores."""
    import torch

    if cuda if cuda is not None else torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    model = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model or platform.processor() or platform.machine() or 'CPU'} ({cores} cores)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Invocation:
    """This invocation's line of ``<folder>/invocations.jsonl``, as a context manager.

    Entering appends the line; :meth:`stage` rewrites it after a completed stage; leaving rewrites it a last time
    (``last_stage`` names the error or interruption that ended it, if one did; the error goes on).

    Args:
        folder: the run's folder (created if needed).
        command: the command line.
        cuda: whether the invocation computes on CUDA (``None``: when CUDA is available).
    """

    def __init__(self, folder: str | os.PathLike, command: str, cuda: bool | None = None) -> None:
        self.path = Path(folder) / INVOCATIONS
        self.record: dict[str, Any] = {
            "started": "", "ended": "", "seconds": 0.0, "commit": git_commit(), "command": command,
            "device": device_name(cuda), "last_stage": "",
        }  # fmt: skip
        self._start = 0.0

    def __enter__(self) -> Invocation:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.monotonic()
        self.record.update(started=_now(), ended=_now())
        lines = self._lines()
        atomic_write_text(self.path, "".join(lines + [json.dumps(self.record) + "\n"]))
        return self

    def stage(self, name: str) -> None:
        """Record that stage ``name`` completed now."""
        self._write(last_stage=name)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None:
            stopped = f"stopped by {kind.__name__}"
            self._write(last_stage=f"{self.record['last_stage']}; {stopped}" if self.record["last_stage"] else stopped)
        else:
            self._write()

    def _lines(self) -> list[str]:
        return self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []

    def _write(self, **fields: Any) -> None:
        """Rewrite this invocation's line (found by its last written value; appended if it is gone)."""
        old = json.dumps(self.record) + "\n"
        self.record.update(fields, ended=_now(), seconds=round(time.monotonic() - self._start, 1))
        lines = self._lines()
        new = json.dumps(self.record) + "\n"
        lines = [new if line == old else line for line in lines] if old in lines else [*lines, new]
        atomic_write_text(self.path, "".join(lines))


def read_invocations(folder: str | os.PathLike) -> pd.DataFrame:
    """The invocations recorded in ``<folder>/invocations.jsonl``, one row each (columns :data:`FIELDS`; no rows when
    the file is absent).

    Raises:
        ValueError: a line that is not a JSON object with ``seconds`` (naming the file and the line).
    """
    path = Path(folder) / INVOCATIONS
    rows = []
    for number, line in enumerate(path.read_text().splitlines() if path.is_file() else [], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            float(row["seconds"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}, line {number}: expected a JSON object with 'seconds', got {line!r}.") from e
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[*FIELDS, *(c for c in frame.columns if c not in FIELDS)])


def summed_wall_seconds(folder: str | os.PathLike) -> float:
    """The wall time of every invocation recorded in ``<folder>/invocations.jsonl``, summed (0.0 when none)."""
    return float(read_invocations(folder)["seconds"].astype(float).sum())
