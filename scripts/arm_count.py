#!/usr/bin/env python3
"""Guest instructions per inference of each export on aarch64, counted under qemu-aarch64 -- repeatable aarch64
cost figures without a board (qemu's timings mean nothing; its instruction counts are exact and deterministic).

    python scripts/arm_count.py [--make-exports DIR --seq-len 128] [--models DIR_OR_FILES...]
        [--cpus cortex-a72,cortex-a76] [--runs 2] [--repeat 1] [--jobs 2] [--kernels [KERNEL_DIR]]
        [--out results/arm/counts]

Per export and CPU model, the aarch64 Python of scripts/pi-emulated.sh (Debian's python3.11, the aarch64
onnxruntime / ai-edge-litert wheels, our NEON op libraries cross-compiled) loads the file with Session(threads=1)
and runs it once, then (in a fresh process) RUNS times, on one fixed input; a TCG plugin of ours
(scripts/armcount/insn_count.c, built here with gcc) counts every guest instruction of the process. Instructions per
inference = (count(RUNS) - count(1)) / (RUNS - 1); load = count(1) - per inference (interpreter start-up, imports,
model load). Ratios are against fp32 of the same format.

What the figures are: executed aarch64 instructions (not cycles: a `tbl` and an `fmla` cost different times, see
scripts/mca_kernels.py), of the code paths the libraries select for the emulated CPU (`-cpu cortex-a72` has no
sdot, `cortex-a76` has it; XNNPACK and ONNX Runtime read those features from the auxiliary vector, and their
micro-architecture from the /proc/cpuinfo we bind-mount). Needs root (unshare, mount), qemu-user,
g++-12-aarch64-linux-gnu and gcc. Determinism: ASLR off (setarch -R), PYTHONHASHSEED=0, clean environment,
bytecode precompiled and never written, one thread; --repeat R counts every run R times, reports the spread and
uses the minimum of each (see main()).

--kernels adds the kernels alone (scripts/armcount/kernel_count.cc, static, no root needed): NEON against scalar bit
for bit at M = 128, then the instructions of one binary_linear call per MiniLM-L6 half-width layer shape.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "armcount"

# /proc/cpuinfo text per qemu CPU model. onnxruntime and XNNPACK (pytorch/cpuinfo) read the micro-architecture
# from "CPU part" (0xd08 Cortex-A72, 0xd0b Cortex-A76) and crash on the host's x86 text; instruction-set
# features come from the auxiliary vector, which qemu fills from -cpu. One processor: nothing sizes a pool by it.
CPUINFO = {
    "cortex-a72": ("fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "0x0", "0xd08", "3"),
    "cortex-a76": ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                   "asimddp", "0x4", "0xd0b", "1"),
    "neoverse-n1": ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                    "asimddp", "0x3", "0xd0c", "1"),
}
CPUINFO["max"] = CPUINFO["cortex-a76"]
ORDER = ["fp32", "int8", "bebert1-custom", "bebert1-builtin", "bebert2-custom", "bebert2-builtin"]


def cpuinfo_text(cpu: str) -> str:
    feats, variant, part, rev = CPUINFO[cpu]
    return (f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {feats}\nCPU implementer\t: 0x41\n"
            f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {rev}\n\n")


def build_plugin(out_dir: Path) -> Path:
    """Compiles the instruction-count plugin (plain C, no qemu headers) with the host gcc; returns the .so path."""
    src = HERE / "insn_count.c"
    so = Path(out_dir) / "insn_count.so"
    if not so.exists() or so.stat().st_mtime < src.stat().st_mtime:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        cc = shutil.which("gcc") or shutil.which("cc")
        if not cc:
            raise RuntimeError("no host C compiler (gcc) to build the qemu plugin")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-o", str(so), str(src)],
                       check=True)
    return so


def count_insns(cmd: list[str], plugin: Path, cpu: str, qemu_env: dict[str, str] | None = None,
                sysroot: Path | None = None, cpuinfo: Path | None = None, timeout: float = 3600) -> int:
    """Runs `cmd` (an aarch64 program and its arguments) under qemu-aarch64 -cpu CPU with the plugin; returns the
    instructions the process executed. cpuinfo: bind-mount this file over /proc/cpuinfo (needs root)."""
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "count.txt"
        q = ["qemu-aarch64", "-cpu", cpu, "-plugin", f"{plugin},out={out}"]
        if sysroot:
            q += ["-L", str(sysroot)]
        for k, v in (qemu_env or {}).items():
            q += ["-E", f"{k}={v}"]
        q = ["setarch", "x86_64", "-R", *q, *cmd] if shutil.which("setarch") else [*q, *cmd]
        if cpuinfo:
            q = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(cpuinfo), *q]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.Popen(q, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"qemu run failed ({proc.returncode}): {' '.join(cmd[-3:])}\n{err[-2000:]}")
        lines = out.read_text().split("\n") if out.exists() else []
        found = {int(m.group(1)): int(m.group(2)) for m in (re.match(r"pid (\d+) insns (\d+)", ln) for ln in lines) if m}
        # unshare, sh, setarch and qemu exec in turn, so the process we started keeps its pid; forked children
        # (none expected) would report their own lines
        if proc.pid in found:
            return found[proc.pid]
        raise RuntimeError(f"the plugin wrote no count for pid {proc.pid}: {lines} {err[-2000:]}")


def prepare_env(work: Path) -> dict:
    """The aarch64 sysroot, wheels and our package with aarch64 op libraries, as scripts/pi-emulated.sh builds
    them; bytecode precompiled so that no run writes .pyc files (the first run would otherwise differ)."""
    p = subprocess.run([str(ROOT / "scripts/pi-emulated.sh"), "--prepare", str(work)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("scripts/pi-emulated.sh --prepare failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
    paths = dict(kv.split("=", 1) for kv in p.stdout.strip().splitlines()[-1].split())
    sysroot = Path(paths["sysroot"])
    for d in (sysroot / "usr/lib/python3.11", Path(paths["wheels"]), Path(paths["site"]), HERE):
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "2", str(d)], capture_output=True)
    return {"sysroot": sysroot, "pythonpath": f"{paths['site']}:{paths['wheels']}:{HERE}"}


def make_exports(d: Path, seq_len: int, members: int = 2) -> list[Path]:
    """fp32, int8 and BEBERT (custom and builtin ops, 1..members members) exports of a MiniLM-L6-shaped random
    checkpoint, ONNX and TFLite: scripts/bench_shapes.py's checkpoint, exported with the repo's `export`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_shapes import SHAPES, random_checkpoint

    from bebert_deploy.exporters.export import export

    ck = random_checkpoint(SHAPES["minilm"](), members, d / "checkpoint", seq_len)
    out = []
    for target in ("onnx", "tflite"):
        out.append(export(ck, d / f"fp32.{target}", target, "fp32"))
        out.append(export(ck, d / f"int8.{target}", target, "int8"))
        for n in range(1, members + 1):
            for ops in ("custom", "builtin"):
                out.append(export(ck, d / f"bebert{n}-{ops}.{target}", target, "binary", ops, members=list(range(n))))
    return out


# The GEMMs of one half-width BEBERT member at MiniLM-L6 shapes (hidden 384, 6 of 12 heads, FFN 768), each a TWS
# pair (S = 2, one quantizer): Q/K/V, attention output, FFN in, FFN out, as (N, K).
LAYER_SHAPES = {"qkv": (192, 384), "attn_out": (384, 192), "ffn_in": (768, 384), "ffn_out": (384, 768)}
KERNEL_SOURCES = ["bgemm/bgemm.cc", "bgemm/bgemm_scalar.cc", "bgemm/bgemm_avx2.cc", "bgemm/bgemm_neon.cc",
                  "core/thread_pool.cc"]


def build_kernel_count(kernels: Path, out: Path) -> Path:
    """scripts/armcount/kernel_count.cc against the kernel sources of `kernels` (a runtime/kernels folder: its
    SOURCES list when it has one), for aarch64, static, with the -O3 of setup.py and scripts/pi-emulated.sh."""
    lst = kernels / "SOURCES"
    srcs = ([ln.strip() for ln in lst.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            if lst.exists() else KERNEL_SOURCES)
    srcs = [str(kernels / x) for x in srcs if not x.startswith("bembed/")]
    exe = out / "kernel_count"
    subprocess.run(["aarch64-linux-gnu-g++-12", "-std=c++17", "-O3", "-pthread", "-ffp-contract=off", "-static",
                    f"-I{kernels}", *srcs, str(HERE / "kernel_count.cc"), "-o", str(exe)], check=True)
    return exe


def kernel_counts(kernels: Path, cpus: list[str], seq: int, plugin: Path, work: Path) -> list[dict]:
    """Checks NEON against scalar bit for bit, then counts the instructions of one binary_linear call (int4
    symmetric activations, TWS pair, one thread) per layer shape: count(2 calls) - count(1 call)."""
    exe = build_kernel_count(kernels, work)
    chk = subprocess.run(["qemu-aarch64", "-cpu", cpus[0], str(exe), "check"], capture_output=True, text=True)
    print("[arm] kernel check:", chk.stdout.strip().splitlines()[-1] if chk.stdout.strip() else chk.stderr[-500:])
    if chk.returncode != 0:
        raise RuntimeError("NEON kernels differ from the scalar reference:\n" + chk.stdout[-2000:])
    rows = []
    for cpu in cpus:
        for name, (n, k) in LAYER_SHAPES.items():
            c = [count_insns([str(exe), "run", str(seq), str(n), str(k), "2", str(r)], plugin, cpu) for r in (1, 2)]
            macs = 2 * seq * n * k
            rows.append({"layer": name, "cpu": cpu, "M": seq, "N": n, "K": k, "S": 2, "macs": macs,
                         "insns_per_call": c[1] - c[0], "mac_per_insn": macs / (c[1] - c[0])})
            print(f"[arm] kernel {cpu} {name} M={seq} N={n} K={k}: {c[1] - c[0]:,} insns per call "
                  f"({macs / (c[1] - c[0]):.1f} MAC/insn)", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=[], help="export files or folders of them")
    ap.add_argument("--make-exports", metavar="DIR", help="first export MiniLM-shaped random models into DIR")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--cpus", default="cortex-a72,cortex-a76")
    ap.add_argument("--runs", type=int, default=2, help="N of the longer run (per inference = difference / (N-1))")
    ap.add_argument("--repeat", type=int, default=1, help="count every run this many times (determinism check)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="results/arm/counts", help="writes OUT.json and OUT.md")
    ap.add_argument("--kernels", nargs="?", const=str(ROOT / "runtime/kernels"), metavar="KERNEL_DIR",
                    help="also check and count our kernels alone at MiniLM layer shapes (default: this tree's "
                         "runtime/kernels; another checkout's for a before/after)")
    a = ap.parse_args(argv)
    if a.runs < 2:
        ap.error("--runs must be >= 2")
    models = [Path(p) for p in a.make_exports and make_exports(Path(a.make_exports), a.seq_len) or []]
    for m in a.models:
        pm = Path(m)
        models += sorted(list(pm.glob("*.onnx")) + list(pm.glob("*.tflite"))) if pm.is_dir() else [pm]
    models = sorted({m.resolve() for m in models}, key=lambda m: (m.suffix, ORDER.index(m.stem) if m.stem in ORDER else 99, m.name))
    if not models and not a.kernels:
        ap.error("no models: pass --models, --make-exports or --kernels")
    cpus = a.cpus.split(",")
    work = Path(tempfile.mkdtemp(prefix="armcount-"))
    got = {}
    try:
        plugin = build_plugin(work / "plugin")
        krows = kernel_counts(Path(a.kernels), cpus, a.seq_len, plugin, work) if a.kernels else []
        if models:
            env = prepare_env(work)
            for cpu in cpus:
                (work / f"cpuinfo-{cpu}").write_text(cpuinfo_text(cpu))
            qenv = {"PYTHONPATH": env["pythonpath"], "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
                    "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
            guest = [str(env["sysroot"] / "usr/bin/python3.11"), str(HERE / "infer.py")]

            def one(job):
                model, cpu, runs, rep = job
                t = time.time()
                n = count_insns([*guest, str(model), str(runs), str(a.seq_len)], plugin, cpu, qenv, env["sysroot"],
                                work / f"cpuinfo-{cpu}")
                print(f"[arm] {cpu} {model.name} runs={runs} rep={rep}: {n:,} insns ({time.time() - t:.0f} s)",
                      flush=True)
                return job, n

            jobs = [(m, c, r, k) for m in models for c in cpus for r in (1, a.runs) for k in range(a.repeat)]
            with ThreadPoolExecutor(a.jobs) as ex:
                got = dict(ex.map(one, jobs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for m in models:
        for cpu in cpus:
            c1 = [got[(m, cpu, 1, k)] for k in range(a.repeat)]
            cn = [got[(m, cpu, a.runs, k)] for k in range(a.repeat)]
            per = [(y - x) / (a.runs - 1) for x, y in zip(c1, cn)]
            # The minimum of the repeats: disturbances only ever add instructions. ONNX Runtime runs helper threads
            # (TFLite files run in one thread), and on a loaded host a run of an .onnx file sometimes executed
            # ~40 M more (about 4%); on an idle host repeats agree within 0.02%.
            best = (min(cn) - min(c1)) / (a.runs - 1)
            rows.append({"model": m.name, "format": m.suffix[1:], "cpu": cpu, "insns_per_inference": best,
                         "load_insns": min(c1) - best, "counts_1": c1, f"counts_{a.runs}": cn,
                         "spread": (max(per) - min(per)) / max(per) if max(per) else 0.0})
    for r in rows:
        base = next((b for b in rows if b["cpu"] == r["cpu"] and b["model"] == f"fp32.{r['format']}"), None)
        r["x_fp32"] = r["insns_per_inference"] / base["insns_per_inference"] if base else None
        i8 = next((b for b in rows if b["cpu"] == r["cpu"] and b["model"] == f"int8.{r['format']}"), None)
        r["x_int8"] = r["insns_per_inference"] / i8["insns_per_inference"] if i8 else None
    res = {"what": "aarch64 guest instructions per inference under qemu-aarch64 (TCG plugin count), one thread, "
                   "batch 1; estimates of work, not device timings",
           "command": "python scripts/arm_count.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "seq_len": a.seq_len, "runs": a.runs, "repeat": a.repeat, "cpus": cpus,
           "qemu": subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
           "rows": rows, "kernel_rows": krows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = table(res)
    out.with_suffix(".md").write_text(md)
    print(md)


def table(res: dict) -> str:
    """Markdown: one row per export, per CPU: M instructions per inference, x fp32, x int8 of the same format;
    then the kernel rows (instructions per binary_linear call) when counted."""
    cpus, md = res["cpus"], ""
    f = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    if res["rows"]:
        md = "| export | " + " | ".join(f"{c} M insns | x fp32 | x int8" for c in cpus) + " | load M insns |\n"
        md += "|---" * (1 + 3 * len(cpus) + 1) + "|\n"
        for name in dict.fromkeys(r["model"] for r in res["rows"]):
            cells = []
            for c in cpus:
                r = next(r for r in res["rows"] if r["model"] == name and r["cpu"] == c)
                cells += [f"{r['insns_per_inference'] / 1e6:,.0f}", f(r["x_fp32"]), f(r["x_int8"])]
            load = next(r for r in res["rows"] if r["model"] == name)["load_insns"] / 1e6
            md += f"| {name} | " + " | ".join(cells) + f" | {load:,.0f} |\n"
        md += (f"\nseq {res['seq_len']}, batch 1, one thread; per inference = (count of {res['runs']} runs - count "
               f"of 1 run) / {res['runs'] - 1}; {res['qemu']}")
        if res["repeat"] > 1:
            md += (f"; largest spread over {res['repeat']} repeats: "
                   f"{100 * max(r['spread'] for r in res['rows']):.4f}%")
        md += "\n"
    if res.get("kernel_rows"):
        md += ("\n| kernel call (TWS pair, int4, M = %d) | " % res["seq_len"]
               + " | ".join(f"{c} M insns | MAC/insn" for c in cpus) + " |\n" + "|---" * (1 + 2 * len(cpus)) + "|\n")
        for name in dict.fromkeys(r["layer"] for r in res["kernel_rows"]):
            rs = [next(r for r in res["kernel_rows"] if r["layer"] == name and r["cpu"] == c) for c in cpus]
            md += (f"| {name} N={rs[0]['N']} K={rs[0]['K']} | "
                   + " | ".join(f"{r['insns_per_call'] / 1e6:.2f} | {r['mac_per_insn']:.1f}" for r in rs) + " |\n")
    return md


if __name__ == "__main__":
    main()
