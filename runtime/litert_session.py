"""Running .tflite files: our custom ops through LiteRT's compiled-model C API (runtime/kernels/litert), stock
files through ai-edge-litert's Interpreter. Needs numpy and ai-edge-litert only (no TensorFlow, no torch)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from .errors import ModelError, one_line
from .native import litert_ops_library
from .tflite_file import TensorInfo

# ai-edge-litert versions whose libLiteRt.so ABI (custom-op kernel struct, 68-byte layouts, lock modes, the CPU
# options payload) was checked against runtime/kernels/litert/litert_ops.cc.
SUPPORTED_LITERT = ("2.3.0",)
OUR_OPS = ("BebertBinaryEmbedding", "BebertBinaryFC", "BebertQuantAttention", "BebertAddLayerNorm")


def litert_library() -> Path:
    """libLiteRt.so of the installed ai-edge-litert wheel, after checking its version is one we support."""
    try:
        version = importlib_metadata.version("ai-edge-litert")
    except importlib_metadata.PackageNotFoundError:
        raise RuntimeError("custom-op .tflite files need ai-edge-litert: pip install 'bebert-deploy[runtime]'") from None
    if version not in SUPPORTED_LITERT:
        raise RuntimeError(f"ai-edge-litert {version} is not supported for custom-op .tflite files (its C ABI is "
                           f"unchecked); install ai-edge-litert=={SUPPORTED_LITERT[-1]}")
    import importlib.util

    spec = importlib.util.find_spec("ai_edge_litert")
    lib = Path(spec.origin).parent / "libLiteRt.so"
    if not lib.is_file():
        raise RuntimeError(f"ai-edge-litert {version} has no libLiteRt.so at {lib}")
    return lib


@contextlib.contextmanager
def captured_stderr():
    """Collects what native code writes to file descriptor 2 (LiteRT logs INFO lines on every model load) into
    a list of lines, so sessions load quietly and an error can quote LiteRT's own last ERROR line."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def _last_error(lines: list[str]) -> str:
    errs = [ln.strip() for ln in lines if "ERROR" in ln and ln.strip().rstrip(":").split("]")[-1].strip()]
    return f"; LiteRT said: {errs[-1][:200]}" if errs else ""


def verify_flatbuffer(path: Path) -> None:
    """Raises ModelError unless ``path`` passes the TFLite interpreter's flatbuffer verifier and graph builder
    (offsets in bounds, tensor / buffer / opcode indices valid). LiteRT's LiteRtCreateModelFromFile does not
    verify: a bit-flipped file can crash it (SIGSEGV, seen with ai-edge-litert 2.3.0). Building the interpreter
    without delegates allocates nothing and takes about a millisecond; custom ops are only looked up later."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except Exception as e:  # ValueError "The model is not a valid Flatbuffer buffer" and the builder's errors
        raise ModelError(f"{path}: LiteRT cannot run the model: {one_line(e)}") from None


class LiteRtCustomRunner:
    """A compiled LiteRT model with our custom ops. ``run(arrays)`` takes the signature inputs in order and
    returns the outputs in order (numpy arrays of the signature shapes). Load and run failures (our kernels'
    argument checks included: LiteRT ignores their status, so the library keeps its own error flag) raise
    ModelError."""

    def __init__(self, path: Path, threads: int, inputs: list[TensorInfo], outputs: list[TensorInfo], signature: int = 0):
        self.lib = ctypes.CDLL(str(litert_ops_library()))
        L = self.lib
        L.bebert_litert_layout_size.restype = ctypes.c_size_t
        if L.bebert_litert_layout_size() != 68:
            raise RuntimeError("the bebert LiteRT op library was built with an unexpected LiteRtLayout size")
        L.bebert_litert_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
        L.bebert_litert_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                                        ctypes.c_char_p, ctypes.c_size_t]
        L.bebert_litert_io_bytes.restype = ctypes.c_size_t
        L.bebert_litert_io_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        L.bebert_litert_resize.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        L.bebert_litert_close.argtypes = [ctypes.c_void_p]
        L.bebert_litert_run_parallel.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int,
                                                 ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p)),
                                                 ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p)), ctypes.c_char_p, ctypes.c_size_t]
        L.bebert_litert_isa.restype = ctypes.c_char_p
        self.isa = L.bebert_litert_isa().decode()
        self.path, self.inputs, self.outputs = path, inputs, outputs
        err = ctypes.create_string_buffer(512)
        h = ctypes.c_void_p()
        lib = str(litert_library()).encode()
        with captured_stderr() as log:
            verify_flatbuffer(path)
            failed = L.bebert_litert_open(lib, str(path).encode(), int(threads), int(signature), ctypes.byref(h), err, 512)
        if failed:
            raise ModelError(f"{path}: LiteRT cannot run the model: {err.value.decode(errors='replace')}"
                             f"{_last_error(log)}")
        self._h = h
        self._err = err
        self._check_buffers(inputs)
        self._out = [np.empty(t.shape, t.dtype) for t in outputs]
        self._out_ptrs = (ctypes.c_void_p * len(outputs))(*[a.ctypes.data for a in self._out])
        self._length = inputs[0].shape[-1] if inputs else 0

    def _check_buffers(self, inputs: list[TensorInfo]) -> None:
        """The runner copies whole LiteRT buffers into and out of our arrays: their sizes and counts must be exactly
        those of the signature (inputs at their current shapes; io_bytes is 0 past the last tensor)."""
        for is_input, tensors in ((1, inputs), (0, self.outputs)):
            sizes = [int(np.prod(t.shape)) * t.dtype.itemsize for t in tensors] + [0]
            for i, (t, want) in enumerate(zip(tensors + [None], sizes)):
                if self.lib.bebert_litert_io_bytes(self._h, is_input, i) != want:
                    self.close()
                    what = f"{'input' if is_input else 'output'} {t.name if t else i}"
                    raise ModelError(f"{self.path}: LiteRT's buffer for {what} does not match the file's signature")

    def resize(self, length: int) -> None:
        """Resize every input to [1, length] (files with a resizable sequence length only)."""
        with captured_stderr() as log:
            failed = self.lib.bebert_litert_resize(self._h, int(length), self._err, 512)
        if failed:
            self._length = -1  # the buffers may be half rebuilt: the next run resizes again whatever its length
            raise ModelError(f"{self.path}: LiteRT cannot run the model at length {length}: "
                             f"{self._err.value.decode(errors='replace')}{_last_error(log)}")
        self._resized(length)

    def _feed(self, arrays: list[np.ndarray], resize: bool = True):
        """(kept arrays, pointer array) of the inputs in signature order, after resizing to their length (unless
        ``resize`` is False: the caller resizes)."""
        n = np.shape(arrays[0])[-1]
        if resize and n != self._length:
            self.resize(n)
        ins = [np.ascontiguousarray(a, t.dtype).reshape(t.shape[:-1] + (n,)) for a, t in zip(arrays, self.inputs)]
        return ins, (ctypes.c_void_p * len(ins))(*[a.ctypes.data for a in ins])

    def _resized(self, length: int) -> None:
        """Record a resize done by the op library (bebert_litert_run_parallel) and check the new buffers."""
        self._length = int(length)
        self._check_buffers([TensorInfo(t.name, t.shape[:-1] + (int(length),), t.dtype) for t in self.inputs])

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Inputs [1, n] in signature order (n != the file's length needs a resizable file)."""
        _, ptrs = self._feed(arrays)
        if self.lib.bebert_litert_run(self._h, ptrs, self._out_ptrs, self._err, 512):
            raise ModelError(f"{self.path}: LiteRT run failed: {self._err.value.decode(errors='replace')}")
        return [a.copy() for a in self._out]

    def close(self):
        if getattr(self, "_h", None):
            h, self._h = self._h, None
            try:
                with captured_stderr():  # LiteRT logs the accelerator's destruction
                    self.lib.bebert_litert_close(h)
            except Exception:  # at interpreter shutdown the helpers may be gone: close loudly instead
                self.lib.bebert_litert_close(h)

    def __del__(self):
        self.close()


class LiteRtMembersRunner:
    """An ensemble file's members side by side: signatures ``member_<i>`` (exporters/tflite_export.py) each in a
    compiled model of its own, run at once (a persistent thread per member session, in the op library; with
    ``threads`` > members each member's kernels also use ``threads // members`` threads, the first
    ``threads % members`` members one more), then the file's ``vote`` signature on their logits. Same interface
    as LiteRtCustomRunner:
    ``run(arrays)`` returns the serving_default outputs in order (probs, logits_<i>), bit-identical to running
    serving_default (each member's ops are the same, on their own threads)."""

    def __init__(self, path: Path, signatures: dict, outputs: list[TensorInfo], threads: int):
        keys = list(signatures)
        members = sorted((k for k in keys if k.startswith("member_")), key=lambda k: int(k.removeprefix("member_")))
        self.path, self.outputs = path, outputs
        self.runners: list[LiteRtCustomRunner] = []
        per = [threads // len(members) + (i < threads % len(members)) for i in range(len(members))] + [1]
        self.member_threads = per[:-1]
        try:
            for k, n in zip([*members, "vote"], per):
                ins, outs = signatures[k]
                self.runners.append(LiteRtCustomRunner(path, n, ins, outs, keys.index(k)))
        except BaseException:
            self.close()
            raise
        self.members, self.vote = self.runners[:-1], self.runners[-1]
        self.lib, self.isa, self.inputs = self.vote.lib, self.vote.isa, self.members[0].inputs
        # the runner whose one output is each serving_default output: the vote for probs, member i for logits_i
        self._source = [self.vote if o.name == "probs" else self.members[int(o.name.removeprefix("logits_"))]
                        for o in outputs]
        self._handles = (ctypes.c_void_p * len(self.members))(*[r._h for r in self.members])
        self._outs = (ctypes.POINTER(ctypes.c_void_p) * len(self.members))(
            *[ctypes.cast(r._out_ptrs, ctypes.POINTER(ctypes.c_void_p)) for r in self.members])
        self._err = ctypes.create_string_buffer(512)

    def resize(self, length: int) -> None:
        for r in self.members:
            r.resize(length)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        n = int(np.shape(arrays[0])[-1])
        length = n if any(r._length != n for r in self.members) else 0  # resized side by side, in the op library
        feeds = [r._feed(arrays, resize=False) for r in self.members]  # keeps the arrays alive until the run returns
        ins = (ctypes.POINTER(ctypes.c_void_p) * len(feeds))(*[ctypes.cast(p, ctypes.POINTER(ctypes.c_void_p)) for _, p in feeds])
        # (stderr is not captured here: a successful resize logs nothing, and capturing costs ~25 us per call)
        if self.lib.bebert_litert_run_parallel(self._handles, len(self.members), length, ins, self._outs, self._err, 512):
            if length:
                for r in self.members:
                    r._length = -1  # buffers may be half rebuilt: the next run resizes again whatever its length
            raise ModelError(f"{self.path}: LiteRT run failed: {self._err.value.decode(errors='replace')}")
        if length:
            for r in self.members:
                r._resized(length)
        logits = {r.outputs[0].name: r._out[0] for r in self.members}
        self.vote.run([logits[t.name] for t in self.vote.inputs])
        return [runner._out[0].copy() for runner in self._source]

    def close(self):
        for r in getattr(self, "runners", []):
            r.close()


class LiteRtInterpreterRunner:
    """A stock-ops .tflite file in ai-edge-litert's Interpreter (XNNPACK on ``threads`` threads); failures raise
    ModelError."""

    def __init__(self, path: Path, threads: int, inputs: list[TensorInfo], outputs: list[TensorInfo]):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with captured_stderr():
                self._it = Interpreter(model_path=str(path), num_threads=int(threads))
                self._runner = self._it.get_signature_runner("serving_default")
                self._runner(**{t.name: np.zeros(t.shape, t.dtype) for t in inputs})  # delegate set-up logs here
        except Exception as e:  # the interpreter raises RuntimeError / ValueError with multi-line text
            raise ModelError(f"{path}: the TFLite interpreter cannot load the model: {one_line(e)}") from None
        self.path, self.inputs, self.outputs = path, inputs, outputs
        self.isa = "xnnpack"

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Inputs [1, n] in signature order; the signature runner resizes the inputs when n changes (an error for
        a fixed-length file at another length)."""
        try:
            n = np.shape(arrays[0])[-1]
            out = self._runner(**{t.name: np.ascontiguousarray(a, t.dtype).reshape(t.shape[:-1] + (n,))
                                  for a, t in zip(arrays, self.inputs)})
            return [out[t.name] for t in self.outputs]
        except Exception as e:
            raise ModelError(f"{self.path}: the TFLite interpreter failed to run the model: {one_line(e)}") from None
