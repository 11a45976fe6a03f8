"""Running the fake Codat: in a background thread of this process (tests, `synctrack demo`), or in
the foreground (`synctrack fake-codat`)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from fakecodat.app import create_fake_codat
from fakecodat.control import FakeCodatControl
from fakecodat.world import Config


class FakeCodatServer:
    """The fake Codat on a local port (a free one unless given), served by a daemon thread."""

    def __init__(
        self,
        *,
        receiver_url: str | None = None,
        secret: str = "",
        config: Config | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app = create_fake_codat(config, receiver_url, secret)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.url = f"http://{host}:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self.control = FakeCodatControl(self.url)

    def start(self, timeout: float = 10) -> FakeCodatServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the fake Codat did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.control.close()
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def __enter__(self) -> FakeCodatServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def serve(host: str, port: int, *, receiver_url: str | None, secret: str, config: Config, companies: int = 0) -> None:
    """Serve the fake Codat in the foreground; seed `companies` synthetic companies once it is up."""
    server = FakeCodatServer(receiver_url=receiver_url, secret=secret, config=config, host=host, port=port)
    server.start()
    if companies:
        server.control.seed(count=companies)
    try:
        while server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
