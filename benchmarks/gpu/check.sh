#!/usr/bin/env bash
# The prepared GPU check (see README.md here): one command on the GPU machine.
#
#   bash benchmarks/gpu/check.sh                  the check (all part folders carried)
#   bash benchmarks/gpu/check.sh --receive        between carries: verify the parts present
#   bash benchmarks/gpu/check.sh --unpack-only    verify, reassemble and list the wheels
#   bash benchmarks/gpu/check.sh --cpu-dry-run    the same steps on a CPU: tiny model, CPU
#                                                 provider, this environment (no parts)
# Options: --out DIR (default $OUT, else build/gpu-check/<mode>/out), --work DIR (default
# build/gpu-check/<mode>), --parts DIR (default benchmarks/gpu/parts), --budget-s S (the
# whole check's time; default 480 on the GPU, 240 for the dry run). PYTHON: the interpreter
# (default python3; the dry run prefers the checkout's .venv/bin/python).
#
# Writes step0_env.json ... step4_tensorrt.json to the out folder as each step finishes,
# summary.json at the end (also after a failure or a time-out) and check.log (all output).
# Exit status 0 when the summary says ok.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=parts.sh
source "$HERE/parts.sh"

MODE=gpu
ACTION=check
OUT_DIR=${OUT:-}
WORK=""
PARTS="$HERE/parts"
BUDGET=""
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-dry-run) MODE=cpu-dry-run; shift ;;
        --receive) ACTION=receive; shift ;;
        --unpack-only) ACTION=unpack; shift ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --parts) PARTS=$2; shift 2 ;;
        --budget-s) BUDGET=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

START=$(date +%s)
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if [ "$MODE" = cpu-dry-run ] && [ -x "$ROOT/.venv/bin/python" ]; then
        PYTHON="$ROOT/.venv/bin/python"
    fi
fi
WORK=${WORK:-$ROOT/build/gpu-check/$MODE}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

if [ "$ACTION" = receive ]; then
    echo "check.sh --receive: the part folders in $PARTS"
    parts_verify "$PARTS"
    exit $?
fi
if [ "$ACTION" = unpack ]; then
    parts_reassemble "$PARTS" "$WORK/unpacked" "$PYTHON"
    exit $?
fi

BUDGET=${BUDGET:-$([ "$MODE" = gpu ] && echo 480 || echo 240)}
DEADLINE=$((START + BUDGET))
OUT_DIR=${OUT_DIR:-$WORK/out}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
exec > >(tee -a "$OUT_DIR/check.log") 2>&1
TEE_PID=$!
echo "check.sh: mode $MODE, budget ${BUDGET} s, out $OUT_DIR, work $WORK, python $PYTHON"
rm -f "$OUT_DIR"/step*_*.json "$OUT_DIR/summary.json"
: >"$WORK/stages.tsv"

left() { echo $((DEADLINE - $(date +%s))); }

# stage NAME COMMAND...: runs a setup stage within the time left, records it in stages.tsv.
stage() {
    local name=$1 t0 rc limit
    shift
    limit=$(left)
    if [ "$limit" -le 5 ]; then
        printf '%s\t0\tskipped\tno time left\n' "$name" >>"$WORK/stages.tsv"
        return 1
    fi
    echo "check.sh: stage $name (${limit} s left)"
    t0=$(date +%s.%N)
    # bash -c: the stage may be one of the functions here (exported below); timeout ends
    # its whole process group (pip, cmake and the compilers with it).
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@"
    rc=$?
    local secs
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        printf '%s\t%s\tok\t\n' "$name" "$secs" >>"$WORK/stages.tsv"
    else
        printf '%s\t%s\tfailed\texit status %s%s\n' "$name" "$secs" "$rc" \
            "$([ "$rc" -eq 124 ] && echo ' (time budget)')" >>"$WORK/stages.tsv"
    fi
    echo "check.sh: stage $name: exit $rc after $secs s"
    return "$rc"
}

summarize() {
    "$PYTHON" "$HERE/check.py" summarize --mode "$MODE" --work "$WORK" --out "$OUT_DIR"
    local rc=$?
    echo "check.sh: done in $(($(date +%s) - START)) s; the files are in $OUT_DIR"
    # The log is whole before the command returns (and $OUT is collected).
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$rc"
}

# --- Setup on the GPU machine: wheels, samrt's build ----------------------------------------
SITE="$WORK/site"
SAMRT_SITE="$WORK/samrt-site"

install_wheels() {
    local sums stamp
    sums=$(parts_sums_file "$PARTS") || return 1
    stamp=$(sha256sum "$sums" | cut -c1-64)
    if [ -f "$SITE/.installed" ] && [ "$(cat "$SITE/.installed")" = "$stamp" ]; then
        echo "wheels already installed in $SITE (same SHA256SUMS)"
        return 0
    fi
    parts_reassemble "$PARTS" "$WORK/unpacked" "$PYTHON" || return 1
    rm -rf "$SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
        "$WORK"/unpacked/wheels/*.whl || return 1
    echo "$stamp" >"$SITE/.installed"
}

# samrt's C++ module and packages, built from this checkout with the project's own build
# (scikit-build-core, no isolation: the machine has no registry); CMake directly if that fails.
build_samrt() {
    local tmp stamp version numeric
    # A rerun on the same machine keeps the build when the sources are the same.
    stamp=$(cd "$ROOT" && find csrc python/samrt export/samrt_export CMakeLists.txt pyproject.toml \
        -type f -not -name '*.pyc' -not -path '*/__pycache__/*' -not -name '*.so' | sort \
        | xargs sha256sum | sha256sum | cut -c1-64)
    if [ -f "$SAMRT_SITE/.built" ] && [ "$(cat "$SAMRT_SITE/.built")" = "$stamp" ]; then
        echo "samrt already built in $SAMRT_SITE (same sources)"
        return 0
    fi
    rm -rf "$SAMRT_SITE"
    if (cd "$ROOT" && "$PYTHON" -m pip install -q --no-build-isolation --no-deps --no-index \
            --no-compile --no-cache-dir --target "$SAMRT_SITE" .); then
        echo "$stamp" >"$SAMRT_SITE/.built"
        return 0
    fi
    echo "check.sh: the pip build failed; building with CMake directly"
    tmp="$WORK/cmake-build"
    rm -rf "$SAMRT_SITE"
    # pyproject.toml's version, the one source (CMakeLists.txt needs both forms).
    version=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
        "$ROOT/pyproject.toml") || return 1
    numeric=${version%%[!0-9.]*}  # project(VERSION) takes the release part only: 0.2.0rc1 -> 0.2.0
    cmake -S "$ROOT" -B "$tmp" $(command -v ninja >/dev/null && echo "-G Ninja") -DCMAKE_BUILD_TYPE=Release \
        -DSKBUILD_PROJECT_NAME=samrt -DSKBUILD_PROJECT_VERSION="${numeric%.}" \
        -DSKBUILD_PROJECT_VERSION_FULL="$version" \
        -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
        -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" || return 1
    cmake --build "$tmp" -j "$(nproc)" || return 1
    mkdir -p "$SAMRT_SITE"
    cp -r "$ROOT/python/samrt" "$ROOT/export/samrt_export" "$SAMRT_SITE/" || return 1
    cp "$tmp"/_core*.so "$SAMRT_SITE/samrt/" || return 1
    echo "$stamp" >"$SAMRT_SITE/.built"
}

# The onnxruntime that samrt imports must be the carried CUDA build, not the machine's CPU one.
check_imports() {
    "$PYTHON" - "$SITE" <<'EOF'
import sys

import onnxruntime
import samrt
import segment_anything

site = sys.argv[1]
print(f"samrt {samrt.__file__}; onnxruntime {onnxruntime.__version__} {onnxruntime.__file__} "
      f"providers {onnxruntime.get_available_providers()}; segment_anything {segment_anything.__file__}")
if not onnxruntime.__file__.startswith(site):
    sys.exit(f"onnxruntime comes from {onnxruntime.__file__}, not from {site}")
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    sys.exit("this onnxruntime has no CUDAExecutionProvider")
EOF
}

export ROOT WORK PARTS PYTHON SITE SAMRT_SITE PARTS_BUNDLE PARTS_SUMS
export -f parts_die parts_sums_file parts_expected parts_verify parts_reassemble \
    install_wheels build_samrt check_imports

if [ "$MODE" = gpu ]; then
    echo "check.sh: the part folders in $PARTS"
    stage verify_parts parts_verify "$PARTS" all || summarize
    stage install_wheels install_wheels || summarize
    stage build_samrt build_samrt || summarize
    export PYTHONPATH="$SAMRT_SITE:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    stage check_imports check_imports || summarize
else
    stage check_imports "$PYTHON" -c "import samrt, samrt_export, segment_anything, onnxruntime; print('samrt', samrt.__file__)" \
        || summarize
fi
export PYTHONUNBUFFERED=1
stage engine "$PYTHON" "$HERE/check.py" engine --mode "$MODE" --work "$WORK" || summarize

# --- The steps: each writes its file as it finishes; the summary is kept time for ---------
limit=$(($(left) - 10))
if [ "$limit" -gt 5 ]; then
    echo "check.sh: steps (${limit} s left for them)"
    timeout --kill-after=10 "$limit" "$PYTHON" "$HERE/check.py" run --mode "$MODE" --work "$WORK" \
        --out "$OUT_DIR" --deadline "$((DEADLINE - 10))"
    echo "check.sh: steps: exit $?"
else
    echo "check.sh: no time left for the steps"
fi
summarize
