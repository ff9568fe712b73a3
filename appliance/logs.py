"""Structured JSON logs on stderr.

Log records carry metadata only (ids, paths, statuses, timings, counts). No request or answer
text is ever passed to a logger; the formatter also drops any `extra` key it does not know.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ALLOWED_EXTRA = frozenset(
    {
        "request_id",
        "method",
        "path",
        "status",
        "duration_ms",
        "model",
        "policy",
        "outcome",
        "entities",
        "event",
        "port",
        "host",
        "detail",
        "audit_id",
    }
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message and allowed extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ALLOWED_EXTRA:
            if key in record.__dict__:
                payload[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages of third-party errors may quote input text.
            payload["exception"] = record.exc_info[0].__name__
        return json.dumps(payload, default=str)


def configure_logging(level: str) -> None:
    """Send every logger through the JSON formatter at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our middleware logs each request; uvicorn's access log would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
