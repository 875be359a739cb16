"""How the services log: text for a terminal, or one JSON object a line for a collector.

`GROUPBUY_LOG_FORMAT=json` writes each record as an object with `time` (RFC 3339 UTC),
`level`, `service`, `logger` and `message`, and, where the record is about one, `campaign`,
`topic`, `partition` and `offset` (passed as `extra=`; `where` builds them); a traceback goes
in `exception`. `GROUPBUY_LOG_LEVEL` sets the least severe level logged.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from infra.settings import Settings, effective, log_format, log_level

TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"
CONTEXT = ("campaign", "topic", "partition", "offset")  # extras a record may carry

log = logging.getLogger(__name__)


def where(
    *,
    campaign: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """The `extra=` of a record about a campaign or a record of a partition."""
    given = {"campaign": campaign, "topic": topic, "partition": partition, "offset": offset}
    return {name: value for name, value in given.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT:
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(service: str) -> None:
    """Send the process's log to stderr as GROUPBUY_LOG_FORMAT and GROUPBUY_LOG_LEVEL say."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format() == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.getLevelName(log_level())
    root.setLevel(level)
    # kafka-python's INFO narrates every connection: it speaks from WARNING, unless debugging.
    kafka_level = logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING)
    logging.getLogger("kafka").setLevel(kafka_level)


def log_configuration(service: str, settings: Settings) -> None:
    """Log, once at start, what the service runs with; never a password."""
    shown = " ".join(f"{name}={value}" for name, value in effective(settings).items())
    log.info("%s starting with %s", service, shown)
