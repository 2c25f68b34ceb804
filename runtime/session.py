"""Inference sessions for exported models (.onnx in ONNX Runtime, .tflite in LiteRT). Needs numpy, tokenizers
and onnxruntime / ai-edge-litert only: no torch, no tensorflow, so it runs on a Raspberry Pi as is.

Every failure to load or run a model raises :class:`ModelError` (runtime/errors.py) with one line that starts
with the model's path; a model whose ``probs`` or ``logits_<i>`` hold NaN or inf gives that error, never a label.

The runtime package is a leaf: from the rest of bebert_deploy it imports only the torch-free core modules
``bebert_deploy.env``, ``.io``, ``.tokenizer``, ``.data.metrics`` and ``.data.tasks`` (which need only numpy and
tokenizers); tests/test_leaf.py enforces this. The op contract of the native libraries is runtime/OPS.md.
"""
from __future__ import annotations

import ctypes
import json
import re
import warnings
from pathlib import Path

import numpy as np

from .errors import ModelError, one_line
from .native import native_library, ort_ops_library  # noqa: F401  (re-exported: bench_kernels imports them here)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
MAX_SEQ_LEN = 8192  # a larger max_len in a file's metadata is corruption, not a model


def find_tokenizer(model_path: Path) -> Path:
    """The tokenizer folder of an exported model: the model's own folder (export writes tokenizer files there)."""
    d = model_path.parent
    if (d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file():
        return d
    raise FileNotFoundError(f"no tokenizer.json or vocab.txt beside {model_path}: pass tokenizer=DIR")


def _ort_message(e: BaseException) -> str:
    """ONNX Runtime's message without its '[ONNXRuntimeError] : 1 : FAIL : ' prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", one_line(e))


class Session:
    """Run an exported BEBERT / baseline model.

    Session(path, threads=2) loads a .onnx file (with our op library registered) or a .tflite file (custom-op
    files run in LiteRT's compiled model with our kernels, stock files in the TFLite interpreter; TFLite files
    run rows one by one, each at the feed's length when the file is resizable (the default export), else padded
    to the file's fixed L). Loading a model with the three BERT
    inputs ends with one warm-up run on a [1, max_len] input, so a file whose custom nodes have bad attributes or
    constants fails here, naming the node. Members side by side (``parallel_members``): custom-op TFLite ensembles
    run each member's signature on a thread of its own at once when threads >= members (default; the threads are
    split among the members; False turns it off); ONNX ensembles only with ``parallel_members=True`` (ORT's
    parallel executor, threads // members threads per op), else one member after the other, each op on every
    thread.
    ``predict(texts)`` returns (labels list[str], probs float32 [n, K]); ``run(feed)`` takes the three int64
    [batch, seq] inputs and returns {output name: array}. Failures raise ModelError.
    """

    def __init__(self, model_path: str | Path, threads: int = 1, tokenizer: str | Path | None = None,
                 parallel_members: bool | None = None):
        self.path = Path(model_path)
        self._parallel = parallel_members
        self.parallel_members = 1  # how many members run side by side
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
            raise ModelError(f"{self.path}: unsupported model format {suffix!r} (expected .onnx or .tflite)")
        self._read_metadata()
        self._tok = None
        if sorted(self.input_names) == sorted(INPUT_NAMES):  # a BERT export (not, e.g., a one-op test graph)
            self._warm_up()

    def _error(self, msg: str) -> ModelError:
        return ModelError(f"{self.path}: {msg}")

    def _read_metadata(self):
        try:
            self.labels = json.loads(self.metadata.get("labels", "null"))
            self.max_len = int(self.metadata.get("seq_len", self.metadata.get("max_len", 128)))
        except (ValueError, TypeError) as e:
            raise self._error(f"unreadable metadata ({one_line(e)})") from None
        if self.labels is not None and (not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels)):
            raise self._error(f"metadata labels must be a list of strings, got {self.labels!r:.80}")
        if not 1 <= self.max_len <= MAX_SEQ_LEN:
            raise self._error(f"metadata max_len {self.max_len} is outside 1..{MAX_SEQ_LEN}")

    def _warm_up(self):
        """One run on a [1, max_len] input of token 0 (every custom node executes and checks its constants) that
        must give finite outputs with one column per label."""
        feed = {k: np.zeros((1, self.max_len), np.int64) for k in INPUT_NAMES}
        feed["attention_mask"][:] = 1
        out = self.run(feed)
        if "probs" not in out:
            raise self._error(f"the model has no 'probs' output (outputs: {', '.join(out)})")
        p = out["probs"]
        if p.ndim != 2 or p.shape[0] != 1 or (self.labels is not None and p.shape[1] != len(self.labels)):
            raise self._error(f"'probs' has shape {list(p.shape)} for {self.labels and len(self.labels)} labels; "
                              "expected [batch, labels]")

    def _init_onnx(self):
        import onnxruntime as ort

        # Our op library is always registered (registration is cheap): any file of ours may use the `bebert` domain.
        lib = ort_ops_library()
        handle = ctypes.CDLL(str(lib))  # the handle ORT dlopens: sets the thread count of the kernels it creates
        handle.bebert_isa.restype = ctypes.c_char_p
        self.isa = handle.bebert_isa().decode()

        def load(intra: int, inter: int):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = intra, inter
            if inter > 1:
                so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            # ORT's pool threads spin after each op by default; our kernels run their own worker pool between ORT
            # ops (runtime/kernels/core/thread_pool.cc), so spinning ORT threads would steal the cores it needs.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # Fatal only: errors reach the caller as one ModelError line instead of ORT's own stderr log lines.
            so.log_severity_level = 4
            try:
                so.register_custom_ops_library(str(lib))
            except Exception as e:  # e.g. an onnxruntime older than the op library needs (ort_ops.cc: RegisterCustomOps)
                raise RuntimeError(f"cannot register the bebert op library with ONNX Runtime: {_ort_message(e)}") from None
            handle.bebert_set_threads(ctypes.c_int(intra))  # kept by this session's kernels (per session)
            try:
                return ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # ORT raises its own exception types (not subclasses of ValueError/RuntimeError)
                raise self._error(f"ONNX Runtime cannot load the model: {_ort_message(e)}") from None

        self.dynamic_length = True  # ONNX files take any length up to max_len
        self._sess = load(self.threads, 1)
        members = sum(o.name.startswith("logits_") for o in self._sess.get_outputs())
        if self._parallel is True and members > 1 and self.threads > 1:
            # The members are independent branches until the vote: ORT's parallel executor runs them side by side,
            # each op on threads // members threads (one on 2 cores), instead of one member after the other with
            # every op forking and joining both threads. Opt-in: on the 2-core development machine it was not
            # reliably faster (every op already uses both cores; README, known limits).
            self._sess = load(max(1, self.threads // members), min(members, self.threads))
            self.parallel_members = min(members, self.threads)
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self.input_names = [i.name for i in self._sess.get_inputs()]

        def run(feed):
            try:
                return dict(zip(self.output_names, self._sess.run(None, feed)))
            except Exception as e:  # a kernel's error status or a failing builtin node
                raise self._error(f"ONNX Runtime failed to run the model: {_ort_message(e)}") from None

        self._run = run

    def _init_tflite(self):
        from .litert_session import OUR_OPS, LiteRtCustomRunner, LiteRtInterpreterRunner, LiteRtMembersRunner
        from .tflite_file import read_tflite

        info = read_tflite(self.path)
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.metadata.items()}
        unknown = [c for c in info.custom_ops if c not in OUR_OPS]
        if unknown:
            raise self._error(f"unsupported custom op(s) {', '.join(unknown)} (this runtime has {', '.join(OUR_OPS)})")
        names = [t.name for t in info.inputs]
        if sorted(names) != sorted(INPUT_NAMES) or any(len(t.shape) != 2 or t.shape[0] != 1 for t in info.inputs) \
                or len({t.shape for t in info.inputs}) != 1 or not 1 <= info.inputs[0].shape[1] <= MAX_SEQ_LEN:
            raise self._error(f"expected inputs {', '.join(INPUT_NAMES)} of one shape [1, L], got "
                              f"{[(t.name, t.shape) for t in info.inputs]}")
        members = [k for k in info.signatures if k.startswith("member_")]
        if info.custom_ops and len(members) >= 2 and "vote" in info.signatures \
                and len(members) <= self.threads and self._parallel is not False:
            # Each member on a thread of its own, side by side, then the file's vote (20-40% faster than every op
            # on both threads at 8-64 tokens on 2 cores: no fork/join per op, and one member's serial parts overlap
            # the other's). More threads than members go to the members' kernels (each calling thread forks its
            # own helpers, runtime/kernels/core/thread_pool.h).
            runner = LiteRtMembersRunner(self.path, info.signatures, info.outputs, self.threads)
            self.parallel_members = len(members)
        else:
            runner_cls = LiteRtCustomRunner if info.custom_ops else LiteRtInterpreterRunner
            runner = runner_cls(self.path, self.threads, info.inputs, info.outputs)
        self._litert = runner
        self.isa = runner.isa
        self.output_names = [t.name for t in info.outputs]
        self.input_names = [t.name for t in info.inputs]
        L = info.inputs[0].shape[1]
        # Files exported with a resizable length (metadata dynamic_length = 1) run each row at the feed's length;
        # older and --seq-len files pad every row to their fixed L.
        self.dynamic_length = info.metadata.get("dynamic_length") == "1"

        def run(feed):
            n, seq = feed["input_ids"].shape
            if seq > L:
                raise self._error(f"sequence length {seq} exceeds the file's {'maximum' if self.dynamic_length else 'fixed'}"
                                  f" length {L}")
            width = seq if self.dynamic_length else L
            results = []
            for r in range(n):
                if width == seq:  # (run() made the feed contiguous int64: a row is a view, no copy)
                    row = [feed[t.name][r:r + 1] for t in info.inputs]
                else:
                    row = []
                    for t in info.inputs:
                        a = np.zeros((1, width), np.int64)
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
        """Tokenize to int64 [n, L]: L = seq_len when given; else the longest text of the batch for ONNX files
        and resizable TFLite files (dynamic length: a short sentence costs what its tokens cost, as in training's
        dynamic padding), the model's max_len for fixed-length TFLite files. Warns when texts are truncated."""
        from bebert_deploy.tokenizer import encode

        n = seq_len or self.max_len
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds the model's max_len {self.max_len}")
        enc = encode(self.tokenizer, texts, pairs, n)
        cut = int(enc.pop("truncated").sum())
        if cut:
            warnings.warn(f"{cut} of {len(texts)} texts were longer than {n} tokens and were truncated", stacklevel=2)
        if seq_len is None and self.dynamic_length and len(texts):
            longest = max(1, int(enc["attention_mask"].sum(1).max()))
            enc = {k: np.ascontiguousarray(v[:, :longest]) for k, v in enc.items()}
        return enc

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on int64 [batch, seq] inputs; returns every graph output by name (float32 arrays). Raises ModelError
        when the runtime fails or ``probs`` / ``logits_<i>`` hold NaN or inf."""
        missing = [k for k in INPUT_NAMES if k not in feed]
        if missing:
            raise ValueError(f"missing model inputs: {', '.join(missing)}")
        shapes = {np.shape(feed[k]) for k in INPUT_NAMES}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"inputs must all be int64 [batch, seq] of one shape, got {sorted(shapes)}")
        seq = next(iter(shapes))[1]
        if seq > self.max_len:
            raise ValueError(f"sequence length {seq} exceeds the model's max_len {self.max_len}")
        out = self._run({k: np.ascontiguousarray(feed[k], np.int64) for k in INPUT_NAMES})
        for name, arr in out.items():
            if (name == "probs" or name.startswith("logits_")) and not np.all(np.isfinite(arr)):
                raise self._error(f"output '{name}' holds NaN or inf: the model file is corrupt or was edited "
                                  "(no answer given)")
        return out

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32):
        """(labels, probs): predicted label strings and class probabilities float32 [n, K] (scores for regression).
        ONNX files run each text at its own token length: texts of equal length share a batch, so no text is
        padded and no prediction depends on the other texts (padding moves the per-example minimum of the
        asymmetric activation quantizers); so do resizable TFLite files. Fixed-length TFLite files run every text
        at the file's length."""
        if not len(texts):
            raise ValueError("no texts to predict")
        if self.dynamic_length:
            enc = self.encode(texts, pairs, seq_len=self.max_len)
            lengths = enc["attention_mask"].sum(1)
            p = None
            for length in np.unique(lengths):
                idx = np.flatnonzero(lengths == length)
                for s in range(0, len(idx), batch_size):
                    rows = idx[s:s + batch_size]
                    out = self.run({k: v[rows, :length] for k, v in enc.items()})["probs"]
                    if p is None:
                        p = np.empty((len(texts), out.shape[1]), np.float32)
                    p[rows] = out
        else:
            p = np.concatenate([self.run(self.encode(texts[s:s + batch_size],
                                                     None if pairs is None else pairs[s:s + batch_size]))["probs"]
                                for s in range(0, len(texts), batch_size)])
        if self.labels is None:
            return [f"{v:.4f}" for v in p[:, 0]], p
        return [self.labels[i] for i in p.argmax(-1)], p
