#!/usr/bin/env bash
# Builds the kernel unit tests (bgemm, attention, layernorm) natively and, when the Debian cross compiler and qemu-user are present,
# for aarch64 (NEON path), and runs both. Usage: runtime/kernels/test_kernels.sh [--require-arm]
# CXX picks the native compiler (default g++); KERNEL_TEST_FLAGS adds compiler flags and runs the native build
# only (fuzz/run_fuzz.sh uses it for the sanitizer build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# the one kernel source list (SOURCES), plus one test program per op folder
mapfile -t srcs < <(sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' -e "s|^|$here/|" "$here/SOURCES")
tests=(bgemm/bgemm_test.cc attention/attention_test.cc layernorm/layernorm_test.cc)
flags=(-std=c++17 -O2 -pthread -ffp-contract=off -Wall)
for t in "${tests[@]}"; do
  # shellcheck disable=SC2086  # KERNEL_TEST_FLAGS is a list of flags
  "${CXX:-g++}" "${flags[@]}" ${KERNEL_TEST_FLAGS:-} "${srcs[@]}" "$here/$t" -o "$out/test_native"
  "$out/test_native"
done
[ -z "${KERNEL_TEST_FLAGS:-}" ] || exit 0
if command -v aarch64-linux-gnu-g++-12 >/dev/null && command -v qemu-aarch64 >/dev/null; then
  for t in "${tests[@]}"; do
    aarch64-linux-gnu-g++-12 "${flags[@]}" -march=armv8-a -static "${srcs[@]}" "$here/$t" -o "$out/test_arm"
    qemu-aarch64 "$out/test_arm"
  done
elif [ "${1:-}" = "--require-arm" ]; then
  echo "aarch64 cross compiler or qemu-aarch64 missing (apt-get install g++-12-aarch64-linux-gnu qemu-user)" >&2
  exit 1
else
  echo "skipping aarch64 run: no cross compiler / qemu-aarch64"
fi
