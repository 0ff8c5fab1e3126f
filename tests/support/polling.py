"""Waiting for a condition that another process or the cluster brings about."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0,
             interval: float = 0.5, describe: Callable[[], str] = lambda: "") -> Any:
    """Poll ``check`` until it returns something truthy, and return that; fail
    naming ``what`` (and what ``describe`` adds) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}. {describe()}")
        time.sleep(interval)
