"""Log output: human-readable lines by default, JSON lines with ``--log-format json``.

Workers log lifecycle events (start, partitions assigned, checkpoint written, teacher
batches at DEBUG, shutdown) and a periodic summary, never a line per record at INFO.
While the broker is away the Kafka client would log every failed connection and request
(dozens of lines a second); :class:`RepeatFilter` lets each of its messages through once
every :data:`REPEAT_WINDOW` seconds with a count of the ones held back.

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
#: Seconds within which a repeated Kafka-client message is held back (counted, and the count shown next time).
REPEAT_WINDOW = 30.0
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


class RepeatFilter(logging.Filter):
    """Lets a warning or error (its logger, level and format string) through at most once per ``window`` seconds;
    the next one through says how many were held back. Lower levels all pass.

    >>> f, clock = RepeatFilter(window=30.0), [0.0]
    >>> f.clock = lambda: clock[0]
    >>> def rec(): return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "Unable connect to %s", ("b",), None)
    >>> [f.filter(rec()) for _ in range(3)]
    [True, False, False]
    >>> clock[0] = 31.0; r = rec(); f.filter(r), r.getMessage()
    (True, 'Unable connect to b (2 similar lines held back in the last 31 s)')
    """

    def __init__(self, window: float = REPEAT_WINDOW) -> None:
        super().__init__()
        self.window = window
        self.clock = time.monotonic
        self.seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, held = self.seen.get(key, (None, 0))
        if last is not None and now - last < self.window:
            self.seen[key] = (last, held + 1)
            return False
        self.seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} similar lines held back in the last {now - last:.0f} s)"
        return True


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for stderr in ``log_format`` (used by every command and worker)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    formatter: dict[str, Any] = ({"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"repeats": {"()": RepeatFilter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"},
                     "kafka-client": {"class": "logging.StreamHandler", "formatter": "default",
                                      "stream": "ext://sys.stderr", "filters": ["repeats"]}},
        "loggers": {"aiokafka": {"handlers": ["kafka-client"], "propagate": False}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
