"""Structured logs: one line per record, `key=value` (default) or one JSON object.

Messages are written as ``key=value`` pairs already (``event=… company=… outcome=…``); the formatter
adds time, level and logger. Secrets and webhook bodies are never passed to a logger.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from datetime import UTC, datetime

from schemas.settings import Settings


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # Values can come from requests (an id in a URL): a line break in one must not forge a log line.
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {message}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


PAIR = re.compile(r"""(?P<key>[A-Za-z_][\w.-]*)=(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S*)|(?P<word>\S+)""")
"""A ``key=value`` pair — the value bare, or quoted as ``%r`` writes it (spaces allowed) — or a lone word."""


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            return str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            return value[1:-1]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        for match in PAIR.finditer(record.getMessage()):
            if match["key"]:
                body[match["key"]] = _unquote(match["value"])
            else:
                body["msg"] = (body.get("msg", "") + " " + match["word"]).strip()
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; subscription URLs may carry credentials in their query.
    logging.getLogger("httpx").setLevel(logging.WARNING)
