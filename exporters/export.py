"""`bebert-deploy export`: checkpoint -> .onnx / .tflite, for the ensemble and the baselines."""
from __future__ import annotations

import tempfile
from pathlib import Path

TARGETS = ("onnx", "tflite")
PRECISIONS = ("binary", "fp32", "int8")


def copy_tokenizer(src: Path, dest: Path) -> None:
    """Put the checkpoint's tokenizer files beside the exported model (runtime sessions look there)."""
    import shutil

    from bebert_deploy.tokenizer import TOKENIZER_FILES

    dest.mkdir(parents=True, exist_ok=True)
    for fn in TOKENIZER_FILES:
        if (src / fn).is_file() and not (dest / fn).is_file():
            shutil.copy(src / fn, dest / fn)


def export(checkpoint: str | Path, out: str | Path, target: str = "onnx", precision: str = "binary",
           ops: str = "custom", members: list[int] | None = None, seq_len: int | None = None) -> Path:
    """Export ``checkpoint`` to ``out``.

    precision: 'binary' (the ensemble, or the ``members`` subset), 'fp32' (the full-precision teacher),
    'int8' (dynamic-range int8 of the teacher). ops: 'custom' (packed-bit custom ops) or 'builtin'.
    seq_len: a fixed sequence length for a TFLite file (default: resizable up to the checkpoint's max_len, as
    ONNX files take any length up to max_len).
    Returns the written path (written atomically).
    """
    from bebert_deploy.checkpoint import load_checkpoint

    from .lowering import ensemble_spec

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if seq_len is not None and target != "tflite":
        raise ValueError("--seq-len fixes the shape of TFLite files only (ONNX exports take any length up to max_len)")
    ck = load_checkpoint(checkpoint, with_teacher=precision != "binary")
    copy_tokenizer(ck.path, Path(out).parent)
    spec = ensemble_spec(ck, members, "binary" if precision == "binary" else "fp32")
    if target == "tflite":
        from .tflite_export import build_tflite, save_tflite

        weights = "int8" if precision == "int8" else "fp32"
        return save_tflite(build_tflite(spec, ops if precision == "binary" else "builtin", weights, seq_len), out)
    from .onnx_export import build_onnx, check_model, quantize_int8, save_onnx

    model = build_onnx(spec, ops if precision == "binary" else "builtin")
    check_model(model, custom=precision == "binary" and ops == "custom")
    if precision == "int8":
        with tempfile.TemporaryDirectory() as tmp:
            fp = save_onnx(model, Path(tmp) / "fp32.onnx")
            return quantize_int8(fp, out)
    return save_onnx(model, out)
