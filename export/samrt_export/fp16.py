"""Mixed-precision variants: the checked fp32 graphs rewritten to compute mostly in fp16.

TensorRT 11 builds strongly typed networks only, so a graph's precision is decided here,
in the ONNX file, and the same file serves ONNX Runtime's CUDA provider. The bulk of the
work (convolutions, matrix products, elementwise arithmetic) moves to fp16; what fp16
computes badly stays in fp32:

* normalizations: LayerNormalization (the ViT blocks) and the LayerNorm2d of the encoder
  neck, the mask downscaling and the output upscaling, which the tracer writes out as
  ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div and an affine Mul/Add. A variance is a mean
  of squares: fp16 loses it to rounding or overflows it (65504) long before the values
  themselves misbehave;
* Softmax (exponentials of attention logits) and Erf (GELU);
* the random-Fourier positional encodings of the prompt points and the dense grid: their
  Sin/Cos take arguments up to ~20 rad, where fp16's spacing is 0.016, and the point
  coordinates up to 1024 px are only half-pixel exact in fp16. Everything upstream of
  a Sin/Cos is kept in fp32; it is a few small tensors.

Graph inputs and outputs stay float32 (keep_io_types), so the runtime's contract holds.
The conversion itself is ONNX Runtime's float16 converter; around it, this module picks the
fp32 nodes, removes the fp32 -> fp16 -> fp32 round trips the converter leaves between
neighbouring fp32 nodes, and restores the topological order ONNX requires.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._deps import onnx
from .errors import ExportError
from .graphs import SPECS as FP32_SPECS
from .graphs import GraphSpec, save_graph


def _fp16_file(fp32_file: str) -> str:
    stem, suffix = fp32_file.rsplit(".", 1)
    return f"{stem}.fp16.{suffix}"


# By role, as graphs.SPECS: "encoder.onnx" -> "encoder.fp16.onnx", same interface.
SPECS: dict[str, GraphSpec] = {
    role: GraphSpec(_fp16_file(spec.file), spec.inputs, spec.outputs)
    for role, spec in FP32_SPECS.items()
}

# Op types computed in fp32 wherever they occur (see the module docstring). ReduceMean, Pow
# and Sqrt appear in SAM's graphs only inside normalizations.
FP32_OP_TYPES = (
    "LayerNormalization",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Softmax",
    "Erf",
    "Gelu",
    "Sin",
    "Cos",
)
# Whose whole upstream computation stays fp32 too.
_FP32_UPSTREAM_OP_TYPES = ("Sin", "Cos")

_FLOAT = 1  # onnx.TensorProto.FLOAT
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def convert_graph(
    source: Path, spec: GraphSpec, out_dir: Path, *, external_data: bool | None
) -> tuple[str, ...]:
    """Writes the mixed-precision version of the fp32 graph ``source`` as ``out_dir/spec.file``.

    Returns the external data files written (see graphs.save_graph).
    """
    from onnxruntime.transformers import float16

    # Shape inference needs the structure only; the weights (maybe > 2 GB, in a .data file)
    # are attached afterwards, so that no >2 GB message is ever serialized in one piece.
    model = onnx.load(str(source), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.external_data_helper.load_external_data_for_model(model, str(source.parent))
    fp32_nodes = fp32_node_names(model.graph)
    converted = float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        disable_shape_infer=True,
        # The converter's own defaults are ops without fp16 kernels in ONNX Runtime.
        op_block_list=sorted({*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OP_TYPES}),
        node_block_list=sorted(fp32_nodes),
    )
    _remove_fp16_round_trips(converted.graph)
    _remove_unused_nodes(converted.graph)
    _sort_topologically(converted.graph)
    return save_graph(converted, out_dir / spec.file, external_data=external_data)


def fp32_node_names(graph: Any) -> set[str]:
    """Names of the nodes to keep in fp32: those of FP32_OP_TYPES, the rest of each written-out
    LayerNorm2d, everything upstream of a Sin/Cos, and the constants only they read."""
    _require_node_names(graph)
    producer = {output: node for node in graph.node for output in node.output if output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    keep: set[str] = {node.name for node in graph.node if node.op_type in FP32_OP_TYPES}
    for node in graph.node:
        if node.op_type == "Sqrt":
            keep |= _decomposed_norm(node, producer, consumers)
    starts = [node for node in graph.node if node.op_type in _FP32_UPSTREAM_OP_TYPES]
    keep |= {node.name for node in _upstream(starts, producer)}
    # Constants read only by fp32 nodes stay exact (a LayerNorm eps of 1e-6 is subnormal
    # in fp16), and so do weights that the tracer shared between modules through Identity.
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.op_type not in ("Constant", "Identity") or node.name in keep:
                continue
            readers = [r for output in node.output for r in consumers.get(output, [])]
            if readers and all(r.name in keep for r in readers):
                keep.add(node.name)
                changed = True
    return keep


def _decomposed_norm(
    sqrt: Any, producer: dict[str, Any], consumers: dict[str, list[Any]]
) -> set[str]:
    """The nodes of ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * w + b`` around
    ``sqrt``, as the tracer writes LayerNorm2d; empty if ``sqrt`` is not part of one."""

    def made_by(name: str, op_type: str) -> Any:
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_reader(node: Any, op_type: str) -> Any:
        readers = consumers.get(node.output[0], [])
        if len(readers) == 1 and readers[0].op_type == op_type:
            return readers[0]
        return None

    # Walk up from the Sqrt: each step must find the op the pattern has there.
    chain = [sqrt]
    for op_type, input_index in (
        ("Add", 0),
        ("ReduceMean", 0),
        ("Pow", 0),
        ("Sub", 0),
        ("ReduceMean", 1),
    ):
        node = made_by(chain[-1].input[input_index], op_type)
        if node is None:
            return set()
        chain.append(node)
    _, add_eps, variance, square, centred, mean = chain
    if mean.input[0] != centred.input[0]:
        return set()
    divides = [
        d
        for d in consumers.get(sqrt.output[0], [])
        if d.op_type == "Div" and list(d.input) == [centred.output[0], sqrt.output[0]]
    ]
    if len(divides) != 1:
        return set()
    nodes = [mean, centred, square, variance, add_eps, sqrt, divides[0]]
    scale = only_reader(divides[0], "Mul")
    shift = None if scale is None else only_reader(scale, "Add")
    if scale is not None and shift is not None:
        nodes += [scale, shift]
    return {node.name for node in nodes}


def _upstream(starts: Iterable[Any], producer: dict[str, Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen[node.name] = node
        stack += [producer[name] for name in node.input if name in producer]
    return list(seen.values())


def _require_node_names(graph: Any) -> None:
    names = [node.name for node in graph.node]
    if not all(names) or len(set(names)) != len(names):
        raise ExportError(
            "fp16 conversion needs unique node names; the exported graph has unnamed or "
            "repeated nodes"
        )


def _float_tensors(graph: Any) -> set[str]:
    values = (*graph.input, *graph.value_info, *graph.output)
    names = {v.name for v in values if v.type.tensor_type.elem_type == _FLOAT}
    names |= {t.name for t in graph.initializer if t.data_type == _FLOAT}
    return names


def _cast_to(node: Any) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((int(a.i) for a in node.attribute if a.name == "to"), None)


def _remove_fp16_round_trips(graph: Any) -> None:
    """Cast(fp32)(Cast(fp16)(t)) with t in fp32 reads t instead.

    The converter brackets every fp32 node with casts, so two neighbouring fp32 nodes (or an
    fp32 node next to a float32 graph input or output) would pass their tensor through fp16.
    """
    producer = {output: node for node in graph.node for output in node.output if output}
    is_float = _float_tensors(graph)
    graph_outputs = {v.name for v in graph.output}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if _cast_to(node) != _FLOAT:
            continue
        inner = producer.get(node.input[0])
        if inner is None or _cast_to(inner) != _FLOAT16 or inner.input[0] not in is_float:
            continue
        if node.output[0] in graph_outputs:
            # The graph output keeps its name.
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = inner.input[0]
        else:
            renamed[node.output[0]] = inner.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]


def _remove_unused_nodes(graph: Any) -> None:
    """Drops nodes none of whose outputs is read (the casts the round trips left behind)."""
    while True:
        read = {name for node in graph.node for name in node.input}
        read |= {v.name for v in graph.output}
        unused = [n for n in graph.node if not any(o in read for o in n.output if o)]
        if not unused:
            return
        for node in unused:
            graph.node.remove(node)


def _sort_topologically(graph: Any) -> None:
    """Orders the nodes so that each comes after its inputs' producers, keeping the original
    order where it already is one (the converter appends its casts at the end)."""
    nodes = list(graph.node)
    producer_index = {o: i for i, node in enumerate(nodes) for o in node.output if o}
    waiting_on = [0] * len(nodes)
    dependents: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in set(node.input):
            j = producer_index.get(name)
            if j is not None:
                waiting_on[i] += 1
                dependents[j].append(i)
    ready = [i for i, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependents[i]:
            waiting_on[j] -= 1
            if waiting_on[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ExportError("fp16 conversion produced a graph with a cycle")
    # Detach before re-adding: protobuf repeated fields hold their elements.
    ordered = [nodes[i] for i in order]
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# Ops that only move, select or hold values: their fp16 outputs are fp16-exact already.
_EXACT_OPS = frozenset(
    {
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Expand",
        "Flatten",
        "Gather",
        "Identity",
        "Pad",
        "Reshape",
        "Slice",
        "Split",
        "Squeeze",
        "Tile",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)


def emulation_model(path: Path) -> Any:
    """A float32 twin of the mixed-precision graph at ``path`` that rounds like fp16.

    ONNX Runtime's CPU provider has no fp16 kernels for most ops: it runs them in fp32 and
    drops the casts between neighbours, so an fp16 graph run there seldom stores an fp16
    value, and a value that would overflow fp16 on a GPU goes unnoticed (the tests show
    one). The twin computes every op in fp32 from fp16-exact inputs and rounds each fp16
    result through an explicit Cast pair, as a GPU stores it: a value beyond 65504 becomes
    inf, a small one loses its low bits. (GPU matrix kernels accumulate in fp32 as a rule;
    fp16 pointwise arithmetic would differ from the twin in the last bits.)
    """
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    graph = model.graph
    fp16_values = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == _FLOAT16}

    def widened(tensor: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float32"), tensor.name)

    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == _FLOAT16:
            graph.initializer[i].CopyFrom(widened(tensor))
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t") and attribute.t.data_type == _FLOAT16:
                attribute.t.CopyFrom(widened(attribute.t))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == _FLOAT16:
                attribute.i = _FLOAT
        nodes.append(node)
        if node.op_type in _EXACT_OPS:
            continue
        for i, output in enumerate(node.output):
            if output not in fp16_values:
                continue
            exact = f"{output}__fp32"
            node.output[i] = exact
            nodes.append(onnx.helper.make_node("Cast", [exact], [f"{output}__fp16"], to=_FLOAT16))
            nodes.append(onnx.helper.make_node("Cast", [f"{output}__fp16"], [output], to=_FLOAT))
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    del graph.value_info[:]
    return model
