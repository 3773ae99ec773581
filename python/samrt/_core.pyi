"""Type stubs for samrt's compiled kernels (csrc/bindings)."""

import numpy as np
import numpy.typing as npt

__version__: str

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...

# --- NMS ---

def batched_nms(
    boxes: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    idxs: npt.NDArray[np.int64],
    iou_threshold: float,
) -> npt.NDArray[np.int64]: ...

# --- Small regions ---

def remove_small_regions(
    mask: npt.NDArray[np.uint8], area_thresh: float, mode: str
) -> tuple[npt.NDArray[np.bool_] | None, bool]: ...
def remove_small_regions_batch(
    masks: npt.NDArray[np.uint8], area_thresh: float, mode: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]: ...
