"""One version source: pyproject.toml's [project] version.

Oracle: pyproject.toml itself. The installed distribution's metadata, ``samrt.__version__``,
the compiled module's ``__version__`` (CMake's SAMRT_VERSION, from scikit-build-core),
``samrt --version`` all state it, unchanged (a pre-release such as 0.2.0rc1 too). A
mismatch here after editing the version means the installed build is stale: reinstall.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import samrt
import samrt._core

REPO_ROOT = Path(__file__).resolve().parent.parent


def _pyproject_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    assert isinstance(version, str)
    return version


def test_every_version_is_pyprojects() -> None:
    expected = _pyproject_version()
    cli = subprocess.run(
        [sys.executable, "-m", "samrt.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert {
        "metadata": importlib.metadata.version("samrt"),
        "samrt.__version__": samrt.__version__,
        "samrt._core.__version__": samrt._core.__version__,
        "samrt --version": cli.strip(),
    } == {
        "metadata": expected,
        "samrt.__version__": expected,
        "samrt._core.__version__": expected,
        "samrt --version": f"samrt {expected}",
    }


def test_the_version_is_stated_nowhere_else() -> None:
    # The files that build or describe the package take the version from pyproject.toml; a
    # literal copy of it elsewhere would go stale at the next release.
    literal = re.compile(r"(?<![\d.])" + re.escape(_pyproject_version()) + r"(?![\d.])")
    sources = [
        REPO_ROOT / "CMakeLists.txt",
        *sorted((REPO_ROOT / "ci").glob("*")),
        *sorted((REPO_ROOT / "benchmarks" / "gpu").glob("*.sh")),
        *sorted((REPO_ROOT / "csrc").rglob("*.[ch]pp")),
        *sorted((REPO_ROOT / "python" / "samrt").rglob("*.py")),
        *sorted((REPO_ROOT / "export" / "samrt_export").rglob("*.py")),
    ]
    stated = [
        str(path.relative_to(REPO_ROOT))
        for path in sources
        if path.is_file() and literal.search(path.read_text(errors="replace"))
    ]
    assert stated == []
