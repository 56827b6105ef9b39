"""The GPU checks in one command: the CUDA tests, then the training-step tables against the plain PyTorch loop.

Usage (from a checkout, on a machine with a CUDA GPU)::

    python -m pgnm_monai.benchmarks.gpu_checks [--output-dir runs/gpu_checks] [--steps 30] [--warmup 5]

1. ``pytest`` on the tests that need a GPU (mixed precision through the bundle, a policy step with no synchronising
   call: ``torch.cuda.set_sync_debug_mode("error")``) and their CPU neighbours.
2. :func:`pgnm_monai.benchmarks.step_time.measure` at :data:`TABLES`: ResNet-50 224² batch 128 with bf16 autocast
   and in fp32, ResNet-18 128² batch 32 in fp32, each with the baseline, both presets and the plain loop,
   interleaved.
3. ``<output-dir>/gpu_checks.md`` (and ``.json``): the device, the versions, the tables and, for each target of
   :data:`TARGETS`, the measured ratio and whether it is met, computed from the numbers.

Without a GPU it says so and exits 2 (nothing is measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from pgnm_monai.atomic_files import atomic_write_text
from pgnm_monai.benchmarks.step_time import PLAIN, format_table, measure

__all__ = ["TABLES", "TARGETS", "main", "verdicts"]

#: the GPU tests (pytest node ids, relative to the checkout).
TESTS = ("tests/test_amp.py", "tests/test_policy_no_sync.py")
#: name -> ``measure`` arguments of each table.
TABLES: dict[str, dict[str, Any]] = {
    "resnet50-224-b128-bf16": {"model": "resnet50", "image_size": 224, "batch_size": 128, "amp": True},
    "resnet50-224-b128-fp32": {"model": "resnet50", "image_size": 224, "batch_size": 128, "amp": False},
    "resnet18-128-b32-fp32": {"model": "resnet18", "image_size": 128, "batch_size": 32, "amp": False},
}
#: (table, what, numerator, denominator, bound): the ratio of two medians (``floor``: the numerator's FLOP floor).
TARGETS = (
    ("resnet50-224-b128-bf16", "baseline / plain", "baseline", PLAIN, 1.05),
    ("resnet50-224-b128-bf16", "pgnm[fast] / baseline", "pgnm[fast]", "baseline", 1.05),
    ("resnet50-224-b128-bf16", "pgnm[paper] / its FLOP floor", "pgnm[paper]", "floor", 1.05),
)
VARIANTS = ("baseline", "pgnm[paper]", "pgnm[fast]", PLAIN)


def verdicts(tables: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Each target of :data:`TARGETS` with its measured ratio and whether it is met (tables that were not measured
    are left out)."""
    rows = []
    for table, what, num, den, bound in TARGETS:
        if table not in tables:
            continue
        r = tables[table]
        ratio = r[num]["ratio"] / r[num]["floor"] if den == "floor" else r[num]["median_s"] / r[den]["median_s"]
        rows.append({"table": table, "target": f"{what} <= {bound}", "ratio": ratio, "met": ratio <= bound})
    return rows


def _report(device: str, tests: int, tables: dict, steps: int) -> str:
    lines = [
        "# GPU checks",
        "",
        f"Device: {device}; torch {torch.__version__}; {steps} timed rounds per table (medians, interleaved).",
        f"GPU tests ({' '.join(TESTS)}): {'passed' if tests == 0 else f'FAILED (pytest exit {tests})'}.",
        "",
        "| table | target | measured | met |",
        "|---|---|---|---|",
    ]
    rows = verdicts(tables)
    lines += [f"| {v['table']} | {v['target']} | {v['ratio']:.3f} | {'yes' if v['met'] else 'no'} |" for v in rows]
    met = sum(v["met"] for v in rows)
    lines += ["", f"{met} of {len(rows)} targets met.", ""]
    lines += [format_table(results, name) + "\n" for name, results in tables.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: tests passed and every target met)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/gpu_checks", help="where gpu_checks.md and .json go")
    parser.add_argument("--steps", type=int, default=30, help="timed rounds per table")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--no-tests", action="store_true", help="the tables only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU checks need one (nothing measured).", file=sys.stderr)
        return 2
    device = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    tests = 0
    if not args.no_tests:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]).returncode
    tables = {}
    for name in args.tables:
        tables[name] = measure(
            **TABLES[name], steps=args.steps, warmup=args.warmup, device="cuda", variants=VARIANTS, memory=True
        )
        print(format_table(tables[name], name) + "\n", flush=True)
    out = Path(args.output_dir)
    report = _report(device, tests, tables, args.steps)
    atomic_write_text(out / "gpu_checks.md", report)
    record = {"device": device, "tests": tests, "tables": tables, "verdicts": verdicts(tables)}
    atomic_write_text(out / "gpu_checks.json", json.dumps(record, indent=2))
    print(report)
    return 0 if tests == 0 and all(v["met"] for v in verdicts(tables)) else 1


if __name__ == "__main__":
    sys.exit(main())
