"""Benchmarks: Kairos against a hand-written Temporal baseline."""
