"""Structured logs: one line per record, `key=value` (default) or one JSON object.

No value from outside can forge a line or a field: every argument is quoted and escaped where needed, and in JSON a
pair named like a fixed key (`ts`, `level`, …) is kept as ``_ts``. `MessageRedaction` keeps dramatiq from logging
message arguments (webhook bodies).
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from dramatiq import Message
from dramatiq.broker import MessageProxy

from schemas.settings import Settings

FIXED_KEYS = ("ts", "level", "logger", "exc")
_NEEDS_QUOTES = re.compile(r"[\s=\"'\\\x00-\x1f\x7f]")


class Quoted:
    """An argument as a log line shows it: `%s` bare when it is one plain token, else quoted and escaped; `%r` its
    repr (line breaks are escaped in the whole message)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        text = str(self.value)
        return json.dumps(text) if _NEEDS_QUOTES.search(text) else text

    def __repr__(self) -> str:
        return repr(self.value)


def _safe(value: object) -> object:
    if isinstance(value, bool | int | float) or value is None:
        return value  # `%d` and `%.1f` need the number itself
    return Quoted(value)


def safe_message(record: logging.LogRecord) -> str:
    """`record.getMessage()`, with every argument rendered so it cannot leave its value."""
    args: Any = record.args
    message = str(record.msg)
    if args:
        safe = {k: _safe(v) for k, v in args.items()} if isinstance(args, Mapping) else tuple(_safe(a) for a in args)
        try:
            message %= safe
        except (TypeError, ValueError):
            message = record.getMessage()
    # The template itself may be a library's: a line break in it must not start a new line either.
    return message.replace("\r", "\\r").replace("\n", "\\n")


DRAMATIQ_ACTOR_ARGS = "Received args=%r kwargs=%r."  # dramatiq's DEBUG line of an actor's arguments


class MessageRedaction(logging.Filter):
    """Replaces a dramatiq message named in a record's arguments by its actor and id: never its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if record.msg == DRAMATIQ_ACTOR_ARGS and isinstance(args, tuple) and len(args) == 2:
            # An actor called with its arguments: a webhook's body is one of them.
            record.msg, record.args = "Received %d args and %d kwargs.", (len(args[0]), len(args[1]))
            return True
        if isinstance(args, tuple) and any(isinstance(a, Message | MessageProxy) for a in args):
            record.args = tuple(
                f"{a.actor_name}[{a.message_id}]" if isinstance(a, Message | MessageProxy) else a for a in args
            )
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {safe_message(record)}"
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
        for match in PAIR.finditer(safe_message(record)):
            if match["key"]:
                key = match["key"]
                body["_" + key if key in FIXED_KEYS else key] = _unquote(match["value"])
            else:
                body["msg"] = (body.get("msg", "") + " " + match["word"]).strip()
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body)


def log_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """The handler every process logs through: the configured format, dramatiq messages redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else KeyValueFormatter())
    handler.addFilter(MessageRedaction())
    return handler


def configure_logging(settings: Settings) -> None:
    handler = log_handler(settings)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; subscription URLs may carry credentials in their query.
    logging.getLogger("httpx").setLevel(logging.WARNING)
