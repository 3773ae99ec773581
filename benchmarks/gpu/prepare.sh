#!/usr/bin/env bash
# Prepares the GPU check's wheels on a machine with the package registry (see README.md here).
#
#   bash benchmarks/gpu/prepare.sh [--wheels-from DIR] [--part-mib N] [--xz-level L] [--parts DIR]
#
# Downloads the cp312 manylinux wheels that the GPU machine's Python lacks (REQUIREMENTS
# below) into benchmarks/gpu/wheels/, packs them into one xz tar, splits it into
# benchmarks/gpu/parts/part-K-of-N/ folders small enough that each one, carried together with
# the working tree, stays under the device tool's 64 MiB, writes SHA256SUMS (wheels, bundle,
# parts) into each, verifies the whole round trip (parts -> bundle -> wheels) as check.sh
# will do it, and prints the sizes and the order in which the part folders must be carried.
#
#   --wheels-from DIR  take the wheels from DIR instead of downloading (no network)
#   --part-mib N       pieces of N MiB (default: 64 MiB less the working tree less a margin)
#   --xz-level L       xz preset, 0-9 (default 9: the smallest parts)
#   --parts DIR        where the part folders go (default benchmarks/gpu/parts)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=parts.sh
source "$HERE/parts.sh"

# What the GPU machine lacks (see README.md): onnxruntime's CUDA 13 build and the official
# segment-anything. Everything else the check imports is there (torch 2.11+cu130,
# torchvision, onnx, onnxscript, numpy, pillow, opencv, pybind11, scikit-build-core, cmake).
REQUIREMENTS=(onnxruntime-gpu==1.31.1 segment-anything==1.0)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
# The device tool's limit on what one call carries (the working tree and the carried paths).
LIMIT_BYTES=$((64 * 1024 * 1024))
# Room for the tree to grow between this run and the carries, and for SHA256SUMS.
MARGIN_BYTES=$((4 * 1024 * 1024))

WHEELS_FROM=""
PART_MIB=""
XZ_LEVEL=9
PARTS="$HERE/parts"
WHEELS="$HERE/wheels"
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
        --wheels-from) WHEELS_FROM=$2; shift 2 ;;
        --part-mib) PART_MIB=$2; shift 2 ;;
        --xz-level) XZ_LEVEL=$2; shift 2 ;;
        --parts) PARTS=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "prepare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$(dirname "$PARTS")"
PARTS=$(cd "$(dirname "$PARTS")" && pwd)/$(basename "$PARTS")

# --- 1. The wheels ---------------------------------------------------------------------------
if [ -n "$WHEELS_FROM" ]; then
    WHEELS=$(cd "$WHEELS_FROM" && pwd)
    echo "prepare: wheels from $WHEELS (no download)"
else
    echo "prepare: downloading ${REQUIREMENTS[*]} (cp312, manylinux x86_64) into $WHEELS"
    fresh=$(mktemp -d "$HERE/.prepare-tmp.XXXXXX")
    platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platform_args[@]}" -d "$fresh" "${REQUIREMENTS[@]}"
    rm -rf "$WHEELS"
    mv "$fresh" "$WHEELS"
    # One wheel per requirement, and onnxruntime-gpu's CUDA 13 build (its cuda extra names
    # the CUDA 13 runtime wheels).
    [ "$(ls "$WHEELS"/*.whl | wc -l)" -eq "${#REQUIREMENTS[@]}" ] \
        || { echo "prepare: expected ${#REQUIREMENTS[@]} wheels, got: $(ls "$WHEELS")" >&2; exit 1; }
    "$PYTHON" - "$WHEELS"/onnxruntime_gpu-*.whl <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = wheel.read(name).decode()
if "nvidia-cuda-runtime~=13" not in metadata.replace(" ", ""):
    sys.exit(f"prepare: {sys.argv[1]} is not onnxruntime's CUDA 13 build (its METADATA names no "
             "nvidia-cuda-runtime~=13)")
EOF
fi

# --- 2. What travels with each part: the working tree ----------------------------------------
# Tracked files and untracked ones that git does not ignore (the device tool carries both),
# and shared/ where the checkout has one.
tree_bytes=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | du --files0-from=- -cb 2>/dev/null | tail -1 | cut -f1)
if [ -d "$ROOT/shared" ]; then
    tree_bytes=$((tree_bytes + $(du -sb "$ROOT/shared" | cut -f1)))
fi
if [ -n "$PART_MIB" ]; then
    part_bytes=$((PART_MIB * 1024 * 1024))
else
    part_bytes=$(((LIMIT_BYTES - tree_bytes - MARGIN_BYTES) / 1048576 * 1048576))
fi
[ "$part_bytes" -ge 1048576 ] \
    || { echo "prepare: the working tree ($tree_bytes bytes) leaves no room for a part" >&2; exit 1; }

# --- 3. The parts, then the round trip check.sh will make -----------------------------------
echo "prepare: packing (xz -$XZ_LEVEL) and splitting into pieces of at most $part_bytes bytes"
parts_make "$WHEELS" "$PARTS" "$part_bytes" "$XZ_LEVEL"
cp "$PARTS"/part-1-of-*/"$PARTS_SUMS" "$PARTS/$PARTS_SUMS"
echo "prepare: verifying the parts"
parts_verify "$PARTS" all
roundtrip=$(mktemp -d "$(dirname "$PARTS")/.prepare-tmp.XXXXXX")
trap 'rm -rf "$roundtrip"' EXIT
parts_reassemble "$PARTS" "$roundtrip" "$PYTHON" >/dev/null
for wheel in "$WHEELS"/*.whl; do
    cmp -s "$wheel" "$roundtrip/wheels/$(basename "$wheel")" \
        || { echo "prepare: $(basename "$wheel") does not survive the round trip" >&2; exit 1; }
done
echo "prepare: round trip ok: parts -> bundle -> wheels, byte for byte"

# --- 4. Sizes and the order of the carries ---------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
echo
echo "wheels:"
for wheel in "$WHEELS"/*.whl; do
    printf '  %-70s %12s bytes  %s\n' "$(basename "$wheel")" "$(stat -c %s "$wheel")" "$(mib "$(stat -c %s "$wheel")")"
done
bundle_bytes=$(cat "$PARTS"/part-*/chunk | wc -c)
echo "bundle (xz -$XZ_LEVEL): $bundle_bytes bytes ($(mib "$bundle_bytes"))"
echo "working tree (tracked + untracked not ignored): $tree_bytes bytes ($(mib "$tree_bytes"))"
echo "limit per call: $LIMIT_BYTES bytes (64 MiB); margin kept: $MARGIN_BYTES bytes"
mapfile -t order < <(parts_expected "$PARTS/$PARTS_SUMS")
n=${#order[@]}
rel=${PARTS#"$ROOT"/}
{
    echo "Carry the part folders in this order, one per device run, run after run without pause"
    echo "(the machine keeps what earlier runs carried only while it stays warm, about 30 s idle):"
    i=0
    for part in "${order[@]}"; do
        i=$((i + 1))
        part_size=$(du -sb "$PARTS/$part" | cut -f1)
        total=$((part_size + tree_bytes))
        if [ "$i" -lt "$n" ]; then
            cmd="bash benchmarks/gpu/check.sh --receive"
        else
            cmd="bash benchmarks/gpu/check.sh    (timeout_s=600)"
        fi
        printf '  run %d: carry=["%s/%s"]  command: %s\n' "$i" "$rel" "$part" "$cmd"
        printf '         part %s + tree %s = %s of 64 MiB\n' "$(mib "$part_size")" "$(mib "$tree_bytes")" "$(mib "$total")"
        [ "$total" -lt "$LIMIT_BYTES" ] \
            || { echo "prepare: $part with the tree is over 64 MiB" >&2; exit 1; }
    done
} | tee "$PARTS/ORDER.txt"
