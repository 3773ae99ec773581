"""The runtime must not need torch: production services run without it."""

from __future__ import annotations

import subprocess
import sys


def test_import_samrt_does_not_import_torch() -> None:
    code = (
        "import sys, samrt, samrt.masks, samrt.postprocess, samrt.cli, samrt.serve\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'segment_anything', 'samrt_export', 'cv2') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
