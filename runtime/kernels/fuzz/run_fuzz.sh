#!/usr/bin/env bash
# Builds the op fuzz target (op_fuzz.cc) with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer and runs
# it for a bounded time; then builds and runs the C++ kernel test (bgemm/bgemm_test.cc, through
# ../test_kernels.sh) once under the same sanitizers. Needs clang++ (Debian: apt-get install clang).
# Usage: runtime/kernels/fuzz/run_fuzz.sh [SECONDS=60]   Exit status non-zero on any finding or build failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$(dirname "$here")"
seconds="${1:-60}"
cxx="${FUZZ_CXX:-clang++}"
command -v "$cxx" >/dev/null || { echo "run_fuzz.sh: $cxx not found (apt-get install clang)" >&2; exit 2; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The kernel sources: the one list (../SOURCES) that setup.py compiles into the op libraries.
mapfile -t srcs < <(sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' -e "s|^|$kernels/|" "$kernels/SOURCES")
san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
"$cxx" -std=c++17 -O1 -pthread -ffp-contract=off "${san[@]}" -fsanitize=fuzzer "$here/op_fuzz.cc" "${srcs[@]}" \
  -o "$out/op_fuzz"
mkdir -p "$out/corpus"
# regressions/ holds inputs that once failed (read as seeds, never written: new units go to the first corpus dir).
# -max_len bounds one input (dims and attributes come first, then buffer bytes); ASan's leak check stays on.
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
  "$out/op_fuzz" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 -seed=1 \
  -artifact_prefix="${FUZZ_ARTIFACTS:-$out}/" "$out/corpus" "$here/regressions" 2>"$out/fuzz.log" \
  || { tail -n 60 "$out/fuzz.log" >&2
       echo "run_fuzz.sh: the fuzzer found a problem (log above; the failing input is its Base64 line;" \
            "FUZZ_ARTIFACTS=DIR keeps the crash file)" >&2; exit 1; }
grep -E "stat::number_of_executed_runs|cov:" "$out/fuzz.log" | tail -n 2
echo "fuzz: no findings in ${seconds}s"
# The kernel unit test once under the same sanitizers (native build only).
CXX="$cxx" KERNEL_TEST_FLAGS="${san[*]}" UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$kernels/test_kernels.sh"
echo "kernel test under ASan+UBSan: ok"
