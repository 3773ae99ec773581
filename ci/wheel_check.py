"""Checks an installed samrt wheel from the outside: run it with the Python of the environment
the wheel was installed into, from any folder but the source tree.

Always: samrt (and samrt_export, its torch-side package) come from that environment's
site-packages, not from a source tree; the version agrees in every place it is stated (the
wheel's metadata, samrt.__version__, the compiled module's, `samrt --version`, and with
--pyproject the pyproject.toml it was built from); the compiled kernels answer (RLE round
trip, NMS); importing the runtime imports no torch.

--engine DIR adds the work itself, on that engine directory: `samrt info DIR`, a point
prediction through samrt.Predictor, everything mode through samrt.AutomaticMaskGenerator
and through `samrt segment`, which must agree on the number of masks.

--no-compiler asserts that no C or C++ compiler is on PATH (ci/wheel_smoke.sh runs it so:
the wheel must need none). cibuildwheel's test-command runs it without --engine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

import numpy as np

COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "cl")
SOURCE_TREE = Path(__file__).resolve().parent.parent


def fail(message: str) -> None:
    sys.exit(f"wheel_check: FAILED: {message}")


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def samrt_command() -> Path:
    scripts = Path(sysconfig.get_path("scripts"))
    command = scripts / ("samrt.exe" if os.name == "nt" else "samrt")
    check(command.is_file(), f"the wheel installed no samrt command in {scripts}")
    return command


def run_samrt(*args: str) -> str:
    result = subprocess.run(
        [str(samrt_command()), *args], capture_output=True, text=True, timeout=600, check=False
    )
    check(
        result.returncode == 0,
        f"samrt {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}",
    )
    return result.stdout


def check_no_compiler() -> None:
    found = {name: shutil.which(name) for name in COMPILERS}
    found = {name: path for name, path in found.items() if path is not None}
    check(not found, f"a compiler is on PATH: {found}")
    print(f"no compiler on PATH ({', '.join(COMPILERS)}: none found)")


def check_installed_location() -> None:
    import samrt
    import samrt._core

    site_dirs = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
    for label, file in (("samrt", samrt.__file__), ("samrt._core", samrt._core.__file__)):
        check(file is not None, f"{label} has no __file__")
        path = Path(str(file)).resolve()
        check(
            any(path.is_relative_to(site) for site in site_dirs),
            f"{label} was imported from {path}, not from site-packages ({sorted(site_dirs)})",
        )
        check(
            not path.is_relative_to(SOURCE_TREE),
            f"{label} was imported from the source tree ({path})",
        )
    spec = importlib.util.find_spec("samrt_export")  # found, not imported: it needs torch
    check(spec is not None and spec.origin is not None, "samrt_export is not installed")
    assert spec is not None and spec.origin is not None
    check(
        not Path(spec.origin).resolve().is_relative_to(SOURCE_TREE),
        f"samrt_export would be imported from the source tree ({spec.origin})",
    )
    print(f"samrt imported from {Path(str(samrt.__file__)).parent}")


def check_versions(pyproject: Path | None) -> str:
    import samrt
    import samrt._core

    versions = {
        "wheel metadata": importlib.metadata.version("samrt"),
        "samrt.__version__": samrt.__version__,
        "samrt._core.__version__": samrt._core.__version__,
        "samrt --version": run_samrt("--version").strip().removeprefix("samrt "),
    }
    if pyproject is not None:
        with pyproject.open("rb") as file:
            versions[str(pyproject)] = tomllib.load(file)["project"]["version"]
    check(len(set(versions.values())) == 1, f"the versions disagree: {versions}")
    version = versions["wheel metadata"]
    print(f"version {version} in every place: {', '.join(versions)}")
    return version


def check_kernels() -> None:
    import samrt
    from samrt.masks import batched_nms, decode_rle, encode_rle, rle_area

    rng = np.random.default_rng(0)
    masks = rng.random((3, 37, 53)) > 0.5
    rles = encode_rle(masks)
    check(isinstance(rles, list) and len(rles) == 3, f"encode_rle gave {type(rles)}")
    check(bool(np.array_equal(decode_rle(rles), masks)), "RLE round trip changed the masks")
    check(
        rle_area(rles).tolist() == masks.sum(axis=(1, 2)).tolist(),
        "rle_area disagrees with the masks' pixel counts",
    )
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    keep = batched_nms(
        boxes, np.array([0.9, 0.8, 0.7], dtype=np.float32), np.zeros(3, dtype=np.int64), 0.5
    )
    check(np.asarray(keep).tolist() == [0, 2], f"batched_nms kept {keep}, not [0, 2]")
    check(samrt.get_num_threads() >= 1, "the kernels' thread pool has no thread")
    print(f"kernels answer (RLE round trip, NMS; {samrt.get_num_threads()} threads)")


def check_engine(engine: Path, image_path: Path) -> None:
    import samrt
    from samrt.imageio import load_image
    from samrt.masks import decode_rle

    info = run_samrt("info", str(engine))
    check("verified" in info, f"samrt info verified no graph:\n{info}")
    print(f"samrt info {engine}: {len(info.splitlines())} lines, graphs verified")

    image = load_image(image_path)
    height, width = image.shape[:2]
    predictor = samrt.Predictor(engine)
    predictor.set_image(image)
    masks, scores, low_res = predictor.predict(
        point_coords=np.array([[width // 2, height // 2]]), point_labels=np.array([1])
    )
    check(
        masks.shape == (3, height, width) and masks.dtype == np.bool_,
        f"predict's masks are {masks.dtype} {masks.shape}, not bool (3, {height}, {width})",
    )
    check(scores.shape == (3,) and bool(np.isfinite(scores).all()), f"predict's scores: {scores}")
    check(low_res.shape == (3, 256, 256), f"predict's low-res logits are {low_res.shape}")
    print(
        f"predict on {image_path.name} ({width}x{height}) with {predictor.backend_name}: "
        f"3 masks, scores {[round(float(score), 3) for score in scores]}"
    )

    # Random-weights engines score below the official thresholds and give overlapping blobs:
    # every filter off, so each of the 4x4 grid's points keeps its 3 masks (unless one has a
    # predicted IoU <= 0), and those masks go through the kernels (RLE, boxes, areas).
    options = {
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
    }
    generator = samrt.AutomaticMaskGenerator(predictor, **options)
    records = generator.generate(image)
    stats = generator.last_stats
    check(
        stats is not None and stats.candidates == 4 * 4 * 3,
        f"generate had {stats and stats.candidates} candidates, not 48",
    )
    check(
        len(records) >= 1 and len(records) == stats.kept,
        f"generate gave {len(records)} masks ({stats})",
    )
    for record in records:
        check(
            record["segmentation"].shape == (height, width),
            f"a record's segmentation is {record['segmentation'].shape}",
        )
        check(record["area"] == int(record["segmentation"].sum()), "a record's area is wrong")
    print(f"generate: {len(records)} masks of {stats.candidates} candidates")

    with tempfile.TemporaryDirectory() as out:
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        run_samrt(
            "segment", str(image_path), "--engine", str(engine), "--out", out, "--quiet", *flags
        )
        written = json.loads((Path(out) / f"{image_path.name}.json").read_text())["annotations"]
    check(
        len(written) == len(records),
        f"samrt segment wrote {len(written)} masks, generate gave {len(records)}",
    )
    for ours, theirs in zip(records, written, strict=True):
        check(
            theirs["area"] == ours["area"] and theirs["bbox"] == list(ours["bbox"]),
            f"samrt segment's record {theirs['bbox']} differs from generate's {ours['bbox']}",
        )
        check(
            bool(np.array_equal(decode_rle(theirs["segmentation"]), ours["segmentation"])),
            "samrt segment wrote a mask that differs from generate's",
        )
    print(f"samrt segment: the same {len(records)} masks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pyproject", type=Path, help="the pyproject.toml the wheel was built from"
    )
    parser.add_argument(
        "--engine", type=Path, help="an engine directory to predict and generate on"
    )
    parser.add_argument(
        "--image",
        type=Path,
        default=SOURCE_TREE / "examples" / "dog.jpg",
        help="the photo for --engine",
    )
    parser.add_argument(
        "--no-compiler", action="store_true", help="fail if a C or C++ compiler is on PATH"
    )
    args = parser.parse_args()
    if args.no_compiler:
        check_no_compiler()
    check_installed_location()
    version = check_versions(args.pyproject)
    check_kernels()
    if args.engine is not None:
        check_engine(args.engine, args.image)
    heavy = sorted(
        name for name in ("torch", "torchvision", "segment_anything") if name in sys.modules
    )
    check(not heavy, f"the runtime imported {heavy}")
    print(f"wheel_check: samrt {version} OK")


if __name__ == "__main__":
    main()
