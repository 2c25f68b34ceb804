"""Issue 17: a corrupted or edited model file never yields an answer.

A mutation suite over small exported files (custom-op and builtin ONNX / TFLite of a 1-layer binary member):
attributes and op parameters outside their domain, initializers / buffers with wrong shapes and lengths, NaN and
inf constants, truncated and bit-flipped files, broken metadata. Each mutated file goes through the real CLI
(`bebert-deploy predict --json`) in its own process, and every case must end with no signal, no traceback and
either one line ``error: FILE: ...`` with exit status 1, or (edits that only change weight values) exit 0 with
finite probabilities. The cases run in a small process pool; each is then asserted on its own.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # the test edits files with onnx (export extra); the runtime itself never needs it

TEXTS = ["good great movie", "awful boring plot"]


@dataclass
class Case:
    name: str
    source: str                       # which exported file is edited: custom.onnx, builtin.onnx, custom.tflite, ...
    edit: Callable[[bytes], bytes]    # file bytes -> mutated file bytes
    expect: str                       # "error" | "finite" | "either"
    match: str = ""                   # for "error": a regular expression the one-line message must contain


# ---- building the small exports -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """custom / builtin ONNX and TFLite exports of a random 1-layer binary member (TWS split, 4-bit activations,
    binary word embedding) with their vocab.txt, in one folder. No training: the files only have to be valid."""
    import torch
    from conftest import write_tiny_bert

    from bebert_deploy.checkpoint import save_checkpoint
    from bebert_deploy.data.tasks import get_task
    from bebert_deploy.exporters.export import export
    from bebert_deploy.models.bert import BertArch, BertClassifier, QuantConfig

    d = tmp_path_factory.mktemp("rel")
    base = write_tiny_bert(d / "base", hidden=32, layers=1, heads=2, inter=64)
    torch.manual_seed(0)
    arch = BertArch.from_hf_config(base, num_labels=2)
    m = BertClassifier(arch, QuantConfig(weight_mode="binary", per_row=True, embed_mode="binary", act_bits=4,
                                         split=True)).eval()
    ids = torch.randint(5, arch.vocab_size, (4, 8))
    with torch.no_grad():
        m(ids, torch.ones_like(ids), torch.zeros_like(ids))  # initialises the LSQ steps
    ck = save_checkpoint(d / "ck", [m], [1.0], get_task("rotten-tomatoes"), 16, base)
    out = d / "exp"
    for target in ("onnx", "tflite"):
        for ops in ("custom", "builtin"):
            export(ck, out / f"{ops}.{target}", target, "binary", ops)
    return out


# ---- ONNX edits -----------------------------------------------------------------------------------------------
def _onnx_edit(fn: Callable) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        m = onnx.load_from_string(data)
        fn(m)
        return m.SerializeToString()
    return edit


def _set_field(items, key: str, key_field: str, value_field: str, value, what: str) -> None:
    """Sets ``value_field`` of the item whose ``key_field`` is ``key`` (ONNX attributes, metadata entries)."""
    item = next((x for x in items if getattr(x, key_field) == key), None)
    if item is None:
        raise AssertionError(f"{what} has no {key}")
    setattr(item, value_field, value)


def set_attr(op_type: str, attr: str, value: int):
    """Sets an int attribute of the first node of ``op_type``."""
    def fn(m):
        node = next(n for n in m.graph.node if n.op_type == op_type)
        _set_field(node.attribute, attr, "name", "i", value, op_type)
    return _onnx_edit(fn)


def onnx_init(name: str, change: Callable[[np.ndarray], np.ndarray]):
    """Replaces initializer ``name`` (exact, or the first whose name contains it) by change(its array)."""
    from onnx import numpy_helper as nh

    def fn(m):
        init = next((i for i in m.graph.initializer if i.name == name), None) or \
            next(i for i in m.graph.initializer if name in i.name)
        init.CopyFrom(nh.from_array(np.ascontiguousarray(change(nh.to_array(init))), init.name))
    return _onnx_edit(fn)


def onnx_meta(key: str, value: str):
    return _onnx_edit(lambda m: _set_field(m.metadata_props, key, "key", "value", value, "the metadata"))


# ---- TFLite edits ---------------------------------------------------------------------------------------------
TFL_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64}


def _pack_buffer_aligned(self, builder):
    """BufferT.Pack with the data vector 64-byte aligned: LiteRT refuses constant data that is not (the generated
    Pack aligns it to 1 byte)."""
    from ai_edge_litert import schema_py_generated as tfl

    off = None
    if self.data is not None and len(self.data):
        data = np.ascontiguousarray(self.data, np.uint8)
        builder.StartVector(1, data.size, 64)
        builder.head -= data.size
        builder.Bytes[builder.head:builder.head + data.size] = data.tobytes()
        off = builder.EndVector()
    tfl.BufferStart(builder)
    if off is not None:
        tfl.BufferAddData(builder, off)
    return tfl.BufferEnd(builder)


def _tfl_edit(fn: Callable) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as tfl

        m = tfl.ModelT.InitFromPackedBuf(data, 0)
        fn(m)
        b = flatbuffers.Builder(len(data) + 64 * len(m.buffers) + 4096)
        generated, tfl.BufferT.Pack = tfl.BufferT.Pack, _pack_buffer_aligned
        try:
            b.Finish(m.Pack(b), file_identifier=b"TFL3")
        finally:
            tfl.BufferT.Pack = generated
        return bytes(b.Output())
    return edit


def _tfl_tensor(m, name: str):
    sg = m.subgraphs[0]
    return next(t for t in sg.tensors if t.name.decode() == name)


def _tfl_set(m, tensor, arr: np.ndarray):
    arr = np.ascontiguousarray(arr)
    m.buffers[tensor.buffer].data = np.frombuffer(arr.tobytes(), np.uint8).copy()
    tensor.shape = np.array(arr.shape, np.int32)


def tfl_tensor(name: str, change: Callable[[np.ndarray], np.ndarray]):
    """Replaces the constant tensor ``name`` (data and shape) by change(its array)."""
    def fn(m):
        t = _tfl_tensor(m, name)
        arr = np.frombuffer(m.buffers[t.buffer].data.tobytes(), TFL_DTYPES[t.type]).reshape([int(d) for d in t.shape])
        _tfl_set(m, t, change(arr.copy()))
    return _tfl_edit(fn)


def tfl_operator_input(value: int):
    """Points the first operator's first input at tensor index ``value``: a flatbuffer that verifies, with a
    broken graph."""
    def fn(m):
        op = m.subgraphs[0].operators[0]
        op.inputs = np.array(op.inputs, np.int32)
        op.inputs[0] = value
    return _tfl_edit(fn)


def tfl_params(index: int, value: int, reads: str = "m0.l0.qkv.packed"):
    """Sets entry ``index`` of the int32 params (input 5) of the custom op that reads tensor ``reads``: by default
    the Q/K/V layer's BebertBinaryFC (K, act_mode, act_bits, act_symmetric, relu; a constant that layers with equal
    parameters share)."""
    def fn(m):
        sg = m.subgraphs[0]
        w = [i for i, t in enumerate(sg.tensors) if t.name.decode() == reads][0]
        op = next(o for o in sg.operators if w in list(o.inputs))
        t = sg.tensors[int(op.inputs[5])]
        arr = np.frombuffer(m.buffers[t.buffer].data.tobytes(), np.int32).copy()
        arr[index] = value
        _tfl_set(m, t, arr)
    return _tfl_edit(fn)


# ---- byte-level edits -----------------------------------------------------------------------------------------
def truncate(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[:int(len(data) * fraction)]


def flip_bits(seed: int, n: int = 8) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        rng = np.random.default_rng(seed)
        b = bytearray(data)
        for pos in rng.integers(0, len(b), n):
            b[pos] ^= 1 << int(rng.integers(8))
        return bytes(b)
    return edit


def nan_at(i: int = 0, value: float = np.nan):
    def change(a):
        a = a.astype(np.float32)
        a.reshape(-1)[i] = value
        return a
    return change


def random_bits(seed: int):
    return lambda a: np.random.default_rng(seed).integers(0, 256, a.shape, dtype=np.uint8)


def first_rows(n: int, axis: int = 0):
    return lambda a: np.take(a, np.arange(min(n, a.shape[axis])), axis=axis)


def cases() -> list[Case]:
    node = r"Name:'|Node \("  # ONNX Runtime names the failing node (run time / load time)
    c = []
    # --- custom-op ONNX: attributes outside their domain (issue 17: bits 0 / -1 / 4007, mode -1, symmetric 2 / 7 / -1)
    for attr, v, msg in [("act_bits", 0, "2..8 bits"), ("act_bits", -1, "2..8 bits"), ("act_bits", 4007, "2..8 bits"),
                         ("act_mode", -1, "act_mode must be"), ("act_mode", 3, "act_mode must be"),
                         ("act_symmetric", 2, "act_symmetric must be 0 or 1"), ("act_symmetric", 7, "act_symmetric"),
                         ("act_symmetric", -1, "act_symmetric")]:
        c.append(Case(f"onnx-{attr}={v}", "custom.onnx", set_attr("BinaryLinear", attr, v), "error", re.escape(msg)))
    c.append(Case("onnx-embedding-dim=0", "custom.onnx", set_attr("BinaryEmbedding", "dim", 0), "error", "dim D must be"))
    # packed Q/K/V (one linear op for the three, QuantAttention reading its thirds): a flag out of its domain, or
    # dropped so that the op treats [B, L, 3H] as one wide q (the next linear op then refuses the width)
    c.append(Case("onnx-packed_qkv=2", "custom.onnx", set_attr("QuantAttention", "packed_qkv", 2), "error",
                  "packed_qkv must be 0 or 1"))
    c.append(Case("onnx-packed_qkv=0", "custom.onnx", set_attr("QuantAttention", "packed_qkv", 0), "error", node))
    c.append(Case("tflite-attention-params[2]=0", "custom.tflite", tfl_params(2, 0, "m0.l0.attention.steps"), "error",
                  re.escape("params[2] (packed q/k/v) must be 1")))
    # dim 31 packs into the same 8-byte rows as 32: the op runs, and the next node refuses the [.., 31] output
    c.append(Case("onnx-embedding-dim=31", "custom.onnx", set_attr("BinaryEmbedding", "dim", 31), "error", node))
    # --- custom-op ONNX: initializers whose shapes do not fit
    for name, change, msg in [
            ("m0.l0.qkv.alpha", lambda a: a.reshape(-1)[:3], "alpha must be float32 [S, N]"),
            ("m0.l0.qkv.bias", lambda a: a[:3], "bias must be float32 [N]"),
            ("m0.l0.qkv.steps", lambda a: a[:1], "steps must be float32 [S]"),
            ("m0.l0.qkv.packed", first_rows(10, axis=1), "alpha must be float32 [S, N]"),
            ("m0.l0.qkv.packed", lambda a: a[:, :, :4], "w rows have 4 bytes"),
            ("m0.l0.qkv.packed", lambda a: np.zeros(0, np.uint8), "w must be uint8"),
            ("m0.word.scales", lambda a: a[:, :5], "scales must be float32 [S, V]"),
            ("m0.word.packed", first_rows(3, axis=1), "scales must be float32 [S, V]"),
            ("m0.position", first_rows(4), "")]:
        c.append(Case(f"onnx-shape-{name}-{len(c)}", "custom.onnx", onnx_init(name, change), "error", re.escape(msg)))
    # the word table and its scales cut together: consistent shapes, but the sentences' token ids fall outside it
    both = lambda data: onnx_init("m0.word.scales", lambda a: a[:, :6])(onnx_init("m0.word.packed", first_rows(6, 1))(data))  # noqa: E731
    c.append(Case("onnx-word-table-cut", "custom.onnx", both, "error", "out of range"))
    # --- custom-op ONNX: NaN / inf constants (issue 17: NaN alpha or bias gave a label)
    for name, v in [("m0.l0.qkv.alpha", np.nan), ("m0.l0.qkv.bias", np.nan), ("m0.l0.ffn_in.bias", np.inf),
                    ("m0.l0.qkv.steps", np.nan), ("m0.word.scales", -np.inf), ("m0.ln_emb.weight", np.nan),
                    ("m0.position", np.inf)]:
        c.append(Case(f"onnx-{name}={v}", "custom.onnx", onnx_init(name, nan_at(0, v)), "error", "NaN or inf"))
    # --- custom-op ONNX: weight values only (a finite answer is right)
    c.append(Case("onnx-alpha*2", "custom.onnx", onnx_init("m0.l0.qkv.alpha", lambda a: 2 * a), "finite"))
    c.append(Case("onnx-bias+1", "custom.onnx", onnx_init("m0.l0.ffn_out.bias", lambda a: a + 1), "finite"))
    c.append(Case("onnx-packed-random", "custom.onnx", onnx_init("m0.l0.qkv.packed", random_bits(1)), "finite"))
    c.append(Case("onnx-word-random", "custom.onnx", onnx_init("m0.word.packed", random_bits(2)), "finite"))
    # --- metadata
    c.append(Case("onnx-labels-1", "custom.onnx", onnx_meta("labels", '["only"]'), "error", "labels"))
    c.append(Case("onnx-labels-junk", "custom.onnx", onnx_meta("labels", "{not json"), "error", "metadata"))
    c.append(Case("onnx-max-len-huge", "custom.onnx", onnx_meta("max_len", "100000000"), "error", "max_len"))
    # --- builtin ONNX (issue 17: truncated or empty packed weights gave a traceback from a Reshape node)
    c.append(Case("onnx-builtin-packed-cut", "builtin.onnx", onnx_init("packed", lambda a: a.reshape(-1)[:7]), "error", node))
    c.append(Case("onnx-builtin-packed-empty", "builtin.onnx", onnx_init("packed", lambda a: np.zeros(0, np.uint8)), "error", node))
    c.append(Case("onnx-builtin-bias-nan", "builtin.onnx", onnx_init("m0.l0.query.bias", nan_at(0)), "error", "NaN or inf"))
    # --- custom-op TFLite: the same edits
    for i, v, msg in [(2, 0, "2..8 bits"), (2, -1, "2..8 bits"), (2, 4007, "2..8 bits"), (1, -1, "act_mode must be"),
                      (3, 2, "act_symmetric"), (3, 7, "act_symmetric"), (3, -1, "act_symmetric"), (0, 33, "params say K")]:
        c.append(Case(f"tflite-params[{i}]={v}", "custom.tflite", tfl_params(i, v), "error", re.escape(msg)))
    for name, change, msg in [
            ("m0.l0.qkv.alpha", lambda a: a.reshape(-1)[:3], "alpha must be float32 [S, N]"),
            ("m0.l0.qkv.bias", lambda a: a[:3], "bias must be float32 [N]"),
            ("m0.l0.qkv.steps", lambda a: a[:1], "steps must be float32 [S]"),
            ("m0.l0.qkv.packed", lambda a: a[:, :, :4], ""),
            ("m0.word.scales", lambda a: a[:, :5], "scales must be float32 [S, V]"),
            ("m0.position", first_rows(4), "")]:
        c.append(Case(f"tflite-shape-{name}-{len(c)}", "custom.tflite", tfl_tensor(name, change), "error", re.escape(msg)))
    for name, v in [("m0.l0.qkv.alpha", np.nan), ("m0.l0.qkv.bias", np.inf), ("m0.l0.qkv.steps", np.nan),
                    ("m0.word.scales", np.nan), ("m0.position", np.inf)]:
        c.append(Case(f"tflite-{name}={v}", "custom.tflite", tfl_tensor(name, nan_at(0, v)), "error", "NaN or inf"))
    c.append(Case("tflite-op-input-9999", "custom.tflite", tfl_operator_input(9999), "error"))
    c.append(Case("tflite-alpha*2", "custom.tflite", tfl_tensor("m0.l0.qkv.alpha", lambda a: 2 * a), "finite"))
    c.append(Case("tflite-packed-random", "custom.tflite", tfl_tensor("m0.l0.qkv.packed", random_bits(3)), "finite"))
    c.append(Case("tflite-builtin-ln-nan", "builtin.tflite", tfl_tensor("m0.ln_emb.weight", nan_at(0)), "error", "NaN or inf"))
    # --- whole files: truncated, empty, bit-flipped (either a clean error or, if only values moved, an answer)
    for src in ("custom.onnx", "builtin.onnx", "custom.tflite", "builtin.tflite"):
        c.append(Case(f"{src}-empty", src, lambda data: b"", "error"))
        c.append(Case(f"{src}-cut-60%", src, truncate(0.6), "error"))
        c.append(Case(f"{src}-cut-5%", src, truncate(0.05), "error"))
        # custom-op TFLite files get more: unverified flatbuffers crashed LiteRT's loader (about 1 in 8 flipped files)
        for seed in range(12 if src == "custom.tflite" else 3):
            c.append(Case(f"{src}-flips-{seed}", src, flip_bits(seed, (1, 8, 64)[seed % 3]), "either"))
    return c


CASES = cases()


def _run_cli(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BEBERT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "bebert_deploy.cli", "predict", str(path), *TEXTS, "--json"],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def results(exports, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Writes every mutated file (beside a copy of the vocabulary) and runs the CLI on each, 3 at a time."""
    d = tmp_path_factory.mktemp("mutated")
    shutil.copy(exports / "vocab.txt", d / "vocab.txt")
    paths = {}
    for case in CASES:
        src = exports / case.source
        p = d / f"{case.name.replace('/', '_')}{src.suffix}"
        p.write_bytes(case.edit(src.read_bytes()))
        paths[case.name] = p
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(paths, pool.map(_run_cli, paths.values())))
    return {k: (paths[k], done[k]) for k in paths}


def test_unmutated_exports_answer(exports):
    for name in ("custom.onnx", "builtin.onnx", "custom.tflite", "builtin.tflite"):
        r = _run_cli(exports / name)
        assert r.returncode == 0, r.stderr
        assert len(json.loads(r.stdout)) == 2


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_mutation(case, results):
    path, r = results[case.name]
    what = f"{case.name}: exit {r.returncode}\nstdout: {r.stdout[-500:]}\nstderr: {r.stderr[-1500:]}"
    assert r.returncode in (0, 1), f"killed by a signal or crashed: {what}"
    assert "Traceback" not in r.stderr, what
    if r.returncode == 1:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), f"not one 'error: FILE: ...' line: {what}"
        assert re.search(case.match, lines[0]), f"expected {case.match!r}: {what}"
        assert case.expect in ("error", "either"), f"an edit of weight values only must still answer: {what}"
        assert r.stdout == ""
    else:
        assert case.expect in ("finite", "either"), f"no error for a broken file: {what}"
        answers = json.loads(r.stdout)
        assert len(answers) == len(TEXTS)
        for a in answers:
            assert np.all(np.isfinite(a["probs"])) and abs(sum(a["probs"]) - 1) < 1e-4, what


def test_python_api_raises_one_exception_type_with_the_cli_message(results):
    """Session raises ModelError (a ValueError) whose text is exactly what the CLI prints after 'error: '."""
    from bebert_deploy.runtime.errors import ModelError
    from bebert_deploy.runtime.session import Session

    for name in ("onnx-m0.l0.qkv.alpha=nan", "onnx-act_bits=4007", "onnx-builtin-packed-cut", "tflite-params[2]=0",
                 "custom.tflite-cut-60%", "onnx-labels-1"):
        path, r = results[name]
        with pytest.raises(ModelError) as e:
            Session(path)
        assert r.stderr.strip() == f"error: {e.value}"


def test_non_finite_outputs_are_errors_in_session_and_bench(exports, results, monkeypatch):
    """NaN / inf in probs or logits_<i> is an error even when no op complains (e.g. a stock graph)."""
    from bebert_deploy.runtime.errors import ModelError
    from bebert_deploy.runtime.session import Session

    s = Session(exports / "custom.onnx")
    feed = s.encode(TEXTS)
    good = s.run(feed)
    for out, value in (("probs", np.nan), ("logits_0", np.inf)):
        bad = {k: v.copy() for k, v in good.items()}
        bad[out][0, 0] = value
        monkeypatch.setattr(s, "_run", lambda f, bad=bad: bad)
        with pytest.raises(ModelError, match=f"output '{out}' holds NaN or inf"):
            s.predict(TEXTS)
    # bench: the broken file's worker reports the same one line, exit 1, no traceback
    path, _ = results["onnx-m0.l0.qkv.alpha=nan"]
    r = subprocess.run([sys.executable, "-m", "bebert_deploy.cli", "bench", str(path), "--runs", "1", "--warmup", "0",
                        "--seq-len", "8", "--json", str(path.with_suffix(".json"))], capture_output=True, text=True,
                       timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith(f"error: {path}: ") and "Traceback" not in r.stderr, r.stderr
    assert "alpha holds NaN or inf" in lines[-1]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_atomic_outputs_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    from bebert_deploy.io import atomic_path

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_path(tmp_path / "d", is_dir=True) as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "d"]  # no temporary left behind
