"""Log output: human-readable lines by default, JSON lines with ``--log-format json``.

Workers log lifecycle events (start, partitions assigned, checkpoint written, teacher
batches at DEBUG, shutdown) and a periodic summary, never a line per record at INFO.

>>> import logging
>>> record = logging.LogRecord("streamer", logging.INFO, __file__, 1, "checkpoint written (%s)", ("periodic",), None)
>>> import json; line = json.loads(JsonFormatter().format(record))
>>> line["level"], line["message"]
('INFO', 'checkpoint written (periodic)')
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, pid, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for stderr in ``log_format`` (used by every command and worker)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    formatter: dict[str, Any] = ({"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
