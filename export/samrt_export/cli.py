"""``samrt export``: command-line front end of export_engine.

Importable without PyTorch: the heavy modules load inside main(), which turns a missing
export extra into a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from samrt.checkpoints import OFFICIAL_CHECKPOINTS, CheckpointDownloadError, download_checkpoint

from .config import ALL_CLI_MODEL_TYPES

INSTALL_HINT = "pip install 'samrt[export]'"


def _parser() -> argparse.ArgumentParser:
    from samrt._help import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="samrt export",
        description="Export a SAM model to an samrt engine directory (ONNX graphs + manifest).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--model-type",
        required=True,
        choices=ALL_CLI_MODEL_TYPES,
        help="SAM's vit_b, vit_l or vit_h, MobileSAM's mobile_sam, or SAM 2.1's "
        "sam2.1_hiera_*; tiny, mobile_sam_tiny_test and sam2.1_tiny_test are small models for "
        "tests (with --random-weights: they have no official checkpoint)",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="official SAM .pth, MobileSAM or SAM 2.1 .pt file (default: download Meta's checkpoint, once, into "
        "$SAMRT_CACHE_DIR/checkpoints, else $XDG_CACHE_HOME/samrt/checkpoints, else "
        "~/.cache/samrt/checkpoints)",
    )
    weights.add_argument(
        "--random-weights", action="store_true", help="seeded random weights (for tests)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="engine directory")
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default 17; when adding a variant, DIR's)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "both"),
        default="fp32",
        help="graphs to write: fp32 (every backend), fp16 (mixed precision for GPUs: "
        "TensorRT, ONNX Runtime CUDA) or both. Adding fp16 to an fp32 DIR exported from the "
        "same weights keeps its fp32 graphs and needs no --overwrite (default: fp32)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing DIR (and all its variants)"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (there is none either when stderr is not a terminal)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from samrt._progress import StatusLine

    args = _parser().parse_args(argv)
    if args.checkpoint is None and not args.random_weights:
        if args.model_type not in OFFICIAL_CHECKPOINTS:
            print(
                f"samrt export: error: {args.model_type} has no official checkpoint: pass "
                "--checkpoint FILE or --random-weights [--seed N]",
                file=sys.stderr,
            )
            return 2
        try:
            args.checkpoint = download_checkpoint(
                args.model_type, progress=_DownloadProgress(quiet=args.quiet)
            )
        except CheckpointDownloadError as e:
            print(f"samrt export: error: {e}", file=sys.stderr)
            return 1
    try:
        from .errors import ExportError
        from .export import engine_is_current, export_engine
    except ImportError as e:
        message = str(e) if INSTALL_HINT in str(e) else f"{e}; install with: {INSTALL_HINT}"
        print(f"samrt export: error: {message}", file=sys.stderr)
        return 1

    started = time.perf_counter()
    status = StatusLine("samrt export: ", quiet=args.quiet)
    try:
        if not args.overwrite and engine_is_current(
            args.model_type,
            out_dir=args.out,
            checkpoint=args.checkpoint,
            random_seed=args.seed if args.random_weights else None,
            opset=args.opset,
            precision=args.precision,
        ):
            weights = (
                f"random weights, seed {args.seed}" if args.random_weights
                else f"checkpoint {Path(args.checkpoint).name}"
            )
            print(
                f"{args.out} is up to date ({args.model_type}, {weights}, {args.precision}); "
                "--overwrite exports it again"
            )
            return 0
        engine_dir = export_engine(
            args.model_type,
            out_dir=args.out,
            checkpoint=args.checkpoint,
            random_seed=args.seed if args.random_weights else None,
            opset=args.opset,
            precision=args.precision,
            overwrite=args.overwrite,
            on_stage=status.show,
        )
        status.close()
    except ExportError as e:
        status.close()
        print(f"samrt export: error: {e}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in engine_dir.iterdir() if p.is_file())
    print(f"exported {args.model_type} to {engine_dir} ({size / 1e6:.1f} MB) in {elapsed:.1f} s")
    return 0


class _DownloadProgress:
    """Download progress on a terminal, every whole percent; silent in a pipe."""

    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled or not total:
            return
        percent = done * 100 // total
        if percent != self.shown:
            self.shown = percent
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\rdownloading checkpoint: {percent}% of {total / 1e6:.0f} MB{end}")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
