"""Real Redis and PostgreSQL for integration tests, and real `synctrack` processes.

Where a server is absent the test is skipped with the reason; `.ci/run` starts them when they are
installed but stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

REDIS_URL = os.environ.get("SYNCTRACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("SYNCTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]


def redis_unavailable() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return None
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL}: {exc}"


def postgres_unavailable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    import psycopg

    name = f"synctrack_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class NoRedis:
    """Stands in for the app's async Redis client where a test reads the ledger only: `/readyz` sees it up."""

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`synctrack <args>` as its own process with `env` added (the caller asserts on the outcome)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_db_upgrade(env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`synctrack db upgrade` as its own process with `env` (the caller asserts on the outcome)."""
    return run_cli(["db", "upgrade"], env, cwd, timeout)


@contextmanager
def app_in_thread(app: Any, http: str = "auto", loop: str = "auto") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL.

    For tests that need real HTTP (streaming, disconnects) but not a separate process. `http`: uvicorn's
    HTTP protocol (httptools where installed, by default, as `synctrack web` runs; or ``h11``); `loop`:
    uvicorn's event loop (uvloop where installed, by default; `synctrack web` names uvloop).
    """
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", http=http, loop=loop))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class ServiceProcess:
    """A `synctrack …` subprocess with its output captured to a file."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args] if args[0] != "-m" else [sys.executable, *args],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def wait_until_healthy(base_url: str, proc: ServiceProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.output()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} not healthy after {timeout}s:\n{proc.output()[-4000:]}")


def redis_postgres_env(postgres_url: str, redis_url: str, namespace: str) -> dict[str, str]:
    """The environment of processes that share the real PostgreSQL and Redis (under `namespace`)."""
    return {
        "SYNCTRACK_DATABASE_URL": postgres_url,
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
    }


def start_web_and_worker(
    stack: ExitStack, env: dict[str, str], cwd: Path, port: int, *, processes: int, threads: int
) -> tuple[ServiceProcess, ServiceProcess]:
    """`synctrack web` on `port` and one `synctrack worker`, stopped when `stack` closes; returns once
    the web process answers its health check."""
    web = ServiceProcess(["web", "--host", "127.0.0.1", "--port", str(port)], env, cwd, "web")
    stack.callback(web.stop)
    worker = ServiceProcess(["worker", "--processes", str(processes), "--threads", str(threads)], env, cwd, "worker")
    stack.callback(worker.stop)
    wait_until_healthy(f"http://127.0.0.1:{port}", web)
    return web, worker


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2, message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{message} not met within {timeout}s (last: {last!r})")
