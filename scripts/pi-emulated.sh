#!/usr/bin/env bash
# Proves the Raspberry Pi (aarch64) runtime path on an x86-64 Debian machine, under qemu-user:
#   1. an aarch64 sysroot with Debian's python3.11 (apt-get download + dpkg -x, no install),
#   2. the aarch64 wheels of onnxruntime / ai-edge-litert / numpy / tokenizers + our pure-Python package,
#   3. our ONNX Runtime op library cross-compiled for aarch64 (NEON kernels),
#   4. `bebert-deploy predict` and `bench` on models exported here, checked against the x86 run.
# qemu timings are NOT device timings and are never reported as such.
# Usage: scripts/pi-emulated.sh MODEL.onnx|MODEL.tflite [...]   (needs root: apt, unshare, mount)
#        scripts/pi-emulated.sh --prepare DIR   only steps 1-3: DIR/site gets our package with the aarch64 op
#        libraries; prints "sysroot=... wheels=... site=..." for callers that run qemu themselves
#        (scripts/arm_count.py, which counts instructions per inference).
set -euo pipefail
[ "$#" -ge 1 ] || { echo "usage: $0 MODEL.onnx [...] | --prepare DIR" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${BEBERT_PI_CACHE:-$HOME/.cache/bebert-deploy/pi-emulated}"
sysroot="$cache/sysroot"; site="$cache/site"
if [ "$1" = "--prepare" ]; then
  [ "$#" -eq 2 ] || { echo "usage: $0 --prepare DIR" >&2; exit 2; }
  mkdir -p "$2"; work="$(cd "$2" && pwd)"; prepare_only=1
else
  work="$(mktemp -d)"; prepare_only=0
  trap 'rm -rf "$work"' EXIT
fi
py_x86="${PYTHON:-python3}"

if [ ! -x "$sysroot/usr/bin/python3.11" ]; then
  echo "[pi] building the aarch64 sysroot in $sysroot"
  dpkg --add-architecture arm64
  apt-get update -q >/dev/null
  mkdir -p "$cache/debs" "$sysroot"
  pkgs="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11 libc6 zlib1g libexpat1 libssl3
        libffi8 libbz2-1.0 liblzma5 libsqlite3-0 libstdc++6 libgcc-s1 libuuid1 libtirpc3 libnsl2 libncursesw6
        libtinfo6 libreadline8 libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
        libkeyutils1 libcrypt1 libgomp1"
  (cd "$cache/debs" && for p in $pkgs; do apt-get download -q "$p:arm64" >/dev/null; done)
  for d in "$cache"/debs/*.deb; do dpkg -x "$d" "$sysroot"; done
fi
if [ ! -d "$site/onnxruntime" ] || [ ! -f "$site/ai_edge_litert/libLiteRt.so" ]; then
  echo "[pi] fetching aarch64 wheels into $site"
  "$py_x86" -m pip install -q --upgrade --target "$site" --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --only-binary :all: --python-version 3.11 \
    --implementation cp onnxruntime==1.32.0 ai-edge-litert==2.3.0 numpy tokenizers click tqdm rich 2>&1 \
    | grep -v "^WARNING: Location" || true
fi

echo "[pi] installing our runtime (pure Python + aarch64 op library)"
pkg="$work/site/bebert_deploy"
rm -rf "$pkg"; mkdir -p "$pkg"
cp -r "$root"/bebert_deploy/. "$pkg/"
for sub in models exporters runtime; do mkdir -p "$pkg/$sub" && cp -r "$root/$sub"/. "$pkg/$sub/"; done
find "$pkg" -name "*.so" -delete
src="$root/runtime/kernels"
# the one kernel source list (runtime/kernels/SOURCES: one path a line, # comments) when the tree has it
if [ -f "$src/SOURCES" ]; then
  mapfile -t kernels < <(sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' -e "s|^|$src/|" "$src/SOURCES")
else
  kernels=("$src"/bgemm/bgemm.cc "$src"/bgemm/bgemm_scalar.cc "$src"/bgemm/bgemm_avx2.cc "$src"/bgemm/bgemm_neon.cc
           "$src"/bembed/bembed.cc "$src"/core/thread_pool.cc)
fi
cxx=(aarch64-linux-gnu-g++-12 -std=c++17 -O3 -pthread -ffp-contract=off -fPIC -shared -fvisibility=hidden)
"${cxx[@]}" "$src"/ort/ort_ops.cc "${kernels[@]}" -o "$pkg/runtime/_ort_ops.aarch64.so"
"${cxx[@]}" "$src"/litert/litert_ops.cc "${kernels[@]}" -ldl -o "$pkg/runtime/_litert_ops.aarch64.so"
if [ "$prepare_only" = 1 ]; then
  echo "sysroot=$sysroot wheels=$site site=$work/site"
  exit 0
fi

# onnxruntime probes /proc/cpuinfo at import; under qemu-user it would read the host's x86 text and crash.
cat > "$work/cpuinfo" <<'CPU'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1
CPU
# A wrapper so that processes the emulated Python spawns (bench workers) run under qemu too.
cat > "$work/python-arm" <<WRAP
#!/bin/sh
exec qemu-aarch64 -cpu max -L "$sysroot" -E PYTHONPATH="$work/site:$site" "$sysroot/usr/bin/python3.11" "\$@"
WRAP
chmod +x "$work/python-arm"

# Runs the emulated Python (arguments as for python) in a mount namespace with the aarch64 cpuinfo.
emulated() {
  unshare -m sh -c 'cd "$0" && mount --bind "$0/cpuinfo" /proc/cpuinfo && BEBERT_WORKER_PYTHON="$0/python-arm" exec "$0/python-arm" "$@"' "$work" "$@"
}

status=0
for model in "$@"; do
  model="$(realpath "$model")"; name="$(basename "$model")"
  echo "[pi] $name: predict on x86 and on emulated aarch64"
  texts=("a gorgeous, witty, seductive movie" "dull, tedious and far too long" "it is a film")
  "$py_x86" -m bebert_deploy.cli predict "$model" "${texts[@]}" --json > "$work/x86.json"
  emulated -c 'import platform, sys
from bebert_deploy.runtime.session import Session
s = Session(sys.argv[1])
print("arch", platform.machine(), "isa", s.isa, file=sys.stderr)
from bebert_deploy.cli import main
main(["predict", sys.argv[1], *sys.argv[2:], "--json"])' "$model" "${texts[@]}" > "$work/arm.json"
  "$py_x86" - "$work/x86.json" "$work/arm.json" "$model" <<'CMP' || status=1
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
diff = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["probs"], rb["probs"]))
same = [ra["label"] for ra in a] == [rb["label"] for rb in b]
# Our kernels are bit-identical across ISAs; stock TFLite files run XNNPACK's dynamic-range (int8 on the fly)
# kernels, whose x86 and ARM variants round differently: the lowering's stated bound applies there.
tol = 2e-3
if sys.argv[3].endswith(".tflite"):
    from bebert_deploy.runtime.tflite_file import read_tflite
    tol = 2e-3 if read_tflite(sys.argv[3]).custom_ops else 8e-2
print(f"[pi]   labels identical: {same}; max |prob diff| x86 vs aarch64: {diff:.2e} (bound {tol:.0e})")
sys.exit(0 if same and diff <= tol else 1)
CMP
  echo "[pi] $name: bench under qemu (correctness of the bench path only; qemu timings are not device timings)"
  emulated -m bebert_deploy.cli bench "$model" --seq-len 16 --runs 2 --warmup 1 --threads 2 \
    --device-label qemu-aarch64 --json "$work/bench-arm.json" > /dev/null || status=1
  "$py_x86" -c "import json,sys; r=json.load(open(sys.argv[1]))['rows'][0]; print('[pi]   bench ran under', json.load(open(sys.argv[1]))['system']['machine'], 'isa', r['isa'])" "$work/bench-arm.json" || status=1
done
exit $status
