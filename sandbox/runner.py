"""Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (for tests and the demo)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

# A sandbox serves in its client's process (tests, the demo), where the Langfuse SDK installs a
# global OpenTelemetry tracer: FastAPI's own telemetry would trace every sandbox request into it
# (a quarter of the sandboxes' CPU). The services they model do not trace into their clients.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def sandbox_app(title: str) -> FastAPI:
    """A sandbox's FastAPI app: no docs routes, no telemetry."""
    return FastAPI(
        title=title, docs_url=None, redoc_url=None, openapi_url=None, telemetry=NO_TELEMETRY
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real HTTP server on 127.0.0.1:<port>, served from a daemon thread.

    ``stop()`` also releases requests that a ``hang`` fault is holding, so a test never waits
    on a hung handler to shut down.
    """

    def __init__(self, app: Any, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.app = app
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name=f"sandbox-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def stop(self) -> None:
        release = getattr(self.app.state, "release_hangs", None)
        if release is not None:
            release()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
