"""Command line: parse config, set up logging, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Sequence

from csi_driver import __version__, logs
from csi_driver.config import ConfigError, load

log = logging.getLogger("csi_driver")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:
        from csi_driver import sandbox

        return sandbox.main(argv[1:])
    try:
        config = load(argv)
    except ConfigError as err:
        print(f"datadog-csi-driver: {err}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    return serve(config)


def serve(config) -> int:
    from csi_driver.server import Driver, EndpointInUse

    driver = Driver(config)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        driver.start()
    except (EndpointInUse, OSError) as err:
        log.error(f"cannot start: {err}")
        return 1
    log.info("datadog-csi-driver started", extra={"version": __version__, "pid": os.getpid()})
    while not stop_requested.wait(timeout=3600):
        pass
    driver.stop()
    return 0
