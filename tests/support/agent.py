"""The demo agent lives in the package (the sandbox uses it too)."""

from csi_driver.sandbox.agent import DemoAgent

__all__ = ["DemoAgent"]
