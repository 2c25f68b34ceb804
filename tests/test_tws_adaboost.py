"""Ternary weight splitting equivalence and AdaBoost bookkeeping on hand-worked cases."""
import math

import numpy as np
import pytest
import torch

from bebert_deploy.models.bert import BertArch, BertClassifier, QuantConfig
from bebert_deploy.models.quantizers import binarize_weight, ternarize_weight
from bebert_deploy.training import adaboost
from bebert_deploy.training.tws import split_ternary_weight, tws_split


@pytest.mark.parametrize("per_row", [False, True])
def test_split_weight_reproduces_ternary_exactly(per_row):
    torch.manual_seed(0)
    w = torch.randn(16, 40)
    w1, w2 = split_ternary_weight(w, per_row)
    assert torch.allclose(binarize_weight(w1, per_row) + binarize_weight(w2, per_row), ternarize_weight(w, per_row),
                          atol=1e-6)


def test_split_model_equals_ternary_model():
    torch.manual_seed(1)
    arch = BertArch(vocab_size=50, hidden_size=32, num_layers=2, num_heads=2, head_dim=16, intermediate_size=48,
                    max_position_embeddings=16, num_labels=3)
    tern = BertClassifier(arch, QuantConfig(weight_mode="ternary", embed_mode="ternary", act_bits=4)).eval()
    ids = torch.randint(0, 50, (4, 12))
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0
    ref = tern(ids, mask)  # also initialises the LSQ steps, which the split copies
    binary = tws_split(tern).eval()
    assert binary.quant.split and binary.quant.weight_mode == "binary"
    out = binary(ids, mask)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def test_adaboost_samme_worked_case():
    w = np.full(4, 0.25)
    miss = np.array([True, False, False, False])
    e = adaboost.weighted_error(w, miss)
    assert e == 0.25
    a = adaboost.member_alpha(e, 3, "samme")
    assert a == pytest.approx(math.log(3) + math.log(2))  # ln(0.75/0.25) + ln(K-1)
    new = adaboost.update_weights(w, miss, a, "samme")
    # the missed example's weight times exp(a) = 6: [1.5, .25, .25, .25] / 2.25
    np.testing.assert_allclose(new, np.array([1.5, 0.25, 0.25, 0.25]) / 2.25)


def test_adaboost_paper_variant_worked_case():
    w = np.full(4, 0.25)
    miss = np.array([True, False, False, False])
    a = adaboost.member_alpha(0.25, 3, "paper")
    assert a == pytest.approx(0.5 * math.log(3))
    new = adaboost.update_weights(w, miss, a, "paper")
    np.testing.assert_allclose(new, [0.25 * math.sqrt(3), 0.25 / math.sqrt(3), 0.25 / math.sqrt(3), 0.25 / math.sqrt(3)])


def test_combine_soft_and_hard():
    p = np.array([[[0.9, 0.1]], [[0.4, 0.6]], [[0.3, 0.7]]])
    alphas = np.array([2.0, 1.0, 0.5])
    soft = adaboost.combine(p, alphas, "soft")
    np.testing.assert_allclose(soft, [[(1.8 + 0.4 + 0.15) / 3.5, (0.2 + 0.6 + 0.35) / 3.5]])
    hard = adaboost.combine(p, alphas, "hard")
    np.testing.assert_allclose(hard, [[2.0 / 3.5, 1.5 / 3.5]])
    with pytest.raises(ValueError):
        adaboost.member_alpha(0.2, 2, "bagging")


def test_prediction_kd_loss_is_weighted_by_boosting_weights():
    """AdaBoost's sample weights must reach a KD-trained member: the prediction-KD loss is the weighted mean of
    the per-example soft cross-entropies (the same convention as the hard-label loss)."""
    import torch

    from bebert_deploy.training.kd import prediction_loss

    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    per = -(torch.softmax(t, -1) * torch.log_softmax(s, -1)).sum(-1)
    w = torch.tensor([2.0, 0.5, 0.5, 1.0])
    assert torch.allclose(prediction_loss(s, t, False, w), (per * w).sum() / 4)
    assert torch.allclose(prediction_loss(s, t, False), per.mean())
    assert not torch.allclose(prediction_loss(s, t, False, w), per.mean())
    reg = prediction_loss(s[:, :1], t[:, :1], True, w)
    assert torch.allclose(reg, (((s[:, 0] - t[:, 0]) ** 2) * w).sum() / 4)
