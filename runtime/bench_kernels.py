"""Kernel benchmark: our packed-bit BinaryLinear (each activation mode) vs ONNX Runtime fp32 MatMul and
ONNX Runtime int8 (DynamicQuantizeLinear + MatMulInteger) of the same shape, measured in one run.

    python -m bebert_deploy.runtime.bench_kernels [--runs 50] [--json kernels.json] [--quick]

Every ONNX Runtime graph and our op run through the same path (an InferenceSession; ours through our native
custom-op library), so per-call overheads are alike. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

SHAPES = [(768, 768), (3072, 768), (768, 3072), (384, 384), (1536, 384), (384, 1536)]
MODES = [("W1A32", 0, 32, 1), ("W1A4", 1, 4, 1), ("W1A1", 2, 1, 1), ("W1A4 TWS pair", 1, 4, 2)]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _session(model, threads: int):
    import onnxruntime as ort

    from .session import ort_ops_library

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.register_custom_ops_library(str(ort_ops_library()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _graphs(m: int, n: int, k: int, rng):
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from .bitpack import pack_bits

    x_info = h.make_tensor_value_info("X", T.FLOAT, [m, k])
    y_info = h.make_tensor_value_info("Y", T.FLOAT, [m, n])
    w = rng.standard_normal((k, n)).astype(np.float32)
    models = {}
    g = h.make_graph([h.make_node("MatMul", ["X", "W"], ["Y"])], "fp32", [x_info], [y_info], [nh.from_array(w, "W")])
    models["ORT fp32"] = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    wq = rng.integers(-127, 128, (k, n)).astype(np.int8)
    nodes = [h.make_node("DynamicQuantizeLinear", ["X"], ["xq", "xs", "xz"]),
             h.make_node("MatMulInteger", ["xq", "Wq", "xz", "wz"], ["acc"]),
             h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
             h.make_node("Mul", ["xs", "ws"], ["sc"]),
             h.make_node("Mul", ["accf", "sc"], ["Y"])]
    g = h.make_graph(nodes, "int8", [x_info], [y_info],
                     [nh.from_array(wq, "Wq"), nh.from_array(np.int8(0), "wz"), nh.from_array(np.float32(0.01), "ws")])
    models["ORT int8"] = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    for name, mode, bits, parts in MODES:
        packed = pack_bits(rng.standard_normal((parts, n, k)))
        inits = [nh.from_array(packed, "W"), nh.from_array(np.ones((parts, n), np.float32), "A"),
                 nh.from_array(np.zeros(n, np.float32), "B"), nh.from_array(np.full(parts, 0.3, np.float32), "S")]
        node = h.make_node("BinaryLinear", ["X", "W", "A", "B", "S"], ["Y"], domain="bebert", act_mode=mode,
                           act_bits=bits, act_symmetric=1)
        g = h.make_graph([node], name, [x_info], [y_info], inits)
        models[name] = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("bebert", 1)])
    return models


def bench(ms=(1, 128), shapes=SHAPES, threads_list=(1, 2), runs: int = 50, warmup: int = 5, progress=True) -> dict:
    """Median latencies (ms) of every kernel and baseline per (M, N, K, threads); returns the JSON dict."""
    import ctypes

    from tqdm.auto import tqdm

    from .session import ort_ops_library

    lib = ctypes.CDLL(str(ort_ops_library()))
    lib.bebert_isa.restype = ctypes.c_char_p
    rng = np.random.default_rng(0)
    rows = []
    combos = [(m, n, k, t) for t in threads_list for m in ms for (n, k) in shapes]
    for m, n, k, t in tqdm(combos, desc="kernels", disable=not progress):
        lib.bebert_set_threads(ctypes.c_int(t))
        x = rng.standard_normal((m, k)).astype(np.float32)
        sessions = {name: _session(model, t) for name, model in _graphs(m, n, k, rng).items()}
        times = {name: [] for name in sessions}
        for name, s in sessions.items():
            for _ in range(warmup):
                s.run(None, {"X": x})
        for _ in range(runs):  # interleaved, so machine noise hits every entry alike
            for name, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {"X": x})
                times[name].append(time.perf_counter() - t0)
        ops = 2.0 * m * n * k
        for name, ts in times.items():
            med = float(np.median(ts)) * 1e3
            rows.append({"M": m, "N": n, "K": k, "threads": t, "kernel": name, "median_ms": med,
                         "gop_s": ops / (med * 1e-3) / 1e9})
    base = {(r["M"], r["N"], r["K"], r["threads"], r["kernel"]): r["median_ms"] for r in rows}
    for r in rows:
        key = (r["M"], r["N"], r["K"], r["threads"])
        r["speedup_vs_ort_fp32"] = base[key + ("ORT fp32",)] / r["median_ms"]
        r["speedup_vs_ort_int8"] = base[key + ("ORT int8",)] / r["median_ms"]
    import onnxruntime

    return {"cpu": cpu_model(), "machine": platform.machine(), "isa": lib.bebert_isa().decode(),
            "onnxruntime": onnxruntime.__version__, "runs": runs, "rows": rows}


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"BinaryLinear kernels vs ONNX Runtime — {res['cpu']} ({res['isa']}), median of {res['runs']}")
    for c in ("M", "N x K", "thr", "kernel", "ms", "GOP/s", "vs ORT fp32", "vs ORT int8"):
        t.add_column(c, justify="right")
    for r in res["rows"]:
        t.add_row(str(r["M"]), f"{r['N']}x{r['K']}", str(r["threads"]), r["kernel"], f"{r['median_ms']:.3f}",
                  f"{r['gop_s']:.0f}", f"{r['speedup_vs_ort_fp32']:.2f}x", f"{r['speedup_vs_ort_int8']:.2f}x")
    Console(width=max(132, Console().width)).print(t)  # never truncate model names or figures


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", default="bench_kernels.json")
    ap.add_argument("--quick", action="store_true", help="768-wide shapes and M=128 only")
    a = ap.parse_args(argv)
    kw = {"ms": (128,), "shapes": SHAPES[:3]} if a.quick else {}
    res = bench(runs=a.runs, **kw)
    print_table(res)
    from bebert_deploy.io import atomic_path

    with atomic_path(a.json) as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
