"""Datadog CSI node driver: publishes the Datadog Agent's sockets into pods."""

DRIVER_NAME = "k8s.csi.datadoghq.com"
# Kept equal to pyproject.toml's version by tests/unit/test_version.py. A
# literal rather than importlib.metadata, whose import is a fifth of the
# driver's start-up.
__version__ = "0.1.0"
