"""Logging set-up, and one structured line per job event.

``job_event`` attaches the event's fields to the record; the text format
appends them as ``key=value``, the JSON format emits one object per line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

_FIELDS = "job_fields"


def job_event(logger: logging.Logger, event: str, job_id: str, **fields: Any) -> None:
    """e.g. ``job_event(log, "completed", "abc", model="tiny.en", audio_seconds=7.5, elapsed=1.02)``."""
    record = {"event": event, "job_id": job_id, **{k: v for k, v in fields.items() if v is not None}}
    logger.info("job %s %s", job_id, event, extra={_FIELDS: record})


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, _FIELDS, None)
        if fields:
            extra = " ".join(f"{k}={_plain(v)}" for k, v in fields.items() if k not in ("event", "job_id"))
            line = f"{line} {extra}" if extra else line
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class RepeatFilter(logging.Filter):
    """Lets the same message through at most once per ``interval`` seconds,
    then says how many were dropped. asyncio logs a failed accept() ("Too many
    open files") for every attempt, which once wrote 214 MB in 20 s."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # message -> (last let through, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:200]
        now = self._clock()
        last, dropped = self._seen.get(key, (now - self._interval, 0))
        if now - last < self._interval:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) >= 100:  # bounded: forget the oldest
            del self._seen[next(iter(self._seen))]
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} (the same message {dropped} more time(s) in the last {now - last:.0f} s)"
        return True


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # asyncio's own errors (failed accepts under a connection flood) are rate-limited.
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.filters[:] = [f for f in asyncio_logger.filters if not isinstance(f, RepeatFilter)]
    asyncio_logger.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
