"""Helpers that start the package's graphs and observe them, shared by tests, the demo and benchmarks."""
