"""Datadog CSI node driver: publishes the Datadog Agent's sockets into pods."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

DRIVER_NAME = "k8s.csi.datadoghq.com"

try:
    __version__ = _version("datadog-csi-driver")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
