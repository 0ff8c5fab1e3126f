"""The demo "pod" lives in the package (the sandbox uses it too)."""

from csi_driver.sandbox.pod import send

__all__ = ["send"]
