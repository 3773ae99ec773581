"""The README's development commands install what a build without isolation needs.

Oracle: pyproject.toml's [build-system] requires. `pip install --no-build-isolation -e .`
builds with the venv's own packages, so the Development block must install every build
requirement, and CMake and ninja (which scikit-build-core would otherwise add to an isolated
build's requirements), before it; without them pip stops with "No module named
'scikit_build_core'" in the quick start's venv.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _development_commands() -> list[list[str]]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Development\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the Development section has a bash block"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines()]


def test_build_requirements_are_installed_before_the_editable_build() -> None:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        requires = tomllib.load(file)["build-system"]["requires"]
    needed = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requires}
    needed |= {"cmake", "ninja"}
    commands = _development_commands()
    editable = next(
        i for i, words in enumerate(commands) if "--no-build-isolation" in words and "-e" in words
    )
    installed: set[str] = set()
    for words in commands[:editable]:
        if words[:1] and words[0].endswith("pip") and words[1:2] == ["install"]:
            installed |= {w.lower() for w in words[2:] if not w.startswith("-")}
    assert needed - installed == set()
