"""The model contract: every constant that the exporter and the runtime must agree on.

Both ``samrt_export`` (which writes engine directories) and the runtime (which reads them)
import these names; nothing else in the code base spells them out. The manifest of each
engine directory records the values it was exported with, and the runtime checks them.
"""

from __future__ import annotations

from typing import Final

# Version of the engine-directory layout (manifest.json and the files it names). A runtime
# refuses a directory of another format version. Version 2: the decoder as three graphs.
MANIFEST_FORMAT_VERSION: Final = 2
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
# Between the decoder's graphs: the first layer's attention heads (8 of 16 channels, the
# official TwoWayTransformer with attention_downsample_rate 2) and the width of the mask
# tokens' hypernetwork outputs (transformer_dim // 8).
DECODER_HEADS: Final = 8
DECODER_HEAD_DIM: Final = 16
MASK_WEIGHT_DIM: Final = 32
NUM_MASK_OUTPUTS: Final = 4
MASK_THRESHOLD: Final = 0.0

# Point labels understood by the decoder, as the official prompt encoder uses them.
LABEL_PADDING: Final = -1
LABEL_BACKGROUND: Final = 0
LABEL_FOREGROUND: Final = 1
LABEL_BOX_TOP_LEFT: Final = 2
LABEL_BOX_BOTTOM_RIGHT: Final = 3

# An engine directory's graphs, by role. The mask decoder is three graphs, so that what
# does not depend on the prompt runs once per image and the costly mask upscaling runs
# only for the prompts whose masks are wanted:
#   decoder_image    embedding -> the image side of the decoder's first layer (per image)
#   decoder_prompts  that image side + P prompts -> IoU predictions, the mask tokens'
#                    hypernetwork weights and the prompts' final image tokens
#   decoder_masks    final image tokens + mask weights -> low-res mask logits
ENCODER_FILE: Final = "encoder.onnx"
DECODER_IMAGE_FILE: Final = "decoder_image.onnx"
DECODER_PROMPTS_FILE: Final = "decoder_prompts.onnx"
DECODER_MASKS_FILE: Final = "decoder_masks.onnx"

ENCODER: Final = "encoder"
DECODER_IMAGE: Final = "decoder_image"
DECODER_PROMPTS: Final = "decoder_prompts"
DECODER_MASKS: Final = "decoder_masks"
ROLES: Final = (ENCODER, DECODER_IMAGE, DECODER_PROMPTS, DECODER_MASKS)
DECODER_ROLES: Final = (DECODER_IMAGE, DECODER_PROMPTS, DECODER_MASKS)

# Tensor names of the graphs.
# The graphs' dynamic dimensions, as the manifest's TensorSpecs name them.
DIM_IMAGES: Final = "B"  # images per encoder run
DIM_PROMPTS: Final = "P"  # prompts per decoder run
DIM_POINTS: Final = "N"  # points per prompt (0 for a mask input alone, or no prompt)
DIM_MASKS: Final = "M"  # masks per prompt that decoder_masks upscales (1 or 3)

ENCODER_INPUT: Final = "image"
ENCODER_OUTPUT: Final = "image_embeddings"
DECODER_IMAGE_INPUTS: Final = (ENCODER_OUTPUT,)
# [1,4096,256] embedding + no_mask_embed as tokens; then [1,heads,4096,head_dim] each: the
# first layer's token-to-image keys and values and its image-to-token queries.
DECODER_IMAGE_OUTPUTS: Final = ("image_tokens", "image_keys", "image_values", "image_queries")
PROMPT_INPUTS: Final = ("point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_PROMPTS_INPUTS: Final = (*DECODER_IMAGE_OUTPUTS, *PROMPT_INPUTS)
# [P,4], [P,4,32], [P,4096,256]
DECODER_PROMPTS_OUTPUTS: Final = ("iou_predictions", "mask_weights", "prompt_image_tokens")
# [P,4096,256] and [P,M,32], the weights of the M masks wanted -> [P,M,256,256]
DECODER_MASKS_INPUTS: Final = ("prompt_image_tokens", "mask_weights")
DECODER_MASKS_OUTPUTS: Final = ("low_res_masks",)

GRAPH_FILES: Final = {
    ENCODER: ENCODER_FILE,
    DECODER_IMAGE: DECODER_IMAGE_FILE,
    DECODER_PROMPTS: DECODER_PROMPTS_FILE,
    DECODER_MASKS: DECODER_MASKS_FILE,
}
GRAPH_IO: Final = {
    ENCODER: ((ENCODER_INPUT,), (ENCODER_OUTPUT,)),
    DECODER_IMAGE: (DECODER_IMAGE_INPUTS, DECODER_IMAGE_OUTPUTS),
    DECODER_PROMPTS: (DECODER_PROMPTS_INPUTS, DECODER_PROMPTS_OUTPUTS),
    DECODER_MASKS: (DECODER_MASKS_INPUTS, DECODER_MASKS_OUTPUTS),
}

MODEL_TYPES: Final = ("vit_b", "vit_l", "vit_h")

# -- SAM 2.1 (family "sam2") ---------------------------------------------------------------
# Two graphs: the encoder (Hiera + FPN neck, with the decoder's 1x1 projections of the two
# high-resolution levels and no_mem_embed added to the embedding, as SAM2ImagePredictor
# does; and what the decoder reads of the image, see SAM2_IMAGE_SIDE) and the decoder
# (prompt encoder + mask decoder, all four masks and their scores; the family picks the
# multimask three or the single mask, dynamically by stability).
# The image is resized to IMAGE_SIZE x IMAGE_SIZE (no aspect-preserving pad).
SAM2_FAMILY: Final = "sam2"
SAM2_ENCODER_FILE: Final = "sam2_encoder.onnx"
SAM2_DECODER_FILE: Final = "sam2_decoder.onnx"
SAM2_DECODER: Final = "decoder"
SAM2_ROLES: Final = (ENCODER, SAM2_DECODER)
SAM2_EMBEDDING: Final = "image_embed"
# [B,32,256,256] and [B,64,128,128]: conv_s0 and conv_s1 of the FPN's two finest levels.
SAM2_HIGH_RES: Final = ("high_res_feats_0", "high_res_feats_1")
SAM2_HIGH_RES_SHAPES: Final = ((EMBEDDING_DIM // 8, 256, 256), (EMBEDDING_DIM // 4, 128, 128))
# What the decoder reads of an image, made by the encoder graph once per image: the first
# two-way layer's image side, as SAM's decoder_image makes it (DECODER_IMAGE_OUTPUTS, [B,
# 4096,256] and [B,heads,4096,head_dim]), and the two high-resolution levels channels-last
# in the output upscaling's block order, [B,65536,32] and [B,16384,64].
SAM2_HIGH_RES_BLOCKS: Final = ("high_res_blocks_0", "high_res_blocks_1")
SAM2_IMAGE_SIDE: Final = (*DECODER_IMAGE_OUTPUTS, *SAM2_HIGH_RES_BLOCKS)
SAM2_ENCODER_OUTPUTS: Final = (SAM2_EMBEDDING, *SAM2_HIGH_RES, *SAM2_IMAGE_SIDE)
SAM2_DECODER_INPUTS: Final = (*SAM2_IMAGE_SIDE, *PROMPT_INPUTS)
# [P,4] IoU predictions, [P,4,256,256] mask logits, [P,1] object score logits.
SAM2_DECODER_OUTPUTS: Final = ("iou_predictions", "low_res_masks", "object_score_logits")
# SAM2ImagePredictor clamps the low-resolution logits it returns to +/- this (the masks
# are upsampled from the unclamped ones).
SAM2_LOGIT_CLAMP: Final = 32.0
SAM2_GRAPH_FILES: Final = {ENCODER: SAM2_ENCODER_FILE, SAM2_DECODER: SAM2_DECODER_FILE}

# Every role of every family, for what names graphs without knowing the family (the
# TensorRT engines' file names, `samrt build --role`); a graph's I/O is its manifest's.
ALL_ROLES: Final = tuple(dict.fromkeys((*ROLES, *SAM2_ROLES)))
