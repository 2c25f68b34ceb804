"""Size and latency of BEBERT exports at real model shapes (random weights), seq 128, against fp32 and int8.

    python scripts/bench_shapes.py [--shapes minilm,bert-base] [--members 1,2,3] [--targets onnx,tflite] [--runs 30]
                                   [--tied 1,2] [--shared 2] [--bibert 1,2] [--qkv 1,2] [--tied-qkv 1,2] [--halves 1,2]
                                   [--halves-qkv 1,2] [--untied 1,2]
                                   [--out results/shapes] [--profile]

Random weights are enough for size and speed (accuracy needs training: see the quickstart / accuracy runs).
Members are TWS-split binary W1-E1-A4 models at half width (BinaryBERT's layout) with the training recipe's
quantizers (``TrainConfig().quant``: both TWS halves of a slot read one input quantizer); the fp32 baseline is the
full-width model; int8 is dynamic-range quantization of it (ONNX Runtime's quantize_dynamic; TFLite: int8 FC
weights). Everything is measured in one interleaved run against the ONNX fp32 file; the TFLite rows are also
reported against the TFLite fp32 file of the same run (``tflite_ratios`` in the JSON).
``--profile`` adds ONNX Runtime's per-op-type kernel time of every ONNX file (its profiler, same seq length and
threads, the files interleaved run by run): where a member's time goes (``profile.json``).
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from bebert_deploy.checkpoint import save_checkpoint
from bebert_deploy.config import TrainConfig
from bebert_deploy.data.tasks import get_task
from bebert_deploy.exporters.export import export
from bebert_deploy.models.bert import BIBERT_QUANT, FP_QUANT, BertArch, BertClassifier, QuantConfig
from bebert_deploy.models.quantizers import LsqActQuantizer
from bebert_deploy.runtime import bench as b
from bebert_deploy.training.pipeline import default_base

SHAPES = {
    "minilm": lambda: BertArch.from_hf_config(default_base(), num_labels=2),
    "bert-base": lambda: BertArch(hidden_size=768, num_layers=12, num_heads=12, head_dim=64, intermediate_size=3072,
                                  num_labels=2),
}


# --option: (random_checkpoint arguments, lowerings exported, what the members are)
VARIANTS = {
    "bibert": (dict(member_type="bibert"), ("custom",), "BiBERT (W1A1)"),
    "tied": (dict(member_type="tied"), ("custom", "builtin"), "tied-TWS"),
    "shared": (dict(shared_embedding=True), ("custom",), "one-word-table (--share-embedding)"),
    "qkv": (dict(qkv_shared=True, tws_shared=False), ("custom",),
            "shared Q/K/V input quantizer, untied TWS halves (--qkv-shared-act --no-tws-shared-act)"),
    "tied_qkv": (dict(member_type="tied", qkv_shared=True), ("custom",), "tied-TWS with a shared Q/K/V quantizer"),
    "halves": (dict(tws_shared=True), ("custom",), "one input quantizer for both TWS halves (--tws-shared-act)"),
    "halves_qkv": (dict(qkv_shared=True, tws_shared=True), ("custom",),
                   "one input quantizer per slot for both TWS halves and Q/K/V (--tws-shared-act --qkv-shared-act)"),
    "untied": (dict(tws_shared=False), ("custom",), "untied TWS halves, each its own input quantizer (--no-tws-shared-act)"),
}


def random_checkpoint(arch: BertArch, members: int, out: Path, max_len: int, member_type: str = "binarybert",
                      shared_embedding: bool = False, qkv_shared: bool = False, tws_shared: bool | None = None) -> Path:
    """BinaryBERT members: TWS-split W1-E1-A4 at half width; tied: tied TWS (ternary, one quantizer and one scale
    per slot) at half width; BiBERT members: W1-E1-A1 at full width. qkv_shared: Q, K, V read one input quantizer;
    tws_shared: both TWS halves of a slot read one (None: as the training recipe, TrainConfig().quant)."""
    if tws_shared is None:
        tws_shared = TrainConfig().quant.tws_shared_act
    torch.manual_seed(0)
    teacher = BertClassifier(arch, FP_QUANT).eval()
    half = replace(arch, num_heads=arch.num_heads // 2, intermediate_size=arch.intermediate_size // 2)
    ids = torch.randint(1000, 20000, (2, max_len))
    ms = []
    for i in range(members):
        if member_type == "bibert":
            m = BertClassifier(arch, BIBERT_QUANT).eval()
        elif member_type == "tied":
            m = BertClassifier(half, QuantConfig(weight_mode="ternary", embed_mode="ternary", act_bits=4,
                                                 qkv_shared_act=qkv_shared)).eval()
        else:
            m = BertClassifier(half, QuantConfig(weight_mode="binary", embed_mode="binary", act_bits=4, split=True,
                                                 qkv_shared_act=qkv_shared, tws_shared_act=tws_shared)).eval()
        if shared_embedding and ms:  # --share-embedding: later members hold the first member's word table
            m.word_embeddings.load_state_dict(ms[0].word_embeddings.state_dict())
        with torch.no_grad():
            m(ids)  # initialises the LSQ steps
            # Every quantizer of a trained member learns its own step; equal first-batch steps (each TWS half and
            # each of Q, K, V starts from the same input) would let the kernels share activation tables that a
            # trained member cannot, and understate its time by ~9% (measured on the seed-3 checkpoints).
            for q in m.modules():
                if isinstance(q, LsqActQuantizer):
                    q.step.mul_(1.0 + 0.1 * float(torch.rand(())))
        ms.append(m)
    return save_checkpoint(out, ms, [1.0 + 0.1 * i for i in range(members)], get_task("rotten-tomatoes"), max_len,
                           default_base(), teacher=teacher, provenance={"note": "random weights, for size/latency only"})


def profile_onnx(paths, seq_len: int, threads: int, runs: int, compare_lib: str | None = None) -> dict:
    """Per-op-type kernel time (ms per run, ONNX Runtime's profiler) and median wall time of each ONNX file.
    compare_lib: another build of our op library (e.g. the previous commit's _ort_ops*.so); the custom-op files
    then also run with it ("NAME [compare-lib]"), interleaved with everything else: a before/after in one run."""
    import numpy as np
    import onnxruntime as ort

    from bebert_deploy.runtime.session import ort_ops_library

    libs = {"": str(ort_ops_library())}
    if compare_lib:
        libs[" [compare-lib]"] = compare_lib
    for lib in libs.values():
        ctypes.CDLL(lib).bebert_set_threads(threads)
    sessions = {}
    for p in paths:
        for tag, lib in libs.items():
            if tag and "custom" not in Path(p).name:
                continue
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.register_custom_ops_library(lib)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(p).with_suffix("")) + "-profile"
            sessions[Path(p).name + tag] = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 20000, (1, seq_len)).astype(np.int64),
             "attention_mask": np.ones((1, seq_len), np.int64), "token_type_ids": np.zeros((1, seq_len), np.int64)}
    wall = {k: [] for k in sessions}
    for _ in range(runs + 3):  # interleaved; the first 3 are warm-ups (their kernel time is counted, wall is not)
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})
            wall[k].append(time.perf_counter() - t0)
    out = {}
    for k, s in sessions.items():
        per_op = collections.Counter()
        trace = Path(s.end_profiling())
        for e in json.loads(trace.read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (runs + 3)
        trace.unlink()  # the summary goes to profile.json
        out[k] = {"wall_p50_ms": float(np.median(wall[k][3:])) * 1e3, "kernel_ms": sum(per_op.values()),
                  "per_op_ms": dict(per_op.most_common())}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="minilm,bert-base")
    ap.add_argument("--members", default="1,2,3")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--targets", default="onnx,tflite")
    for opt, (_, lowerings, what) in VARIANTS.items():
        ap.add_argument(f"--{opt.replace('_', '-')}", default="",
                        help=f"also {what} ensembles of these sizes ({' and '.join(lowerings)} ops), e.g. 1,2")
    ap.add_argument("--out", default="results/shapes")
    ap.add_argument("--profile", action="store_true", help="also ONNX Runtime's per-op-type time of each ONNX file")
    ap.add_argument("--compare-lib", default=None,
                    help="with --profile: also run the custom-op ONNX files with this build of _ort_ops*.so")
    a = ap.parse_args(argv)
    out = Path(a.out)
    counts = [int(x) for x in a.members.split(",")]
    for shape in a.shapes.split(","):
        d = out / shape
        ck = random_checkpoint(SHAPES[shape](), max(counts), d / "checkpoint", a.seq_len)
        models = [export(ck, d / "fp32.onnx", "onnx", "fp32")]
        for target in a.targets.split(","):
            if target != "onnx":
                models.append(export(ck, d / f"fp32.{target}", target, "fp32"))
            models.append(export(ck, d / f"int8.{target}", target, "int8"))
            for n in counts:
                for ops in ("custom", "builtin"):
                    models.append(export(ck, d / f"bebert{n}-{ops}.{target}", target, "binary", ops,
                                         members=list(range(n))))
        for opt, (kwargs, lowerings, _) in VARIANTS.items():
            sizes = [int(x) for x in getattr(a, opt).split(",") if x]
            if not sizes:
                continue
            vck = random_checkpoint(SHAPES[shape](), max(sizes), d / f"checkpoint-{opt}", a.seq_len, **kwargs)
            for target in a.targets.split(","):
                for n in sizes:
                    for ops in lowerings:
                        models.append(export(vck, d / f"{opt}{n}-{ops}.{target}", target, "binary", ops,
                                             members=list(range(n))))
        cfg = b.BenchConfig(seq_len=a.seq_len, batch=1, threads=a.threads, warmup=5, runs=a.runs,
                            device_label=f"{shape} random weights")
        res = b.run_bench([str(p) for p in models[1:]], str(models[0]), cfg)
        tfl = {r["model"]: r for r in res["rows"] if r["model"].endswith(".tflite")}
        if "fp32.tflite" in tfl:
            base = tfl["fp32.tflite"]
            res["tflite_ratios"] = {m: {"smaller_x": base["size_mb"] / r["size_mb"], "latency_x": r["p50_ms"] / base["p50_ms"]}
                                    for m, r in tfl.items()}
        b.print_table(res)
        b.write_json(res, str(d / "bench.json"))
        print(json.dumps({r["model"]: [round(r["size_mb"], 2), round(r["p50_ms"], 2)] for r in res["rows"]}))
        if a.profile:
            prof = profile_onnx([p for p in models if str(p).endswith(".onnx")], a.seq_len, a.threads, a.runs,
                                a.compare_lib)
            (d / "profile.json").write_text(json.dumps(prof, indent=2))
            for name, r in prof.items():
                top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(r["per_op_ms"].items())[:6])
                print(f"{name:42s} wall p50 {r['wall_p50_ms']:7.2f} ms | kernel {r['kernel_ms']:6.2f} ms: {top}")


if __name__ == "__main__":
    main()
