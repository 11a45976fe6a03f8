"""What the benchmarks share: server processes, pre-signed request files, wrk runs, process CPU and RSS.

Everything runs on this machine against loopback; every run is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.workload import Delivery, signed  # noqa: E402

OUT = ROOT / "bench" / "out"
LUA = ROOT / "bench" / "wrk_presigned.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn --workers and dramatiq --processes fork children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def named_pids(name: str) -> list[int]:
    """Every process whose command name is `name` (e.g. the local PostgreSQL server's processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start(name: str, argv: list[str], env: dict[str, str], port: int | None = None) -> Server:
    OUT.mkdir(parents=True, exist_ok=True)
    log_path = OUT / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=OUT,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(name, proc, port or 0, log_path)
    if port:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                time.sleep(0.2)
        server.stop()
        raise TimeoutError(f"{name} not healthy:\n{log_path.read_text()[-3000:]}")
    return server


@contextmanager
def running(name: str, argv: list[str], env: dict[str, str], port: int | None = None) -> Iterator[Server]:
    server = start(name, argv, env, port)
    try:
        yield server
    finally:
        server.stop()


def write_presigned(path: Path, deliveries: list[Delivery]) -> None:
    """One line per delivery for wrk_presigned.lua, signed now (valid for the next five minutes)."""
    with path.open("w") as out:
        for delivery in deliveries:
            headers = signed(delivery)
            out.write(
                f"{headers['webhook-id']}\t{headers['webhook-timestamp']}\t{headers['webhook-signature']}\t"
                f"{delivery.body}\n"
            )


@dataclass
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    wrapped: int
    wrk_cpu_share: float
    """wrk's CPU time over wall time (1.0 = one core busy): well under its thread count means it kept up."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk(
    port: int,
    presigned: Path,
    *,
    seconds: int,
    threads: int = 1,
    connections: int = 32,
    rate: float = 0.0,
    path: str = "/webhooks/codat",
) -> WrkRun:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    env = {
        **os.environ,
        "PRESIGNED": str(presigned),
        "WRK_THREADS": str(threads),
        "WRK_CONNECTIONS": str(connections),
        "TARGET_PATH": path,
        "RATE": str(rate),
    }
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA)]
    proc = subprocess.Popen([*argv, f"http://127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    cpu = 0.0
    while proc.poll() is None:
        cpu = cpu_seconds([proc.pid]) or cpu
        time.sleep(0.2)
    wall = time.monotonic() - started
    output = proc.stdout.read() if proc.stdout else ""
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{output}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = {k.removeprefix("errors_"): v for k, v in data.items() if k.startswith("errors_") and v}
    return WrkRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        wrapped=data["wrapped"],
        wrk_cpu_share=cpu / wall,
    )


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"
