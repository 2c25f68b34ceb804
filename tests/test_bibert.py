"""BiBERT members: Bi-Attention, sign activations, DMD distillation, training, and exact export (W1A1 layers on
the XNOR-popcount kernels) to ONNX and TFLite."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bebert_deploy.checkpoint import load_checkpoint, read_manifest, save_checkpoint
from bebert_deploy.cli import main
from bebert_deploy.data.tasks import get_task
from bebert_deploy.exporters.export import export
from bebert_deploy.models.bert import BIBERT_QUANT, BertArch, BertClassifier
from bebert_deploy.models.quantizers import BoolAttention, SignActQuantizer
from bebert_deploy.runtime.session import Session
from bebert_deploy.training.kd import bibert_loss

from test_onnx_export import QUANT_TOL, _inputs
from test_tflite_export import BUILTIN_TOL


def test_bool_attention_forward_and_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = BoolAttention()(x)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # 1[score > 0]: a zero score does not attend
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # clipped identity


def test_bibert_model_layout(tiny_base):
    arch = BertArch.from_hf_config(tiny_base, num_labels=2)
    m = BertClassifier(arch, BIBERT_QUANT)
    assert BIBERT_QUANT.member_type == "bibert"
    L = m.layers[0]
    assert isinstance(L.q_quant, SignActQuantizer) and isinstance(L.probs_quant, BoolAttention)
    assert isinstance(L.act, torch.nn.GELU)  # ReLU before a sign quantizer would make every input +1
    assert L.query.act_quant.bits == 1 and L.query.weight_mode == "binary" and L.query.per_row


def _dmd_reference(s, t):
    s, t = s.numpy().astype(np.float64), t.numpy().astype(np.float64)
    return np.linalg.norm(s / np.linalg.norm(s) - t / np.linalg.norm(t))


def test_bibert_loss_terms(tiny_base):
    """The DMD terms against a numpy evaluation of BiBERT's formula; zero loss when student == teacher up to
    scale on every distilled tensor (direction matching ignores magnitude)."""
    torch.manual_seed(0)
    B, H, L, d = 2, 3, 5, 4
    qkv_s = [tuple(torch.randn(B, H, L, d) for _ in range(3))]
    qkv_t = [tuple(torch.randn(B, H, L, d) for _ in range(3))]
    hid_s, hid_t = [torch.randn(B, L, 8)], [torch.randn(B, L, 8)]
    logits = torch.randn(B, 2)
    labels = torch.tensor([0, 1])
    s_int, t_int = {"qkv": qkv_s, "hidden_states": hid_s}, {"qkv": qkv_t, "hidden_states": hid_t}
    got = bibert_loss(logits, logits, s_int, t_int, labels, False)
    soft = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1).mean()
    hard = torch.nn.functional.cross_entropy(logits, labels)
    ref = float(soft + 0.5 * hard)
    for s, t in zip(qkv_s[0], qkv_t[0]):
        ref += _dmd_reference(s @ s.transpose(-1, -2) / 2.0, t @ t.transpose(-1, -2) / 2.0)
    ref += _dmd_reference(hid_s[0], hid_t[0])
    assert abs(float(got) - ref) < 1e-4
    same = {"qkv": [tuple(3.0 * x for x in qkv_t[0])], "hidden_states": [2.0 * hid_t[0]]}
    only_pred = bibert_loss(logits, logits, same, t_int, labels, False)
    assert abs(float(only_pred) - float(soft + 0.5 * hard)) < 1e-5


def test_bibert_export_parity(tmp_path, tiny_base):
    """A random BiBERT member: the float parts are LayerNorm / GELU / tanh only, so every lowering matches
    PyTorch up to sign flips of values within float rounding of 0 (QUANT_TOL)."""
    torch.manual_seed(3)
    arch = BertArch.from_hf_config(tiny_base, num_labels=2)
    m = BertClassifier(arch, BIBERT_QUANT).eval()
    ids, mask, types = _inputs(arch.vocab_size, seed=7)
    rows = []
    with torch.no_grad():
        for r in range(ids.shape[0]):
            rows.append(torch.softmax(m(ids[r:r + 1], mask[r:r + 1], types[r:r + 1]), -1).numpy())
    ref = np.concatenate(rows)
    ck = save_checkpoint(tmp_path / "ck", [m], [1.0], get_task("rotten-tomatoes"), 16, tiny_base)
    assert read_manifest(ck).member_type == "bibert"
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    for target, ops, tol in [("onnx", "custom", QUANT_TOL), ("onnx", "builtin", QUANT_TOL),
                             ("tflite", "custom", QUANT_TOL), ("tflite", "builtin", BUILTIN_TOL)]:
        s = Session(export(ck, tmp_path / f"b-{ops}.{target}", target, "binary", ops), threads=2)
        out = np.concatenate([s.run({k: v[r:r + 1] for k, v in feed.items()})["probs"] for r in range(ids.shape[0])])
        assert np.abs(out - ref).max() <= tol, (target, ops, np.abs(out - ref).max())


def test_train_bibert_ensemble(tmp_path, tiny_base, tiny_data, tiny_ckpt):
    out = tmp_path / "bib"
    args = ["train", "--out", str(out), "--data-dir", str(tiny_data), "--base", str(tiny_base), "--teacher",
            str(tiny_ckpt), "--member-type", "bibert", "--members", "2", "--max-len", "16", "--epochs", "1",
            "--batch-size", "16", "--lr", "1e-3", "--train-limit", "0", "--dev-limit", "0"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(out)
    assert ck.manifest.member_type == "bibert" and len(ck.members) == 2
    assert ck.members[0].quant == BIBERT_QUANT
    assert "tws_split" not in ck.manifest.provenance["summary"]["stages"]
    r = CliRunner().invoke(main, ["info", str(out)])
    assert "member type   bibert" in r.output and "attention=bool" in r.output
    r = CliRunner().invoke(main, args[:-2] + ["--kd", "two_stage", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "BiBERT members take --no-tws and --kd pred" in r.output
