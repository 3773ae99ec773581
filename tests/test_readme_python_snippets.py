"""The README's Python snippets, run as a reader would run them, so that they cannot rot.

Oracle: the README itself. Every ```python block is run (each one uses an engine, directly
or through what an earlier one made), in the README's order and in one namespace (later
snippets use what earlier ones made, as a reader's session would), in a fresh Python
process whose working directory holds what a clone holds (``examples/dog.jpg``) and the
folder the snippets name for a user's photos (``photos/``, a copy of the sample photo).

The one substitution: the engine path becomes the tiny engine of the tests' fixture (the
README's ``engines/vit_b`` is a full-size export: minutes of CPU, 375 MB).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_PATH = re.compile(r"""(["'])engines/[^"']+\1""")

# Runs each snippet in turn in one namespace; "ok LINE" after each one that finished.
DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for line, code in json.load(open(sys.argv[1])):
    exec(compile(code, f"README.md, the snippet at line {line}", "exec"), namespace)
    print(f"ok {line}", flush=True)
"""


def python_snippets() -> list[tuple[int, str]]:
    """(line of the opening fence, code) of each ```python block of the README."""
    readme = (REPO_ROOT / "README.md").read_text()
    snippets = []
    for match in re.finditer(r"^```python\n(.*?)^```", readme, re.DOTALL | re.MULTILINE):
        snippets.append((readme.count("\n", 0, match.start()) + 1, match.group(1)))
    return snippets


def test_the_snippets_are_found() -> None:
    snippets = [code for _, code in python_snippets()]
    # What the README shows today; a snippet added later is run too, whatever it is.
    for api in ("samrt.Predictor(", "samrt.AutomaticMaskGenerator(", "create_app(", "segment_dataset("):
        assert any(api in code for code in snippets), f"no README snippet calls {api}"


def test_readme_python_snippets_run(tiny_model: Any, tmp_path: Path) -> None:
    snippets = python_snippets()
    engine = json.dumps(str(tiny_model.engine_dir))
    runnable = [(line, ENGINE_PATH.sub(lambda _: engine, code)) for line, code in snippets]
    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    (work / "photos").mkdir()
    shutil.copy2(REPO_ROOT / "examples" / "dog.jpg", work / "examples" / "dog.jpg")
    shutil.copy2(REPO_ROOT / "examples" / "dog.jpg", work / "photos" / "dog.jpg")
    (tmp_path / "snippets.json").write_text(json.dumps(runnable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "snippets.json")],
        cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    done = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert result.returncode == 0 and done == [line for line, _ in snippets], (
        f"README snippets run: {done} of {[line for line, _ in snippets]}\n"
        f"{result.stdout}\n{result.stderr[-4000:]}"
    )
    assert "onnxruntime (CPUExecutionProvider)" in result.stdout  # print(predictor.backend_name)
    assert "samrt segment: 1 segmented" in result.stdout  # print(summary.line())
    assert (work / "out" / "dog.jpg.json").is_file() and (work / "out" / "coco_annotations.json").is_file()
