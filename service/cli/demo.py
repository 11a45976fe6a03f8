"""`synctrack demo`: in one process, the dev service, a fake Codat (in a thread) with a few companies, and a
driver that keeps clicking "refresh" through Synctrack's API. Some companies exist only in the fake Codat and
are imported at start (onboarding); one connection has lost its access, to be reconnected with a fresh link.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer
import uvicorn

from schemas.settings import Settings
from service.security import auth_mode
from workers.runtime.logs import configure_logging
from workers.runtime.metrics import prepare_multiprocess_dir

if TYPE_CHECKING:
    from fakecodat.control import FakeCodatControl

DEMO_API_KEY = "demo-key"
ONBOARDING_NAMES = ("Wren & Sons Upholstery", "Fieldfare Outdoor Supplies", "Kestrel Dental Lab")

app = typer.Typer()


def _onboard(base: str, control: FakeCodatControl, existing: int) -> None:
    """Seed companies only the fake Codat knows (history, no webhooks), then import them."""
    if existing <= 0:
        return
    specs = [{"name": f"{name} (existing)", "tags": {"onboarding": "import"}} for name in ONBOARDING_NAMES[:existing]]
    specs += [{"tags": {"onboarding": "import"}} for _ in range(existing - len(specs))]
    seeded = control.seed(companies=specs, announce=False, initial_read=False, history=6)
    for company in seeded:
        typer.echo(f"  company {company['id']}  {company['name']}  (only in Codat: imported at start)")
    try:
        job = httpx.post(f"{base}/v1/admin/imports", json={}, timeout=10).json()
        typer.echo(f"  import {job.get('id')}: curl {base}/v1/admin/imports/{job.get('id')}")
    except httpx.HTTPError as exc:
        typer.echo(f"  import could not be started: {exc}")


def _withdraw_access(base: str, control: FakeCodatControl, seeded: list[dict[str, Any]]) -> None:
    """Deauthorise one connection, as a customer revoking access at their platform would."""
    if not seeded or not seeded[0]["connections"]:
        return
    company, connection = seeded[0], seeded[0]["connections"][-1]
    control.set_status(connection["id"], "Deauthorized")
    typer.echo(
        f"  reconnect:     curl -X POST {base}/v1/connections/{connection['id']}/reconnect"
        f"   ({connection['platformName']} of {company['name']} is Deauthorized; each call answers a new one-time link)"
    )


def _drive(base: str, fake_url: str, companies: int, existing: int, action_every: float, stop: threading.Event) -> None:
    from fakecodat.catalog import platform
    from fakecodat.control import FakeCodatControl

    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    control = FakeCodatControl(fake_url)
    _onboard(base, control, existing)
    seeded = control.seed(companies)
    for company in seeded:
        platforms = ", ".join(c["platformName"] for c in company["connections"])
        typer.echo(f"  company {company['id']}  {company['name']}  ({platforms})")
    _withdraw_access(base, control, seeded)
    rng = random.Random()
    while action_every > 0 and not stop.wait(action_every):
        company = rng.choice(seeded)
        connection = rng.choice(company["connections"])
        data_type = rng.choice(platform(connection["integrationKey"]).data_types)
        url = f"{base}/v1/companies/{company['id']}/refresh/{data_type}"
        try:
            httpx.post(url, params={"connection_id": connection["id"]}, timeout=10)
        except httpx.HTTPError:
            pass


@app.command("demo")
def demo(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Synctrack's port."),
    fake_port: int = typer.Option(8100, help="The fake Codat's port."),
    companies: int = typer.Option(4, help="Synthetic companies."),
    existing: int = typer.Option(2, help="Companies only Codat knows at start: imported (onboarding)."),
    sync_seconds: float = typer.Option(4.0, help="How long a sync takes in the fake Codat."),
    failure_rate: float = typer.Option(0.1, help="Share of syncs that fail."),
    traffic_every: float = typer.Option(3.0, help="Seconds between refreshes Codat starts on its own."),
    action_every: float = typer.Option(8.0, help="Seconds between refreshes clicked through Synctrack's API."),
    database: str = typer.Option("synctrack-demo.db", help="SQLite file of the demo (recreated)."),
) -> None:
    """Synctrack (dev) + a fake Codat + companies + live traffic: watch syncs start and finish."""
    from fakecodat.server import FakeCodatServer
    from fakecodat.world import Config
    from service.app import create_app
    from service.embedded import start_embedded_worker

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    fake = FakeCodatServer(
        receiver_url=f"http://{host}:{port}/webhooks/codat",
        secret=secret,
        config=Config(
            sync_seconds=sync_seconds,
            failure_rate=failure_rate,
            api_key=DEMO_API_KEY,
            traffic_every_seconds=traffic_every,
        ),
        host=host,
        port=fake_port,
    ).start()
    fake.control.configure(one_time_links=True, link_base_url=fake.url)  # links open the fake's link page
    demo_settings = Settings(
        embedded=True,
        database_url=f"sqlite:///{database}",
        webhook_secrets=[secret],
        codat_base_url=fake.url,
        codat_api_key=DEMO_API_KEY,
    )
    settings, auth_lines = auth_mode.for_cli(demo_settings, host, dev=True)
    configure_logging(settings)
    prepare_multiprocess_dir(settings.redis_namespace)
    worker = start_embedded_worker(settings)
    base = f"http://{host}:{port}"
    typer.echo(f"Synctrack demo on {base}  (fake Codat on {fake.url})")
    typer.echo(f"  database: {Path(database).resolve()} (recreated for each demo)")
    typer.echo(f"  active syncs:  curl {base}/v1/syncs/active")
    typer.echo(f"  companies:     curl {base}/v1/companies")
    typer.echo(f"  refresh:       curl -X POST {base}/v1/companies/<company id>/refresh")
    typer.echo(f"  audit log:     curl {base}/v1/audit")
    typer.echo("\n".join(auth_lines))
    stop = threading.Event()
    driver = threading.Thread(
        target=_drive, args=(base, fake.url, companies, existing, action_every, stop), name="demo-driver", daemon=True
    )
    driver.start()
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, timeout_graceful_shutdown=5)
    finally:
        stop.set()
        fake.stop()
        worker.stop()
