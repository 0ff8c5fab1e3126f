"""JSON-lines logging: one object per line, machine-parseable by any log agent.

Every CSI call writes one line, so the per-record cost is on the publish path:
the encoder is built once, the timestamp's seconds part is formatted once per
second, and the record attributes the JSON never shows (caller's file and
line, thread, process) are not collected at all (see ``setup``).
"""

from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else was passed through ``extra=``
# and becomes a field of the JSON object.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


SERVICE = "datadog-csi-driver"
# ASCII only: U+2028, U+2029 and U+0085 are line breaks to some log consumers,
# so a request value holding one written raw would split a line in two.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=True)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # (whole second, its "%Y-%m-%dT%H:%M:%S"): one tuple, so threads that
        # race to refresh it each store a consistent pair.
        self._second = (-1, "")

    def _timestamp(self, created: float, msecs: float) -> str:
        second, text = self._second
        whole = int(created)
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        return f"{text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "service": SERVICE,
            "time": self._timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The JSON lines carry none of the caller's file/line/function, thread or
    # process fields, so don't make every record look them up: the logging
    # HOWTO's "Optimization" switches. Finding the caller walks the stack and
    # was the largest single cost of a record on the publish path.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
