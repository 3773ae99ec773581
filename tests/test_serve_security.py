"""samrt serve's security defaults: loopback unless a token is given, the token on every
request but /healthz, no CORS unless configured."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_server import LiveServer, ServeProcess

import samrt

pytest.importorskip("fastapi")
from samrt.serve import create_app  # noqa: E402
from samrt.serve.config import is_loopback  # noqa: E402

TOKEN = "correct horse battery staple"


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "samrt.cli", "serve", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_binding_beyond_loopback_needs_a_token(host: str, tmp_path: Path) -> None:
    # Refused before anything is loaded or bound (the engine need not even exist).
    result = _serve("--engine", str(tmp_path / "no-engine"), "--host", host)
    assert result.returncode == 2
    assert "--token" in result.stderr and host in result.stderr


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = _serve("--engine", str(tmp_path), "--host", "0.0.0.0", "--token-file", str(empty))
    assert result.returncode == 2 and "empty" in result.stderr


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.org"))


@pytest.fixture(scope="module")
def model(tiny_model: Any) -> samrt.Model:
    return samrt.Model(tiny_model.engine_dir)


@pytest.fixture(scope="module")
def server(model: samrt.Model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("db") / "a.sqlite3"
    app = create_app(engine=model.engine_dir, db=db, token=TOKEN, prefetch=0, model=model)
    with LiveServer(app) as live:
        yield live


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/v1/images"), ("POST", "/v1/images"), ("GET", "/metrics"), ("GET", "/openapi.json"),
     ("GET", "/v1/export/coco"), ("POST", f"/v1/images/{'a' * 64}/predict"), ("DELETE", "/v1/annotations/1"),
     ("GET", "/v1/categories"), ("POST", "/v1/import/coco"), ("GET", "/v1/stats")],
)
def test_token_is_required_on_every_route_but_healthz_and_the_page(server: LiveServer, method: str, path: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
            r = client.request(method, path, headers=headers, content=b"{}")
            assert r.status_code == 401, (headers, r.status_code, r.text)
            assert r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        good = client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"}, content=b"{}")
        assert good.status_code != 401


def test_the_page_needs_no_token_and_serves_only_its_own_files(server: LiveServer) -> None:
    # The page holds no data (its API calls carry the token); nothing else is reachable.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and "samrt annotator" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/js/annotator.js").status_code == 200
        for path in ("/static/../storage.py", "/static/%2e%2e/storage.py", "/static/..%2fapp.py", "/static/nope.js"):
            r = client.get(path)
            assert r.status_code == 404, (path, r.status_code)


def test_cli_with_token_file(tiny_model: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with ServeProcess("--engine", str(tiny_model.engine_dir), "--db", str(tmp_path / "db.sqlite3"),
                      "--token-file", str(token_file), log=tmp_path / "serve.log") as proc:
        assert proc.url.startswith("http://127.0.0.1:")
        assert httpx.get(proc.url + "/v1/images", timeout=30).status_code == 401
        r = httpx.get(proc.url + "/v1/images", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 200 and r.json() == {"images": []}


def test_no_cors_unless_configured(model: samrt.Model, tmp_path: Path) -> None:
    preflight = {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"}
    app = create_app(engine=model.engine_dir, db=tmp_path / "a.sqlite3", model=model)
    with LiveServer(app) as live:
        r = httpx.get(live.url + "/v1/images", headers={"Origin": "http://elsewhere.test"})
        assert "access-control-allow-origin" not in r.headers
        r = httpx.options(live.url + "/v1/images", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    app = create_app(engine=model.engine_dir, db=tmp_path / "b.sqlite3", model=model,
                     cors_origins=("http://elsewhere.test",))
    with LiveServer(app) as live:
        r = httpx.options(live.url + "/v1/images", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "http://elsewhere.test"
        r = httpx.options(live.url + "/v1/images", headers={**preflight, "Origin": "http://other.test"})
        assert r.headers.get("access-control-allow-origin") != "http://other.test"


def test_connections_have_tcp_nodelay_bug_delayed_ack() -> None:
    """Bug: the socket `samrt serve` bound was made with proto 0, so asyncio did not set
    TCP_NODELAY on its connections and each response waited ~40 ms for a delayed ACK."""
    import asyncio
    import socket

    from samrt.serve.cli import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn = transport.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(500):  # bounded: the server side sees the connection within a few loops
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(run())
    assert seen and seen[0] != 0
