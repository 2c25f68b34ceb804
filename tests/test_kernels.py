"""Packed-bit layout and kernels: every ISA path against the numpy reference (runtime/reference.py)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bebert_deploy.runtime import _kernels
from bebert_deploy.runtime.bitpack import pack_bits, row_bytes, unpack_bits
from bebert_deploy.runtime.reference import binary_linear_ref

ROOT = Path(__file__).resolve().parents[1]


def _all_isas():
    """Every kernel path this CPU runs, as the binding reports them (scalar, avx2, avx512, neon)."""
    return list(_kernels.supported_isas())


ISAS = _all_isas()


def linear(isa, *args, **kw):
    """_kernels.binary_linear(*args, isa) on `isa`, forcing paths the binding cannot name through $BEBERT_ISA."""
    if isa in _kernels.supported_isas():
        return _kernels.binary_linear(*args, isa=isa, **kw)
    os.environ["BEBERT_ISA"] = isa
    try:
        return _kernels.binary_linear(*args, isa="auto", **kw)
    finally:
        del os.environ["BEBERT_ISA"]
MODES = [("float", 32, True), ("sign", 1, True)] + [("int", b, s) for b in (2, 4, 8) for s in (True, False)]


def test_layout_worked_example():
    # The 2x10 example of runtime/LAYOUT.md.
    w = np.array([[1, -1, -1, 1, 1, 1, 1, 1, -1, 1],
                  [-1, -1, -1, -1, -1, -1, -1, -1, 1, -1]], np.float32)
    p = pack_bits(w)
    assert p.shape == (2, 8)
    assert p[0].tolist() == [0b00000110, 0b00000001, 0, 0, 0, 0, 0, 0]
    assert p[1].tolist() == [0b11111111, 0b00000010, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(unpack_bits(p, 10), w)


@pytest.mark.parametrize("k", [1, 7, 8, 63, 64, 65, 200])
def test_pack_roundtrip_and_padding(k):
    rng = np.random.default_rng(k)
    w = rng.standard_normal((3, k)).astype(np.float32)
    w[0, 0] = 0.0  # sign(0) = +1
    p = pack_bits(w)
    assert p.shape == (3, row_bytes(k)) and row_bytes(k) % 8 == 0
    np.testing.assert_array_equal(unpack_bits(p, k), np.where(w < 0, -1, 1))
    full = np.unpackbits(p, axis=-1, bitorder="little")
    assert not full[:, k:].any(), "padding bits must be zero"


def _case(rng, m, n, k, s):
    x = (3 * rng.standard_normal((m, k))).astype(np.float32)
    w = pack_bits(rng.standard_normal((s, n, k)))
    alpha = (0.1 + np.abs(rng.standard_normal((s, n)))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    steps = (0.2 + rng.random(s)).astype(np.float32)
    return x, w, alpha, bias, steps


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode,bits,sym", MODES)
@pytest.mark.parametrize("m,n,k,s", [(1, 1, 1, 1), (1, 7, 65, 1), (5, 33, 127, 2), (16, 70, 384, 1), (3, 9, 1000, 2)])
def test_kernel_matches_reference(isa, mode, bits, sym, m, n, k, s):
    rng = np.random.default_rng(m * 1000 + n + k)
    x, w, alpha, bias, steps = _case(rng, m, n, k, s)
    y = linear(isa, x, w, alpha, bias, mode, bits, sym, steps, 2)
    ref = binary_linear_ref(x, w, alpha, bias, mode, bits, sym, steps)
    # float32 accumulation over K terms of size ~|x|*alpha: relative tolerance grows like sqrt(K) * eps.
    np.testing.assert_allclose(y, ref, rtol=2e-5, atol=2e-5 * np.sqrt(k) * np.abs(ref).max())


@pytest.mark.parametrize("mode,bits,sym", [m for m in MODES if m[0] != "float"])
def test_integer_modes_identical_across_isas_and_threads(mode, bits, sym):
    rng = np.random.default_rng(3)
    x, w, alpha, bias, steps = _case(rng, 9, 130, 777, 2)
    outs = [linear(isa, x, w, alpha, bias, mode, bits, sym, steps, t) for isa in ISAS for t in (1, 2)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_callers_on_several_threads_each_fork_their_own_helpers():
    """Two threads calling multi-threaded kernels at once (ensemble members side by side, several threads each)
    each use a pool of their own: every result equals the same call made alone, and neither caller waits for the
    other's job (no deadlock; the calls end). Threads that exit take their helpers with them."""
    import threading

    rng = np.random.default_rng(5)
    cases = [_case(rng, 27, 384, 576, 2), _case(rng, 27, 768, 384, 2)]
    steps = [np.array([0.1, 0.12], np.float32), np.array([0.2, 0.05], np.float32)]
    alone = [_kernels.binary_linear(x, w, a, b, "int", 4, True, st, 2) for (x, w, a, b, _), st in zip(cases, steps)]
    errors = []

    def work(i):
        x, w, a, b, _ = cases[i]
        for _ in range(60):
            if not np.array_equal(_kernels.binary_linear(x, w, a, b, "int", 4, True, steps[i], 2), alone[i]):
                errors.append(i)
                return

    for _ in range(3):  # fresh caller threads each time: their pools start and end with them
        ts = [threading.Thread(target=work, args=(i,)) for i in (0, 1, 0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in ts) and not errors


@pytest.mark.parametrize("mode,bits,sym", [m for m in MODES if m[0] != "float"])
@pytest.mark.parametrize("m,n,k", [(1, 5, 100), (13, 130, 777), (40, 64, 384), (4, 40, 4500)])
def test_tws_pair_with_shared_quantizer(mode, bits, sym, m, n, k):
    """Both TWS halves with one input quantizer take the fused one-table pass: exact against the reference and
    bit-identical across ISA paths and thread counts. K = 4500 (564 packed bytes per row) crosses the AVX2 kernel's
    16-bit accumulator flush (every 512 bytes)."""
    rng = np.random.default_rng(11 + m)
    x, w, alpha, bias, steps = _case(rng, m, n, k, 2)
    steps[1] = steps[0]
    ref = binary_linear_ref(x, w, alpha, bias, mode, bits, sym, steps)
    outs = [linear(isa, x, w, alpha, bias, mode, bits, sym, steps, t) for isa in ISAS for t in (1, 2)]
    np.testing.assert_allclose(outs[0], ref, rtol=2e-5, atol=2e-5 * np.sqrt(k) * np.abs(ref).max())
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode,bits,sym", [("float", 32, True), ("sign", 1, True), ("int", 4, True), ("int", 4, False),
                                           ("int", 8, True)])
@pytest.mark.parametrize("m,n,k,s", [(1, 70, 100, 1), (20, 130, 384, 2), (3, 300, 96, 1)])
def test_fused_relu(isa, mode, bits, sym, m, n, k, s):
    """relu=True (the FFN's ReLU fused into the op) gives max(y, 0) of the same call without it, bit for bit, on
    every path, and the reference's max(y, 0)."""
    rng = np.random.default_rng(7 * m + k)
    x, w, alpha, bias, steps = _case(rng, m, n, k, s)
    plain = linear(isa, x, w, alpha, bias, mode, bits, sym, steps, 2)
    fused = linear(isa, x, w, alpha, bias, mode, bits, sym, steps, 2, relu=True)
    assert (plain < 0).any() and (plain > 0).any(), "the case must exercise both sides of the ReLU"
    np.testing.assert_array_equal(fused, np.maximum(plain, 0.0))
    ref = np.maximum(binary_linear_ref(x, w, alpha, bias, mode, bits, sym, steps), 0.0)
    np.testing.assert_allclose(fused, ref, rtol=2e-5, atol=2e-5 * np.sqrt(k) * np.abs(ref).max())


def test_new_weights_at_a_reused_address_are_not_served_from_the_cache():
    """Weights are arranged once per buffer and cached; a new array of the same shape (numpy often reuses the
    freed address) must still give its own result."""
    rng = np.random.default_rng(5)
    for _ in range(6):
        x, w, alpha, bias, steps = _case(rng, 8, 96, 320, 1)
        for isa in ISAS:
            y = linear(isa, x, w, alpha, bias, "int", 4, True, steps, 2)
            np.testing.assert_allclose(y, binary_linear_ref(x, w, alpha, bias, "int", 4, True, steps), rtol=2e-5,
                                       atol=1e-3)
        del w


def test_bench_kernels_runs_without_the_onnx_package(tmp_path):
    """bench-kernels needs only the [runtime] extra: its graphs are written without `import onnx`."""
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from bebert_deploy.runtime import bench_kernels as b\n"
            "res = b.bench(ms=(3,), shapes=[(64, 96)], threads_list=(1,), runs=2, warmup=1, progress=False,\n"
            "              attention=[(8, 32, 2)])\n"
            "names = {r['kernel'] for r in res['rows']}\n"
            "assert {'ORT fp32', 'ORT int8'} <= names and any(n.startswith('W1A4 TWS pair shared-q') for n in names)\n"
            "attn = {r['kernel'] for r in res['attention_rows']}\n"
            "assert 'ORT fp32 MultiHeadAttention' in attn and any(n.startswith('QuantAttention A4 [') for n in attn)\n"
            "print('ok', len(res['rows']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fill", [1.0, -1.0])
@pytest.mark.parametrize("k", [130, 4500])  # 4500: the largest table sums over more than one AVX2 flush
def test_extreme_weights_and_clipped_activations(fill, isa, k):
    n = 5
    x = np.full((2, k), 100.0, np.float32)
    x[1] = -100.0  # far outside the 4-bit range: clipped to qn / qp
    w = pack_bits(np.full((1, n, k), fill))
    alpha = np.ones((1, n), np.float32)
    steps = np.array([0.5], np.float32)
    y = linear(isa, x, w, alpha, None, "int", 4, True, steps, 1)
    np.testing.assert_allclose(y[0], fill * 0.5 * 7 * k)
    np.testing.assert_allclose(y[1], fill * 0.5 * -8 * k)
    y1 = linear(isa, x, w, alpha, None, "sign", 1, True, steps, 1)
    np.testing.assert_allclose(y1[0], fill * k)
    np.testing.assert_allclose(y1[1], -fill * k)


def test_bad_arguments_raise_clear_errors():
    x = np.zeros((2, 10), np.float32)
    w = pack_bits(np.ones((1, 3, 10)))
    a = np.ones((1, 3), np.float32)
    st = np.ones(1, np.float32)
    with pytest.raises(ValueError, match="w rows have 8 bytes, expected 16 for K=100"):
        _kernels.binary_linear(np.zeros((2, 100), np.float32), w, a, None, "int", 4, True, st, 1, "auto")
    with pytest.raises(ValueError, match="alpha"):
        _kernels.binary_linear(x, w, np.ones((1, 4), np.float32), None, "int", 4, True, st, 1, "auto")
    with pytest.raises(ValueError, match="2..8 bits"):
        _kernels.binary_linear(x, w, a, None, "int", 12, True, st, 1, "auto")
    with pytest.raises(ValueError, match="positive finite"):
        _kernels.binary_linear(x, w, a, None, "int", 4, True, np.zeros(1, np.float32), 1, "auto")
    with pytest.raises(ValueError, match="unknown activation mode"):
        _kernels.binary_linear(x, w, a, None, "fp16", 4, True, st, 1, "auto")
    with pytest.raises(ValueError, match="bias"):
        _kernels.binary_linear(x, w, a, np.ones(5, np.float32), "float", 32, True, st, 1, "auto")


@pytest.mark.arm
def test_cpp_kernel_tests_native_and_aarch64():
    """The C++ unit test, natively and (where the cross toolchain exists, as in CI) under qemu-aarch64."""
    require_arm = os.environ.get("BEBERT_REQUIRE_ARM") == "1"
    if not shutil.which("g++"):
        pytest.fail("g++ is required to build the kernel tests")
    args = [str(ROOT / "runtime/kernels/test_kernels.sh")] + (["--require-arm"] if require_arm else [])
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 failures" in res.stdout


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 128, 384), (1, 33, 768)])
def test_add_layer_norm_matches_pytorch(shape):
    """The AddLayerNorm op against torch.nn.functional.layer_norm of x + residual (float64, an independent
    reference); one and two threads and every ISA path give identical floats."""
    import torch

    rng = np.random.default_rng(len(shape) * 7 + shape[-1])
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    h = shape[-1]
    g = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    b = (0.1 * rng.standard_normal(h)).astype(np.float32)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x).double() + torch.from_numpy(r).double(), (h,),
                                         torch.from_numpy(g).double(), torch.from_numpy(b).double(), 1e-12).numpy()
    out = _kernels.add_layer_norm(x, r, g, b, 1e-12, 1)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, ref, atol=5e-5, rtol=0)
    np.testing.assert_array_equal(_kernels.add_layer_norm(x, r, g, b, 1e-12, 2), out)
    for isa in ISAS:  # every path this CPU has (the kernels read $BEBERT_ISA on every call)
        os.environ["BEBERT_ISA"] = isa
        try:
            np.testing.assert_array_equal(_kernels.add_layer_norm(x, r, g, b, 1e-12, 1), out)
        finally:
            del os.environ["BEBERT_ISA"]


@pytest.mark.parametrize("bad,msg", [
    (dict(r=np.zeros((2, 5), np.float32)), "shape mismatch: residual"),
    (dict(g=np.ones(3, np.float32)), "must be float32 \\[H\\]"),
    (dict(eps=0.0), "eps must be in"),
    (dict(x=np.array([[1.0, np.nan, 0, 0]], np.float32)), "NaN or inf"),
])
def test_add_layer_norm_refuses_bad_input(bad, msg):
    a = dict(x=np.ones((1, 4), np.float32), r=np.zeros((1, 4), np.float32), g=np.ones(4, np.float32),
             b=np.zeros(4, np.float32), eps=1e-5)
    a.update(bad)
    with pytest.raises(ValueError, match=msg):
        _kernels.add_layer_norm(a["x"], a["r"], a["g"], a["b"], a["eps"], 1)
