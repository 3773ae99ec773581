"""``samrt serve``: the command line that runs the application under uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import ServeConfig, is_loopback

__all__ = ["listening_socket", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    from .._help import HelpFormatter
    from ..backends import BACKEND_NAMES

    p = argparse.ArgumentParser(prog="samrt serve", description="HTTP service for interactive segmentation",
                                formatter_class=HelpFormatter)
    p.add_argument("--engine", required=True, type=Path, help="engine directory (from `samrt export`)")
    p.add_argument("--images", type=Path, help="folder of images to annotate (the queue)")
    p.add_argument("--db", type=Path, help="SQLite file (default: <images>/.samrt/annotations.sqlite3, "
                   "or the user data folder)")
    p.add_argument("--uploads", type=Path, help="folder for uploaded images (default: next to the database)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (any but a loopback one needs --token)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one, printed at start)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every request but /healthz "
                   "(default: none, allowed only on a loopback --host)")
    p.add_argument("--token-file", type=Path, help="read the token from this file")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin requests from ORIGIN (repeatable; default: none)")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKEND_NAMES),
                   help="runtime that executes the graphs; auto picks the fastest that starts here")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"),
                   help="which exported graphs to run (fp16: GPU backends)")
    p.add_argument("--workers", type=int, default=2, help="inference threads, each with its own Predictor")
    p.add_argument("--queue-size", type=int, default=64, help="tasks that may wait; beyond it 503 + Retry-After")
    p.add_argument("--cache-mb", type=float, default=1024, help="memory for cached image embeddings")
    p.add_argument("--cache-dir", type=Path, help="also keep embeddings in this folder, across restarts")
    p.add_argument("--disk-cache-mb", type=float, default=4096, help="bound of --cache-dir")
    p.add_argument("--results-mb", type=float, default=256, help="memory for low-res logits kept for mask_input")
    p.add_argument("--prefetch", type=int, default=2, help="images after the current one encoded ahead")
    p.add_argument("--max-upload-mb", type=float, default=50, help="largest image upload accepted (413 beyond)")
    p.add_argument("--max-image-pixels", type=int, default=100_000_000,
                   help="largest image (width x height) decoded; 0: no limit")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="level of the service's log on stderr")
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    return p


class _JsonFormatter(logging.Formatter):
    _SKIP = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) for uvicorn (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on the connections of sockets
    # that say they are TCP; without it each response's second write (the body after the
    # headers) waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as e:
            print(f"samrt serve: error: cannot read --token-file: {e}", file=sys.stderr)
            return 2
        if not token:
            print(f"samrt serve: error: --token-file {args.token_file} is empty", file=sys.stderr)
            return 2
    if not is_loopback(args.host) and not token:
        print(
            f"samrt serve: error: binding {args.host} exposes the service beyond this machine; "
            "give --token (or --token-file), or bind 127.0.0.1",
            file=sys.stderr,
        )
        return 2

    handler = logging.StreamHandler(sys.stderr)
    if args.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)

    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        print(f"samrt serve needs FastAPI and uvicorn ({e}); install them with `pip install 'samrt[serve]'`",
              file=sys.stderr)
        return 1

    try:
        config = ServeConfig(
            engine=args.engine, images=args.images, db=args.db, uploads=args.uploads, backend=args.backend,
            precision=args.precision, token=token, cors_origins=tuple(args.cors_origin),
            cache_mb=args.cache_mb, cache_dir=args.cache_dir, disk_cache_mb=args.disk_cache_mb,
            results_mb=args.results_mb, workers=args.workers, queue_size=args.queue_size,
            prefetch=args.prefetch, max_upload_mb=args.max_upload_mb,
            max_image_pixels=args.max_image_pixels or None,
        )
        app = create_app(config)
    except (ValueError, OSError) as e:
        print(f"samrt serve: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the engine's and the database's own errors (SamrtError, StorageError)
        print(f"samrt serve: error: {e}", file=sys.stderr)
        return 1

    try:
        sock = listening_socket(args.host, args.port)
    except OSError as e:
        print(f"samrt serve: error: cannot bind {args.host}:{args.port}: {e}", file=sys.stderr)
        app.state.service.close()
        return 1
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    print(f"samrt serve: listening on http://{shown}:{port}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="on", timeout_graceful_shutdown=10)
    )
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
