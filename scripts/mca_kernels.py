#!/usr/bin/env python3
"""llvm-mca cycle estimates of GEMM inner loops on aarch64 cores we cannot run: our NEON W1A4 table-lookup loop
(runtime/kernels/bgemm/bgemm_neon.cc) against XNNPACK's int8 GEMM microkernels, as MAC per cycle.

    python scripts/mca_kernels.py [--xnnpack DIR] [--json results/arm/mca.json]

Models: llvm-mca-19 -mcpu=cortex-a57 stands in for the Cortex-A72 (Raspberry Pi 4: LLVM schedules the A72 with the
A57 model), -mcpu=neoverse-n1 for the Cortex-A76 (Raspberry Pi 5: the N1 is A76-derived; LLVM 19's
-mcpu=cortex-a76 falls back to the A57 model, so it is not used).

Limits, stated with every figure: a static model of one steady-state loop body, every load an L1 hit, no
branch mispredictions, no front-end stalls beyond the model's dispatch width; not a latency of the layer (table
build, weight transposition, epilogues and cache misses are outside the loop; the table build is reported as its
own loop). A "MAC" is one weight x activation product: 1-bit x 4-bit in ours, 8-bit x 8-bit in XNNPACK's.

Ours is compiled here from the tree with aarch64-linux-gnu-g++-12 -O3 (the flags of setup.py / pi-emulated.sh;
armv8-a for the A72, armv8.2-a+dotprod for the A76). XNNPACK is read from a checkout given with --xnnpack (a
work tree or a bare git directory, e.g. the mirror of github:google/XNNPACK); nothing of it enters this tree.
Its kernels are the ones its gemm-config.c selects for qd8-f32-qc8w GEMMs (TFLite dynamic-range int8) on
Linux: without dot product and not an A53/A55, the 2x8c2s4 neon-mlal C kernel (compiled here with GCC 12 -O2;
XNNPACK's own builds use clang, so its schedule may differ); with dot product, the 4x16c4 aarch64-neondot-ld128
assembly kernel (its main loop taken as written).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"A72 (llvm-mca cortex-a57)": "cortex-a57", "A76 (llvm-mca neoverse-n1)": "neoverse-n1"}
XNN_MLAL = "src/qd8-f32-qc8w-gemm/gen/qd8-f32-qc8w-gemm-2x8c2s4-minmax-neon-mlal.c"
XNN_DOT = "src/qd8-f32-qc8w-gemm/gen/qd8-f32-qc8w-gemm-4x16c4-minmax-asm-aarch64-neondot-ld128.S"


def tool(*names: str) -> str:
    for n in names:
        if shutil.which(n):
            return n
    sys.exit(f"none of {', '.join(names)} found (apt-get install llvm-19 g++-12-aarch64-linux-gnu)")


def strip(line: str) -> str:
    """An assembly line without comments (// and GCC's @/; never appear in aarch64 instructions we keep)."""
    return line.split("//")[0].strip()


def innermost_loops(asm: str, function: str) -> list[list[str]]:
    """Bodies of the innermost loops of `function` (a regex on the mangled name) in GCC output: a label followed,
    with no other label in between, by a branch back to it."""
    m = re.search(rf"^({function}):\s*$", asm, re.M)
    if not m:
        raise ValueError(f"function {function} not found")
    end = asm.find("\t.size\t" + m.group(1), m.end())
    lines = asm[m.end():end].splitlines()
    loops, label, body = [], None, []
    for ln in lines:
        s = strip(ln)
        if re.match(r"^\.L\w+:$", s):
            label, body = s[:-1], []
            continue
        if not s or s.startswith("."):
            continue
        if label and re.match(rf"^(b\.\w+|b\w\w|cbn?z|tbn?z)\s(.*[\s,])?{re.escape(label)}$", s):
            loops.append(body + [s])
            label = None
        elif label:
            body.append(s)
    return loops


def pick(loops: list[list[str]], marker: str) -> list[str]:
    """The loop with the most `marker` instructions (the hot loop of a kernel function)."""
    best = max(loops, key=lambda b: sum(1 for s in b if s.split()[0] == marker), default=None)
    if not best or not any(s.split()[0] == marker for s in best):
        raise ValueError(f"no loop with {marker}")
    return best


def asm_loop(path: Path, start: str, branch: str) -> list[str]:
    """A hand-written loop: the instructions after label `start` up to and including the line matching `branch`."""
    out, on = [], False
    for ln in path.read_text().splitlines():
        s = strip(ln)
        if s.startswith("#"):
            continue
        if s == start:
            on = True
            continue
        if on and s:
            out.append(s)
            if re.match(branch, s, re.I):
                return out
    raise ValueError(f"loop {start} not found in {path}")


def mca(body: list[str], cpu: str, mca_bin: str) -> dict:
    """Cycles per iteration (llvm-mca over 500 iterations) and the model's block reciprocal throughput."""
    with tempfile.NamedTemporaryFile("w", suffix=".s") as f:
        # a label at the top, so that the closing branch assembles (llvm-mca's parser rejects local "1b" labels)
        *head, target = re.split(r"([\s,]+)", body[-1])
        if re.fullmatch(r"\d+b", target):
            target = ".Lloop"
        f.write(f"{target}:\n" + "\n".join(body[:-1] + ["".join(head) + target]) + "\n")
        f.flush()
        out = subprocess.run([mca_bin, "-mtriple=aarch64", f"-mcpu={cpu}", "-iterations=500", f.name],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"llvm-mca failed on:\n" + "\n".join(body[:5]) + "\n...\n" + out.stderr[-1500:])
        out = out.stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    rthr = float(re.search(r"Block RThroughput:\s+([\d.]+)", out).group(1))
    return {"cycles_per_iter": cycles / 500, "block_rthroughput": rthr}


def compile_asm(cxx: str, src: Path, march: str, extra: list[str], td: Path) -> str:
    out = td / (src.stem + f"-{march}.s")
    subprocess.run([cxx, "-O3" if src.suffix == ".cc" else "-O2", f"-march={march}", "-S", "-o", str(out), *extra,
                    str(src)], check=True)
    return out.read_text()


def xnnpack_tree(path: Path, td: Path) -> Path:
    """A readable tree of the files we need: `path` itself if it is a work tree, else `git archive` of them."""
    if (path / XNN_MLAL).exists():
        return path
    dst = td / "xnnpack"
    dst.mkdir()
    arch = subprocess.run(["git", f"--git-dir={path}", "archive", "HEAD", "src/xnnpack", "include", XNN_MLAL, XNN_DOT],
                          capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=arch, check=True)
    return dst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xnnpack", type=Path, help="XNNPACK checkout (work tree or bare git dir); omit: ours only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--neon", type=Path, default=ROOT / "runtime/kernels/bgemm/bgemm_neon.cc",
                    help="our NEON kernel file (default: this tree's), e.g. another checkout's for a before/after")
    a = ap.parse_args(argv)
    mca_bin = tool("llvm-mca-19", "llvm-mca")
    cxx = tool("aarch64-linux-gnu-g++-12")
    cc = tool("aarch64-linux-gnu-gcc-12")
    rows = []
    with tempfile.TemporaryDirectory() as tds:
        td = Path(tds)
        neon = a.neon
        for model, cpu in MODELS.items():
            march = "armv8-a" if cpu == "cortex-a57" else "armv8.2-a+dotprod"
            asm = compile_asm(cxx, neon, march, ["-std=c++17", "-ffp-contract=off"], td)
            for spec in OURS:
                loops = []
                for fn in re.findall(rf"^({spec['function']}):", asm, re.M):
                    loops += innermost_loops(asm, re.escape(fn))
                body = pick(loops, spec["marker"])
                r = mca(body, cpu, mca_bin)
                macs = macs_of(body)
                groups = 16 * sum(1 for x in body if x.split()[0] == "ld4") if spec.get("table") else None
                rows.append({"kernel": spec["name"], "model": model, "mcpu": cpu, "march": march,
                             "instructions": len(body), "macs_per_iter": 0 if groups else macs, **r,
                             "groups_per_iter": groups,
                             "mac_per_cycle": None if groups else macs / r["cycles_per_iter"], "note": spec["note"]})
        if a.xnnpack:
            x = xnnpack_tree(a.xnnpack, td)
            stub = td / "stub"
            stub.mkdir()
            # xnnpack.h includes pthreadpool.h for one typedef; the microkernel never uses it
            (stub / "pthreadpool.h").write_text("typedef struct pthreadpool* pthreadpool_t;\n")
            mlal = compile_asm(cc, x / XNN_MLAL, "armv8-a", [f"-I{x}", f"-I{x / 'include'}", f"-I{stub}"], td)
            body = pick(innermost_loops(mlal, r"xnn_qd8_f32_qc8w_gemm_minmax_ukernel_2x8c2s4__neon_mlal"), "smlal")
            dot = asm_loop(x / XNN_DOT, "1:", r"^b\.hs\s+1b")
            rev = subprocess.run(["git", f"--git-dir={a.xnnpack}" if not (a.xnnpack / XNN_MLAL).exists() else "-C",
                                  *([] if not (a.xnnpack / XNN_MLAL).exists() else [str(a.xnnpack)]), "rev-parse",
                                  "HEAD"], capture_output=True, text=True).stdout.strip()
            for name, body_, cpus in (
                    ("XNNPACK qd8-f32-qc8w 2x8c2s4 neon-mlal (int8, no sdot)", body, MODELS),
                    ("XNNPACK qd8-f32-qc8w 4x16c4 aarch64-neondot-ld128 (int8, sdot)", dot,
                     {k: v for k, v in MODELS.items() if v == "neoverse-n1"})):
                macs = macs_of(body_)
                for model, cpu in cpus.items():
                    r = mca(body_, cpu, mca_bin)
                    rows.append({"kernel": name, "model": model, "mcpu": cpu, "instructions": len(body_),
                                 "macs_per_iter": macs, **r, "mac_per_cycle": macs / r["cycles_per_iter"],
                                 "source": f"github.com/google/XNNPACK@{rev}"})
    # the whole table-lookup GEMM per token and group of 4 weights: 4 N MAC in the lookup loop plus one table
    # (weight arrangement, codes and the epilogue stay outside: O(N K), O(M K) and O(M N))
    for model in MODELS:
        look = next((r for r in rows if r["model"] == model and r["kernel"] == OURS[0]["name"]), None)
        build = next((r for r in rows if r["model"] == model and r["kernel"] == OURS[1]["name"]), None)
        if look and build:
            cyc = 4 * AMORTISE_N / look["mac_per_cycle"] + build["cycles_per_iter"] / build["groups_per_iter"]
            rows.append({"kernel": f"ours W1A4 lookups + table build, N = {AMORTISE_N}", "model": model,
                         "mcpu": look["mcpu"], "instructions": 0, "macs_per_iter": 4 * AMORTISE_N,
                         "cycles_per_iter": cyc, "mac_per_cycle": 4 * AMORTISE_N / cyc,
                         "note": "per token and group of 4 weights, from the two loops above"})
    for r in rows:
        mpc = f"{r['mac_per_cycle']:.1f} MAC/cycle" if r["mac_per_cycle"] else "(no MACs)"
        print(f"{r['model']:28s} {r['kernel']:62s} {r['instructions']:4d} insns {r['cycles_per_iter']:7.2f} cyc/iter "
              f"{mpc}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"what": "llvm-mca-19 steady-state inner-loop estimates (L1-resident, static "
                                              "model), MAC per cycle", "command": "python scripts/mca_kernels.py "
                                      + " ".join(argv if argv is not None else sys.argv[1:]),
                                      "llvm_mca": mca_bin + " " + re.search(r"LLVM version \S+", subprocess.run(
                                          [mca_bin, "--version"], capture_output=True, text=True).stdout).group(0),
                                      "rows": rows}, indent=1) + "\n")


# Our loops, by the function GCC emits them in and an instruction only the hot loop has. MACs per iteration
# follow from the code: lut_dots_neon's loop handles one weight byte (2 groups of 4 weights) of 32 rows for one
# token = 256 MAC; the table build handles 16 groups of one token and performs no MAC itself.
AMORTISE_N = 384  # MiniLM-L6 hidden size: the N of the Q/K/V/O and FFN-output layers of a half-width member
# MACs per loop iteration follow from the instruction mix, so the figures survive kernel rewrites: one 16-byte
# tbl looks up 16 rows x one group of 4 weights for one token (64 MAC); SMULL/SMLAL (8 bytes) 8 int8 MAC, their
# "2" forms too; SDOT (16 bytes) 16 MAC. The table build (GCC vectorises it: ld4 de-interleaves 16 groups of 4
# activations) performs no MAC; it is amortised over the N rows that use each table.
MAC_PER_INSN = {"tbl": 64, "smull": 8, "smull2": 8, "smlal": 8, "smlal2": 8, "sdot": 16}
OURS = [
    {"name": "ours W1A4 lookup loop (lut_dots_neon, tbl)", "function": r"_ZN6bebert\S*lut_dots_neon\S*",
     "marker": "tbl", "note": "lookup loop only"},
    {"name": "ours table build (lut_tables_scalar, GCC-vectorised)",
     "function": r"_ZN6bebert\S*lut_(?:tables_scalar|row_tables_neon)\S*", "marker": "ld4", "table": True,
     "note": "per token: groups of 4 activations -> 16-entry tables"},
]


def macs_of(body: list[str]) -> int:
    return sum(MAC_PER_INSN.get(s.split()[0].lower(), 0) for s in body)


if __name__ == "__main__":
    main()
