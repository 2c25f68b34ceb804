"""Quantizer formulas against hand-computed values, and their straight-through gradients."""
import math

import pytest
import torch

from bebert_deploy.models.quantizers import (LsqActQuantizer, SignActQuantizer, binarize_weight, sign_pm1,
                                             ternarize_weight)


def test_binarize_per_tensor_and_per_row():
    w = torch.tensor([[0.5, -1.5], [0.0, -2.0]])
    # mean|w| = (0.5 + 1.5 + 0 + 2) / 4 = 1.0; sign(0) = +1
    assert torch.equal(binarize_weight(w), torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    # per row: 1.0 and 1.0... use distinct rows
    w2 = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    assert torch.equal(binarize_weight(w2, per_row=True), torch.tensor([[2.0, -2.0], [0.5, 0.5]]))


def test_binarize_identity_ste():
    w = torch.tensor([[3.0, -0.2]], requires_grad=True)
    binarize_weight(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_ternarize_twn():
    w = torch.tensor([[1.0, -0.1, 0.2, -2.0]])
    # mean|w| = 0.825, delta = 0.5775: kept entries 1.0 and -2.0, alpha = 1.5
    assert torch.allclose(ternarize_weight(w), torch.tensor([[1.5, 0.0, 0.0, -1.5]]))


def test_lsq_symmetric_values_and_init():
    q = LsqActQuantizer(4, symmetric=True)
    x = torch.tensor([0.0, 0.3, -0.9, 5.0, -5.0])
    y = q(x)
    step = 2 * x.abs().mean() / math.sqrt(7)
    assert torch.isclose(q.step.detach(), step)
    expect = torch.clamp(torch.round(x / step), -8, 7) * step
    assert torch.allclose(y, expect)
    big = q(torch.tensor([100.0, -100.0]))  # clipped to Qp / Qn with the step kept from the first batch
    assert torch.allclose(big, torch.stack([7 * step, -8 * step]))


def test_lsq_asymmetric_uses_dynamic_min():
    q = LsqActQuantizer(4, symmetric=False)
    with torch.no_grad():
        q.step.fill_(0.25)
        q.initialized.fill_(True)
    x = torch.tensor([1.0, 1.26, 2.0, 9.0])
    # (x - 1) / 0.25 = [0, 1.04, 4, 32] -> [0, 1, 4, 15]
    assert torch.allclose(q(x), torch.tensor([1.0, 1.25, 2.0, 1.0 + 15 * 0.25]))


def test_lsq_step_gradient_scaled():
    q = LsqActQuantizer(4, symmetric=True)
    with torch.no_grad():
        q.step.fill_(1.0)
        q.initialized.fill_(True)
    x = torch.tensor([2.4, 100.0])
    q(x).sum().backward()
    # d/ds of s*round(x/s) (STE) = round(x/s) - x/s inside, q_p outside; times 1/sqrt(numel * Qp)
    g = ((2.0 - 2.4) + 7.0) / math.sqrt(2 * 7)
    assert q.step.grad.item() == pytest.approx(g, rel=1e-6)


def test_sign_activation_and_clipped_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = SignActQuantizer()(x)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    assert torch.equal(sign_pm1(torch.tensor([0.0])), torch.tensor([1.0]))


def test_asymmetric_quantizer_is_per_example():
    """The dynamic minimum of an asymmetric LSQ quantizer is taken per example: a row's output is the same
    alone and inside a batch whose other rows have other minima."""
    from bebert_deploy.models.quantizers import LsqActQuantizer

    q = LsqActQuantizer(4, symmetric=False)
    torch.manual_seed(0)
    x = torch.rand(3, 5, 7)
    x[1] += 2.0  # example 1's minimum is ~2, the others' ~0
    with torch.no_grad():
        q(x)  # initialises the step
        batch = q(x)
        for r in range(3):
            assert torch.equal(batch[r:r + 1], q(x[r:r + 1]))
    assert (batch[1] - x[1]).abs().max() < q.step  # quantized around its own minimum


def test_onnx_custom_op_asymmetric_min_per_example(tmp_path):
    """The bebert.BinaryLinear op with asymmetric activations runs the kernel per example (leading axis),
    matching the numpy reference applied to each example alone."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bebert_deploy.runtime.bitpack import pack_bits
    from bebert_deploy.runtime.reference import binary_linear_ref
    from bebert_deploy.runtime.session import Session

    rng = np.random.default_rng(1)
    B, L, K, N = 3, 4, 70, 9
    x = rng.random((B, L, K)).astype(np.float32)
    x[1] += 3.0
    w = rng.standard_normal((N, K)).astype(np.float32)
    packed, alpha = pack_bits(w)[None], np.abs(w).mean(1, keepdims=True).T.astype(np.float32)
    bias, steps = rng.standard_normal(N).astype(np.float32), np.array([0.07], np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(packed, "w"), (alpha, "a"), (bias, "b"), (steps, "s")]]
    node = helper.make_node("BinaryLinear", ["x", "w", "a", "b", "s"], ["y"], domain="bebert", act_mode=1, act_bits=4,
                            act_symmetric=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, L, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, L, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("bebert", 1)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "op.onnx")
    s = Session(tmp_path / "op.onnx")
    y = s._sess.run(None, {"x": x})[0]
    for e in range(B):
        ref = binary_linear_ref(x[e], packed, alpha, bias, "int", 4, False, steps)
        assert np.abs(y[e] - ref).max() < 1e-4
