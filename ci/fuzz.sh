#!/usr/bin/env bash
# Coverage-guided fuzzing of the C++ kernels (fuzz/fuzz_*.cpp) with libFuzzer under
# AddressSanitizer + UndefinedBehaviorSanitizer, for a fixed budget per target. Any crash,
# sanitizer report, failed check, leak or hang (-timeout) fails the run; the input that
# caused it is kept under build/fuzz/artifacts/. Reproduce one with
#   build/fuzz/fuzz_<target> build/fuzz/artifacts/<target>-crash-...
#
# Knobs (environment): FUZZ_RUNS (runs per target, default 20000), FUZZ_MAX_TIME (seconds
# per target, default 20), FUZZ_SEED (libFuzzer seed, default 1: the same inputs every
# run; set another to explore), FUZZ_JOBS (targets at once, default 2), FUZZ_TARGETS
# (space-separated subset), CXX (default clang++; libFuzzer needs clang).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${FUZZ_RUNS:-20000}
max_time=${FUZZ_MAX_TIME:-20}
seed=${FUZZ_SEED:-1}
jobs_at_once=${FUZZ_JOBS:-2}
targets=${FUZZ_TARGETS:-"rle_decompress rle nms regions postprocess thread_pool"}
cxx=${CXX:-clang++}
case "$cxx" in *clang*) ;; *) cxx=clang++ ;; esac  # a g++ from the environment cannot fuzz
out=build/fuzz
start=$SECONDS

# --- clang with its libFuzzer runtime ------------------------------------------------------
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "fuzz: installing clang"
  apt_install clang
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' >"$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer "$probe/p.cpp" -o "$probe/p" 2>/dev/null; then
  major=$("$cxx" -dumpversion | cut -d. -f1)
  echo "fuzz: installing libclang-rt-$major-dev (libFuzzer)"
  apt_install "libclang-rt-$major-dev"
fi
echo "fuzz: $("$cxx" --version | head -n1)"

# --- build ------------------------------------------------------------------------------
# Kernels get coverage instrumentation too (fuzzer-no-link), so libFuzzer steers by their
# branches. Flags as in CMakeLists.txt: C++17, warnings, no FMA contraction in nms.cpp.
mkdir -p "$out/obj"
common=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
        -Wall -Wextra -Wpedantic -Icsrc -Ifuzz -pthread)
pids=()
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$jobs_at_once" ]; do wait -n; done; }
objects=()
for src in csrc/thread_pool.cpp csrc/rle.cpp csrc/nms.cpp csrc/regions.cpp csrc/postprocess.cpp; do
  obj="$out/obj/$(basename "$src" .cpp).o"
  objects+=("$obj")
  extra=()
  [ "$src" = csrc/nms.cpp ] && extra=(-ffp-contract=off)
  throttle
  "$cxx" "${common[@]}" "${extra[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
for t in $targets; do
  throttle
  "$cxx" "${common[@]}" -fsanitize=fuzzer "fuzz/fuzz_$t.cpp" "${objects[@]}" -o "$out/fuzz_$t" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "fuzz: built $(echo $targets | wc -w) targets in $((SECONDS - start)) s"

# --- run ----------------------------------------------------------------------------------
rm -rf "$out/seeds" "$out/corpus" "$out/logs"
mkdir -p "$out/corpus" "$out/logs" "$out/artifacts"
python3 fuzz/make_seeds.py "$out/seeds"

# ASan's leak check runs after each input; -timeout turns a hang into a failure.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_target() {
  local t=$1 threads=1
  # One pool thread makes most targets several times faster (no wake-ups per call); the
  # pool and postprocess targets choose their own pool sizes.
  case $t in thread_pool | postprocess) threads=2 ;; esac
  mkdir -p "$out/corpus/$t"
  cp "$out/seeds/$t"/* "$out/corpus/$t/"
  local started=$SECONDS
  if SAMRT_NUM_THREADS=$threads "$out/fuzz_$t" -runs="$runs" -max_total_time="$max_time" -seed="$seed" \
    -timeout=20 -rss_limit_mb=3072 -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t-" "$out/corpus/$t" >"$out/logs/$t.log" 2>&1; then
    local done_line
    done_line=$(grep -E '^Done [0-9]+ runs' "$out/logs/$t.log" | tail -n1)
    echo "fuzz: $t: ${done_line:-finished} (wall $((SECONDS - started)) s), cov $(grep -oE 'cov: [0-9]+' "$out/logs/$t.log" | tail -n1 | cut -d' ' -f2)"
  else
    echo "fuzz: $t: FAILED; its log ends:" >&2
    tail -n 60 "$out/logs/$t.log" >&2
    return 1
  fi
}
failed=0
pids=()
for t in $targets; do
  throttle
  run_target "$t" & pids+=($!);
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed=1
done
echo "fuzz: total $((SECONDS - start)) s"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED; reproducers: $(ls "$out/artifacts" | tr '\n' ' ')" >&2
  exit 1
fi
