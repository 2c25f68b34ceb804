"""Inference sessions for exported models (.onnx in ONNX Runtime, .tflite in LiteRT). Needs numpy, tokenizers
and onnxruntime / ai-edge-litert only: no torch, no tensorflow, so it runs on a Raspberry Pi as is."""
from __future__ import annotations

import ctypes
import glob
import json
import os
import warnings
from pathlib import Path

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def native_library(stem: str, what: str) -> Path:
    """Path of one of our native libraries built by pip install (``stem`` e.g. '_ort_ops'), beside this file."""
    here = Path(__file__).parent
    found = sorted(glob.glob(str(here / f"{stem}*.so")))
    if not found:
        raise FileNotFoundError(f"the bebert {what} library is missing from {here}: reinstall bebert-deploy "
                                "(pip install builds it; a C++ compiler is needed)")
    return Path(found[0])


def ort_ops_library() -> Path:
    """Path of our native ONNX Runtime custom-op library."""
    return native_library("_ort_ops", "ONNX Runtime op")


def find_tokenizer(model_path: Path) -> Path:
    """The tokenizer folder of an exported model: the model's own folder (export writes tokenizer files there)."""
    d = model_path.parent
    if (d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file():
        return d
    raise FileNotFoundError(f"no tokenizer.json or vocab.txt beside {model_path}: pass tokenizer=DIR")


class Session:
    """Run an exported BEBERT / baseline model.

    Session(path, threads=2) loads a .onnx file (with our op library registered) or a .tflite file (custom-op
    files run in LiteRT's compiled model with our kernels, stock files in the TFLite interpreter; TFLite files
    have a fixed [1, L] shape, so rows are run one by one, padded to L); ``predict(texts)`` returns (labels list[str], probs float32 [n, K]); ``run(feed)`` takes the
    three int64 [batch, seq] inputs and returns {output name: array}.
    """

    def __init__(self, model_path: str | Path, threads: int = 1, tokenizer: str | Path | None = None):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        self.threads = max(1, int(threads))
        self.tokenizer_dir = Path(tokenizer) if tokenizer else None
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            self._init_onnx()
        elif suffix == ".tflite":
            self._init_tflite()
        else:
            raise ValueError(f"{self.path.name}: unsupported model format {suffix!r} (expected .onnx or .tflite)")
        self.labels = json.loads(self.metadata.get("labels", "null"))
        self.max_len = int(self.metadata.get("seq_len", self.metadata.get("max_len", 128)))
        self._tok = None

    def _init_onnx(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        # ORT's pool threads spin after each op by default; our kernels run their own OpenMP team between ORT
        # ops, so spinning ORT threads would steal the cores our kernels need.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        # Our op library is always registered (registration is cheap): any file of ours may use the `bebert` domain.
        lib = ort_ops_library()
        so.register_custom_ops_library(str(lib))
        handle = ctypes.CDLL(str(lib))  # the handle ORT dlopened: sets the thread count our kernels use
        handle.bebert_set_threads(ctypes.c_int(self.threads))
        handle.bebert_isa.restype = ctypes.c_char_p
        self.isa = handle.bebert_isa().decode()
        try:
            self._sess = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types
            raise ValueError(f"{self.path.name}: ONNX Runtime cannot load the model ({str(e).splitlines()[0]})") from None
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self._run = lambda feed: dict(zip(self.output_names, self._sess.run(None, feed)))

    def _init_tflite(self):
        from .litert_session import OUR_OPS, LiteRtCustomRunner, LiteRtInterpreterRunner
        from .tflite_file import read_tflite

        info = read_tflite(self.path)
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.metadata.items()}
        unknown = [c for c in info.custom_ops if c not in OUR_OPS]
        if unknown:
            raise ValueError(f"{self.path.name}: unsupported custom op(s) {', '.join(unknown)} (this runtime has "
                             f"{', '.join(OUR_OPS)})")
        names = [t.name for t in info.inputs]
        if sorted(names) != sorted(INPUT_NAMES) or any(len(t.shape) != 2 or t.shape[0] != 1 for t in info.inputs):
            raise ValueError(f"{self.path.name}: expected inputs {', '.join(INPUT_NAMES)} of shape [1, L], got "
                             f"{[(t.name, t.shape) for t in info.inputs]}")
        runner_cls = LiteRtCustomRunner if info.custom_ops else LiteRtInterpreterRunner
        runner = runner_cls(self.path, self.threads, info.inputs, info.outputs)
        self._litert = runner
        self.isa = runner.isa
        self.output_names = [t.name for t in info.outputs]
        L = info.inputs[0].shape[1]

        def run(feed):
            n, seq = feed["input_ids"].shape
            results = []
            for r in range(n):
                row = []
                for t in info.inputs:
                    a = np.zeros((1, L), np.int64)
                    a[0, :seq] = feed[t.name][r]
                    row.append(a)
                results.append(runner.run(row))
            return {name: np.concatenate([res[i] for res in results]) for i, name in enumerate(self.output_names)}

        self._run = run

    @property
    def tokenizer(self):
        if self._tok is None:
            from bebert_deploy.tokenizer import load_tokenizer

            self._tok = load_tokenizer(self.tokenizer_dir or find_tokenizer(self.path))
        return self._tok

    def encode(self, texts: list[str], pairs: list[str] | None = None, seq_len: int | None = None) -> dict[str, np.ndarray]:
        """Tokenize to int64 [n, seq_len] (default: the model's max_len); warns when texts are truncated."""
        from bebert_deploy.tokenizer import encode

        n = seq_len or self.max_len
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds the model's max_len {self.max_len}")
        enc = encode(self.tokenizer, texts, pairs, n)
        cut = int(enc.pop("truncated").sum())
        if cut:
            warnings.warn(f"{cut} of {len(texts)} texts were longer than {n} tokens and were truncated", stacklevel=2)
        return enc

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on int64 [batch, seq] inputs; returns every graph output by name."""
        missing = [k for k in INPUT_NAMES if k not in feed]
        if missing:
            raise ValueError(f"missing model inputs: {', '.join(missing)}")
        shapes = {np.shape(feed[k]) for k in INPUT_NAMES}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"inputs must all be int64 [batch, seq] of one shape, got {sorted(shapes)}")
        seq = next(iter(shapes))[1]
        if seq > self.max_len:
            raise ValueError(f"sequence length {seq} exceeds the model's max_len {self.max_len}")
        return self._run({k: np.ascontiguousarray(feed[k], np.int64) for k in INPUT_NAMES})

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32):
        """(labels, probs): predicted label strings and class probabilities float32 [n, K] (scores for regression)."""
        probs = []
        for s in range(0, len(texts), batch_size):
            enc = self.encode(texts[s:s + batch_size], None if pairs is None else pairs[s:s + batch_size])
            probs.append(self.run(enc)["probs"])
        p = np.concatenate(probs)
        if self.labels is None:
            return [f"{v:.4f}" for v in p[:, 0]], p
        return [self.labels[i] for i in p.argmax(-1)], p
