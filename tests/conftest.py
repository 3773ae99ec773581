"""Shared fixtures (the model-building ones live in models.py; tests/ is on sys.path) and
the default deselection of @pytest.mark.slow tests."""

from __future__ import annotations

import pytest
from models import (
    mobile_sam_model,
    sample_image,
    tiny_fp16_model,
    tiny_mobile_sam_model,
    tiny_model,
    tiny_sam2_model,
    vit_b_fp16_model,
    vit_b_model,
)

__all__ = [
    "mobile_sam_model",
    "sample_image",
    "tiny_fp16_model",
    "tiny_mobile_sam_model",
    "tiny_model",
    "tiny_sam2_model",
    "vit_b_fp16_model",
    "vit_b_model",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Full-size models take minutes: they run only when asked for, with `-m slow` (or any
    # -m expression) or by naming the test's node id.
    if config.getoption("markexpr"):
        return
    named = [arg for arg in config.args if "::" in arg]
    keep: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        wanted = any(item.nodeid.endswith(arg.split("tests/", 1)[-1]) for arg in named)
        if item.get_closest_marker("slow") and not wanted:
            deselected.append(item)
        else:
            keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep
