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
