#!/usr/bin/env python3
"""Prepares TensorRT's type stubs for mypy: ``python ci/tensorrt_stubs.py [OUT_DIR]``.

samrt's TensorRT backend is type-checked against tensorrt-stubs, but the published wheels
cannot be used as installed:

* ``pip install tensorrt-stubs`` also installs TensorRT itself, from pypi.nvidia.com;
* the wheel puts ``tensorrt/__init__.pyi`` in site-packages without a ``py.typed``
  marker, so mypy refuses it ("missing library stubs or py.typed marker");
* ``tensorrt_bindings/tensorrt.pyi`` is not valid Python (generated signatures with a
  parameter named ``in`` and parameters without defaults after ones with defaults), and
  mypy stops at a syntax error.

This script fetches the wheel without dependencies, repairs only the signatures that do
not parse (renaming keyword-named parameters, giving the trailing ones a default) and
writes the stubs to OUT_DIR (default ``build/tensorrt-stubs``, pyproject's ``mypy_path``).
Then ``mypy`` checks ``samrt.backends.tensorrt`` against them. The stubs' own remaining
errors are ignored by a pyproject override; our modules are checked with ``--strict``.
"""

from __future__ import annotations

import argparse
import ast
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_VERSION = "10.13.0.35.1"
PACKAGES = ("tensorrt", "tensorrt_bindings")
_DEF = re.compile(r"^(?P<head>\s*def\s+\w+\()(?P<params>.*)(?P<tail>\)\s*(?:->.*)?:.*)$")


def _split_params(text: str) -> list[str]:
    """Splits a parameter list at its top-level commas."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def repair_signature(line: str) -> str:
    """One ``def`` line made parseable; unchanged when there is nothing this can fix."""
    match = _DEF.match(line)
    if match is None:
        return line
    fixed: list[str] = []
    seen_default = False
    keyword_only = False
    for raw in _split_params(match["params"]):
        param = raw.strip()
        name = re.split(r"[:=]", param, maxsplit=1)[0].strip().lstrip("*")
        if keyword.iskeyword(name):
            param = param.replace(name, name + "_", 1)
        if param.startswith("*"):
            keyword_only = True
        elif "=" in param:
            seen_default = True
        elif seen_default and not keyword_only:
            param += " = ..."
        fixed.append(param)
    return f"{match['head']}{', '.join(fixed)}{match['tail']}"


def repair_source(source: str, origin: str) -> str:
    lines = source.split("\n")
    for _ in range(len(lines)):
        try:
            ast.parse("\n".join(lines), filename=origin)
            return "\n".join(lines)
        except SyntaxError as e:
            index = (e.lineno or 1) - 1
            # The error may be reported on a line after the def it belongs to.
            while index > 0 and not lines[index].lstrip().startswith("def "):
                index -= 1
            repaired = repair_signature(lines[index])
            if repaired == lines[index]:
                raise SystemExit(f"{origin}:{e.lineno}: cannot repair: {e.msg}") from None
            lines[index] = repaired
    raise SystemExit(f"{origin}: too many syntax errors to repair")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("build/tensorrt-stubs"))
    parser.add_argument("--version", default=DEFAULT_VERSION, help="tensorrt-stubs version")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                tmp,
                f"tensorrt-stubs=={args.version}",
            ],
            check=True,
        )
        if args.out_dir.exists():
            shutil.rmtree(args.out_dir)
        repaired = 0
        for package in PACKAGES:
            for stub in sorted((Path(tmp) / package).rglob("*.pyi")):
                rel = stub.relative_to(tmp)
                source = stub.read_text(encoding="utf-8")
                fixed = repair_source(source, str(rel))
                repaired += sum(a != b for a, b in zip(source.split("\n"), fixed.split("\n")))
                target = args.out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(fixed, encoding="utf-8")
    print(f"tensorrt-stubs {args.version} -> {args.out_dir} ({repaired} signatures repaired)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
