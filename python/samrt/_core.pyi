"""Type stubs for samrt's compiled kernels (csrc/bindings)."""

import numpy as np
import numpy.typing as npt

__version__: str

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...

# -- postprocess (csrc/postprocess.hpp); sizes are (height, width) ----------------------

def upsample_logits(
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
) -> npt.NDArray[np.float32]: ...
def upsample_masks(
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
    threshold: float,
) -> npt.NDArray[np.bool_]: ...
def mask_stats(
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
    threshold: float,
    stability_offset: float,
    crop_origin: tuple[int, int],
    image_size: tuple[int, int],
    rle_min_stability: float | None = None,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    list[npt.NDArray[np.uint32] | None],
]: ...
