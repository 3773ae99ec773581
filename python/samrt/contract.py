"""The model contract: every constant that the exporter and the runtime must agree on.

Both ``samrt_export`` (which writes engine directories) and the runtime (which reads them)
import these names; nothing else in the code base spells them out. The manifest of each
engine directory records the values it was exported with, and the runtime checks them.
"""

from __future__ import annotations

from typing import Final

# Version of the engine-directory layout (manifest.json and the files it names). A runtime
# refuses a directory of another format version.
MANIFEST_FORMAT_VERSION: Final = 1
MANIFEST_FILE: Final = "manifest.json"

# SAM's input: the longest side is resized to IMAGE_SIZE, then the image is normalized and
# padded at the bottom and right to IMAGE_SIZE x IMAGE_SIZE.
IMAGE_SIZE: Final = 1024
PIXEL_MEAN: Final = (123.675, 116.28, 103.53)
PIXEL_STD: Final = (58.395, 57.12, 57.375)

# The decoder's outputs: LOW_RES_SIZE x LOW_RES_SIZE logits for NUM_MASK_OUTPUTS masks per
# prompt (mask 0 is the single-mask output, masks 1..3 the multimask outputs).
EMBEDDING_SIZE: Final = 64
EMBEDDING_DIM: Final = 256
LOW_RES_SIZE: Final = 256
NUM_MASK_OUTPUTS: Final = 4
MASK_THRESHOLD: Final = 0.0

# Point labels understood by the decoder, as the official prompt encoder uses them.
LABEL_PADDING: Final = -1
LABEL_BACKGROUND: Final = 0
LABEL_FOREGROUND: Final = 1
LABEL_BOX_TOP_LEFT: Final = 2
LABEL_BOX_BOTTOM_RIGHT: Final = 3

ENCODER_FILE: Final = "encoder.onnx"
DECODER_FILE: Final = "decoder.onnx"

# Tensor names of the two ONNX graphs.
ENCODER_INPUT: Final = "image"
ENCODER_OUTPUT: Final = "image_embeddings"
DECODER_INPUTS: Final = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
)
DECODER_OUTPUTS: Final = ("iou_predictions", "low_res_masks")

MODEL_TYPES: Final = ("vit_b", "vit_l", "vit_h")
