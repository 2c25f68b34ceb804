"""`bebert-deploy quickstart`: the whole mission on the built-in default, end to end.

fetch data -> fine-tune the teacher -> 2-member BEBERT (TWS, prediction KD) -> export fp32 / int8 baselines
and the ensemble (custom-op and builtin lowerings) to ONNX and TFLite -> benchmark them in one interleaved run on the held-out
test split -> table, JSON and plot in the output folder.

Interruption-safe and resumable: every artefact is written atomically, and a rerun skips the steps whose
outputs already exist (delete the folder, or pass --restart, to start over).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import click

from bebert_deploy.config import BoostConfig, TrainConfig

SIZES = {
    # name: (train_limit, dev_limit, max_len, teacher_epochs, ternary_epochs, member_epochs, bench_runs, test_limit)
    # default: chosen on the full dev split among 1,200 sentences 2/1/2 epochs (ensemble - teacher -5.0 points),
    # 3,000 2/1/2 (-3.75) and 5,000 1/1/1 (-0.55): more distinct sentences beat more epochs on few
    "default": (5000, 400, 64, 1, 1, 1, 50, 500),
    "fast": (600, 200, 48, 1, 1, 1, 30, 300),
    "tiny": (64, 32, 16, 1, 1, 1, 5, 32),
}


@dataclass
class QuickstartResult:
    out_dir: Path
    checkpoint: Path
    models: dict[str, Path]
    bench: dict


def run_quickstart(out_dir: str | Path = "quickstart_out", size: str = "default", threads: int = 2,
                   task: str = "rotten-tomatoes", base: str | None = None, restart: bool = False,
                   log=click.echo) -> QuickstartResult:
    """Run the quickstart; returns paths of everything written and the bench result dict."""
    from bebert_deploy.data.sources import fetch
    from bebert_deploy.exporters.export import export
    from bebert_deploy.runtime import bench as b
    from bebert_deploy.training.pipeline import train_bebert

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    out = Path(out_dir)
    if restart and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    train_limit, dev_limit, max_len, t_ep, tern_ep, m_ep, runs, test_limit = SIZES[size]
    data_dir = fetch(task)
    log(f"[1/4] data: {data_dir}")

    ckpt = out / "checkpoint"
    if (ckpt / "bebert.json").is_file():
        log(f"[2/4] training: reusing {ckpt}")
    else:
        cfg = TrainConfig(task=task, base=base, max_len=max_len, train_limit=train_limit, dev_limit=dev_limit,
                          teacher_epochs=t_ep, ternary_epochs=tern_ep, member_epochs=m_ep, kd="pred",
                          boost=BoostConfig(members=2))
        log(f"[2/4] training teacher + 2-member BEBERT ({size}: {train_limit} sentences, max_len {max_len})")
        summary = train_bebert(cfg, ckpt)
        for name, st in summary["stages"].items():
            dev = " ".join(f"{k}={v:.4f}" for k, v in st.get("dev", {}).items())
            log(f"      {name:12s} {dev} ({st.get('seconds', 0):.0f}s)")
        log(f"      {'ensemble':12s} " + " ".join(f"{k}={v:.4f}" for k, v in summary["ensemble_dev"].items()))

    models = {}
    plan = [("fp32.onnx", "onnx", "fp32", "builtin"), ("int8.onnx", "onnx", "int8", "builtin"),
            ("bebert-custom.onnx", "onnx", "binary", "custom"), ("bebert-builtin.onnx", "onnx", "binary", "builtin"),
            ("fp32.tflite", "tflite", "fp32", "builtin"), ("int8.tflite", "tflite", "int8", "builtin"),
            ("bebert-custom.tflite", "tflite", "binary", "custom"), ("bebert-builtin.tflite", "tflite", "binary", "builtin")]
    for fname, target, precision, ops in plan:
        p = out / fname
        if not p.is_file():
            export(ckpt, p, target, precision, ops)
        models[fname] = p
    log("[3/4] exported: " + ", ".join(f"{k} {v.stat().st_size / 1e6:.1f} MB" for k, v in models.items()))

    log(f"[4/4] benchmark: seq {max_len}, batch 1, {threads} threads, {runs} runs, accuracy on the test split")
    cfg = b.BenchConfig(seq_len=max_len, batch=1, threads=threads, warmup=3, runs=runs,
                        data=str(data_dir / "test.tsv"), data_limit=test_limit, device_label="")
    res = b.run_bench([str(p) for k, p in models.items() if k != "fp32.onnx"], str(models["fp32.onnx"]), cfg)
    b.print_table(res)
    b.write_json(res, str(out / "bench.json"))
    try:
        b.plot([res], str(out / "bench.png"))
    except RuntimeError as e:
        log(f"      ({e})")
    (out / "README.txt").write_text(
        "bebert-deploy quickstart output\n"
        f"checkpoint/   the trained BEBERT checkpoint (bebert-deploy info {ckpt})\n"
        "*.onnx/.tflite exported models (fp32 / int8 baselines, BEBERT custom-op and builtin lowerings)\n"
        "bench.json    the benchmark (bench.png: size vs latency)\n"
        f"try:          bebert-deploy predict {out / 'bebert-custom.onnx'} \"a gorgeous, moving film\"\n")
    log(f"wrote {out}/bench.json, {out}/bench.png")
    return QuickstartResult(out, ckpt, models, res)

