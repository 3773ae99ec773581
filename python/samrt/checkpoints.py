"""Meta's official SAM checkpoints: download once into a cache, verified by sha256.

The cache is ``$SAMRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/samrt``, else ``~/.cache/samrt``.
A download goes to ``NAME.part`` and is renamed only once its sha256 matches the published
value, so the cache never holds a truncated or altered checkpoint. An interrupted
download resumes from the ``.part`` file when the server supports byte ranges, and
restarts cleanly otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import SamrtError
from .manifest import sha256_file


@dataclass(frozen=True)
class OfficialCheckpoint:
    url: str
    # None where samrt knows no authoritative sha256 yet: such a checkpoint is not
    # downloaded (it could not be verified); download it yourself and pass --checkpoint.
    sha256: str | None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Published by Meta in the segment-anything README (files) and widely mirrored (sha256).
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "vit_h": OfficialCheckpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": OfficialCheckpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": OfficialCheckpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    # MobileSAM, the weights file of its official repository (ChaoningZhang/MobileSAM);
    # no sha256 is published for it.
    "mobile_sam": OfficialCheckpoint(
        "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt", None
    ),
    # SAM 2.1, the URLs of the sam2 repository's checkpoints/download_ckpts.sh. Meta
    # publishes no sha256 for them and samrt has not recorded one from an authoritative
    # source yet: not yet known.
    **{
        name: OfficialCheckpoint(f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{name}.pt", None)
        for name in ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large")
    },
}

_CHUNK = 1 << 20


class CheckpointDownloadError(SamrtError):
    """The checkpoint could not be downloaded (network, server, or a wrong hash)."""


def cache_dir() -> Path:
    if env := os.environ.get("SAMRT_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "samrt"


def download_checkpoint(
    model_type: str,
    *,
    directory: Path | None = None,
    source: OfficialCheckpoint | None = None,
    timeout: float = 30.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Returns the path of the verified official checkpoint for ``model_type``, downloading
    it first if the cache lacks it. ``source`` overrides the URL and hash (tests, mirrors);
    ``progress(bytes_done, bytes_total_or_None)`` is called as data arrives."""
    if source is None:
        try:
            source = OFFICIAL_CHECKPOINTS[model_type]
        except KeyError:
            raise ValueError(
                f"no official checkpoint for model type {model_type!r}; known: {', '.join(OFFICIAL_CHECKPOINTS)}"
            ) from None
    expected = source.sha256
    if expected is None:
        raise CheckpointDownloadError(
            f"samrt knows no sha256 of {source.file_name} yet, so it cannot verify a download; "
            f"download {source.url} yourself and pass --checkpoint FILE"
        )
    folder = (directory or cache_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / source.file_name
    with _exclusive(folder / f".{source.file_name}.lock"):
        if final.exists():
            if sha256_file(final) == expected:
                return final
            final.unlink()  # altered or from an older, broken samrt: fetch again
        partial = final.with_name(final.name + ".part")
        _fetch(source.url, partial, timeout, progress)
        actual = sha256_file(partial)
        if actual != expected:
            partial.unlink()
            raise CheckpointDownloadError(
                f"{source.url} has sha256 {actual[:16]}…, expected {expected[:16]}…; "
                "the download was corrupted or the file changed; try again, or pass --checkpoint FILE"
            )
        os.replace(partial, final)
    return final


def _fetch(url: str, partial: Path, timeout: float, progress: Callable[[int, int | None], None] | None) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already whole (or longer than the file): start over
            partial.unlink()
            return _fetch(url, partial, timeout, progress)
        raise CheckpointDownloadError(
            f"cannot download {url}: the server answered HTTP {e.code} {e.reason}; "
            "try again later, or download it yourself and pass --checkpoint FILE"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CheckpointDownloadError(
            f"cannot download {url} ({reason}): no network? download the checkpoint elsewhere "
            "and pass --checkpoint FILE"
        ) from None
    with response:
        resumed = response.status == 206
        mode = "ab" if resumed else "wb"  # a server that ignores Range sends the whole file
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        try:
            with open(partial, mode) as f:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, http.client.HTTPException) as e:
            raise CheckpointDownloadError(
                f"download of {url} broke off after {done} bytes ({e}); run the command again to resume"
            ) from None
    if total is not None and done != total:
        raise CheckpointDownloadError(
            f"download of {url} ended after {done} of {total} bytes; run the command again to resume"
        )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One download per checkpoint at a time, across processes."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
