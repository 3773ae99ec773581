"""The two ONNX graphs of an engine directory and how PyTorch modules become them."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from samrt import contract
from samrt.manifest import TensorSpec

from . import decoder
from ._deps import onnx, torch
from .errors import ExportError

Exporter = Literal["torchscript", "dynamo"]

# Encoders whose weights exceed this are written with ONNX external data: protobuf caps
# a file at 2 GiB, and the graph itself needs some room (vit_h's encoder is ~2.5 GB).
EXTERNAL_DATA_THRESHOLD_BYTES = 1_500_000_000

ENCODER_INPUTS = (
    TensorSpec(
        contract.ENCODER_INPUT, "float32", (contract.DIM_IMAGES, 3, contract.IMAGE_SIZE, contract.IMAGE_SIZE)
    ),
)
ENCODER_OUTPUTS = (
    TensorSpec(
        contract.ENCODER_OUTPUT,
        "float32",
        (contract.DIM_IMAGES, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE),
    ),
)
_TOKENS = contract.EMBEDDING_SIZE * contract.EMBEDDING_SIZE
_HEADS = (1, contract.DECODER_HEADS, _TOKENS, contract.DECODER_HEAD_DIM)
_EMBEDDING = (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
DECODER_IMAGE_INPUTS = (TensorSpec(contract.ENCODER_OUTPUT, "float32", _EMBEDDING),)
DECODER_IMAGE_OUTPUTS = tuple(
    TensorSpec(name, "float32", shape)
    for name, shape in zip(
        contract.DECODER_IMAGE_OUTPUTS,
        ((1, _TOKENS, contract.EMBEDDING_DIM), _HEADS, _HEADS, _HEADS),
        strict=True,
    )
)
_COORDS, _LABELS, _MASK_INPUT, _HAS_MASK = contract.PROMPT_INPUTS
PROMPT_INPUTS = (
    TensorSpec(_COORDS, "float32", (contract.DIM_PROMPTS, contract.DIM_POINTS, 2)),
    TensorSpec(_LABELS, "float32", (contract.DIM_PROMPTS, contract.DIM_POINTS)),
    TensorSpec(_MASK_INPUT, "float32", (contract.DIM_PROMPTS, 1, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE)),
    TensorSpec(_HAS_MASK, "float32", (contract.DIM_PROMPTS,)),
)
_IOU, _MASK_WEIGHTS, _PROMPT_TOKENS = contract.DECODER_PROMPTS_OUTPUTS
_MASK_WEIGHTS_SPEC = TensorSpec(
    _MASK_WEIGHTS, "float32", (contract.DIM_PROMPTS, contract.NUM_MASK_OUTPUTS, contract.MASK_WEIGHT_DIM)
)
# decoder_masks makes the masks whose weights it is given (M of the 4: the multimask
# three, or the single mask), so a caller pays only for the masks it wants.
_CHOSEN_WEIGHTS_SPEC = TensorSpec(_MASK_WEIGHTS, "float32", (contract.DIM_PROMPTS, contract.DIM_MASKS, contract.MASK_WEIGHT_DIM))
_PROMPT_TOKENS_SPEC = TensorSpec(_PROMPT_TOKENS, "float32", (contract.DIM_PROMPTS, _TOKENS, contract.EMBEDDING_DIM))
DECODER_PROMPTS_INPUTS = (*DECODER_IMAGE_OUTPUTS, *PROMPT_INPUTS)
DECODER_PROMPTS_OUTPUTS = (
    TensorSpec(_IOU, "float32", (contract.DIM_PROMPTS, contract.NUM_MASK_OUTPUTS)),
    _MASK_WEIGHTS_SPEC,
    _PROMPT_TOKENS_SPEC,
)
DECODER_MASKS_INPUTS = (_PROMPT_TOKENS_SPEC, _CHOSEN_WEIGHTS_SPEC)
DECODER_MASKS_OUTPUTS = (
    TensorSpec(
        contract.DECODER_MASKS_OUTPUTS[0],
        "float32",
        (contract.DIM_PROMPTS, contract.DIM_MASKS, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE),
    ),
)


class DecoderImageGraph(torch.nn.Module):
    """decoder_image: an image's embedding -> the decoder's first-layer image side, which
    every prompt on that image shares (see decoder.image_side)."""

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        side = decoder.image_side(
            self.mask_decoder,
            image_embeddings,
            self.prompt_encoder.get_dense_pe(),
            self.prompt_encoder.no_mask_embed.weight.reshape(-1),
        )
        return side.tokens, side.keys, side.values, side.queries


class DecoderPromptsGraph(torch.nn.Module):
    """decoder_prompts: the official prompt encoder + MaskDecoder.predict_masks up to the
    upscaling, with prompts as plain tensors.

    The official PromptEncoder branches in Python on which prompts exist and edits tensors
    in place by boolean masks; neither survives export. This module computes the same
    numbers from label arithmetic instead: every point gets the positional encoding of its
    pixel centre, then labels select which learned embedding is added (-1: the embedding is
    replaced by not_a_point, 0/1: background/foreground, 2/3: box corners). Multiplying by
    0/1 and adding exact zeros leaves each value bit-identical to the official one. Boxes
    arrive as their two corner points (labels 2, 3) after the point prompts, and the padding
    point (label -1) is present exactly when the official encoder would add it (no box).
    A prompt with no points at all (N = 0: a mask input alone, or nothing) has only the
    output tokens, as in the official encoder.
    """

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(
        self,
        image_tokens: torch.Tensor,
        image_keys: torch.Tensor,
        image_values: torch.Tensor,
        image_queries: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prompts = self.prompt_encoder
        sparse = point_embeddings(prompts, point_coords, point_labels)
        mask = decoder.mask_low_rank(prompts, mask_input, has_mask_input)
        image = decoder.ImageSide(image_tokens, image_keys, image_values, image_queries)
        iou, mask_weights, keys = decoder.decode_prompts(
            self.mask_decoder, image, prompts.get_dense_pe(), sparse, mask
        )
        return iou, mask_weights, keys


def point_embeddings(
    prompt_encoder: Any, point_coords: torch.Tensor, point_labels: torch.Tensor
) -> torch.Tensor:
    """The official prompt encoder's point embeddings [P, N, 256] for points [P, N, 2] in the
    model's input frame and their labels [P, N], by label arithmetic (see
    DecoderPromptsGraph); SAM's and SAM 2's prompt encoders alike."""
    height, width = prompt_encoder.input_image_size
    # Shift to the pixel centre, then normalize x by width and y by height, as
    # PositionEmbeddingRandom.forward_with_coords does.
    centred = point_coords + 0.5
    normalized = centred / torch.tensor([float(width), float(height)])
    sparse = prompt_encoder.pe_layer._pe_encoding(normalized)
    labels = point_labels.unsqueeze(-1)
    sparse = sparse * (labels != contract.LABEL_PADDING)
    sparse = sparse + prompt_encoder.not_a_point_embed.weight * (labels == contract.LABEL_PADDING)
    for label in range(prompt_encoder.num_point_embeddings):
        sparse = sparse + prompt_encoder.point_embeddings[label].weight * (labels == label)
    result: torch.Tensor = sparse
    return result


class DecoderMasksGraph(torch.nn.Module):
    """decoder_masks: the prompts' final image tokens and mask weights -> low-res masks."""

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.mask_decoder = sam.mask_decoder

    def forward(self, prompt_image_tokens: torch.Tensor, mask_weights: torch.Tensor) -> torch.Tensor:
        return decoder.decode_masks(self.mask_decoder, prompt_image_tokens, mask_weights)


@dataclass(frozen=True)
class GraphSpec:
    """What one ONNX file must look like: names, dtypes, static and dynamic dims."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


ENCODER_SPEC = GraphSpec(contract.ENCODER_FILE, ENCODER_INPUTS, ENCODER_OUTPUTS)
DECODER_IMAGE_SPEC = GraphSpec(contract.DECODER_IMAGE_FILE, DECODER_IMAGE_INPUTS, DECODER_IMAGE_OUTPUTS)
DECODER_PROMPTS_SPEC = GraphSpec(
    contract.DECODER_PROMPTS_FILE, DECODER_PROMPTS_INPUTS, DECODER_PROMPTS_OUTPUTS
)
DECODER_MASKS_SPEC = GraphSpec(contract.DECODER_MASKS_FILE, DECODER_MASKS_INPUTS, DECODER_MASKS_OUTPUTS)
# By role, in the order they are exported and checked.
SPECS: dict[str, GraphSpec] = {
    contract.ENCODER: ENCODER_SPEC,
    contract.DECODER_IMAGE: DECODER_IMAGE_SPEC,
    contract.DECODER_PROMPTS: DECODER_PROMPTS_SPEC,
    contract.DECODER_MASKS: DECODER_MASKS_SPEC,
}
# The modules that become each graph.
MODULES: dict[str, Any] = {
    contract.DECODER_IMAGE: DecoderImageGraph,
    contract.DECODER_PROMPTS: DecoderPromptsGraph,
    contract.DECODER_MASKS: DecoderMasksGraph,
}


def encoder_example_inputs(exporter: Exporter) -> tuple[torch.Tensor, ...]:
    # torch.export specializes a dimension whose example size is 1, so the dynamo path
    # traces a batch of 2.
    batch = 2 if exporter == "dynamo" else 1
    size = contract.IMAGE_SIZE
    return (torch.zeros(batch, 3, size, size),)


def decoder_example_inputs(role: str) -> tuple[torch.Tensor, ...]:
    """Example inputs to trace a decoder graph with, from its spec: sizes of 2 and 3 for
    the dynamic dimensions, so that none is traced at 1 (see above); prompts with a box,
    points and padding."""
    sizes = {contract.DIM_PROMPTS: 2, contract.DIM_POINTS: 3, contract.DIM_MASKS: 3}
    inputs = []
    for spec in SPECS[role].inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)
        inputs.append(torch.zeros(shape))
    if role == contract.DECODER_PROMPTS:
        n_image = len(contract.DECODER_IMAGE_OUTPUTS)
        inputs[n_image] = torch.full((2, 3, 2), 100.0)
        inputs[n_image + 1] = torch.tensor([[1.0, 0.0, -1.0], [1.0, 2.0, 3.0]])
        inputs[n_image + 3] = torch.tensor([1.0, 0.0])
    return tuple(inputs)


def export_graph(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    spec: GraphSpec,
    out_dir: Path,
    *,
    opset: int,
    exporter: Exporter,
    external_data: bool | None,
) -> tuple[str, ...]:
    """Writes ``out_dir / spec.file`` (+ external data); returns the external data files.

    The exporter writes into a scratch folder first: the TorchScript exporter spreads a
    >2 GB model over one file per tensor, and we re-save every graph in one canonical layout
    (inline, or all weights in ``<file>.data``).
    """
    module.eval()
    scratch = Path(tempfile.mkdtemp(dir=out_dir, prefix=".scratch-"))
    try:
        raw_path = scratch / spec.file
        with torch.no_grad(), warnings.catch_warnings():
            _quiet_exporter_warnings()
            if exporter == "torchscript":
                _export_torchscript(module, example_inputs, spec, raw_path, opset)
            elif exporter == "dynamo":
                _export_dynamo(module, example_inputs, spec, raw_path, opset)
            else:
                raise ExportError(f"unknown exporter {exporter!r}; use 'torchscript' or 'dynamo'")
        model = onnx.load(str(raw_path), load_external_data=True)
        _name_dims(model, spec)
        return save_graph(model, out_dir / spec.file, external_data=external_data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_graph(model: Any, target: Path, *, external_data: bool | None) -> tuple[str, ...]:
    """Saves ``model`` as ``target`` (+ ``<target>.data``); returns the external data files.

    ``external_data`` None writes the weights inline unless they exceed
    EXTERNAL_DATA_THRESHOLD_BYTES.
    """
    if external_data is None:
        external_data = _initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES
    if not external_data:
        onnx.save_model(model, str(target))
        return ()
    location = target.name + ".data"
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=1024,
    )
    return (location,) if (target.parent / location).exists() else ()


def _export_torchscript(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    spec: GraphSpec,
    path: Path,
    opset: int,
) -> None:
    dynamic_axes = {
        t.name: {axis: dim for axis, dim in enumerate(t.shape) if isinstance(dim, str)}
        for t in (*spec.inputs, *spec.outputs)
    }
    torch.onnx.export(
        module,
        example_inputs,
        str(path),
        input_names=[t.name for t in spec.inputs],
        output_names=[t.name for t in spec.outputs],
        dynamic_axes={name: axes for name, axes in dynamic_axes.items() if axes},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def _export_dynamo(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    spec: GraphSpec,
    path: Path,
    opset: int,
) -> None:
    dims: dict[str, Any] = {}
    dynamic_shapes = []
    for t in spec.inputs:
        axes = {}
        for axis, dim in enumerate(t.shape):
            if isinstance(dim, str):
                axes[axis] = dims.setdefault(dim, torch.export.Dim(dim))
        dynamic_shapes.append(axes or None)
    program = torch.onnx.export(
        module,
        example_inputs,
        input_names=[t.name for t in spec.inputs],
        output_names=[t.name for t in spec.outputs],
        dynamic_shapes=tuple(dynamic_shapes),
        opset_version=opset,
        dynamo=True,
        external_data=True,
        verbose=False,
        report=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export(dynamo=True) returned no program")
    program.save(str(path), external_data=True)


def _quiet_exporter_warnings() -> None:
    # The tracer warns about every Python int it bakes in; with SAM's fixed 1024x1024 input
    # those are constants by design, and the parity check catches any that are not.
    warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
    warnings.filterwarnings(
        "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
    )
    warnings.filterwarnings(
        "ignore", message="The feature will be removed", category=DeprecationWarning
    )
    warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
    # F.pad exports its pads through a reversing Slice that the tracer's constant folder
    # skips (TinyViT's window padding); ONNX Runtime folds it when the graph loads.
    warnings.filterwarnings(
        "ignore", message="Constant folding - Only steps=1", category=UserWarning
    )


def _name_dims(model: Any, spec: GraphSpec) -> None:
    """Gives the graph's interface the contract's dims: the names of dynamic ones, and the
    values of static ones that shape inference left symbolic (the encoder's 64x64 output
    comes out of reshapes the tracer cannot follow). The self-check runs the graph and
    verifies the actual shapes; check_graph_interface refuses any other mismatch."""
    wanted = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        expected = wanted.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if expected is None or len(dims) != len(expected.shape):
            continue
        for dim, want in zip(dims, expected.shape, strict=True):
            if isinstance(want, str):
                if not dim.HasField("dim_value"):
                    dim.dim_param = want
            elif not dim.HasField("dim_value"):
                dim.dim_value = want


def _initializer_bytes(model: Any) -> int:
    total = 0
    for tensor in model.graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= dim
        total += count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total


def graph_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs as the ONNX file declares them (str dims are symbolic)."""
    model = onnx.load(str(path), load_external_data=False)

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        shape: list[int | str] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            else:
                shape.append(dim.dim_param or "?")
        return TensorSpec(value.name, dtype, tuple(shape))

    return tuple(spec(v) for v in model.graph.input), tuple(spec(v) for v in model.graph.output)


def check_graph_interface(path: Path, spec: GraphSpec) -> None:
    """Raises ExportError unless the file's inputs and outputs match ``spec``."""
    inputs, outputs = graph_specs(path)
    for kind, have, want in (("inputs", inputs, spec.inputs), ("outputs", outputs, spec.outputs)):
        if [t.name for t in have] != [t.name for t in want]:
            raise ExportError(
                f"{path.name} has {kind} {[t.name for t in have]}, the contract wants "
                f"{[t.name for t in want]}"
            )
        for got, expected in zip(have, want, strict=True):
            fits = (
                got.dtype == expected.dtype
                and len(got.shape) == len(expected.shape)
                and all(
                    isinstance(g, str) if isinstance(e, str) else g == e
                    for g, e in zip(got.shape, expected.shape, strict=True)
                )
            )
            if not fits:
                raise ExportError(
                    f"{path.name}: {got.name} is {got.dtype}{list(got.shape)}, the contract wants "
                    f"{expected.dtype}{list(expected.shape)} (str dims dynamic)"
                )


def opset_of(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError(f"{path.name} declares no default-domain opset")
