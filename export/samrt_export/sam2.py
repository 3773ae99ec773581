"""SAM 2.1 image models: the official ``sam2`` package's modules -> checked ONNX graphs.

The model is built by the package's own ``build_sam2`` (its Hydra configuration, and the
image-prediction overrides it applies by default: dynamic multimask via stability), from
an official checkpoint or a seeded random initialization. Two graphs (see samrt.contract):

* encoder: ``SAM2Base.forward_image`` (Hiera trunk, FPN neck, the mask decoder's conv_s0
  and conv_s1 on the two finest levels), with ``no_mem_embed`` added to the 64x64
  embedding as SAM2ImagePredictor.set_image does for a single image.
* decoder: the prompt encoder written with label arithmetic instead of the official
  Python branches and in-place boolean edits (neither survives export; every value stays
  bit-identical, see samrt_export.graphs.DecoderPromptsGraph for SAM's twin), then
  ``MaskDecoder.predict_masks`` evaluated in samrt_export.decoder's cheaper order (see
  Sam2DecoderGraph; the export's check compares it with the official predict_masks):
  high-resolution feature fusion, the object-score token and head, all four masks and
  their IoU predictions. Which masks a caller gets (the multimask three, or the single
  mask with the stability fallback) is the runtime family's choice, as it is
  MaskDecoder.forward's.

``sam2`` is imported only here, and only when a SAM 2.1 model is asked for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import samrt
from samrt import contract
from samrt._atomic import atomic_writer
from samrt.errors import EngineDirError
from samrt.manifest import Manifest, ModelFile, TensorSpec, load_manifest, sha256_file, write_manifest

from . import decoder, graphs
from ._deps import onnx, torch
from .config import SAM2_POSTPROCESSING_OVERRIDES, sam2_config
from .errors import ExportCheckError, ExportError

SAM2_INSTALL_HINT = "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2  (with torch installed)"
# Relative to the largest magnitude of the reference output, as for SAM.
ENCODER_TOLERANCE = 1e-4
DECODER_TOLERANCE = 1e-4
_ZERO_INIT_NOISE_STD = 0.02
_SIZE = contract.IMAGE_SIZE
_LOW = contract.LOW_RES_SIZE


def _sam2() -> Any:
    try:
        import sam2.build_sam
    except ImportError as e:
        raise ExportError(
            f"exporting SAM 2.1 needs Meta's sam2 package ({e}); install it with: {SAM2_INSTALL_HINT}"
        ) from None
    return sam2.build_sam


def build_sam2(
    model_type: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    seed: int | None = None,
) -> Any:
    """The official ``sam2.modeling.sam2_base.SAM2Base`` (eval, CPU) of a SAM 2.1 model type,
    built as ``sam2.build_sam.build_sam2`` builds it for image prediction. Exactly one of
    ``checkpoint`` (an official .pt: ``{"model": state_dict}``) or ``seed``."""
    if (checkpoint is None) == (seed is None):
        raise ExportError("build_sam2 needs exactly one of checkpoint= or seed=")
    try:
        config = sam2_config(model_type)
    except ValueError as e:
        raise ExportError(str(e)) from None
    builder = _sam2()
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ExportError(f"checkpoint {str(path)!r} does not exist")
        _check_checkpoint(path)
        try:
            return builder.build_sam2(
                config["config_file"], str(path), device="cpu", hydra_overrides_extra=config["overrides"]
            )
        except RuntimeError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ExportError(
                f"checkpoint {str(path)!r} does not fit the {model_type} architecture: {first}"
            ) from None
    assert seed is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder.build_sam2(
            config["config_file"], None, device="cpu", hydra_overrides_extra=config["overrides"]
        )
        with torch.no_grad():
            # The official init leaves Hiera's position tables (and some biases) at zero;
            # noise there makes parity tests exercise those code paths.
            for _, param in model.named_parameters():
                if not param.any():
                    param.normal_(0.0, _ZERO_INIT_NOISE_STD)
    return model.eval()


def _check_checkpoint(path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for unreadable files
        raise ExportError(
            f"checkpoint {str(path)!r} is not a loadable PyTorch file ({type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ExportError(
            f"checkpoint {str(path)!r} is not a SAM 2.1 checkpoint (a dict with a 'model' state dict)"
        )


def save_random_sam2_checkpoint(model_type: str, seed: int, path: str | os.PathLike[str]) -> Path:
    """Saves the seeded random SAM 2.1 as an official-format checkpoint ({"model": ...})."""
    model = build_sam2(model_type, seed=seed)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(target) as f:
        torch.save({"model": model.state_dict()}, f)
    return target


# -- graphs ----------------------------------------------------------------------------------


class Sam2EncoderGraph(torch.nn.Module):
    """[B,3,1024,1024] normalized image -> image_embed [B,256,64,64] (+ no_mem_embed),
    high_res_feats_0 [B,32,256,256], high_res_feats_1 [B,64,128,128], and what the decoder
    reads of the image (contract.SAM2_IMAGE_SIDE): the first two-way layer's image side
    and the high-resolution levels in block order, made once per image rather than in
    every decoder run."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        levels = model.forward_image(image)["backbone_fpn"][-model.num_feature_levels :]
        embed = levels[-1]
        if model.directly_add_no_mem_embed:
            embed = embed + model.no_mem_embed.reshape(1, -1, 1, 1)
        prompts, mask_decoder = model.sam_prompt_encoder, model.sam_mask_decoder
        side = decoder.image_side(
            mask_decoder, embed, prompts.get_dense_pe(), prompts.no_mask_embed.weight.reshape(-1)
        )
        blocks_0, blocks_1 = _high_res_blocks(levels[0], levels[1])
        return embed, levels[0], levels[1], side.tokens, side.keys, side.values, side.queries, blocks_0, blocks_1


def _high_res_blocks(feats_0: torch.Tensor, feats_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The high-resolution levels [B,32,256,256] and [B,64,128,128] channels-last in
    samrt_export.decoder.upscale's block order, [B,65536,32] and [B,16384,64], so that
    they add to the pixels of the output upscaling's matrix products: a plain transpose to
    channels last, then a gather of whole pixels (an 8-d transpose moving single floats
    took 14 ms of a 50 ms decoder run when it was done there)."""
    side = feats_1.shape[-1] // 2
    # The raster pixel of each block position. Level 1: block (row, col, dy, dx) is pixel
    # (2 row + dy, 2 col + dx); level 0: (row, col, dy1, dx1, dy2, dx2) is pixel
    # (4 row + 2 dy1 + dy2, 4 col + 2 dx1 + dx2).
    pixel_1 = torch.arange(4 * side * side).reshape(side, 2, side, 2).permute(0, 2, 1, 3)
    pixel_0 = torch.arange(16 * side * side).reshape(side, 2, 2, side, 2, 2)
    pixel_0 = pixel_0.permute(0, 3, 1, 4, 2, 5)
    blocks_1 = feats_1.flatten(2).transpose(1, 2).index_select(1, pixel_1.reshape(-1))
    blocks_0 = feats_0.flatten(2).transpose(1, 2).index_select(1, pixel_0.reshape(-1))
    return blocks_0, blocks_1


@contextlib.contextmanager
def _position_embedding_by_matmuls(trunk: Any, image_size: int) -> Iterator[None]:
    """Hiera resizes its background position embedding (7x7 for the official configs) to
    the patch grid with a bicubic interpolation on every call. Exported as it is, that is
    an ONNX Resize that ONNX Runtime neither folds nor runs fast: 430 ms of hiera_tiny's
    2.7 s encoder on this CPU. A bicubic resize is separable and linear, so while this
    context is open the trunk computes it as two small matrix products, with matrices
    made by torch's own bicubic interpolation of unit impulses (the same weights, so the
    same values up to float rounding; the export's check compares the graph with the
    official forward). The window embedding is tiled and added as the official code does.
    The matrices are made here, before any trace, so that the graph holds them as constants."""
    table = trunk.pos_embed  # [1, C, h0, w0]
    with torch.no_grad():
        grid = tuple(trunk.patch_embed(torch.zeros(1, 3, image_size, image_size)).shape[1:3])
    rows = _bicubic_resize_matrix(table.shape[2], grid[0])  # [h, h0]
    cols = _bicubic_resize_matrix(table.shape[3], grid[1]).T.contiguous()  # [w0, w]

    def by_matmuls(hw: tuple[int, int]) -> torch.Tensor:
        if tuple(int(d) for d in hw) != grid:
            raise ExportError(f"Hiera's patch grid is {tuple(hw)}, the export's {grid}")
        resized = rows @ table @ cols  # [1, C, h, w]
        window = trunk.pos_embed_window
        tiles = [whole // part for whole, part in zip(resized.shape, window.shape, strict=True)]
        return (resized + window.tile(tiles)).permute(0, 2, 3, 1)

    trunk._get_pos_embed = by_matmuls  # an instance attribute shadows the method
    try:
        yield
    finally:
        del trunk._get_pos_embed


def _bicubic_resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """M [size_out, size_in] with M @ v = F.interpolate(v, size_out, mode="bicubic") along
    one axis (align_corners=False, as Hiera calls it)."""
    impulses = torch.eye(size_in).reshape(size_in, 1, size_in, 1)
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(impulses, size=(size_out, 1), mode="bicubic")
    return resized[:, 0, :, 0].T.contiguous()


class Sam2DecoderGraph(torch.nn.Module):
    """One image's features + P prompts -> iou_predictions [P,4], low_res_masks
    [P,4,256,256], object_score_logits [P,1]. Points arrive in the 1024 frame, laid out as
    SAM2ImagePredictor lays them out (box corners, labels 2 and 3, first; then the clicks;
    then the padding point, label -1, that the official prompt encoder always appends to
    points); N = 0 is no point and no box.

    The official MaskDecoder.predict_masks evaluated in samrt_export.decoder's order (SAM 2's
    two-way transformer is SAM's): the image side of the first layer made by the encoder
    graph once per image (instead of on P copies of the image in every run), the cross
    attentions' image-sized projections folded into the prompt tokens, the mask input as
    a low-rank term, the transposed convolutions as matrix products on channels-last
    tokens. SAM 2's additions follow the official code: the object-score token ahead of
    the IoU token, and the two high-resolution feature maps (in the tokens' block order,
    from the encoder graph) added after each transposed convolution. Only float rounding
    differs from :class:`Sam2ReferenceDecoder`, which the export's check compares it with.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder

    def forward(
        self,
        image_tokens: torch.Tensor,
        image_keys: torch.Tensor,
        image_values: torch.Tensor,
        image_queries: torch.Tensor,
        high_res_blocks_0: torch.Tensor,
        high_res_blocks_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prompts, mask_decoder = self.prompt_encoder, self.mask_decoder
        sparse = graphs.point_embeddings(prompts, point_coords, point_labels)
        count = sparse.shape[0]
        image_pe = prompts.get_dense_pe()
        image = decoder.ImageSide(image_tokens, image_keys, image_values, image_queries)
        mask = decoder.mask_low_rank(prompts, mask_input, has_mask_input)
        # The output tokens in the official order: object score (SAM 2.1), IoU, masks.
        first = 1 if mask_decoder.pred_obj_scores else 0
        learned = [mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight]
        if mask_decoder.pred_obj_scores:
            learned.insert(0, mask_decoder.obj_score_token.weight)
        output_tokens = torch.cat(learned, dim=0).unsqueeze(0).expand(count, -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        pe = image_pe.flatten(2).transpose(1, 2)
        hs, keys = decoder.two_way_transformer(mask_decoder.transformer, image, pe, tokens, mask)

        iou: torch.Tensor = mask_decoder.iou_prediction_head(hs[:, first, :])
        weights = torch.stack(
            [mlp(hs[:, first + 1 + i, :]) for i, mlp in enumerate(mask_decoder.output_hypernetworks_mlps)],
            dim=1,
        )  # [P, 4, 32]
        if mask_decoder.pred_obj_scores:
            object_scores: torch.Tensor = mask_decoder.pred_obj_score_head(hs[:, 0, :])
        else:
            object_scores = 10.0 * iou.new_ones(count, 1)  # the official constant
        upscaled = decoder.upscale(mask_decoder, keys, (high_res_blocks_0, high_res_blocks_1))
        return iou, decoder.masks_from_upscaled(upscaled, weights), object_scores


class Sam2ReferenceDecoder(torch.nn.Module):
    """The decoder graph's reference: the outputs of :class:`Sam2DecoderGraph` from the
    image's embedding and high-resolution levels as the official decoder reads them (not the
    image side the encoder graph makes), computed by the official
    ``MaskDecoder.predict_masks`` itself on P copies of the image (the prompt encoding by
    graphs.point_embeddings' label arithmetic, bit-identical to the official)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prompts = self.prompt_encoder
        sparse = graphs.point_embeddings(prompts, point_coords, point_labels)
        use_mask = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = prompts.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = prompts.mask_downscaling(mask_input) * use_mask + no_mask * (1.0 - use_mask)
        count = point_coords.shape[0]
        masks, iou, _, object_scores = self.mask_decoder.predict_masks(
            image_embeddings=image_embed.expand(count, -1, -1, -1),
            image_pe=prompts.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        return iou, masks, object_scores


_E = contract.EMBEDDING_DIM
_G = contract.EMBEDDING_SIZE
_B, _P, _N = contract.DIM_IMAGES, contract.DIM_PROMPTS, contract.DIM_POINTS
# What the decoder reads of one image (contract.SAM2_IMAGE_SIDE): SAM's decoder_image
# outputs, then the high-resolution levels in block order.
_IMAGE_SIDE = (
    *graphs.DECODER_IMAGE_OUTPUTS,
    *(
        TensorSpec(name, "float32", (1, shape[1] * shape[2], shape[0]))
        for name, shape in zip(contract.SAM2_HIGH_RES_BLOCKS, contract.SAM2_HIGH_RES_SHAPES, strict=True)
    ),
)
assert tuple(spec.name for spec in _IMAGE_SIDE) == contract.SAM2_IMAGE_SIDE
ENCODER_SPEC = graphs.GraphSpec(
    contract.SAM2_ENCODER_FILE,
    (TensorSpec(contract.ENCODER_INPUT, "float32", (_B, 3, _SIZE, _SIZE)),),
    (
        TensorSpec(contract.SAM2_EMBEDDING, "float32", (_B, _E, _G, _G)),
        *(
            TensorSpec(name, "float32", (_B, *shape))
            for name, shape in zip(contract.SAM2_HIGH_RES, contract.SAM2_HIGH_RES_SHAPES, strict=True)
        ),
        *(replace(spec, shape=(_B, *spec.shape[1:])) for spec in _IMAGE_SIDE),
    ),
)
_COORDS, _LABELS, _MASK_INPUT, _HAS_MASK = contract.PROMPT_INPUTS
_IOU, _MASKS, _OBJECT = contract.SAM2_DECODER_OUTPUTS
DECODER_SPEC = graphs.GraphSpec(
    contract.SAM2_DECODER_FILE,
    (
        *_IMAGE_SIDE,
        TensorSpec(_COORDS, "float32", (_P, _N, 2)),
        TensorSpec(_LABELS, "float32", (_P, _N)),
        TensorSpec(_MASK_INPUT, "float32", (_P, 1, _LOW, _LOW)),
        TensorSpec(_HAS_MASK, "float32", (_P,)),
    ),
    (
        TensorSpec(_IOU, "float32", (_P, contract.NUM_MASK_OUTPUTS)),
        TensorSpec(_MASKS, "float32", (_P, contract.NUM_MASK_OUTPUTS, _LOW, _LOW)),
        TensorSpec(_OBJECT, "float32", (_P, 1)),
    ),
)
SPECS = {contract.ENCODER: ENCODER_SPEC, contract.SAM2_DECODER: DECODER_SPEC}


def _decoder_example(features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # Dynamic dims traced at 2 and 3 (never 1, see graphs.encoder_example_inputs).
    coords = torch.full((2, 3, 2), 100.0)
    labels = torch.tensor([[2.0, 3.0, -1.0], [1.0, 0.0, -1.0]])
    mask = torch.zeros(2, 1, _LOW, _LOW)
    return (*features, coords, labels, mask, torch.tensor([1.0, 0.0]))


# -- check -------------------------------------------------------------------------------------


def _session(path: Path) -> Any:
    import onnxruntime
    from samrt.backends.onnxruntime import quiet_session_options

    return onnxruntime.InferenceSession(
        str(path), quiet_session_options(), providers=["CPUExecutionProvider"]
    )


def _rel_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = max(1.0, float(np.abs(theirs).max())) if theirs.size else 1.0
    return float(np.abs(ours - theirs).max() / scale) if theirs.size else 0.0


def check_image(seed: int = 0) -> np.ndarray:
    """A normalized [1,3,1024,1024] input with structure at several scales (a smooth
    gradient plus noise), seeded."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-2.0, 2.0, _SIZE, dtype=np.float32)
    image = ramp[None, None, :, None] * np.array([1.0, -0.5, 0.25], np.float32)[None, :, None, None]
    image = image + ramp[None, None, None, :] * 0.5
    return (image + rng.normal(0.0, 0.5, (1, 3, _SIZE, _SIZE))).astype(np.float32)


def check_prompts(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Prompt sets the decoder is checked on: clicks with padding, a box with clicks, a
    mask input, a mask input alone (no point), several prompts at once."""
    rng = np.random.default_rng(seed)

    def points(p: int, n: int) -> np.ndarray:
        return rng.uniform(0.0, _SIZE, (p, n, 2)).astype(np.float32)

    mask = rng.normal(0.0, 8.0, (1, 1, _LOW, _LOW)).astype(np.float32)
    no_mask = np.zeros((1, 1, _LOW, _LOW), np.float32)
    return [
        {_COORDS: points(1, 2), _LABELS: np.array([[1, -1]], np.float32), _MASK_INPUT: no_mask, _HAS_MASK: np.zeros(1, np.float32)},
        {_COORDS: points(1, 5), _LABELS: np.array([[2, 3, 1, 0, -1]], np.float32), _MASK_INPUT: mask, _HAS_MASK: np.ones(1, np.float32)},
        {_COORDS: np.zeros((1, 0, 2), np.float32), _LABELS: np.zeros((1, 0), np.float32), _MASK_INPUT: mask, _HAS_MASK: np.ones(1, np.float32)},
        {
            _COORDS: points(3, 3),
            _LABELS: np.array([[1, 1, -1], [0, 1, -1], [2, 3, -1]], np.float32),
            _MASK_INPUT: np.zeros((3, 1, _LOW, _LOW), np.float32),
            _HAS_MASK: np.zeros(3, np.float32),
        },
    ]


def check_graphs(model: Any, staging: Path) -> dict[str, float]:
    """ONNX Runtime against the torch modules the graphs came from; ExportCheckError beyond
    tolerance. Returns the largest relative differences, for the manifest."""
    image = check_image()
    with torch.no_grad():
        theirs = [t.numpy() for t in Sam2EncoderGraph(model)(torch.from_numpy(image))]
    ours = _session(staging / ENCODER_SPEC.file).run(None, {contract.ENCODER_INPUT: image})
    result = {"encoder_tolerance": ENCODER_TOLERANCE, "decoder_tolerance": DECODER_TOLERANCE}
    result["encoder_max_rel_diff"] = max(_rel_diff(o, t) for o, t in zip(ours, theirs, strict=True))
    if not result["encoder_max_rel_diff"] <= ENCODER_TOLERANCE:
        raise ExportCheckError(
            f"the SAM 2.1 encoder graph differs from torch by {result['encoder_max_rel_diff']:.3g} "
            f"(relative), beyond {ENCODER_TOLERANCE}"
        )
    features = dict(zip(contract.SAM2_ENCODER_OUTPUTS, theirs, strict=True))
    session = _session(staging / DECODER_SPEC.file)
    reference = Sam2ReferenceDecoder(model)
    reference_inputs = (contract.SAM2_EMBEDDING, *contract.SAM2_HIGH_RES, *contract.PROMPT_INPUTS)
    iou_diff = masks_diff = 0.0
    for prompt in check_prompts():
        feeds = {**features, **prompt}
        with torch.no_grad():
            expected = [t.numpy() for t in reference(*(torch.from_numpy(feeds[n]) for n in reference_inputs))]
        got = session.run(None, {n: feeds[n] for n in contract.SAM2_DECODER_INPUTS})
        iou_diff = max(iou_diff, _rel_diff(got[0], expected[0]), _rel_diff(got[2], expected[2]))
        masks_diff = max(masks_diff, _rel_diff(got[1], expected[1]))
    result["decoder_iou_max_rel_diff"] = iou_diff
    result["decoder_masks_max_rel_diff"] = masks_diff
    if not (iou_diff <= DECODER_TOLERANCE and masks_diff <= DECODER_TOLERANCE):
        raise ExportCheckError(
            f"the SAM 2.1 decoder graph differs from torch by {max(iou_diff, masks_diff):.3g} "
            f"(relative), beyond {DECODER_TOLERANCE}"
        )
    return result


# -- engine directory --------------------------------------------------------------------------


def _source(checkpoint: str | os.PathLike[str] | None, seed: int | None) -> dict[str, Any]:
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ExportError(f"checkpoint {str(checkpoint)!r} does not exist")
        return {"checkpoint": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
    assert seed is not None
    return {"random_init_seed": int(seed)}


def sam2_engine_is_current(
    model_type: str,
    out_dir: Path,
    source: dict[str, Any],
    opset: int | None,
) -> bool:
    """True when ``out_dir`` is a verified SAM 2.1 engine directory of these weights."""
    if not (out_dir / contract.MANIFEST_FILE).is_file():
        return False
    try:
        manifest = load_manifest(out_dir, verify=True)
    except EngineDirError:
        return False
    same_weights = (
        manifest.source.get("sha256") == source["sha256"]
        if "sha256" in source
        else manifest.source.get("random_init_seed") == source["random_init_seed"]
    )
    return (
        same_weights
        and manifest.family == contract.SAM2_FAMILY
        and manifest.model_type == model_type
        and manifest.model_config == sam2_config(model_type)
        and "fp32" in manifest.variants
        and (opset is None or manifest.opset == opset)
    )


def export_sam2_engine(
    model_type: str,
    *,
    out_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    random_seed: int | None = None,
    opset: int | None = None,
    precision: str = "fp32",
    check: bool = True,
    overwrite: bool = False,
) -> Path:
    """Exports a SAM 2.1 model (see the module docstring) to an engine directory, fp32.
    Same contract as samrt_export.export_engine: written to a temporary sibling and moved
    into place; an existing directory is replaced only with ``overwrite`` (or returned as
    is when it already holds these weights)."""
    from .export import DEFAULT_OPSET, _is_nonempty_dir, _make_shareable, _move_into_place, _package_version

    try:
        model_config = sam2_config(model_type)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if precision != "fp32":
        raise ExportError(f"SAM 2.1 engines are exported in fp32 only so far, not {precision!r}")
    if (checkpoint is None) == (random_seed is None):
        raise ExportError(
            "pass exactly one source of weights: a checkpoint (--checkpoint FILE) or a random "
            "init (--random-weights --seed N)"
        )
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    source = _source(checkpoint, random_seed)
    if _is_nonempty_dir(target) and not overwrite:
        if sam2_engine_is_current(model_type, target, source, opset):
            return target
        raise ExportError(f"{target} already exists and is not empty; pass overwrite=True (--overwrite)")
    model = build_sam2(model_type, checkpoint=checkpoint, seed=random_seed)
    opset = DEFAULT_OPSET if opset is None else opset

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        encoder = Sam2EncoderGraph(model)
        example_image = torch.zeros(1, 3, _SIZE, _SIZE)
        files: dict[str, ModelFile] = {}
        with _position_embedding_by_matmuls(model.image_encoder.trunk, _SIZE):
            for role, module, example in (
                (contract.ENCODER, encoder, (example_image,)),
                (contract.SAM2_DECODER, Sam2DecoderGraph(model), None),
            ):
                if example is None:
                    with torch.no_grad():
                        outputs = dict(zip(contract.SAM2_ENCODER_OUTPUTS, encoder(example_image), strict=True))
                        example = _decoder_example(tuple(outputs[n] for n in contract.SAM2_IMAGE_SIDE))
                spec = SPECS[role]
                extra = graphs.export_graph(
                    module, example, spec, staging, opset=opset, exporter="torchscript", external_data=None
                )
                onnx.checker.check_model(str(staging / spec.file))
                graphs.check_graph_interface(staging / spec.file, spec)
                files[role] = ModelFile(
                    file=spec.file,
                    sha256=sha256_file(staging / spec.file),
                    inputs=spec.inputs,
                    outputs=spec.outputs,
                    external_data={name: sha256_file(staging / name) for name in extra},
                )
        export_check = check_graphs(model, staging) if check else {}
        manifest = Manifest(
            format_version=contract.MANIFEST_FORMAT_VERSION,
            samrt_version=samrt.__version__,
            family=contract.SAM2_FAMILY,
            model_type=model_type,
            model_config=model_config,
            image_size=int(model.image_size),
            # SAM2Transforms: ToTensor (/255) then Normalize(ImageNet mean, std), i.e. these
            # values on the 0..255 scale.
            pixel_mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
            pixel_std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
            mask_threshold=contract.MASK_THRESHOLD,
            opset=opset,
            source=source,
            variants={"fp32": files},
            export_check=export_check,
            extra={
                "export": {
                    "exporter": "torchscript",
                    "torch": torch.__version__,
                    "onnx": onnx.__version__,
                    "sam2": _package_version("sam2"),
                    "postprocessing_overrides": list(SAM2_POSTPROCESSING_OVERRIDES),
                },
                # What the runtime family needs of MaskDecoder.forward's mask choice.
                contract.SAM2_FAMILY: {
                    "dynamic_multimask_via_stability": bool(
                        model.sam_mask_decoder.dynamic_multimask_via_stability
                    ),
                    "dynamic_multimask_stability_delta": float(
                        model.sam_mask_decoder.dynamic_multimask_stability_delta
                    ),
                    "dynamic_multimask_stability_thresh": float(
                        model.sam_mask_decoder.dynamic_multimask_stability_thresh
                    ),
                }
            },
        )
        write_manifest(staging, manifest)
        _make_shareable(staging)
        _move_into_place(staging, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
