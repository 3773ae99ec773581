"""Real ``samrt serve`` servers for the service tests, on 127.0.0.1 only.

``LiveServer``: uvicorn in a thread of the test process, on a socket the test bound to a
random free port (so the test can reach the app's internals too). ``ServeProcess``: the
``samrt serve`` command in a subprocess (for SIGKILL and the command line's own checks).
Both wait for ``/healthz`` in bounded loops and stop themselves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT_S = 120.0


def wait_healthy(base_url: str, timeout: float = START_TIMEOUT_S, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"samrt serve exited with {process.returncode} before it was healthy")
        try:
            if httpx.get(base_url + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} was not healthy within {timeout} s ({last})")


class LiveServer:
    """``with LiveServer(app) as server: httpx.get(server.url + ...)``."""

    def __init__(self, app: Any, prefix: str = "") -> None:
        import uvicorn

        self.app = app
        self.prefix = prefix  # where the samrt app is mounted in ``app``
        from samrt.serve.cli import listening_socket

        self.sock = listening_socket("127.0.0.1", 0)  # as `samrt serve` binds
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="on",
                           timeout_graceful_shutdown=5)
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def service(self) -> Any:
        return self.app.state.service

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_healthy(self.url + self.prefix)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()
        assert not self.thread.is_alive(), "the uvicorn thread did not stop"


class ServeProcess:
    """``samrt serve ARGS --port 0`` in a subprocess; ``url`` from the line it prints."""

    def __init__(self, *args: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "samrt.cli", "serve", *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log  # the server's stderr
        self.process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self.url = ""

    def start(self) -> ServeProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*self.args, "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True, env=self.env
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
        # Keep stdout drained so the server never blocks on a full pipe.
        self._drain = threading.Thread(target=_drain, args=(self.process.stdout,), daemon=True)
        self._drain.start()
        if not self.url:
            self.stop()
            raise RuntimeError(f"samrt serve did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        wait_healthy(self.url, process=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self._reap()

    def _reap(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        if self._drain is not None:
            self._drain.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drain(stream: Any) -> None:
    try:
        for _ in stream:
            pass
    except (OSError, ValueError):
        pass

