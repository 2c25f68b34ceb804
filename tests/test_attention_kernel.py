"""The QuantAttention kernel (runtime/kernels/attention): every ISA path against the PyTorch layer's own fake-quant
attention (models/bert.py's quantizers and op order), and bit-identical across the paths this CPU runs."""
import math

import numpy as np
import pytest
import torch

from bebert_deploy.models.bert import MASK_VALUE
from bebert_deploy.models.quantizers import LsqActQuantizer
from bebert_deploy.runtime import _kernels

ISAS = list(_kernels.supported_isas())


def _quantizer(bits, symmetric, step):
    qz = LsqActQuantizer(bits, symmetric)
    with torch.no_grad():
        qz.step.fill_(step)
        qz.initialized.fill_(True)
    return qz


def torch_attention(q, k, v, mask_add, steps, heads, bits):
    """The layer's attention as models/bert.py computes it: fake-quant q/k/v, scaled scores plus the additive mask,
    softmax, asymmetric fake-quant of the probabilities (minimum per example), probs @ v. [B, L, H] float32."""
    B, L, H = q.shape
    d = H // heads

    def split(t, step):
        t = _quantizer(bits, True, step)(torch.from_numpy(t))
        return t.reshape(B, L, heads, d).transpose(1, 2)

    qh, kh, vh = split(q, steps[0]), split(k, steps[1]), split(v, steps[2])
    with torch.no_grad():
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(d) + torch.from_numpy(mask_add)
        probs = _quantizer(bits, False, steps[3])(torch.softmax(scores, -1))
        return (probs @ vh).transpose(1, 2).reshape(B, L, H).numpy()


def _case(B, L, heads, d, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, L, heads * d)).astype(np.float32) * s for s in (1.0, 1.3, 0.8))
    mask = np.ones((B, L), np.float32)
    if B > 1:
        mask[1, L // 2:] = 0  # padding in the second example
    mask_add = ((1.0 - mask) * MASK_VALUE).astype(np.float32).reshape(B, 1, 1, L)
    steps = np.array([0.3, 0.35, 0.25, 0.02], np.float32)
    return q, k, v, mask_add, steps


@pytest.mark.parametrize("B,L,heads,d,bits", [(1, 128, 6, 32, 4), (2, 37, 4, 16, 4), (3, 9, 2, 64, 2), (1, 20, 3, 8, 8),
                                                  (2, 33, 2, 20, 7)])
def test_matches_pytorch_on_every_isa(B, L, heads, d, bits):
    q, k, v, mask_add, steps = _case(B, L, heads, d, seed=L)
    ref = torch_attention(q, k, v, mask_add, steps, heads, bits)
    outs = {isa: _kernels.quant_attention(q, k, v, mask_add, steps, heads, bits, 2, isa) for isa in ISAS}
    first = outs[ISAS[0]]
    for isa, out in outs.items():
        assert out.shape == ref.shape
        assert np.array_equal(out, first), f"{isa} differs from {ISAS[0]}"
    # Float rounding (integer dots vs float matmul, exp) can move a probability on an LSQ boundary one level:
    # one level changes an output by step_p * |v code| * step_v at most; nearly every element agrees to 1e-5.
    diff = np.abs(first - ref)
    one_level = steps[3] * 2 ** (bits - 1) * steps[2]
    assert diff.max() <= 2 * one_level
    assert (diff > 1e-5).mean() < 0.02
    # and the threads do not change anything
    assert np.array_equal(_kernels.quant_attention(q, k, v, mask_add, steps, heads, bits, 1, ISAS[-1]), first)


def test_padding_keys_get_no_weight():
    q, k, v, mask_add, steps = _case(2, 16, 2, 8, seed=3)
    out = _kernels.quant_attention(q, k, v, mask_add, steps, 2, 4)
    v2 = v.copy()
    v2[1, 8:] = 100.0  # values of padded keys of example 1: masked out, so the output must not move
    k2 = k.copy()
    k2[1, 8:] = -50.0
    assert np.array_equal(_kernels.quant_attention(q, k2, v2, mask_add, steps, 2, 4), out)


@pytest.mark.parametrize("bad,msg", [
    (dict(heads=5), "num_heads must be >= 1 and divide"),
    (dict(bits=1), "act_bits must be in 2..8"),
    (dict(steps=np.array([0.3, 0.0, 0.2, 0.01], np.float32)), "in \\(0, 1e6\\]"),
    (dict(steps=np.array([0.3, 0.2, 3e7, 0.01], np.float32)), "in \\(0, 1e6\\]"),
    (dict(steps=np.ones(3, np.float32)), "steps must be float32 \\[4\\]"),
    (dict(mask_add=np.zeros((1, 1, 1, 5), np.float32)), "mask_add must be float32"),
    (dict(k=np.zeros((1, 16, 12), np.float32)), "shape mismatch: k"),
    (dict(q=np.full((1, 16, 16), np.nan, np.float32)), "NaN or inf"),
])
def test_bad_arguments(bad, msg):
    q, k, v, mask_add, steps = _case(1, 16, 2, 8, seed=1)
    args = dict(q=q, k=k, v=v, mask_add=mask_add, steps=steps, heads=2, bits=4) | bad
    if "q" in bad:
        args["k"] = args["v"] = np.zeros_like(bad["q"])
    with pytest.raises(ValueError, match=msg):
        _kernels.quant_attention(**args)


@pytest.mark.parametrize("B,L,heads,d", [(1, 27, 6, 32), (2, 37, 4, 16)])
def test_packed_qkv_gives_the_same_bits(B, L, heads, d):
    """Q, K, V as the column thirds of one [B, L, 3H] tensor (one Q/K/V GEMM's output, given three times): the same
    output as three tensors, on every ISA; a NaN in any third is refused."""
    q, k, v, mask_add, steps = _case(B, L, heads, d, seed=5)
    qkv = np.concatenate([q, k, v], axis=-1)
    for isa in ISAS:
        ref = _kernels.quant_attention(q, k, v, mask_add, steps, heads, 4, 2, isa)
        out = _kernels.quant_attention(qkv, qkv, qkv, mask_add, steps, heads, 4, 2, isa, packed_qkv=True)
        assert out.shape == q.shape and np.array_equal(out, ref), isa
    bad = qkv.copy()
    bad[-1, -1, -1] = np.nan  # in V's third
    with pytest.raises(ValueError, match="NaN or inf"):
        _kernels.quant_attention(bad, bad, bad, mask_add, steps, heads, 4, packed_qkv=True)
    with pytest.raises(ValueError, match="packed q/k/v must be \\[B, L, 3 H\\]"):
        _kernels.quant_attention(qkv[..., 1:], qkv[..., 1:], qkv[..., 1:], mask_add, steps, heads, 4, packed_qkv=True)
