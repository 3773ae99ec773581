"""Writes the seed corpus of every fuzz target under OUTDIR/<target>/ (deterministic).

The structured targets decode their input with libFuzzer's FuzzedDataProvider, which
reads raw bytes (mask pixels) from the front and integers (sizes, modes) from the back:
their seeds are blob-like masks followed by random tails, plus plain random inputs. The
RLE parser gets COCO counts strings made by an independent encoder of the format, and a
few edge cases.

Usage: python3 fuzz/make_seeds.py OUTDIR
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

TARGETS = ("nms", "postprocess", "regions", "rle", "rle_decompress", "thread_pool")


def blob_mask(rng: random.Random, h: int, w: int) -> bytes:
    """A 0/1 mask of a few filled rectangles and noise pixels, row-major."""
    pixels = bytearray(h * w)
    for _ in range(rng.randint(1, 4)):
        y0, x0 = rng.randrange(h), rng.randrange(w)
        y1, x1 = rng.randint(y0, h), rng.randint(x0, w)
        for y in range(y0, y1):
            pixels[y * w + x0 : y * w + x1] = b"\x01" * (x1 - x0)
    for _ in range(rng.randint(0, 8)):
        pixels[rng.randrange(h * w)] ^= 1
    return bytes(pixels)


def compress_counts(counts: list[int]) -> bytes:
    """COCO's counts string, written from the format description."""
    out = bytearray()
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        while True:
            digit = value & 0x1F
            value >>= 5
            more = value != -1 if digit & 0x10 else value != 0
            out.append(48 + digit + (0x20 if more else 0))
            if not more:
                break
    return bytes(out)


def main() -> None:
    outdir = Path(sys.argv[1])
    rng = random.Random(20240601)
    for target in TARGETS:
        (outdir / target).mkdir(parents=True, exist_ok=True)

    def write(target: str, name: str, data: bytes) -> None:
        (outdir / target / name).write_bytes(data)

    for target in ("nms", "postprocess", "thread_pool", "regions", "rle"):
        for k, length in enumerate((8, 32, 128, 512, 2048)):
            write(target, f"random_{k}", rng.randbytes(length))
    for target in ("regions", "rle"):
        for k in range(6):
            h, w = rng.randint(1, 64), rng.randint(1, 64)
            write(
                target, f"blobs_{k}", blob_mask(rng, h, w) * rng.randint(1, 2) + rng.randbytes(16)
            )

    write("rle_decompress", "empty", b"")
    edge_cases = [[0], [1], [0, 5], [4294967295], [0, 4294967295], [3, 0, 0, 7, 1, 4294967290]]
    for k, counts in enumerate(edge_cases):
        write("rle_decompress", f"edge_{k}", compress_counts(counts))
    for k in range(12):
        counts = [rng.randint(0, 300) for _ in range(rng.randint(1, 40))]
        write("rle_decompress", f"counts_{k}", compress_counts(counts))
    write("rle_decompress", "long_group", b"P" * 11 + b"0")  # 12 characters: the limit


if __name__ == "__main__":
    main()
