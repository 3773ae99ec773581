"""The exporter's self-check: ONNX Runtime against the official PyTorch SAM on fixed inputs.

The encoder runs one synthetic photo-like image (shapes, gradients, noise, letterboxed as
Sam.preprocess pads it). The decoder runs the torch embeddings of that image with the
prompt kinds SamPredictor.predict_torch takes: points, points with background, a box, a
box with points, a mask input, and several prompts at once.

fp32 graphs must reproduce torch up to summation order. fp16 graphs cannot: they are held
to what a user sees, the masks, and refused when those differ or anything overflows.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from samrt import contract
from samrt.backends.onnxruntime import quiet_session_options

from . import fp16
from ._deps import onnx, torch
from .errors import ExportCheckError

# Largest |onnx - torch| allowed, relative to the largest |torch| value of that output.
# fp32 ONNX Runtime and PyTorch differ by summation order only, measured at 2e-6 (tiny) and
# 3e-6 (vit_b, random weights) for the encoder, 1e-6 for the decoder; a wrong graph (a
# baked-in shape, a dropped prompt term) is off by 1e-2 or more.
ENCODER_TOLERANCE = 1e-4
DECODER_TOLERANCE = 1e-4

# The fp16 variant, run end to end (fp16 encoder, then fp16 decoder on its embeddings):
# the smallest IoU of its thresholded 256x256 masks with torch's, over every check prompt
# and all four mask outputs. fp16 rounding alone (the fp16 twin) measured 0.998 on tiny
# and 0.996 on vit_b (random weights); an overflow gives NaN or unrelated masks.
FP16_MASK_IOU_TOLERANCE = 0.95
# Largest |fp16 onnx - torch| embedding difference, relative to the largest |torch| value:
# the twin measured 1.4e-3 (tiny) and 1.7e-3 (vit_b); a bound for gross failures only,
# the masks decide.
FP16_ENCODER_TOLERANCE = 0.05

CHECK_IMAGE_HEIGHT = 768
CHECK_IMAGE_WIDTH = contract.IMAGE_SIZE


@dataclass(frozen=True)
class Prompt:
    """One official predict_torch call's prompts, in the 1024-resized frame."""

    name: str
    points: np.ndarray | None = None  # [P, N, 2]
    labels: np.ndarray | None = None  # [P, N]
    boxes: np.ndarray | None = None  # [P, 4] as x0, y0, x1, y1
    mask_input: np.ndarray | None = None  # [P, 1, 256, 256]


def check_image(seed: int = 0) -> np.ndarray:
    """A deterministic HxWx3 uint8 RGB image with photo-like structure (not white noise)."""
    rng = np.random.default_rng(seed)
    h, w = CHECK_IMAGE_HEIGHT, CHECK_IMAGE_WIDTH
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([90 + 80 * yy / h, 140 + 60 * yy / h, 230 - 40 * yy / h], axis=-1)
    ground = np.stack([70 + 30 * xx / w, 120 - 20 * yy / h, 50 + 0 * xx], axis=-1)
    image = np.where((yy > 0.55 * h + 30 * np.sin(xx / 90))[..., None], ground, sky)
    for _ in range(6):
        cy, cx = rng.uniform(0.2, 0.9) * h, rng.uniform(0.1, 0.9) * w
        ry, rx = rng.uniform(30, 140), rng.uniform(30, 200)
        colour = rng.uniform(0, 255, size=3)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        shade = 0.75 + 0.25 * (yy - cy) / ry
        image = np.where(inside[..., None], colour * shade[..., None], image)
    for _ in range(3):
        y0, x0 = int(rng.uniform(0, 0.8) * h), int(rng.uniform(0, 0.8) * w)
        image[y0 : y0 + int(rng.uniform(40, 150)), x0 : x0 + int(rng.uniform(40, 200))] = (
            rng.uniform(0, 255, size=3)
        )
    image += rng.normal(0.0, 4.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def preprocess(sam: Any, image: np.ndarray) -> torch.Tensor:
    """[1,3,1024,1024] encoder input for an image whose longest side is already 1024."""
    pixels = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        normalized: torch.Tensor = sam.preprocess(pixels)
    return normalized


def official_decoder(
    sam: Any, image_embeddings: torch.Tensor, prompt: Prompt
) -> tuple[np.ndarray, np.ndarray]:
    """(iou [P,4], low-res logits [P,4,256,256]) the way SamPredictor.predict_torch gets them."""

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a, dtype=torch.float32)

    points = None
    if prompt.points is not None:
        points = (tensor(prompt.points), tensor(prompt.labels))
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(
            points=points, boxes=tensor(prompt.boxes), masks=tensor(prompt.mask_input)
        )
        # predict_masks gives all four mask tokens; forward() would slice them by multimask.
        masks, iou = sam.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
    return iou.numpy(), masks.numpy()


def prompt_graph_inputs(prompt: Prompt) -> dict[str, np.ndarray]:
    """The decoder_prompts graph's prompt inputs, laid out as the runtime lays them out."""
    coords: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    count = _prompt_count(prompt)
    if prompt.points is not None:
        assert prompt.labels is not None
        coords.append(np.asarray(prompt.points, np.float32))
        labels.append(np.asarray(prompt.labels, np.float32))
    if prompt.boxes is None:
        # The official encoder pads clicked points without a box; no points, no padding.
        pad = 1 if prompt.points is not None else 0
        coords.append(np.zeros((count, pad, 2), np.float32))
        labels.append(np.full((count, pad), contract.LABEL_PADDING, np.float32))
    else:
        coords.append(np.asarray(prompt.boxes, np.float32).reshape(count, 2, 2))
        corner_labels = [contract.LABEL_BOX_TOP_LEFT, contract.LABEL_BOX_BOTTOM_RIGHT]
        labels.append(np.tile(np.asarray(corner_labels, np.float32), (count, 1)))
    size = contract.LOW_RES_SIZE
    if prompt.mask_input is None:
        mask_input = np.zeros((count, 1, size, size), np.float32)
        has_mask = np.zeros(count, np.float32)
    else:
        mask_input = np.asarray(prompt.mask_input, np.float32)
        has_mask = np.ones(count, np.float32)
    values = (np.concatenate(coords, 1), np.concatenate(labels, 1), mask_input, has_mask)
    return dict(zip(contract.PROMPT_INPUTS, values, strict=True))


class DecoderSessions:
    """The decoder's three graphs in ONNX Runtime sessions, chained as the runtime chains
    them: decoder_image once per embedding, then decoder_prompts and decoder_masks."""

    @classmethod
    def of_engine(cls, engine_dir: Path, precision: str = "fp32") -> DecoderSessions:
        """The decoder graphs of an engine directory, as its manifest names them."""
        from samrt.manifest import load_manifest

        manifest = load_manifest(engine_dir, verify=False)
        return cls({role: engine_dir / manifest.model(role, precision).file for role in contract.DECODER_ROLES})

    def __init__(self, paths: dict[str, Path], *, optimize: bool = True) -> None:
        self.image = _session(paths[contract.DECODER_IMAGE], optimize=optimize)
        self.prompts = _session(paths[contract.DECODER_PROMPTS], optimize=optimize)
        self.masks = _session(paths[contract.DECODER_MASKS], optimize=optimize)

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(iou [P,4], low-res logits [P,4,256,256]) from the embedding and the prompt
        inputs (``image_embeddings`` and contract.PROMPT_INPUTS)."""
        image_side = self.image.run(
            list(contract.DECODER_IMAGE_OUTPUTS),
            {contract.ENCODER_OUTPUT: feeds[contract.ENCODER_OUTPUT]},
        )
        prompts = {name: feeds[name] for name in contract.PROMPT_INPUTS}
        iou, weights, tokens = self.prompts.run(
            list(contract.DECODER_PROMPTS_OUTPUTS),
            dict(zip(contract.DECODER_IMAGE_OUTPUTS, image_side, strict=True)) | prompts,
        )
        (masks,) = self.masks.run(
            list(contract.DECODER_MASKS_OUTPUTS),
            dict(zip(contract.DECODER_MASKS_INPUTS, (tokens, weights), strict=True)),
        )
        return np.asarray(iou), np.asarray(masks)

    def run_prompt(self, embeddings: np.ndarray, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
        return self.run({contract.ENCODER_OUTPUT: embeddings} | prompt_graph_inputs(prompt))


def check_prompts(first_masks: Callable[[Prompt], np.ndarray]) -> list[Prompt]:
    """The decoder check's prompts. Every kind of prompt appears once (8 prompts in all, as
    the torch decoder costs ~0.3 s per prompt on a CPU); the mask-input case feeds back the
    first case's low-res logits, as interactive refinement does."""
    rng = np.random.default_rng(1)
    h, w = CHECK_IMAGE_HEIGHT, CHECK_IMAGE_WIDTH

    def points(p: int, n: int) -> np.ndarray:
        return (rng.uniform(0, 1, size=(p, n, 2)) * [w - 1, h - 1]).astype(np.float32)

    prompts = [
        Prompt("points", points(2, 2), np.array([[1, 0], [1, 1]], np.float32)),
        Prompt("box", boxes=np.array([[120.0, 140.0, 610.0, 520.0]], np.float32)),
        Prompt(
            "box_points",
            points(2, 2),
            np.array([[1, 0], [0, 1]], np.float32),
            boxes=np.array([[50.0, 60.0, 400.0, 300.0], [300.0, 200.0, 1000.0, 760.0]], np.float32),
        ),
    ]
    fed_back = first_masks(prompts[0])[:1, :1]
    prompts.append(
        Prompt("mask_input", points(1, 1), np.array([[1]], np.float32), mask_input=fed_back)
    )
    # No points and no box: the output tokens alone, with or without a mask input.
    prompts.append(Prompt("mask_input_alone", mask_input=fed_back))
    prompts.append(Prompt("no_prompt"))
    return prompts


class Reference:
    """The official model's outputs on the check inputs, each computed once, when first
    needed, and shared by the fp32 and fp16 checks (the torch decoder costs ~0.3 s per
    prompt on a CPU)."""

    def __init__(self, sam: Any) -> None:
        self.sam = sam
        self._decoder: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @functools.cached_property
    def image(self) -> torch.Tensor:
        return preprocess(self.sam, check_image())

    @functools.cached_property
    def embeddings(self) -> torch.Tensor:
        with torch.no_grad():
            embeddings: torch.Tensor = self.sam.image_encoder(self.image)
        return embeddings

    def decoder_outputs(self, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
        if prompt.name not in self._decoder:
            self._decoder[prompt.name] = official_decoder(self.sam, self.embeddings, prompt)
        return self._decoder[prompt.name]

    def prompts(self) -> list[Prompt]:
        return check_prompts(lambda p: self.decoder_outputs(p)[1])


def check_encoder(reference: Reference, encoder_path: Path) -> dict[str, float]:
    """Compares the encoder graph with torch on the check image; returns the measured
    differences, raises ExportCheckError beyond ENCODER_TOLERANCE."""
    embeddings = _run_encoder(_session(encoder_path), reference)
    expected = reference.embeddings.numpy()
    result = {
        "encoder_max_abs_diff": _max_abs_diff(embeddings, expected),
        "encoder_max_rel_diff": _max_rel_diff(embeddings, expected),
        "encoder_tolerance": ENCODER_TOLERANCE,
    }
    _refuse_beyond_tolerance(result, "encoder", (("encoder_max_rel_diff", ENCODER_TOLERANCE),))
    return result


def check_decoder(reference: Reference, decoder_paths: dict[str, Path]) -> dict[str, float]:
    """Compares the decoder graphs (by role), chained, with the official prompt encoder +
    mask decoder.

    Both sides get the same (torch) embeddings, so encoder noise does not enter. Raises
    ExportCheckError at the first prompt set beyond DECODER_TOLERANCE.
    """
    decoder = DecoderSessions(decoder_paths)
    embeddings = reference.embeddings.numpy()
    result = {
        "decoder_iou_max_abs_diff": 0.0,
        "decoder_iou_max_rel_diff": 0.0,
        "decoder_masks_max_abs_diff": 0.0,
        "decoder_masks_max_rel_diff": 0.0,
        "decoder_tolerance": DECODER_TOLERANCE,
    }
    for prompt in reference.prompts():
        want_iou, want_masks = reference.decoder_outputs(prompt)
        got_iou, got_masks = _run_decoder(decoder, embeddings, prompt, (want_iou, want_masks))
        _keep_largest(
            result,
            {
                "decoder_iou_max_abs_diff": _max_abs_diff(got_iou, want_iou),
                "decoder_iou_max_rel_diff": _max_rel_diff(got_iou, want_iou),
                "decoder_masks_max_abs_diff": _max_abs_diff(got_masks, want_masks),
                "decoder_masks_max_rel_diff": _max_rel_diff(got_masks, want_masks),
            },
        )
        _refuse_beyond_tolerance(
            result,
            f"decoder ({prompt.name})",
            (
                ("decoder_iou_max_rel_diff", DECODER_TOLERANCE),
                ("decoder_masks_max_rel_diff", DECODER_TOLERANCE),
            ),
        )
    return result


def check_fp16(reference: Reference, paths: dict[str, Path]) -> dict[str, float]:
    """Compares the fp16 graphs (by role) with torch; returns "fp16_"-prefixed measurements.

    The graphs run twice: as fp16 twins (fp16.emulation_model: every fp16 tensor rounded
    to fp16, as a GPU stores it; keys "fp16_...") and as they are on ONNX Runtime's CPU
    provider, which computes most fp16 ops in fp32 ("fp16_ort_cpu_..."). Raises
    ExportCheckError on non-finite outputs or beyond FP16_MASK_IOU_TOLERANCE or
    FP16_ENCODER_TOLERANCE in either run.
    """
    result = {
        "fp16_encoder_tolerance": FP16_ENCODER_TOLERANCE,
        "fp16_mask_iou_tolerance": FP16_MASK_IOU_TOLERANCE,
    }
    encoder_path = paths[contract.ENCODER]
    with tempfile.TemporaryDirectory(dir=encoder_path.parent, prefix=".fp16-twin-") as scratch:
        twins: dict[str, Path] = {}
        for role, path in paths.items():
            twin = Path(scratch) / path.name
            # External data: an fp32 twin of vit_h's encoder exceeds protobuf's 2 GB.
            onnx.save_model(
                fp16.emulation_model(path),
                str(twin),
                save_as_external_data=True,
                location=twin.name + ".data",
            )
            twins[role] = twin
        result |= _check_fp16_run(
            reference,
            _session(twins[contract.ENCODER], optimize=False),
            DecoderSessions(twins, optimize=False),
            "fp16_",
            decoder_alone=True,
        )
    result |= _check_fp16_run(
        reference,
        _session(encoder_path),
        DecoderSessions(paths),
        "fp16_ort_cpu_",
        decoder_alone=False,
    )
    return result


def _check_fp16_run(
    reference: Reference,
    encoder: ort.InferenceSession,
    decoder: DecoderSessions,
    prefix: str,
    *,
    decoder_alone: bool,
) -> dict[str, float]:
    """The fp16 measurements of one way of running the graphs, keys prefixed by ``prefix``.

    The decoder runs on the fp16 encoder's embeddings (what a user gets, held to
    FP16_MASK_IOU_TOLERANCE) and, with ``decoder_alone``, on torch's too (its own error,
    recorded only).
    """
    embeddings = _run_encoder(encoder, reference)
    expected = reference.embeddings.numpy()
    encoder_rel = prefix + "encoder_max_rel_diff"
    iou_min = prefix + "mask_iou_min"
    result = {
        prefix + "encoder_max_abs_diff": _max_abs_diff(embeddings, expected),
        encoder_rel: _max_rel_diff(embeddings, expected),
    }
    _refuse_beyond_tolerance(result, "fp16 encoder", ((encoder_rel, FP16_ENCODER_TOLERANCE),))
    largest: dict[str, float] = {}
    result[iou_min] = 1.0
    for prompt in reference.prompts():
        want_iou, want_masks = reference.decoder_outputs(prompt)
        got_iou, got_masks = _run_decoder(decoder, embeddings, prompt, (want_iou, want_masks))
        outputs = [got_iou, got_masks]
        measured = {
            prefix + "iou_max_abs_diff": _max_abs_diff(got_iou, want_iou),
            prefix + "masks_max_rel_diff": _max_rel_diff(got_masks, want_masks),
        }
        if decoder_alone:
            alone_iou, alone_masks = _run_decoder(decoder, expected, prompt, (want_iou, want_masks))
            outputs += [alone_iou, alone_masks]
            measured |= {
                prefix + "decoder_iou_max_abs_diff": _max_abs_diff(alone_iou, want_iou),
                prefix + "decoder_masks_max_rel_diff": _max_rel_diff(alone_masks, want_masks),
            }
        _keep_largest(largest, measured)
        iou = _min_mask_iou(
            got_masks > contract.MASK_THRESHOLD, want_masks > contract.MASK_THRESHOLD
        )
        if not all(np.isfinite(a).all() for a in outputs):
            iou = float("nan")  # an overflow: refused below whatever the masks look like
        if not iou >= result[iou_min]:  # `not >=` keeps a NaN
            result[iou_min] = iou
        _refuse_beyond_tolerance(
            result,
            f"fp16 masks ({prompt.name})",
            (),
            at_least=((iou_min, FP16_MASK_IOU_TOLERANCE),),
        )
    return result | largest


def _run_encoder(encoder: ort.InferenceSession, reference: Reference) -> np.ndarray:
    (embeddings,) = encoder.run(
        [contract.ENCODER_OUTPUT], {contract.ENCODER_INPUT: reference.image.numpy()}
    )
    expected_shape = tuple(reference.embeddings.shape)
    if embeddings.shape != expected_shape:
        raise ExportCheckError(
            f"encoder check: ONNX embeddings have shape {embeddings.shape}, torch "
            f"{expected_shape}; nothing was written"
        )
    return np.asarray(embeddings)


def _run_decoder(
    decoder: DecoderSessions,
    embeddings: np.ndarray,
    prompt: Prompt,
    expected: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    got_iou, got_masks = decoder.run_prompt(embeddings, prompt)
    want_iou, want_masks = expected
    if got_iou.shape != want_iou.shape or got_masks.shape != want_masks.shape:
        raise ExportCheckError(
            f"decoder check '{prompt.name}': ONNX outputs {got_iou.shape}, {got_masks.shape}, "
            f"torch {want_iou.shape}, {want_masks.shape}; nothing was written"
        )
    return got_iou, got_masks


def _keep_largest(result: dict[str, float], measured: dict[str, float]) -> None:
    for key, value in measured.items():
        # max() could drop a NaN; keep it so that the refusal sees it.
        if key not in result or np.isnan(value) or value > result[key]:
            result[key] = value


def _min_mask_iou(actual: np.ndarray, expected: np.ndarray) -> float:
    """Smallest IoU over the masks of [..., H, W] boolean stacks (two empty masks agree)."""
    axes = (-2, -1)
    union = np.logical_or(actual, expected).sum(axes)
    intersection = np.logical_and(actual, expected).sum(axes)
    iou = np.where(union == 0, 1.0, intersection / np.maximum(union, 1))
    return float(iou.min())


def _refuse_beyond_tolerance(
    measured: dict[str, float],
    what: str,
    limits: tuple[tuple[str, float], ...],
    *,
    at_least: tuple[tuple[str, float], ...] = (),
) -> None:
    # `not <=` and `not >=` so that NaN fails too.
    failures = [
        f"{key} = {measured[key]:.3g} > {limit:g}"
        for key, limit in limits
        if not measured[key] <= limit
    ]
    failures += [
        f"{key} = {measured[key]:.3g} < {limit:g}"
        for key, limit in at_least
        if not measured[key] >= limit
    ]
    if failures:
        raise ExportCheckError(
            f"the ONNX {what} disagrees with PyTorch: "
            + "; ".join(failures)
            + " (differences relative to the largest |torch| output); nothing was written"
        )


def _prompt_count(prompt: Prompt) -> int:
    for array in (prompt.points, prompt.boxes, prompt.mask_input):
        if array is not None:
            return int(np.asarray(array).shape[0])
    return 1


def _session(path: Path, *, optimize: bool = True) -> ort.InferenceSession:
    options = quiet_session_options()
    if not optimize:
        # Graph rewrites (fusions, cast elimination) could skip the twins' rounding casts.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_abs_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))


def _max_rel_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.max(np.abs(expected)))
    return _max_abs_diff(actual, expected) / max(scale, 1e-12)
