#!/usr/bin/env bash
# Measures what each install of a samrt wheel costs: one fresh venv per variant, the wall time
# of its pip install (no pip cache: every file comes from the registry or from local disk)
# and the size of its site-packages, with the largest packages in it; then the venv is
# removed. Not part of CI (the export installs are gigabytes); the README's numbers come from
# it. Each variant also runs what it is for (runtime: samrt --version; export: samrt export of
# the tiny model; serve: import samrt.serve; ray: import ray.data).
#
#   bash ci/install_sizes.sh [WHEEL] [VARIANT...]
#
# Variants: runtime serve ray export export-cpu (default: all). export takes the torch that
# ci/constraints.txt pins (the CUDA build, with its nvidia-* libraries); export-cpu first
# installs a CPU-only torch with $TORCH_CPU_INSTALL (default: PyTorch's CPU index, the
# README's recipe), then the export extra on top of it. The line names the torch and
# torchvision it got: where that index cannot be reached, pip may take others (PyPI's
# torchvision is a CUDA build, which does not load against a CPU torch: no export).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-python3}
abi=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=${1:-$(find dist -name "samrt-*-$abi-$abi-manylinux*.whl" | sort | tail -1)}
shift || true
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(runtime serve ray export export-cpu)
torch_cpu_install=${TORCH_CPU_INSTALL:-"torch torchvision --index-url https://download.pytorch.org/whl/cpu"}
wheel=$(realpath "$wheel")

measure() {
    local variant=$1 venv start seconds extra status=ok
    venv=$(mktemp -d "${TMPDIR:-/tmp}/samrt-size-$variant.XXXX")
    "$py" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip install -q --no-cache-dir)
    start=$(date +%s.%N)
    case $variant in
        runtime) extra="" ;;
        serve | ray) extra="[$variant]" ;;
        export) extra="[export]"; pip+=(-c "$root/ci/constraints.txt") ;;
        export-cpu)
            extra="[export]"
            # shellcheck disable=SC2086  # the recipe is words: requirements and pip options
            "${pip[@]}" $torch_cpu_install || status="failed: $torch_cpu_install"
            ;;
        *) echo "install_sizes: unknown variant $variant" >&2; exit 2 ;;
    esac
    if [ "$status" = ok ]; then
        "${pip[@]}" "$wheel$extra" || status="pip install failed"
    fi
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    if [ "$status" = ok ]; then
        case $variant in
            runtime) "$venv/bin/samrt" --version >/dev/null || status="samrt --version failed" ;;
            serve) "$venv/bin/python" -c "import samrt.serve" || status="import samrt.serve failed" ;;
            ray) "$venv/bin/python" -c "import ray.data" || status="import ray.data failed" ;;
            export | export-cpu)
                "$venv/bin/samrt" export --model-type tiny --random-weights --seed 0 --quiet \
                    --out "$venv/tiny-engine" >/dev/null || status="samrt export failed" ;;
        esac
    fi
    local site torch
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    torch=$("$venv/bin/python" -c 'import importlib.metadata as m
print(", ".join(f"{d} {m.version(d)}" for d in ("torch", "torchvision")
                if any(x.metadata["Name"] == d for x in m.distributions())) or "no torch")')
    printf '%-10s site-packages %5s, install %4.0f s, %s; %s\n' "$variant" \
        "$(du -sh "$site" | cut -f1)" "$seconds" "$torch" "$status"
    du -s "$site"/* 2>/dev/null | sort -rn | head -6 | while read -r kb path; do
        printf '    %7.1f MB  %s\n' "$(echo "$kb / 1024" | bc -l)" "$(basename "$path")"
    done
    rm -rf "$venv"
}

echo "install_sizes: $(basename "$wheel") on $("$py" -V), $(uname -m)"
for variant in "${variants[@]}"; do
    measure "$variant"
done
