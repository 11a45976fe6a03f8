"""Importing Synctrack starts nothing: no thread, no database engine, no Redis client, no app.

Threads, engines and clients are made by the composition roots when a process starts (`create_app`,
`build_worker`, the CLI commands) and closed on shutdown. Only `python -m service.cli` (`__main__`) runs
anything when imported, by definition.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import gc, importlib, json, pkgutil, sys, threading
from pathlib import Path

root = Path(sys.argv[1])
skip = {"service.cli.__main__"}
imported = []
for package in ("schemas", "service", "workers", "fakecodat"):
    importlib.import_module(package)
    for info in pkgutil.walk_packages([str(root / package)], prefix=package + "."):
        if ".migrations" in info.name or info.name in skip:
            continue
        importlib.import_module(info.name)
        imported.append(info.name)

import redis, redis.asyncio, sqlalchemy, starlette.applications
kinds = (sqlalchemy.Engine, redis.Redis, redis.asyncio.Redis, starlette.applications.Starlette)
made = sorted({type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)})
threads = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
print(json.dumps({"imported": len(imported), "made": made, "threads": threads}))
"""


def test_importing_every_module_creates_no_thread_engine_client_or_app() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "SYNCTRACK_DATABASE_URL": "sqlite:///:memory:"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["imported"] > 80
    assert (found["made"], found["threads"]) == ([], [])


WEB_PROBE = r"""
import json, sys
import service.cli.main  # `synctrack web --workers 1` serves from the command's own process
import service.asgi
service.asgi.build()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_a_web_process_on_sqlite_loads_neither_migrations_nor_the_embedded_redis_nor_psycopg(tmp_path: Path) -> None:
    # Each is needed only elsewhere (`synctrack db upgrade`, `synctrack dev`, PostgreSQL) and, once imported,
    # stays in the process's memory for good.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(ROOT),
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-c", WEB_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"starlette", "sqlalchemy", "redis", "uvicorn"} <= loaded  # the probe did build the web app
    assert loaded & {"alembic", "mako", "fakeredis", "lupa", "psycopg"} == set()
