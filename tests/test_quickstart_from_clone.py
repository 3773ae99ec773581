"""The README's quick start, run from a clone with no ../shared beside it, twice.

Oracle: the README itself. Its first quick-start block is parsed, and its `samrt export` and
`samrt segment` commands run, in order, in a copy of the repository's tracked files made in
a temporary folder (whose parent has no `shared/`). The second run must succeed too (the
export is up to date, the image's outputs are up to date).

The one substitution: `--model-type vit_b` becomes `tiny`. The README exports the
full-size vit_b (minutes of CPU and 375 MB per run), which CI's fast suite does not do;
the tiny type goes through the same CLI, export and segment code paths.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _quickstart_commands() -> list[list[str]]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the quick start has a bash block"
    commands = []
    for part in block.group(1).replace("\\\n", " ").split("&&"):
        words = shlex.split(part)
        if words and words[0].endswith("bin/samrt") and words[1] in ("export", "segment"):
            commands.append(words[1:])
    assert [c[0] for c in commands] == ["export", "segment"], commands
    return commands


def _clone(tmp_path: Path) -> Path:
    """The tracked files of this checkout (with their working-tree contents), elsewhere."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files a clone holds")
    clone = tmp_path / "clone"
    for name in listed.decode().split("\0"):
        source = REPO_ROOT / name
        if name and source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    return clone


def test_readme_quickstart_runs_twice_from_a_bare_clone(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    assert not (clone.parent / "shared").exists()
    commands = _quickstart_commands()
    export, segment = commands
    assert export[export.index("--model-type") + 1] == "vit_b"
    export[export.index("--model-type") + 1] = "tiny"
    outputs = []
    for _ in range(2):
        for args in (export, segment):
            result = subprocess.run(
                [sys.executable, "-m", "samrt.cli", *args],
                cwd=clone, capture_output=True, text=True, timeout=600,
            )
            assert result.returncode == 0, f"samrt {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
            outputs.append(result.stdout)
    first_export, first_segment, second_export, second_segment = outputs
    assert first_export.startswith("exported tiny to")
    assert "is up to date" in second_export
    assert "1 segmented" in first_segment
    assert "1 up to date" in second_segment
    out = Path(segment[segment.index("--out") + 1])
    record = json.loads((clone / out / "dog.jpg.json").read_text())
    assert record["image"]["width"] == 800 and record["annotations"]
    assert (clone / out / "dog.jpg.png").is_file()  # --overlay
