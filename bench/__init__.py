"""Benchmark of the driver's publish and unpublish paths against the syscall floor.

Run it through ``bench/run.sh`` (root, private mount namespace); ``python -m
bench`` is what that script executes.
"""
