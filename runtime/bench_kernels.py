"""Kernel benchmark: our packed-bit BinaryLinear (each activation mode, each ISA path this CPU has, the TWS pair
with its own and with a shared input quantizer) vs ONNX Runtime fp32 MatMul and ONNX Runtime int8
(DynamicQuantizeLinear + MatMulInteger) of the same shape, measured in one interleaved run.

    python -m bebert_deploy.runtime.bench_kernels [--runs 50] [--json kernels.json] [--quick]
                                                  [--compare-lib OLD/_ort_ops.so]

Every ONNX Runtime graph and our op run through the same path (an InferenceSession; ours through our native
custom-op library), so per-call overheads are alike. The graphs are written as ONNX protobuf bytes by the small
encoder below, so the benchmark needs only the ``[runtime]`` extra (onnxruntime, numpy), not the ``onnx`` package.
An ISA row forces that kernel path through ``$BEBERT_ISA`` (read by the kernels on every call); ``--compare-lib``
adds rows run by another build of the op library (e.g. the previous commit's) in the same interleaved loop.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

SHAPES = [(768, 768), (3072, 768), (768, 3072), (384, 384), (1536, 384), (384, 1536)]
# name, act_mode, act_bits, TWS parts, steps of the parts. The pair's halves have their own quantizers in
# BinaryBERT's TWS (different steps: two table builds); a shared quantizer lets one pass serve both halves.
MODES = [("W1A32", 0, 32, 1, (0.3,)), ("W1A4", 1, 4, 1, (0.3,)), ("W1A1", 2, 1, 1, (0.3,)),
         ("W1A4 TWS pair", 1, 4, 2, (0.3, 0.31)), ("W1A4 TWS pair shared-q", 1, 4, 2, (0.3, 0.3))]
# Rows re-run on each slower ISA path this CPU supports (the best path runs every mode).
ISA_MODES = ("W1A4", "W1A1", "W1A4 TWS pair shared-q")
ISA_ORDER = ("avx512", "avx2", "neon", "scalar")
# (L, H, heads) of the attention rows: MiniLM-L6 and BERT-base at seq 128.
ATTN_SHAPES = [(128, 384, 12), (128, 768, 12)]


# ---- a minimal ONNX protobuf writer (the handful of ModelProto fields these graphs use; field numbers from
# onnx/onnx.proto). Protobuf wire format: key = field << 3 | wire type; 0 varint, 2 length-delimited, 5 fixed32.
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int64 as two's complement, ten bytes
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(v)


def _bytes(field: int, b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return _varint(field << 3 | 2) + _varint(len(b)) + b


_ONNX_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int64): 7}


def _tensor(name: str, a: np.ndarray) -> bytes:  # TensorProto: dims 1, data_type 2, name 8, raw_data 9
    a = np.ascontiguousarray(a)
    return b"".join(_int(1, d) for d in a.shape) + _int(2, _ONNX_TYPES[a.dtype]) + _bytes(8, name) + \
        _bytes(9, a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def _value_info(name: str, shape) -> bytes:  # ValueInfoProto{name 1, type 2{tensor_type 1{elem_type 1, shape 2}}}
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)  # TensorShapeProto.dim 1 {dim_value 1}
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, 1) + _bytes(2, dims)))


def _node(op: str, inputs, outputs, domain: str = "", **ints) -> bytes:
    # NodeProto: input 1, output 2, op_type 4, attribute 5 {name 1, i 3, type 20 (INT = 2)}, domain 7
    attrs = b"".join(_bytes(5, _bytes(1, k) + _int(3, v) + _int(20, 2)) for k, v in ints.items())
    return b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(4, op) + \
        attrs + (_bytes(7, domain) if domain else b"")


def _model(nodes, inits: dict, m: int, k: int, n: int, domains=("",), x_shape=None, y_shape=None) -> bytes:
    # GraphProto: node 1, name 2, initializer 5, input 11, output 12; ModelProto: ir_version 1, graph 7,
    # opset_import 8 {domain 1, version 2}. X is [m, k] and Y [m, n] unless shapes are given.
    graph = b"".join(_bytes(1, nd) for nd in nodes) + _bytes(2, "g") + \
        b"".join(_bytes(5, _tensor(name, a)) for name, a in inits.items()) + \
        _bytes(11, _value_info("X", x_shape or [m, k])) + _bytes(12, _value_info("Y", y_shape or [m, n]))
    opsets = b"".join(_bytes(8, (_bytes(1, d) if d else b"") + _int(2, 17 if d == "" else 1)) for d in domains)
    return _int(1, 8) + _bytes(7, graph) + opsets


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _session(model: bytes, threads: int, lib: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.register_custom_ops_library(lib)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _graphs(m: int, n: int, k: int, rng) -> dict:
    from .bitpack import pack_bits

    models = {}
    w = rng.standard_normal((k, n)).astype(np.float32)
    models["ORT fp32"] = _model([_node("MatMul", ["X", "W"], ["Y"])], {"W": w}, m, k, n)
    wq = rng.integers(-127, 128, (k, n)).astype(np.int8)
    nodes = [_node("DynamicQuantizeLinear", ["X"], ["xq", "xs", "xz"]),
             _node("MatMulInteger", ["xq", "Wq", "xz", "wz"], ["acc"]),
             _node("Cast", ["acc"], ["accf"], to=1),
             _node("Mul", ["xs", "ws"], ["sc"]),
             _node("Mul", ["accf", "sc"], ["Y"])]
    models["ORT int8"] = _model(nodes, {"Wq": wq, "wz": np.array(0, np.int8), "ws": np.array(0.01, np.float32)}, m, k, n)
    for name, mode, bits, parts, steps in MODES:
        inits = {"W": pack_bits(rng.standard_normal((parts, n, k))), "A": np.ones((parts, n), np.float32),
                 "B": np.zeros(n, np.float32), "S": np.array(steps, np.float32)}
        node = _node("BinaryLinear", ["X", "W", "A", "B", "S"], ["Y"], domain="bebert", act_mode=mode, act_bits=bits,
                     act_symmetric=1)
        models[name] = _model([node], inits, m, k, n, domains=("", "bebert"))
    return models


def _attention_graphs(L: int, H: int, heads: int) -> dict:
    """ORT's fp32 MultiHeadAttention (com.microsoft, what ORT fuses BERT attention into) and our 4-bit
    QuantAttention over the same q = k = v = X [1, L, H]."""
    xs = [1, L, H]
    mha = _node("MultiHeadAttention", ["X", "X", "X"], ["Y"], domain="com.microsoft", num_heads=heads)
    qa = _node("QuantAttention", ["X", "X", "X", "M", "S"], ["Y"], domain="bebert", num_heads=heads, act_bits=4)
    inits = {"M": np.zeros((1, 1, 1, L), np.float32), "S": np.array([0.1, 0.1, 0.1, 0.05], np.float32)}
    return {"ORT fp32 MultiHeadAttention": _model([mha], {}, 1, H, H, ("", "com.microsoft"), xs, xs),
            "QuantAttention A4": _model([qa], inits, 1, H, H, ("", "bebert"), xs, xs)}


def _isas(lib) -> list[str]:
    """ISA paths this CPU runs, best first (what the kernels pick without $BEBERT_ISA)."""
    saved = os.environ.pop("BEBERT_ISA", None)
    try:
        best = lib.bebert_isa().decode()
        out = [best]
        for isa in ISA_ORDER[ISA_ORDER.index(best) + 1 if best in ISA_ORDER else 0:]:
            os.environ["BEBERT_ISA"] = isa
            if lib.bebert_isa().decode() == isa and isa not in out and isa != "scalar":
                out.append(isa)
        return out
    finally:
        os.environ.pop("BEBERT_ISA", None)
        if saved is not None:
            os.environ["BEBERT_ISA"] = saved


def _time(entries: dict, x: np.ndarray, runs: int, warmup: int) -> dict:
    """Median ms of each entry (name -> (session, forced ISA or None)), runs interleaved so that machine noise
    hits every entry alike."""
    def call(s, isa):
        if isa:
            os.environ["BEBERT_ISA"] = isa
        try:
            s.run(None, {"X": x})
        finally:
            if isa:
                del os.environ["BEBERT_ISA"]

    times = {name: [] for name in entries}
    for s, isa in entries.values():
        for _ in range(warmup):
            call(s, isa)
    for _ in range(runs):
        for name, (s, isa) in entries.items():
            t0 = time.perf_counter()
            call(s, isa)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(ts)) * 1e3 for name, ts in times.items()}


def _ours(name: str, model: bytes, t: int, lib_path: str, isas: list[str], slower_isas: bool,
          compare_lib: str | None) -> dict:
    """Entries of one of our graphs: the best ISA path, the slower ones (when asked), the compared library."""
    s = _session(model, t, lib_path)
    out = {f"{name} [{isas[0]}]": (s, None)}
    if slower_isas:
        out.update({f"{name} [{isa}]": (s, isa) for isa in isas[1:]})
    if compare_lib:
        out[f"{name} [compare-lib]"] = (_session(model, t, compare_lib), None)
    return out


def bench(ms=(1, 128), shapes=SHAPES, threads_list=(1, 2), runs: int = 50, warmup: int = 5, progress=True,
          compare_lib: str | None = None, attention=ATTN_SHAPES) -> dict:
    """Median latencies (ms) of every kernel and baseline per (M, N, K, threads), and of the attention op per
    (L, H, heads, threads); returns the JSON dict."""
    import ctypes

    from tqdm.auto import tqdm

    from .session import ort_ops_library

    lib_path = str(ort_ops_library())
    lib = ctypes.CDLL(lib_path)
    lib.bebert_isa.restype = ctypes.c_char_p
    libs = [lib]
    if compare_lib:
        libs.append(ctypes.CDLL(compare_lib))
    isas = _isas(lib)
    rng = np.random.default_rng(0)
    rows, attn_rows = [], []
    combos = [("linear", m, n, k, t) for t in threads_list for m in ms for (n, k) in shapes] + \
             [("attention", L, H, heads, t) for t in threads_list for (L, H, heads) in attention]
    for kind, d0, d1, d2, t in tqdm(combos, desc="kernels", disable=not progress):
        for lb in libs:
            lb.bebert_set_threads(ctypes.c_int(t))
        if kind == "attention":
            L, H, heads = d0, d1, d2
            x = rng.standard_normal((1, L, H)).astype(np.float32)
            entries = {}
            for name, model in _attention_graphs(L, H, heads).items():
                entries.update({name: (_session(model, t, lib_path), None)} if name.startswith("ORT") else
                               _ours(name, model, t, lib_path, isas, True, compare_lib))
            med = _time(entries, x, runs, warmup)
            base = med["ORT fp32 MultiHeadAttention"]
            attn_rows += [{"L": L, "H": H, "heads": heads, "threads": t, "kernel": name, "median_ms": v,
                           "speedup_vs_ort_fp32": base / v} for name, v in med.items()]
            continue
        m, n, k = d0, d1, d2
        x = rng.standard_normal((m, k)).astype(np.float32)
        entries = {}
        for name, model in _graphs(m, n, k, rng).items():
            if name.startswith("ORT"):
                entries[name] = (_session(model, t, lib_path), None)
            else:
                entries.update(_ours(name, model, t, lib_path, isas, name in ISA_MODES,
                                     compare_lib if name != "W1A32" else None))
        ops = 2.0 * m * n * k
        for name, med in _time(entries, x, runs, warmup).items():
            rows.append({"M": m, "N": n, "K": k, "threads": t, "kernel": name, "median_ms": med,
                         "gop_s": ops / (med * 1e-3) / 1e9})
    base = {(r["M"], r["N"], r["K"], r["threads"], r["kernel"]): r["median_ms"] for r in rows}
    for r in rows:
        key = (r["M"], r["N"], r["K"], r["threads"])
        r["speedup_vs_ort_fp32"] = base[key + ("ORT fp32",)] / r["median_ms"]
        r["speedup_vs_ort_int8"] = base[key + ("ORT int8",)] / r["median_ms"]
    import onnxruntime

    return {"cpu": cpu_model(), "machine": platform.machine(), "isa": isas[0], "isas": isas,
            "onnxruntime": onnxruntime.__version__, "runs": runs, "compare_lib": compare_lib, "rows": rows,
            "attention_rows": attn_rows,
            "note": "GOP/s counts 2*M*N*K per GEMM; a TWS pair row does two halves' work (2 binary GEMMs) for the "
                    "same N x K, as one member's linear slot does; attention rows time one layer's attention "
                    "core (q = k = v = X [1, L, H]) against ONNX Runtime's fp32 MultiHeadAttention"}


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"BinaryLinear kernels vs ONNX Runtime — {res['cpu']} (paths: {', '.join(res['isas'])}), "
                    f"median of {res['runs']}, interleaved")
    for c in ("M", "N x K", "thr", "kernel", "ms", "GOP/s", "vs ORT fp32", "vs ORT int8"):
        t.add_column(c, justify="right", no_wrap=True)
    for r in res["rows"]:
        t.add_row(str(r["M"]), f"{r['N']}x{r['K']}", str(r["threads"]), r["kernel"], f"{r['median_ms']:.3f}",
                  f"{r['gop_s']:.0f}", f"{r['speedup_vs_ort_fp32']:.2f}x", f"{r['speedup_vs_ort_int8']:.2f}x")
    console = Console(width=max(132, Console().width))  # never truncate model names or figures
    console.print(t)
    if res.get("attention_rows"):
        ta = Table(title=f"Attention core of one layer vs ONNX Runtime fp32 MultiHeadAttention — {res['cpu']}, "
                         f"median of {res['runs']}, interleaved")
        for c in ("L", "H / heads", "thr", "kernel", "ms", "vs ORT fp32"):
            ta.add_column(c, justify="right", no_wrap=True)
        for r in res["attention_rows"]:
            ta.add_row(str(r["L"]), f"{r['H']} / {r['heads']}", str(r["threads"]), r["kernel"], f"{r['median_ms']:.3f}",
                       f"{r['speedup_vs_ort_fp32']:.2f}x")
        console.print(ta)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", default="bench_kernels.json")
    ap.add_argument("--quick", action="store_true", help="768-wide shapes and M=128 only")
    ap.add_argument("--ms", default=None, help="comma-separated M values (default 1,128; --quick: 128)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--compare-lib", default=None, help="another build of _ort_ops*.so to run in the same loop")
    a = ap.parse_args(argv)
    kw = {"ms": (128,), "shapes": SHAPES[:3], "attention": ATTN_SHAPES[:1]} if a.quick else {}
    if a.ms:
        kw["ms"] = tuple(int(v) for v in a.ms.split(","))
    res = bench(runs=a.runs, threads_list=tuple(int(v) for v in a.threads.split(",")), compare_lib=a.compare_lib, **kw)
    print_table(res)
    from bebert_deploy.io import atomic_path

    with atomic_path(a.json) as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
