"""Simulators for tests and benchmarks: a seeded SWIM network and cluster, the relay cluster, and checkers."""
