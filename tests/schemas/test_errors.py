"""One exception hierarchy, and one place that writes error bodies.

Every exception class Synctrack defines derives from `SynctrackError` and says when it is raised, so a
caller can catch Synctrack's own failures apart from bugs and library errors; and only `ApiError.body`
spells out an error body (`service/common/errors.py` sends it), so the shape clients see cannot drift.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from schemas.errors import ApiError, ConfigError, SynctrackError, Unavailable

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "service", "workers")
ENTRY_POINTS = {"service.cli.__main__"}
"""`python -m service.cli` runs the command when imported: not imported here."""


def synctrack_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if ".migrations" not in info.name and info.name not in ENTRY_POINTS:
                names.append(info.name)
    return names


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for name in synctrack_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


def test_every_exception_synctrack_defines_is_a_synctrack_error() -> None:
    exceptions = defined_exceptions()
    assert len(exceptions) >= 12
    strays = [f"{e.__module__}.{e.__qualname__}" for e in exceptions if not issubclass(e, SynctrackError)]
    assert strays == []


def test_every_exception_says_when_it_is_raised() -> None:
    bases = {SynctrackError}
    silent = [
        f"{e.__module__}.{e.__qualname__}"
        for e in defined_exceptions()
        if e not in bases and not (e.__doc__ or "").startswith("Raised ")
    ]
    assert silent == []


@pytest.mark.parametrize(
    ("path", "name", "base"),
    [
        ("service.ingest.enqueue", "QueueUnavailable", Unavailable),
        ("service.stream.fanout", "StreamUnavailable", Unavailable),
        ("service.security.tokens", "TokenConfigError", ConfigError),
        ("service.security.auth_mode", "UnsafeAuthConfig", ConfigError),
        ("workers.runtime.db", "SchemaOutOfDate", ConfigError),
        ("workers.codat.errors", "CodatError", ApiError),
    ],
)
def test_errors_of_one_kind_share_a_base_to_catch_them_by(path: str, name: str, base: type[Exception]) -> None:
    assert issubclass(getattr(importlib.import_module(path), name), base)


def test_only_one_module_writes_an_error_body() -> None:
    writers = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Dict) and any(
                    isinstance(key, ast.Constant) and key.value == "error" for key in node.keys
                ):
                    writers.append(str(path.relative_to(ROOT)))
    assert writers == ["schemas/errors.py"]
