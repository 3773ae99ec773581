"""The runtime must not need torch: production services run without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def test_import_samrt_does_not_import_torch() -> None:
    code = (
        "import sys, samrt, samrt.masks, samrt.postprocess, samrt.cli, samrt.segment, samrt.serve\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'segment_anything', 'samrt_export', 'cv2', 'ray') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_segment_without_ray_does_not_import_ray(tiny_model: Any, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "one.png"
    Image.new("RGB", (64, 48), (120, 30, 200)).save(image)
    code = (
        "import sys\n"
        "from samrt.cli import main\n"
        f"status = main(['segment', {str(image)!r}, '--engine', {str(tiny_model.engine_dir)!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--points-per-side', '2'])\n"
        "assert status == 0, status\n"
        "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules, 'segment without --ray imported Ray'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
