"""Daemon logs: fixed messages with fields, as text lines or JSON lines.

Every log call names a fixed message ("sync done", "apply failed", ...) and puts what
varies into fields, so an operator can grep or parse them without regular expressions:

    2024-05-01T10:00:00.123Z info sync done pods=110 applied=3 ms=4.2
    {"ts": "2024-05-01T10:00:00.123Z", "level": "info", "msg": "sync done", "pods": 110, ...}

Messages are written to stderr (journald takes them from there under systemd).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LOGGER = "netpol.daemon"


def _ts(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _text_value(v: Any) -> str:
    if isinstance(v, (list, tuple, set, frozenset)):
        v = ",".join(str(x) for x in v)
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    if s == "" or any(c in s for c in ' "=\n\t'):
        return json.dumps(s)
    return s


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        parts = [_ts(record.created), record.levelname.lower(), record.getMessage()]
        parts += [f"{k}={_text_value(v)}" for k, v in fields.items()]
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _ts(record.created), "level": record.levelname.lower(),
                               "msg": record.getMessage()}
        for k, v in (getattr(record, "fields", {}) or {}).items():
            out[k if k not in out else f"field_{k}"] = v
        return json.dumps(out, default=str, separators=(", ", ": "))


class Log:
    """``log.info("sync done", pods=3)``: a fixed message and its fields."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def _emit(self, level: int, msg: str, fields: dict[str, Any]) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, extra={"fields": fields})

    def debug(self, msg: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._emit(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._emit(logging.WARNING, msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._emit(logging.ERROR, msg, fields)


def setup(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> Log:
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))
    logger.propagate = False
    return Log(logger)
