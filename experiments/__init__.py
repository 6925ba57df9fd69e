"""Benchmarks and experiment scripts (run as ``python -m experiments.<name>`` from the repository root)."""
