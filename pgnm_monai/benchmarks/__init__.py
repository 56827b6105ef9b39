"""Benchmarks (run as ``python -m pgnm_monai.benchmarks.<name>``); not part of the test suite."""
