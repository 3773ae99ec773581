"""The parity tolerances of the tests, in one place: the CPU tests assert them, and the
prepared GPU check (benchmarks/gpu/check.py, which puts tests/ on sys.path) holds the GPU
backends to the same numbers.

samrt.Predictor against the official SamPredictor on the same weights (fp32):
  PARITY_EMBEDDING_ATOL_REL  embedding, absolute, relative to the official's largest |value|
  PARITY_SCORE_ATOL          IoU-prediction scores, absolute
  PARITY_LOW_RES_ATOL_REL    256x256 logits, absolute, relative to max(1, official's max |logit|)
  PARITY_LOGITS_ATOL_REL     full-size logits (return_logits), likewise
  PARITY_MIN_MASK_IOU        every mask of every prompt

The fp16 variant against the fp32 variant of one engine directory:
  FP16_MIN_MASK_IOU, FP16_SCORE_ATOL, FP16_MAX_EMBEDDING_REL_DIFF (max |diff| / max |fp32|)
"""

from __future__ import annotations

PARITY_EMBEDDING_ATOL_REL = 1e-4
PARITY_SCORE_ATOL = 1e-3
PARITY_LOW_RES_ATOL_REL = 1e-3
PARITY_LOGITS_ATOL_REL = 2e-3
PARITY_MIN_MASK_IOU = 0.99

FP16_MIN_MASK_IOU = 0.98
# fp16 rounding of the embedding, relative to its largest value (ONNX Runtime CPU measured
# 9e-4 on tiny, 7e-4 on vit_b).
FP16_MAX_EMBEDDING_REL_DIFF = 5e-3
# IoU-prediction scores (measured 1e-4 to 3e-4 on tiny and vit_b).
FP16_SCORE_ATOL = 5e-3
