"""The steps of the prepared GPU check (issue 17), which benchmarks/gpu/check.sh runs.

    check.py engine    --mode MODE --work DIR                 seeded checkpoint + engine (cached)
    check.py run       --mode MODE --work DIR --out DIR [--deadline EPOCH]
    check.py summarize --mode MODE --work DIR --out DIR       summary.json from the step files

MODE is ``gpu`` (vit_b, ONNX Runtime's CUDA provider, the official model on CUDA) or
``cpu-dry-run`` (the tiny model, the CPU provider, the official model on the CPU): the
same steps and the same files, only the provider, the model and the repeat counts differ.

``run`` writes, each as soon as it is done (atomically, so a time-out leaves whole files):
  step0_env.json       versions, providers, GPU (nvidia-smi), the setup stages' times
  step1_parity.json    samrt fp32 against the official SamPredictor, the CPU tests' tolerances
  step2_fp16.json      samrt fp16 against samrt fp32 (mask IoU >= FP16_MIN_MASK_IOU)
  step3_bench.json     set_image, predict_1, predict_low_res, predict_batch (64 prompts),
                       generate:
                       samrt fp32 and fp16 against the official fp32 and bf16 autocast
  step4_tensorrt.json  the TensorRT backend, or why it was skipped
and ``summarize`` (which check.sh always runs, also after a time-out) writes summary.json.

The tolerances are those of the CPU tests (tests/tolerances.py); the speed targets are
TARGETS below. Nothing here is a recorded number: every value is measured by this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # tolerances.py: the CPU tests' numbers

import tolerances

IMAGE = ROOT / "examples" / "dog.jpg"
SEED = 0
SCHEMA_VERSION = 1

STEP_FILES = {
    "env": "step0_env.json",
    "parity": "step1_parity.json",
    "fp16": "step2_fp16.json",
    "bench": "step3_bench.json",
    "tensorrt": "step4_tensorrt.json",
}
SUMMARY_FILE = "summary.json"

# The GPU targets of issue 17: samrt fp16 against the official PyTorch fp32 on the same GPU.
TARGETS = {
    "set_image": 2.0,
    "generate": 5.0,
}
CASES = ("set_image", "predict_1", "predict_low_res", "predict_batch", "generate")
# Share of an implementation's time for each case (the case stops repeating when it is spent).
CASE_SHARE = {
    "set_image": 0.2,
    "predict_1": 0.1,
    "predict_low_res": 0.1,
    "predict_batch": 0.2,
    "generate": 0.4,
}
# Kept for the steps after the benchmark: the summary, and TensorRT's build when it imports.
SUMMARY_RESERVE_S = 10.0
TENSORRT_RESERVE_S = 150.0
# An implementation's cases, one warm-up and one timed run each, need at least this.
MIN_IMPLEMENTATION_S = 5.0


class CheckError(RuntimeError):
    """A step could not run (not a failed comparison: those are results)."""


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    model_type: str
    backend: str  # samrt backend name
    device: str  # torch device of the official model
    warmup: int
    repeats: dict[str, int]
    points_per_side: int
    batch_prompts: int  # the predict_batch case's prompts (one point each)
    # Seconds the benchmark may take at most, whatever the deadline leaves.
    bench_cap_s: float


MODES = {
    "gpu": Mode(
        "gpu",
        "vit_b",
        "onnxruntime-cuda",
        "cuda",
        warmup=3,
        repeats={
            "set_image": 10,
            "predict_1": 30,
            "predict_low_res": 30,
            "predict_batch": 10,
            "generate": 3,
        },
        points_per_side=32,
        batch_prompts=64,
        bench_cap_s=240.0,
    ),
    "cpu-dry-run": Mode(
        "cpu-dry-run",
        "tiny",
        "onnxruntime-cpu",
        "cpu",
        warmup=1,
        repeats={
            "set_image": 2,
            "predict_1": 3,
            "predict_low_res": 3,
            "predict_batch": 2,
            "generate": 1,
        },
        # A CPU upscales every mask of a batch slowly (the official's 64 took 11 s on 2 cores).
        points_per_side=2,
        batch_prompts=4,
        bench_cap_s=60.0,
    ),
}


# ---------------------------------------------------------------------------------------
# Files


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON to ``path`` atomically and durably (a time-out or a crash
    leaves the old file or the new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(data), f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, Path):
        return str(value)
    return value


def log(text: str) -> None:
    print(f"[check {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------------------------
# The engine: a seeded random checkpoint, exported with fp32 and fp16 variants


def engine_paths(mode: Mode, work: Path) -> tuple[Path, Path]:
    base = work / f"{mode.model_type}-seed{SEED}"
    return base / "engine", base / "checkpoint.pth"


def make_engine(mode: Mode, work: Path) -> dict[str, Any]:
    """The engine directory (fp32 and fp16) and its checkpoint, made once per work folder:
    a rerun on the same machine finds them up to date."""
    from samrt_export import engine_is_current, export_engine, save_random_checkpoint

    engine, checkpoint = engine_paths(mode, work)
    start = time.perf_counter()
    if not checkpoint.is_file():
        log(f"saving the seeded random {mode.model_type} checkpoint")
        save_random_checkpoint(mode.model_type, SEED, checkpoint)
    reused = engine_is_current(
        mode.model_type, out_dir=engine, checkpoint=checkpoint, precision="both"
    )
    if not reused:
        log(f"exporting {mode.model_type} (fp32 and fp16) to {engine}")
        export_engine(
            mode.model_type,
            checkpoint=checkpoint,
            out_dir=engine,
            precision="both",
            overwrite=True,
            on_stage=lambda text: log(f"export: {text}"),
        )
    return {
        "engine": engine,
        "checkpoint": checkpoint,
        "reused": reused,
        "seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------
# Comparisons


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_prediction(ours: Any, theirs: Any, *, logits: bool) -> dict[str, Any]:
    """samrt's (masks, scores, low_res) against the official's, measured and held to the
    tolerances of tests/test_predictor_vs_official.py."""
    masks, scores, low_res = (np.asarray(x) for x in ours)
    o_masks, o_scores, o_low_res = (np.asarray(x) for x in theirs)
    shapes = masks.shape == o_masks.shape and scores.shape == o_scores.shape
    shapes = shapes and low_res.shape == o_low_res.shape
    result: dict[str, Any] = {
        "shapes": {
            "ours": [masks.shape, scores.shape, low_res.shape],
            "official": [o_masks.shape, o_scores.shape, o_low_res.shape],
        },
        "shapes_equal": shapes,
    }
    if not shapes:
        result["passed"] = False
        return result
    scale = max(1.0, float(np.abs(o_low_res).max()))
    score_diff = float(np.abs(scores - o_scores).max())
    low_res_diff = float(np.abs(low_res - o_low_res).max()) / scale
    result |= {
        "score_max_abs_diff": score_diff,
        "low_res_max_abs_diff_rel": low_res_diff,
        "logits_scale": scale,
    }
    passed = score_diff <= tolerances.PARITY_SCORE_ATOL
    passed = passed and low_res_diff <= tolerances.PARITY_LOW_RES_ATOL_REL
    if logits:
        logits_diff = float(np.abs(masks - o_masks).max()) / scale
        result["logits_max_abs_diff_rel"] = logits_diff
        passed = passed and masks.dtype == np.float32
        passed = passed and logits_diff <= tolerances.PARITY_LOGITS_ATOL_REL
        masks, o_masks = masks > 0, o_masks > 0
    else:
        passed = passed and masks.dtype == np.bool_
    ious = [mask_iou(a, b) for a, b in zip(masks, o_masks, strict=True)]
    result["mask_ious"] = ious
    result["min_mask_iou"] = min(ious) if ious else 1.0
    result["passed"] = bool(passed and result["min_mask_iou"] >= tolerances.PARITY_MIN_MASK_IOU)
    return result


def parity_tolerances() -> dict[str, float]:
    return {
        "embedding_atol_rel": tolerances.PARITY_EMBEDDING_ATOL_REL,
        "score_atol": tolerances.PARITY_SCORE_ATOL,
        "low_res_atol_rel": tolerances.PARITY_LOW_RES_ATOL_REL,
        "logits_atol_rel": tolerances.PARITY_LOGITS_ATOL_REL,
        "min_mask_iou": tolerances.PARITY_MIN_MASK_IOU,
    }


def image_prompts(image: np.ndarray) -> dict[str, dict[str, Any]]:
    """The cases of tests/test_predictor_vs_official.py, placed as fractions of the image."""
    h, w = image.shape[:2]

    def xy(fx: float, fy: float) -> list[float]:
        return [fx * w, fy * h]

    box = np.array([*xy(0.3, 0.25), *xy(0.7, 0.85)])
    return {
        "single_point_multimask": {
            "point_coords": np.array([xy(0.5, 0.47)]),
            "point_labels": np.array([1]),
            "multimask_output": True,
        },
        "single_point_single_mask": {
            "point_coords": np.array([xy(0.5, 0.47)]),
            "point_labels": np.array([1]),
            "multimask_output": False,
        },
        "fg_bg_points": {
            "point_coords": np.array([xy(0.5, 0.47), xy(0.85, 0.8)]),
            "point_labels": np.array([1, 0]),
        },
        "box": {"box": box, "multimask_output": False},
        "box_and_points": {
            "point_coords": np.array([xy(0.45, 0.7)]),
            "point_labels": np.array([0]),
            "box": box,
        },
        "no_prompt": {},
        "return_logits": {
            "point_coords": np.array([xy(0.6, 0.3)]),
            "point_labels": np.array([1]),
            "return_logits": True,
        },
    }


def refine_prompt(image: np.ndarray, low_res: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """A second click with the best mask of the first as mask_input (as an annotator does)."""
    h, w = image.shape[:2]
    return {
        "point_coords": np.array([[0.5 * w, 0.47 * h], [0.85 * w, 0.8 * h]]),
        "point_labels": np.array([1, 1]),
        "mask_input": low_res[int(np.argmax(scores))][None],
    }


# ---------------------------------------------------------------------------------------
# The official implementation


def official_sam(mode: Mode, checkpoint: Path) -> Any:
    from segment_anything import sam_model_registry

    if mode.model_type in sam_model_registry:
        sam = sam_model_registry[mode.model_type](checkpoint=str(checkpoint))
    else:  # tiny: built as tests/models.py builds it, from the exporter's configuration
        import importlib

        from samrt_export import TINY_CONFIG

        builder = importlib.import_module("segment_anything.build_sam")
        sam = builder._build_sam(
            encoder_embed_dim=TINY_CONFIG.encoder_embed_dim,
            encoder_depth=TINY_CONFIG.encoder_depth,
            encoder_num_heads=TINY_CONFIG.encoder_num_heads,
            encoder_global_attn_indexes=list(TINY_CONFIG.encoder_global_attn_indexes),
            checkpoint=str(checkpoint),
        )
    return sam.eval().to(mode.device)


OFFICIAL_BF16 = (
    "the official model with its image encoder and mask decoder run under "
    "torch.autocast(bfloat16), their outputs cast back to float32 so that the official "
    "predictor and mask generator run unchanged; the prompt encoder stays fp32"
)


def autocast_bf16(sam: Any, device_type: str) -> Any:
    """OFFICIAL_BF16: the official predictor and mask generator call .numpy() and
    torchvision's NMS on the decoder's outputs, which take no bfloat16."""
    import torch

    class Bf16(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            if hasattr(inner, "img_size"):
                self.img_size = inner.img_size  # read by SamPredictor and Sam.preprocess

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type, dtype=torch.bfloat16):
                out = self.inner(*args, **kwargs)
            if isinstance(out, tuple):
                return tuple(t.float() for t in out)
            return out.float()

    sam.image_encoder = Bf16(sam.image_encoder)
    sam.mask_decoder = Bf16(sam.mask_decoder)
    return sam


def official_predict(
    predictor: Any,
    *,
    point_coords: Any = None,
    point_labels: Any = None,
    box: Any = None,
    mask_input: Any = None,
    multimask_output: bool = True,
    return_logits: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SamPredictor.predict, with the outputs cast to float32 before they reach numpy
    (a no-op in fp32; under autocast numpy has no bfloat16)."""
    import torch

    device = predictor.device
    coords = labels = boxes = masks = None
    if point_coords is not None:
        c = predictor.transform.apply_coords(
            np.asarray(point_coords, dtype=np.float64), predictor.original_size
        )
        coords = torch.as_tensor(c, dtype=torch.float, device=device)[None]
        labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=device)[None]
    if box is not None:
        b = predictor.transform.apply_boxes(
            np.asarray(box, dtype=np.float64), predictor.original_size
        )
        boxes = torch.as_tensor(b, dtype=torch.float, device=device)[None, :]
    if mask_input is not None:
        masks = torch.as_tensor(np.asarray(mask_input), dtype=torch.float, device=device)[None]
    with torch.inference_mode():
        out_masks, scores, low_res = predictor.predict_torch(
            coords, labels, boxes, masks, multimask_output, return_logits=return_logits
        )
    return (
        out_masks[0].float().cpu().numpy() if return_logits else out_masks[0].cpu().numpy(),
        scores[0].float().cpu().numpy(),
        low_res[0].float().cpu().numpy(),
    )


def official_predict_batch(predictor: Any, coords: np.ndarray, labels: np.ndarray) -> Any:
    import torch

    device = predictor.device
    c = predictor.transform.apply_coords(coords, predictor.original_size)
    with torch.inference_mode():
        masks, scores, low_res = predictor.predict_torch(
            torch.as_tensor(c, dtype=torch.float, device=device),
            torch.as_tensor(labels, dtype=torch.int, device=device),
        )
    return masks.cpu().numpy(), scores.float().cpu().numpy(), low_res.float().cpu().numpy()


def official_low_res(predictor: Any, coords: np.ndarray, labels: np.ndarray) -> Any:
    """The official model's prompt encoder and mask decoder, as predict_torch runs them,
    without its upscaling (postprocess_masks): what samrt's predict_low_res returns."""
    import torch

    model, device = predictor.model, predictor.device
    c = predictor.transform.apply_coords(coords, predictor.original_size)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=(
                torch.as_tensor(c, dtype=torch.float, device=device),
                torch.as_tensor(labels, dtype=torch.int, device=device),
            ),
            boxes=None,
            masks=None,
        )
        low_res, scores = model.mask_decoder(
            image_embeddings=predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    return scores.float().cpu().numpy(), low_res.float().cpu().numpy()


def synchronize(mode: Mode) -> None:
    if mode.device == "cuda":
        import torch

        torch.cuda.synchronize()


@contextmanager
def strict_fp32(mode: Mode) -> Iterator[dict[str, Any]]:
    """PyTorch without TF32 (cuDNN's convolutions use it by default): the reference of a
    parity check computes in fp32."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield {"torch_matmul_allow_tf32": False, "torch_cudnn_allow_tf32": False}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def release(mode: Mode) -> None:
    gc.collect()
    if "torch" in sys.modules and mode.device == "cuda":
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# GPU memory, from nvidia-smi


class GpuMemory:
    """Samples the GPU's used memory with nvidia-smi (every ``period`` seconds, in a
    thread: often enough for a case's peak, seldom enough not to load the timed calls)
    while a block runs: this process's (when nvidia-smi lists processes) and the
    whole device's (the machine is ours alone)."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.smi = shutil.which("nvidia-smi")

    def read(self) -> dict[str, float | None]:
        if self.smi is None:
            return {"device_mib": None, "process_mib": None}
        device = process = None
        try:
            out = subprocess.run(
                [self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            device = (
                float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.split() else None
            )
            out = subprocess.run(
                [self.smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            for line in out.stdout.splitlines():
                fields = [f.strip() for f in line.split(",")]
                if len(fields) == 2 and fields[0] == str(os.getpid()):
                    process = float(fields[1])
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        return {"device_mib": device, "process_mib": process}

    @contextmanager
    def sampled(self) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"source": "nvidia-smi" if self.smi else None}
        if self.smi is None:
            record["reason"] = "nvidia-smi not found"
            yield record
            return
        before = self.read()
        peaks: dict[str, float | None] = dict(before)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.period):
                for key, value in self.read().items():
                    if value is not None:
                        peaks[key] = max(value, peaks[key] or 0.0)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield record
        finally:
            stop.set()
            thread.join()
            for key, value in self.read().items():
                if value is not None:
                    peaks[key] = max(value, peaks[key] or 0.0)
            record |= {
                "before_device_mib": before["device_mib"],
                "peak_device_mib": peaks["device_mib"],
                "peak_device_mib_above_before": None
                if before["device_mib"] is None or peaks["device_mib"] is None
                else peaks["device_mib"] - before["device_mib"],
                "before_process_mib": before["process_mib"],
                "peak_process_mib": peaks["process_mib"],
                "period_s": self.period,
            }


# ---------------------------------------------------------------------------------------
# Steps


class Run:
    def __init__(self, mode: Mode, work: Path, out: Path, deadline: float) -> None:
        self.mode = mode
        self.work = work
        self.out = out
        self.deadline = deadline
        self.engine, self.checkpoint = engine_paths(mode, work)
        from samrt.imageio import load_image

        self.image = load_image(IMAGE)
        self.cuda_preloaded: str | None = None

    def left(self) -> float:
        return self.deadline - time.time()

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        log(f"step {name}: start ({self.left():.0f} s left)")
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - a broken step is a result; the others still run
            result = {
                "status": "error",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        result = {
            "step": name,
            "mode": self.mode.name,
            **result,
            "seconds": time.perf_counter() - start,
            "finished_at": time.time(),
        }
        write_json(self.out / STEP_FILES[name], result)
        log(f"step {name}: {result.get('status')} in {result['seconds']:.1f} s")
        release(self.mode)
        return result

    # -- step 0 --------------------------------------------------------------------------

    def env(self) -> dict[str, Any]:
        from importlib import metadata

        import onnxruntime

        libraries: dict[str, str] = {}
        for dist in (
            "numpy",
            "onnxruntime",
            "onnxruntime-gpu",
            "onnx",
            "torch",
            "torchvision",
            "segment-anything",
            "pillow",
            "samrt",
        ):
            try:
                libraries[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        import samrt

        env: dict[str, Any] = {
            "status": "done",
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "libraries": libraries,
            "samrt_file": samrt.__file__,
            "onnxruntime": {
                "version": onnxruntime.__version__,
                "file": onnxruntime.__file__,
                "providers": onnxruntime.get_available_providers(),
            },
            "engine": str(self.engine),
            "image": {
                "name": IMAGE.name,
                "height": self.image.shape[0],
                "width": self.image.shape[1],
            },
            "mode_config": dataclasses.asdict(self.mode),
            "setup_stages": read_stages(self.work),
            "nvidia_smi": nvidia_smi_text(),
        }
        return env

    # -- the backend, started as a user would (before torch is imported here) -------------

    def samrt_model(self, precision: str, backend: str | None = None) -> Any:
        import samrt
        from samrt.errors import BackendUnavailableError

        name = backend or self.mode.backend
        try:
            return samrt.Model(self.engine, name, precision=precision)
        except BackendUnavailableError as first:
            if name != "onnxruntime-cuda" or self.cuda_preloaded is not None:
                raise
            # ORT finds the CUDA and cuDNN libraries of the nvidia-* wheels only once they are
            # loaded; preload_dlls() does that (ONNX Runtime >= 1.21). Recorded in the step.
            import onnxruntime

            preload = getattr(onnxruntime, "preload_dlls", None)
            if preload is None:
                raise
            preload()
            self.cuda_preloaded = f"needed onnxruntime.preload_dlls() after: {first}"
            return samrt.Model(self.engine, name, precision=precision)

    # -- step 1 --------------------------------------------------------------------------

    def parity(self) -> dict[str, Any]:
        import samrt

        ours = samrt.Predictor(self.samrt_model("fp32"))
        ours.set_image(self.image)
        import torch  # after the backend started, so that it started on its own
        from segment_anything import SamPredictor

        with strict_fp32(self.mode) as torch_flags:
            official = SamPredictor(official_sam(self.mode, self.checkpoint))
            with torch.inference_mode():
                official.set_image(self.image)
            result = compare_with_official(ours, official, self.image)
        result |= {
            "backend": ours.backend_name,
            "precision": "fp32",
            "official_device": self.mode.device,
            "official_torch_flags": torch_flags,
            "tolerances": parity_tolerances(),
            "cuda_libraries_preloaded": self.cuda_preloaded,
            "provider_options": provider_options(ours.model),
        }
        return result

    # -- step 2 --------------------------------------------------------------------------

    def fp16(self) -> dict[str, Any]:
        import samrt

        fp32 = samrt.Predictor(self.samrt_model("fp32"))
        fp16 = samrt.Predictor(self.samrt_model("fp16"))
        fp32.set_image(self.image)
        fp16.set_image(self.image)
        e16, e32 = fp16.get_image_embedding(), fp32.get_image_embedding()
        emb_rel = float(np.abs(e16 - e32).max() / np.abs(e32).max())
        prompts = image_prompts(self.image)
        prompts.pop("return_logits")
        _, scores, low_res = fp32.predict(**prompts["single_point_multimask"])
        refine = refine_prompt(self.image, low_res, scores)
        prompts["mask_input_multimask_False"] = {**refine, "multimask_output": False}
        prompts["mask_input_multimask_True"] = {**refine, "multimask_output": True}
        cases: dict[str, Any] = {}
        for name, prompt in prompts.items():
            m16, s16, _ = fp16.predict(**prompt)
            m32, s32, _ = fp32.predict(**prompt)
            ious = [mask_iou(a, b) for a, b in zip(m16, m32, strict=True)]
            score_diff = float(np.abs(s16 - s32).max())
            cases[name] = {
                "mask_ious": ious,
                "min_mask_iou": min(ious),
                "score_max_abs_diff": score_diff,
                "passed": m16.shape == m32.shape
                and min(ious) >= tolerances.FP16_MIN_MASK_IOU
                and score_diff <= tolerances.FP16_SCORE_ATOL,
            }
        emb_ok = emb_rel <= tolerances.FP16_MAX_EMBEDDING_REL_DIFF
        passed = emb_ok and all(c["passed"] for c in cases.values())
        return {
            "status": "passed" if passed else "failed",
            "backend": fp16.backend_name,
            "embedding_max_rel_diff": emb_rel,
            "embedding_passed": emb_ok,
            "min_mask_iou": min(c["min_mask_iou"] for c in cases.values()),
            "cases": cases,
            "tolerances": {
                "min_mask_iou": tolerances.FP16_MIN_MASK_IOU,
                "score_atol": tolerances.FP16_SCORE_ATOL,
                "embedding_max_rel_diff": tolerances.FP16_MAX_EMBEDDING_REL_DIFF,
            },
        }

    # -- step 3 --------------------------------------------------------------------------

    def bench(self) -> dict[str, Any]:
        """Each implementation gets an equal share of the benchmark's time (bench_cap_s, or
        less when the deadline is nearer); a case stops repeating when its part of that
        share is spent, after one timed run at least. An implementation is left out only
        when the deadline itself is too near. The file is rewritten after each
        implementation, so that a time-out keeps the ones done."""
        reserve = SUMMARY_RESERVE_S + (TENSORRT_RESERVE_S if tensorrt_importable()[0] else 0.0)
        budget = max(0.0, min(self.mode.bench_cap_s, self.left() - reserve))
        soft_end = time.time() + budget
        hard_end = self.deadline - reserve
        memory = GpuMemory()
        implementations = [
            ("samrt", "fp32"),
            ("samrt", "fp16"),
            ("official", "fp32"),
            ("official", "bf16"),
        ]
        rows: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        started = time.time()

        def report(status: str) -> dict[str, Any]:
            speedups(rows)
            return {
                "status": status,
                "image": {
                    "name": IMAGE.name,
                    "height": self.image.shape[0],
                    "width": self.image.shape[1],
                },
                "points_per_side": self.mode.points_per_side,
                "batch_prompts": self.mode.batch_prompts,
                "warmup": self.mode.warmup,
                "budget_s": budget,
                "results": rows,
                "skipped": skipped,
                "targets": evaluate_targets(rows, self.mode),
                "timing": "wall clock per call, median (and p90) of the timed runs after the "
                "warm-up; "
                "every call returns its results on the host (the official's set_image is "
                "followed by torch.cuda.synchronize)",
                "official_bf16": OFFICIAL_BF16,
            }

        for i, (kind, precision) in enumerate(implementations):
            label = f"{kind} {precision}"
            if hard_end - time.time() < MIN_IMPLEMENTATION_S:
                skipped[label] = f"the deadline is {hard_end - time.time():.0f} s away"
                continue
            share = max(0.0, soft_end - time.time()) / (len(implementations) - i)
            log(f"bench: {label} ({share:.0f} s)")
            try:
                with memory.sampled() as mem:
                    impl_rows, info = self._bench_one(kind, precision, share)
            except Exception as e:  # noqa: BLE001 - one implementation's failure is recorded
                skipped[label] = f"error: {type(e).__name__}: {e}"
                release(self.mode)
                continue
            for row in impl_rows:
                row["gpu_memory"] = mem
                row |= info
            rows += impl_rows
            release(self.mode)
            if i + 1 < len(implementations):
                partial = report("in progress: a time-out stopped the benchmark here")
                partial |= {
                    "step": "bench",
                    "mode": self.mode.name,
                    "seconds": time.time() - started,
                    "finished_at": time.time(),
                }
                write_json(self.out / STEP_FILES["bench"], partial)
        return report("done" if not skipped else "partial")

    def _bench_one(
        self, kind: str, precision: str, seconds: float
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        image, mode = self.image, self.mode
        h, w = image.shape[:2]
        rng = np.random.default_rng(0)
        one = (np.array([[0.5 * w, 0.47 * h]]), np.array([1]))
        batch_coords = rng.uniform([0, 0], [w - 1, h - 1], size=(mode.batch_prompts, 1, 2))
        batch_labels = np.ones((mode.batch_prompts, 1))
        info: dict[str, Any] = {}
        if kind == "samrt":
            import samrt

            predictor = samrt.Predictor(self.samrt_model(precision))
            # Random weights keep few masks through the official thresholds: the stats say
            # how many candidates each filter dropped.
            generator = samrt.AutomaticMaskGenerator(
                predictor, points_per_side=mode.points_per_side
            )
            label = f"samrt {predictor.backend_name}"
            cases: dict[str, Callable[[], Any]] = {
                "set_image": lambda: predictor.set_image(image),
                "predict_1": lambda: predictor.predict(*one),
                "predict_low_res": lambda: predictor.predict_low_res(one[0][None], one[1][None]),
                "predict_batch": lambda: predictor.predict_batch(batch_coords, batch_labels),
                "generate": lambda: generator.generate(image),
            }
            predictor.set_image(image)
        else:
            import torch
            from segment_anything import SamAutomaticMaskGenerator, SamPredictor

            sam = official_sam(mode, self.checkpoint)
            if precision == "bf16":
                sam = autocast_bf16(sam, mode.device)
            official = SamPredictor(sam)
            official_generator = SamAutomaticMaskGenerator(
                sam, points_per_side=mode.points_per_side
            )
            label = f"official ({mode.device})"
            info["torch_flags"] = {
                "torch_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            }

            def set_image() -> None:
                with torch.inference_mode():
                    official.set_image(image)
                synchronize(mode)

            def generate() -> Any:
                with torch.inference_mode():
                    return official_generator.generate(image)

            cases = {
                "set_image": set_image,
                "predict_1": lambda: official_predict(
                    official, point_coords=one[0], point_labels=one[1]
                ),
                "predict_low_res": lambda: official_low_res(official, one[0][None], one[1][None]),
                "predict_batch": lambda: official_predict_batch(
                    official, batch_coords, batch_labels
                ),
                "generate": generate,
            }
            set_image()
        rows = []
        start = time.time()
        for case, fn in cases.items():
            # What this implementation's earlier cases did not use carries over to the later ones.
            share_left = sum(CASE_SHARE[c] for c in CASES[CASES.index(case) :])
            case_s = (seconds - (time.time() - start)) * CASE_SHARE[case] / share_left
            times, last = timed(fn, mode.warmup, mode.repeats[case], case_s)
            row = {
                "implementation": label,
                "kind": kind,
                "precision": precision,
                "case": case,
                "runs": len(times),
                "median_s": statistics.median(times),
                "p90_s": float(np.percentile(times, 90)),
                "min_s": min(times),
                "times_s": times,
            }
            if case == "generate":
                row["masks"] = len(last)
                if kind == "samrt" and generator.last_stats is not None:
                    row["generate_stats"] = dataclasses.asdict(generator.last_stats)
            rows.append(row)
        return rows, info

    # -- step 4 --------------------------------------------------------------------------

    def tensorrt(self) -> dict[str, Any]:
        importable, reason = tensorrt_importable()
        if not importable:
            return {"status": "skipped", "reason": f"tensorrt not importable: skipped ({reason})"}
        timeout = self.left() - SUMMARY_RESERVE_S
        if timeout < 30:
            return {
                "status": "skipped",
                "reason": f"tensorrt importable, but only {self.left():.0f} s left",
            }
        start = time.perf_counter()
        build = subprocess.run(
            [sys.executable, "-m", "samrt.trt_build", str(self.engine), "--precision", "fp32"],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        build_s = time.perf_counter() - start
        if build.returncode != 0:
            return {
                "status": "error",
                "tensorrt_version": reason,
                "build_s": build_s,
                "error": f"samrt build exited {build.returncode}",
                "output_tail": (build.stdout + build.stderr)[-4000:],
            }
        import samrt
        import torch
        from segment_anything import SamPredictor

        ours = samrt.Predictor(self.samrt_model("fp32", backend="tensorrt"))
        ours.set_image(self.image)
        with strict_fp32(self.mode):
            official = SamPredictor(official_sam(self.mode, self.checkpoint))
            with torch.inference_mode():
                official.set_image(self.image)
            result = compare_with_official(ours, official, self.image)
        h, w = self.image.shape[:2]
        one = (np.array([[0.5 * w, 0.47 * h]]), np.array([1]))
        timings = {}
        for case, fn in (
            ("set_image", lambda: ours.set_image(self.image)),
            ("predict_1", lambda: ours.predict(*one)),
        ):
            times, _ = timed(fn, self.mode.warmup, self.mode.repeats[case], 20.0)
            timings[case] = {"runs": len(times), "median_s": statistics.median(times)}
        return {
            **result,
            "backend": ours.backend_name,
            "tensorrt_version": reason,
            "build_s": build_s,
            "timings": timings,
            "tolerances": parity_tolerances(),
        }


def compare_with_official(ours: Any, official: Any, image: np.ndarray) -> dict[str, Any]:
    """Every case of image_prompts plus a mask-input refinement and a mask input alone,
    samrt's Predictor against the official SamPredictor with the same image set."""
    e_ours = ours.get_image_embedding()
    e_theirs = official.get_image_embedding().float().cpu().numpy()
    emb_shapes = e_ours.shape == e_theirs.shape
    emb_diff = (
        float(np.abs(e_ours - e_theirs).max() / np.abs(e_theirs).max()) if emb_shapes else None
    )
    emb_ok = emb_diff is not None and emb_diff <= tolerances.PARITY_EMBEDDING_ATOL_REL
    sizes_ok = ours.input_size == tuple(official.input_size) and ours.original_size == tuple(
        official.original_size
    )
    cases: dict[str, Any] = {}
    prompts = image_prompts(image)
    for name, prompt in prompts.items():
        cases[name] = compare_prediction(
            ours.predict(**prompt),
            official_predict(official, **prompt),
            logits=prompt.get("return_logits", False),
        )
    first_ours = ours.predict(**prompts["single_point_multimask"])
    refine = refine_prompt(image, first_ours[2], first_ours[1])
    cases["mask_input_from_previous_call"] = compare_prediction(
        ours.predict(**refine, multimask_output=False),
        official_predict(official, **refine, multimask_output=False),
        logits=False,
    )
    alone = {"mask_input": refine["mask_input"]}
    cases["mask_input_alone"] = compare_prediction(
        ours.predict(**alone), official_predict(official, **alone), logits=False
    )
    passed = emb_ok and sizes_ok and all(c["passed"] for c in cases.values())
    return {
        "status": "passed" if passed else "failed",
        "embedding_max_abs_diff_rel": emb_diff,
        "embedding_passed": emb_ok,
        "sizes_equal": sizes_ok,
        "min_mask_iou": min(c.get("min_mask_iou", 0.0) for c in cases.values()),
        "cases": cases,
    }


def timed(
    fn: Callable[[], Any], warmup: int, repeats: int, seconds: float
) -> tuple[list[float], Any]:
    """Wall-clock seconds of up to ``repeats`` calls after ``warmup`` untimed ones; stops
    repeating once ``seconds`` are spent (at least one timed call)."""
    end = time.time() + seconds
    result = None
    for _ in range(warmup):
        result = fn()
        if time.time() > end:
            break
    times: list[float] = []
    while len(times) < repeats and (not times or time.time() < end):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def speedups(rows: list[dict[str, Any]]) -> None:
    base = {(r["precision"], r["case"]): r["median_s"] for r in rows if r["kind"] == "official"}
    for r in rows:
        if r["kind"] == "samrt":
            for p in ("fp32", "bf16"):
                b = base.get((p, r["case"]))
                r[f"speedup_vs_official_{p}"] = None if b is None else b / r["median_s"]


def evaluate_targets(rows: list[dict[str, Any]], mode: Mode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case, target in TARGETS.items():
        row = next(
            (
                r
                for r in rows
                if r["kind"] == "samrt" and r["precision"] == "fp16" and r["case"] == case
            ),
            None,
        )
        ratio = None if row is None else row.get("speedup_vs_official_fp32")
        out[f"{case}_samrt_fp16_vs_official_fp32"] = {
            "ratio": ratio,
            "target": target,
            "met": None if ratio is None else ratio >= target,
            "applies": mode.name == "gpu",
        }
    return out


def tensorrt_importable() -> tuple[bool, str]:
    try:
        import tensorrt
    except Exception as e:  # noqa: BLE001 - any failure to import means: not available
        return False, f"{type(e).__name__}: {e}"
    return True, str(getattr(tensorrt, "__version__", "unknown version"))


def provider_options(model: Any) -> Any:
    """The ONNX Runtime provider options of the encoder's session (diagnostics: TF32 and
    cuDNN's algorithm search on CUDA), when the backend exposes its sessions."""
    sessions = getattr(model.backend, "_sessions", None)
    if not sessions:
        return None
    session = next(iter(sessions.values()))
    return session.get_provider_options()


def nvidia_smi_text() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [
                smi,
                "--query-gpu=name,memory.total,memory.used,driver_version,clocks.sm",
                "--format=csv",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    return out.stdout.strip() or out.stderr.strip()


def read_stages(work: Path) -> list[dict[str, Any]]:
    """The setup stages check.sh recorded (name, seconds, status), in order."""
    path = work / "stages.tsv"
    if not path.is_file():
        return []
    stages = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            stages.append(
                {
                    "stage": fields[0],
                    "seconds": float(fields[1]),
                    "status": fields[2],
                    "detail": fields[3] if len(fields) > 3 else "",
                }
            )
    return stages


# ---------------------------------------------------------------------------------------
# The summary


def summarize(mode: Mode, work: Path, out: Path) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for name, file in STEP_FILES.items():
        path = out / file
        if not path.is_file():
            steps[name] = {
                "status": "missing",
                "file": file,
                "reason": "not finished (a failed setup stage or the time budget: see check.log)",
            }
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            steps[name] = {"status": "unreadable", "file": file, "reason": str(e)}
            continue
        brief = {"status": data.get("status"), "file": file, "seconds": data.get("seconds")}
        for key in (
            "error",
            "reason",
            "backend",
            "min_mask_iou",
            "embedding_max_abs_diff_rel",
            "embedding_max_rel_diff",
            "targets",
            "skipped",
        ):
            if key in data:
                brief[key] = data[key]
        if name == "bench":
            brief["medians_s"] = {
                f"{r['implementation']} {r['precision']} {r['case']}": r["median_s"]
                for r in data.get("results", [])
            }
        steps[name] = brief
    stages = read_stages(work)
    failed_stage = next((s for s in stages if s["status"] != "ok"), None)
    targets = steps.get("bench", {}).get("targets", {})
    checks_passed = all(steps.get(s, {}).get("status") == "passed" for s in ("parity", "fp16"))
    finished = all(
        s.get("status") not in ("missing", "unreadable", "error") for s in steps.values()
    )
    targets_met = all(t.get("met") is True for t in targets.values()) if targets else False
    problems = (
        [f"setup stage {failed_stage['stage']} {failed_stage['status']}"] if failed_stage else []
    )
    problems += [
        f"step {name} {s.get('status')}"
        for name, s in steps.items()
        if s.get("status") not in ("done", "passed", "skipped")
    ]
    problems += [
        f"bench: {label} not run ({why})"
        for label, why in steps.get("bench", {}).get("skipped", {}).items()
    ]
    if mode.name == "gpu":
        problems += [
            f"target {name}: {t.get('ratio')} < {t.get('target')}"
            for name, t in targets.items()
            if t.get("met") is not True
        ]
    summary = {
        "schema_version": SCHEMA_VERSION,
        "mode": mode.name,
        "model_type": mode.model_type,
        "all_steps_finished": finished and failed_stage is None,
        "parity_and_fp16_passed": checks_passed,
        "targets_apply": mode.name == "gpu",
        "targets_met": targets_met if mode.name == "gpu" else None,
        "ok": not problems,
        "problems": problems,
        "failed_setup_stage": failed_stage,
        "setup_stages": stages,
        "steps": steps,
        "written_at": time.time(),
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("engine", "run", "summarize"))
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--work", type=Path, required=True, help="work folder (engine, stages.tsv)")
    parser.add_argument("--out", type=Path, help="where the JSON files go (run, summarize)")
    parser.add_argument("--deadline", type=float, help="epoch seconds by which run must end")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    if args.command == "engine":
        made = make_engine(mode, args.work)
        log(
            f"engine {'up to date' if made['reused'] else 'exported'} in "
            f"{made['seconds']:.1f} s: {made['engine']}"
        )
        return 0
    if args.out is None:
        parser.error(f"{args.command} needs --out")
    if args.command == "summarize":
        summary = summarize(mode, args.work, args.out)
        log(
            f"summary: ok={summary['ok']} "
            + ", ".join(f"{name} {s['status']}" for name, s in summary["steps"].items())
        )
        return 0 if summary["ok"] else 1
    deadline = args.deadline if args.deadline is not None else time.time() + 600
    run = Run(mode, args.work, args.out, deadline)
    if not run.engine.joinpath("manifest.json").is_file():
        raise CheckError(f"no engine at {run.engine}: run `check.py engine` first")
    run.step("env", run.env)
    run.step("parity", run.parity)
    run.step("fp16", run.fp16)
    run.step("bench", run.bench)
    run.step("tensorrt", run.tensorrt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
