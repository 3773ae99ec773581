#!/usr/bin/env bash
# Builds samrt._core with -fsanitize=address,undefined into a private folder and runs the
# kernel tests against it. Any sanitizer report fails the run (-fno-sanitize-recover=all,
# halt_on_error). Leak checking is off: CPython itself keeps allocations alive at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$py" -m pip install -q scikit-build-core pybind11
SAMRT_SANITIZE=address,undefined "$py" -m pip install -q --no-deps --no-build-isolation \
  --target "$site" -Cbuild-dir=build/sanitize .
export LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
PYTHONPATH="$site" "$py" - "$site" <<'PY'
import sys, samrt._core as core
# Guard against testing the regular build by mistake.
assert core.__file__.startswith(sys.argv[1]), core.__file__
PY
PYTHONPATH="$site" "$py" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/test_rle_vs_pycocotools.py tests/test_nms_vs_torchvision.py \
  tests/test_regions_vs_official.py tests/test_postprocess_vs_official.py \
  tests/test_public_api_fuzz.py
