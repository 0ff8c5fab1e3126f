"""The demo "pod" lives in the package (the sandbox uses it too)."""

from csi_driver.sandbox.pod import SOCKET_IN_VOLUME, send

__all__ = ["SOCKET_IN_VOLUME", "send"]
