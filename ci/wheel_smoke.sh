#!/usr/bin/env bash
# Installs the wheel that ci/build_wheel.sh repaired into a fresh venv outside the checkout,
# with no C or C++ compiler on PATH (PATH is the venv's bin alone; CC and CXX unset; binary
# packages only), and smoke-tests it there with ci/wheel_check.py: imported from
# site-packages, one version everywhere, the kernels, `samrt info`, a predict and everything
# mode (Python and `samrt segment`) on a tiny engine. The engine is exported by the
# development venv's samrt (SAMRT_EXPORTER, default .venv/bin/samrt: the wheel's venv has no
# torch), once: later runs find it up to date. 20 to 30 s.
#
#   bash ci/wheel_smoke.sh [WHEEL]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-python3}
exporter=${SAMRT_EXPORTER:-.venv/bin/samrt}
start=$SECONDS

version=$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
abi=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if [ $# -gt 0 ]; then
    wheel=$1
else
    wheel=$(ls dist/samrt-"$version"-"$abi"-"$abi"-manylinux*_"$(uname -m)".whl)
fi
wheel=$(realpath "$wheel")

engine=$root/build/wheel-smoke/tiny-engine
"$exporter" export --model-type tiny --random-weights --seed 0 --quiet --out "$engine" >/dev/null

venv=$(mktemp -d "${TMPDIR:-/tmp}/samrt-wheel-smoke.XXXX")
trap 'rm -rf "$venv"' EXIT
"$py" -m venv "$venv"
bare=(env -u CC -u CXX -u CPATH PATH="$venv/bin")
# The wheel and its runtime dependencies, all binary: with no compiler, a source build fails.
"${bare[@]}" "$venv/bin/python" -m pip install -q --only-binary=:all: "$wheel"
# From outside the checkout, so nothing can import from it.
(cd "$venv" && "${bare[@]}" "$venv/bin/python" "$root/ci/wheel_check.py" --no-compiler \
    --pyproject "$root/pyproject.toml" --engine "$engine" --image "$root/examples/dog.jpg")
echo "wheel_smoke: $(basename "$wheel") installed and checked in $((SECONDS - start)) s"
