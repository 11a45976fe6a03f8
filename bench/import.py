"""Import of an existing Codat account: `synctrack import` against a fake Codat holding many companies that
only Codat knows (no webhook was ever sent), each with connections and a past of finished pull operations.
Reports companies per second, the Codat calls made per company, and checks that a second run folds nothing.

    python bench/import.py [--companies 1000] [--connections 3] [--operations 20] [--concurrency 8]
                           [--postgres postgresql://postgres@127.0.0.1:5432/test]

The fake Codat runs as its own process (`synctrack fake-codat`), the import as another (`synctrack import`),
so neither shares an interpreter with the other; the ledger is a fresh SQLite file unless --postgres.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.harness import machine, running  # noqa: E402
from fakecodat.control import FakeCodatControl  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-import-key"
PLATFORMS = ["xero", "hsbc", "shopify", "quickbooks", "lloyds", "sage"]
SEED_CHUNK = 100
SUMMARY = re.compile(
    r"import (?P<id>\S+) (?P<status>\w+): companies=(?P<companies>\d+) imported=(?P<imported>\d+) "
    r"failed=(?P<failed>\d+) connections=(?P<connections>\d+) syncs=(?P<syncs>\d+) folded=(?P<folded>\d+)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_fake(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_control/config", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"the fake Codat did not answer on {url}")


def seed(control: FakeCodatControl, companies: int, connections: int, operations: int) -> None:
    platforms = PLATFORMS[:connections]
    for start in range(0, companies, SEED_CHUNK):
        specs = [{"platforms": platforms} for _ in range(min(SEED_CHUNK, companies - start))]
        control.seed(companies=specs, announce=False, initial_read=False, history=operations)


def synctrack(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return done, time.perf_counter() - started


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    match = SUMMARY.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"synctrack import failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    return match.groupdict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=3, choices=range(1, len(PLATFORMS) + 1))
    parser.add_argument("--operations", type=int, default=20, help="finished pull operations per connection")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--postgres", help="a PostgreSQL database URL to import into (default: a SQLite file)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="synctrack-bench-import-"))
    database = args.postgres or f"sqlite:///{workdir / 'ledger.db'}"
    port = free_port()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    fake_argv = ["-m", "service.cli", "fake-codat", "--port", str(port), "--api-key", API_KEY, "--secret", secret]
    env = {
        "SYNCTRACK_DATABASE_URL": database,
        "SYNCTRACK_CODAT_BASE_URL": f"http://127.0.0.1:{port}",
        "SYNCTRACK_CODAT_API_KEY": API_KEY,
        # No change feed: nothing listens, and Redis is not what this measures.
        "SYNCTRACK_REDIS_URL": "redis://127.0.0.1:1/0",
        "SYNCTRACK_REDIS_NAMESPACE": f"bench-import-{uuid.uuid4().hex[:8]}",
        "SYNCTRACK_LOG_LEVEL": "WARNING",
    }
    upgraded, _ = synctrack(["db", "upgrade"], env)
    if upgraded.returncode != 0:
        raise RuntimeError(upgraded.stderr)
    with running("fake-codat-import", fake_argv, {"SYNCTRACK_LOG_LEVEL": "WARNING"}):
        url = f"http://127.0.0.1:{port}"
        wait_for_fake(url)
        control = FakeCodatControl(url, timeout=120)
        seeding = time.perf_counter()
        seed(control, args.companies, args.connections, args.operations)
        print(f"seeded {args.companies} companies in {time.perf_counter() - seeding:.1f} s", file=sys.stderr)

        control.clear_requests()
        first, first_seconds = synctrack(["import", "--concurrency", str(args.concurrency)], env)
        calls = control.requests()
        second, second_seconds = synctrack(["import", "--concurrency", str(args.concurrency)], env)
        control.close()
    got, again = summary(first), summary(second)
    companies = int(got["imported"])
    statuses: dict[str, int] = {}
    for call in calls:
        statuses[str(call["status"])] = statuses.get(str(call["status"]), 0) + 1
    result = {
        "machine": machine(),
        "database": "postgresql" if args.postgres else "sqlite",
        "companies": companies,
        "connections": int(got["connections"]),
        "syncs": int(got["syncs"]),
        "concurrency": args.concurrency,
        "seconds": round(first_seconds, 2),
        "companies_per_second": round(companies / first_seconds, 1),
        "codat_calls": len(calls),
        "codat_calls_per_company": round(len(calls) / max(1, companies), 2),
        "codat_statuses": statuses,
        "second_run_seconds": round(second_seconds, 2),
        "second_run_folded": int(again["folded"]),
    }
    print(json.dumps(result, indent=2))
    if companies != args.companies or int(again["folded"]) != 0 or int(got["failed"]):
        raise SystemExit("the import was not complete, or a second run folded something")


if __name__ == "__main__":
    main()
