"""Checkpoint download against a local HTTP server on 127.0.0.1 serving a generated file."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from samrt.checkpoints import CheckpointDownloadError, OfficialCheckpoint, cache_dir, download_checkpoint

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of generated "checkpoint"
GOOD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    mode = "good"  # good | truncate | error | no-range
    requests: list[dict[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers))
        if self.server.mode == "error":
            self.send_error(500, "boom")
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and self.server.mode != "no-range":
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.mode == "truncate":
            self.wfile.write(body[: len(body) // 3])
            self.server.mode = "good"  # the next attempt succeeds
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _source(server: _Server, sha: str = GOOD_SHA) -> OfficialCheckpoint:
    return OfficialCheckpoint(f"http://127.0.0.1:{server.server_address[1]}/sam_test.pth", sha)


def test_good_download_is_verified_and_cached(server: _Server, tmp_path: Path) -> None:
    path = download_checkpoint("vit_b", directory=tmp_path, source=_source(server))
    assert path.read_bytes() == PAYLOAD and path.name == "sam_test.pth"
    again = download_checkpoint("vit_b", directory=tmp_path, source=_source(server))
    assert again == path and len(server.requests) == 1  # served from the cache


def test_wrong_hash_keeps_nothing(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(CheckpointDownloadError, match="sha256"):
        download_checkpoint("vit_b", directory=tmp_path, source=_source(server, "0" * 64))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.endswith(".lock")) == []


def test_truncated_transfer_then_resume(server: _Server, tmp_path: Path) -> None:
    server.mode = "truncate"
    with pytest.raises(CheckpointDownloadError, match="resume"):
        download_checkpoint("vit_b", directory=tmp_path, source=_source(server))
    part = tmp_path / "checkpoints" / "sam_test.pth.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    path = download_checkpoint("vit_b", directory=tmp_path, source=_source(server))
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1]["Range"] == f"bytes={len(PAYLOAD) // 3}-"


def test_server_ignoring_range_restarts_cleanly(server: _Server, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "sam_test.pth.part").write_bytes(b"garbage from an older attempt")
    server.mode = "no-range"
    assert download_checkpoint("vit_b", directory=tmp_path, source=_source(server)).read_bytes() == PAYLOAD


def test_altered_cached_file_is_fetched_again(server: _Server, tmp_path: Path) -> None:
    path = download_checkpoint("vit_b", directory=tmp_path, source=_source(server))
    path.write_bytes(b"tampered")
    assert download_checkpoint("vit_b", directory=tmp_path, source=_source(server)).read_bytes() == PAYLOAD


def test_server_error(server: _Server, tmp_path: Path) -> None:
    server.mode = "error"
    with pytest.raises(CheckpointDownloadError, match="HTTP 500.*--checkpoint"):
        download_checkpoint("vit_b", directory=tmp_path, source=_source(server))


def test_no_network_says_how_to_pass_a_checkpoint(tmp_path: Path) -> None:
    closed = OfficialCheckpoint("http://127.0.0.1:9/sam_test.pth", GOOD_SHA)  # discard port: refused
    with pytest.raises(CheckpointDownloadError, match="no network.*--checkpoint FILE") as info:
        download_checkpoint("vit_b", directory=tmp_path, source=closed, timeout=5)
    assert "\n" not in str(info.value)


def test_cache_dir_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAMRT_CACHE_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("SAMRT_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "samrt"


def test_unknown_model_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vit_b"):
        download_checkpoint("vit_x", directory=tmp_path)
