"""Member variants of the speed issue. Tied TWS: members that stay ternary (two binary halves sharing one input
quantizer and one scale) train, save, and export as ONE GEMM per slot: two sign planes with equal scales for our
ops (one shared table), one stock INT4 FULLY_CONNECTED of values {-2, 0, 2} for the builtin TFLite lowering.
Shared embedding: later members reuse the first member's word table (frozen), stored once in the exported file.
Shared Q/K/V input quantizer: one LSQ module per TWS half read by Q, K and V, saved and loaded tied, exported as one
packed-bit linear op per layer whose [B, L, 3H] output QuantAttention reads in thirds. Shared TWS-half quantizer:
both halves of a slot read one LSQ module (their scales stay their own), so the stock lowerings quantize each
slot's input once and our kernels build one table set. Outputs match PyTorch."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bebert_deploy.checkpoint import load_checkpoint
from bebert_deploy.cli import main
from bebert_deploy.config import BoostConfig, TrainConfig
from bebert_deploy.exporters.export import export
from bebert_deploy.checkpoint import CheckpointError
from bebert_deploy.exporters.lowering import ensemble_spec, packed_qkv_linear
from bebert_deploy.models.bert import QuantConfig
from bebert_deploy.models.layers import layer_parts
from bebert_deploy.models.quantizers import ternarize_weight, ternary_sign_planes
from bebert_deploy.runtime.bitpack import unpack_bits
from bebert_deploy.runtime.session import Session
from bebert_deploy.runtime.tflite_file import read_tflite
from bebert_deploy.training.pipeline import train_bebert

from test_onnx_export import QUANT_TOL, _inputs
from test_tflite_export import BUILTIN_TOL, _ensemble, _feed, _torch_rows


@pytest.mark.parametrize("per_row", [False, True])
def test_ternary_sign_planes_are_exact(per_row):
    w = torch.randn(24, 70, generator=torch.Generator().manual_seed(3))
    w[0, :5] = 0.0  # exact zeros ternarize to 0
    planes, scale = ternary_sign_planes(w, per_row)
    assert set(planes.unique().tolist()) <= {-1.0, 1.0} and scale.shape == (24,)
    assert torch.equal(scale[:, None] * (planes[0] + planes[1]), ternarize_weight(w, per_row))


def _train_variant(tmp_path_factory, tiny_base, tiny_data, **variant):
    """A 2-member checkpoint of the tiny recipe with one member variant switched on."""
    out = tmp_path_factory.mktemp("variant") / "ck"
    cfg = TrainConfig(data_dir=str(tiny_data), base=str(tiny_base), max_len=16, batch_size=16, teacher_epochs=1,
                      ternary_epochs=1, member_epochs=1, lr=1e-3, teacher_lr=1e-3, boost=BoostConfig(members=2),
                      **variant)
    train_bebert(cfg, out)
    return out


def _references(ckpt, seed):
    """The loaded checkpoint, a feed of a few rows, and the PyTorch ensemble's probs on the batch and row by row."""
    ck = load_checkpoint(ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=seed)
    ens = _ensemble(ck)
    with torch.no_grad():
        ref_batch = ens(ids, mask, types)[0].numpy()
    ref_rows = np.concatenate([r[0].numpy() for r in _torch_rows(ens, ids, mask, types)])
    return ck, _feed(ids, mask, types), ref_batch, ref_rows


@pytest.fixture(scope="module")
def tied_ckpt(tmp_path_factory, tiny_base, tiny_data):
    return _train_variant(tmp_path_factory, tiny_base, tiny_data, tws_tied=True)


def test_tied_members_are_ternary_and_lower_to_equal_halves(tied_ckpt):
    ck = load_checkpoint(tied_ckpt)
    assert ck.manifest.quant["weight_mode"] == "ternary" and not ck.manifest.quant["split"]
    spec = ensemble_spec(ck)
    q = ck.members[0].layers[0].query
    lin = spec.members[0].layers[0].query
    assert lin.tied and lin.packed.shape[0] == 2 and lin.act.steps[0] == lin.act.steps[1]
    # the lowered halves rebuild the member's own ternary weight exactly
    rebuilt = lin.alpha[0][:, None] * (unpack_bits(lin.packed[0], lin.k) + unpack_bits(lin.packed[1], lin.k))
    assert np.array_equal(rebuilt, q.quantized_weight().detach().numpy())
    assert all(s.tied for layer in spec.members[1].layers for s in (layer.query, layer.ffn_in, layer.ffn_out))


def test_tied_exports_match_pytorch(tied_ckpt, tmp_path):
    from ai_edge_litert import schema_py_generated as tfl

    ck, feed, ref_batch, ref_rows = _references(tied_ckpt, seed=7)
    onnx_out = Session(export(tied_ckpt, tmp_path / "t.onnx", "onnx", "binary", "custom"), threads=2).run(feed)
    assert np.abs(onnx_out["probs"] - ref_batch).max() <= QUANT_TOL
    custom = Session(export(tied_ckpt, tmp_path / "c.tflite", "tflite", "binary", "custom"), threads=2).run(feed)
    assert np.abs(custom["probs"] - ref_rows).max() <= QUANT_TOL
    bp = export(tied_ckpt, tmp_path / "b.tflite", "tflite", "binary", "builtin")
    builtin = Session(bp, threads=2).run(feed)
    assert np.abs(builtin["probs"] - ref_rows).max() <= BUILTIN_TOL
    assert np.array_equal(builtin["probs"].argmax(-1), ref_rows.argmax(-1))
    # one FULLY_CONNECTED per quantized slot (6 per layer and the pooler) plus the float classifier, per member
    m = tfl.Model.GetRootAs(open(bp, "rb").read(), 0)
    sg = m.Subgraphs(0)
    codes = [m.OperatorCodes(sg.Operators(i).OpcodeIndex()).BuiltinCode() for i in range(sg.OperatorsLength())]
    layers = len(ck.members[0].layers)
    assert codes.count(tfl.BuiltinOperator.FULLY_CONNECTED) == 2 * (6 * layers + 2)
    assert len(read_tflite(bp).custom_ops) == 0


@pytest.mark.parametrize("flag", ["--tws-tied", "--tws-shared-act"])
def test_tws_variants_need_tws(flag, tiny_base, tiny_data, tmp_path):
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x"), "--data-dir", str(tiny_data), "--base",
                                  str(tiny_base), "--no-tws", flag, "--members", "1", "--max-len", "16",
                                  "--epochs", "1", "--teacher-epochs", "1"])
    assert r.exit_code == 1 and flag in r.output and "--no-tws" in r.output
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def shared_ckpt(tmp_path_factory, tiny_base, tiny_data):
    return _train_variant(tmp_path_factory, tiny_base, tiny_data, share_embedding=True)


def test_shared_embedding_is_stored_once(shared_ckpt, tmp_path):
    import onnx

    ck = load_checkpoint(shared_ckpt)
    a, b = (m.word_embeddings.state_dict() for m in ck.members)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the other layers were trained per member
    assert not torch.equal(ck.members[0].layers[0].query.parts[0].weight, ck.members[1].layers[0].query.parts[0].weight)
    p = export(shared_ckpt, tmp_path / "s.onnx", "onnx", "binary", "custom")
    m = onnx.load(str(p))
    tables = [i for i in m.graph.initializer if i.name.endswith("word.packed")]
    assert len(tables) == 1  # both members' BinaryEmbedding nodes read it
    users = [n for n in m.graph.node if n.op_type == "BinaryEmbedding"]
    assert len(users) == 2 and {n.input[1] for n in users} == {tables[0].name}
    one = export(shared_ckpt, tmp_path / "one.onnx", "onnx", "binary", "custom", members=[0])
    table_bytes = len(tables[0].raw_data)
    assert p.stat().st_size < 2 * one.stat().st_size - 0.9 * table_bytes
    _, feed, ref, ref_rows = _references(shared_ckpt, seed=8)
    out = Session(p, threads=2).run(feed)
    assert np.abs(out["probs"] - ref).max() <= QUANT_TOL
    t = export(shared_ckpt, tmp_path / "s.tflite", "tflite", "binary", "custom")
    assert np.abs(Session(t, threads=2).run(feed)["probs"] - ref_rows).max() <= QUANT_TOL
    # the packed table's bytes appear once in the file (the per-member signatures share its buffer too)
    assert t.read_bytes().count(tables[0].raw_data) == 1


@pytest.fixture(scope="module")
def qkv_ckpt(tmp_path_factory, tiny_base, tiny_data):
    return _train_variant(tmp_path_factory, tiny_base, tiny_data, quant=QuantConfig(qkv_shared_act=True))


def test_qkv_share_one_input_quantizer(qkv_ckpt, tiny_ckpt, tmp_path):
    ck = load_checkpoint(qkv_ckpt)
    layer = ck.members[1].layers[0]
    for s in range(2):  # one module per TWS half, trained (its step moved off the first-batch initialisation)
        qz = layer_parts(layer.query)[s].act_quant
        assert layer_parts(layer.key)[s].act_quant is qz and layer_parts(layer.value)[s].act_quant is qz
    assert layer_parts(layer.query)[0].act_quant is not layer_parts(layer.query)[1].act_quant
    spec = ensemble_spec(ck).members[0].layers[1]
    fused = packed_qkv_linear(spec)
    assert fused.n == 3 * spec.query.n and fused.packed.shape[:2] == (2, 3 * spec.query.n)
    assert np.array_equal(fused.packed[:, spec.query.n:2 * spec.query.n], spec.key.packed)
    assert np.array_equal(fused.bias[-spec.value.n:], spec.value.bias)
    # a model trained with three quantizers keeps three linear ops
    assert packed_qkv_linear(ensemble_spec(load_checkpoint(tiny_ckpt)).members[0].layers[0]) is None
    # a file whose copies of the shared step disagree was edited: refused, not loaded with one of the values
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(qkv_ckpt, bad)
    t = load_file(str(bad / "member_0.safetensors"))
    t["layers.0.value.parts.1.act_quant.step"] += 0.5
    save_file(t, str(bad / "member_0.safetensors"))
    with pytest.raises(CheckpointError, match="value.parts.1.act_quant.step differs from .*query.parts.1.act_quant.step"):
        load_checkpoint(bad)


def test_qkv_exports_run_one_linear_op_and_match_pytorch(qkv_ckpt, tmp_path):
    import onnx

    ck, feed, ref_batch, ref_rows = _references(qkv_ckpt, seed=9)
    layers = len(ck.members[0].layers)
    p = export(qkv_ckpt, tmp_path / "q.onnx", "onnx", "binary", "custom")
    nodes = onnx.load(str(p)).graph.node
    # per member and layer: Q/K/V, attention output, FFN in, FFN out; plus the pooler
    assert sum(n.op_type == "BinaryLinear" for n in nodes) == 2 * (4 * layers + 1)
    att = [n for n in nodes if n.op_type == "QuantAttention"]
    assert len(att) == 2 * layers and all(n.input[0] == n.input[1] == n.input[2] for n in att)
    assert np.abs(Session(p, threads=2).run(feed)["probs"] - ref_batch).max() <= QUANT_TOL
    t = export(qkv_ckpt, tmp_path / "q.tflite", "tflite", "binary", "custom")
    from ai_edge_litert import schema_py_generated as tfl

    m = tfl.Model.GetRootAs(t.read_bytes(), 0)
    sg = m.Subgraphs(0)
    custom = [m.OperatorCodes(sg.Operators(i).OpcodeIndex()).CustomCode() for i in range(sg.OperatorsLength())]
    assert custom.count(b"BebertBinaryFC") == 2 * (4 * layers + 1)
    for parallel in (True, False):
        out = Session(t, threads=2, parallel_members=parallel).run(feed)
        assert np.abs(out["probs"] - ref_rows).max() <= QUANT_TOL
    # the stock-ops lowering has no packed attention: three linears, still exact up to its tolerance
    b = Session(export(qkv_ckpt, tmp_path / "b.tflite", "tflite", "binary", "builtin"), threads=2).run(feed)
    assert np.abs(b["probs"] - ref_rows).max() <= BUILTIN_TOL


@pytest.fixture(scope="module")
def halves_ckpt(tmp_path_factory, tiny_base, tiny_data):
    return _train_variant(tmp_path_factory, tiny_base, tiny_data,
                          quant=QuantConfig(qkv_shared_act=True, tws_shared_act=True))


def _count_ops(path, op: str) -> int:
    import onnx

    return sum(n.op_type == op for n in onnx.load(str(path)).graph.node)


def test_tws_halves_share_one_input_quantizer(halves_ckpt, qkv_ckpt, tmp_path):
    ck = load_checkpoint(halves_ckpt)
    layer = ck.members[1].layers[0]
    qz = layer_parts(layer.query)[0].act_quant  # with --qkv-shared-act too: one module for Q, K, V and both halves
    assert all(p.act_quant is qz for slot in (layer.query, layer.key, layer.value) for p in layer_parts(slot))
    for slot in (layer.attn_out, layer.ffn_in, layer.ffn_out):
        a, b = layer_parts(slot)
        assert a.act_quant is b.act_quant and a.act_quant is not qz
        assert not torch.equal(a.quantized_weight(), b.quantized_weight())  # the halves keep their own weights
    spec = ensemble_spec(ck).members[1].layers[0]
    for lin in (packed_qkv_linear(spec), spec.ffn_out):
        assert lin.act.steps[0] == lin.act.steps[1] and not lin.tied  # one step, two scales
    # an edited copy of a half's step is refused
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(halves_ckpt, bad)
    t = load_file(str(bad / "member_1.safetensors"))
    t["layers.1.ffn_in.parts.1.act_quant.step"] *= 1.25
    save_file(t, str(bad / "member_1.safetensors"))
    with pytest.raises(CheckpointError, match="ffn_in.parts.1.act_quant.step differs from .*ffn_in.parts.0.act_quant.step"):
        load_checkpoint(bad)


def test_tws_shared_halves_export_and_match_pytorch(halves_ckpt, qkv_ckpt, tmp_path):
    ck, feed, ref_batch, ref_rows = _references(halves_ckpt, seed=10)
    layers = len(ck.members[0].layers)
    p = export(halves_ckpt, tmp_path / "h.onnx", "onnx", "binary", "custom")
    assert _count_ops(p, "BinaryLinear") == 2 * (4 * layers + 1)
    assert np.abs(Session(p, threads=2).run(feed)["probs"] - ref_batch).max() <= QUANT_TOL
    t = export(halves_ckpt, tmp_path / "h.tflite", "tflite", "binary", "custom")
    assert np.abs(Session(t, threads=2).run(feed)["probs"] - ref_rows).max() <= QUANT_TOL
    # the stock-ops lowerings quantize a slot's input once, not once per half: one Round fewer per linear slot
    # (6 per layer and the pooler) than members whose halves learned their own steps
    s = export(halves_ckpt, tmp_path / "s.onnx", "onnx", "binary", "builtin")
    s_qkv = export(qkv_ckpt, tmp_path / "s_qkv.onnx", "onnx", "binary", "builtin")
    assert _count_ops(s_qkv, "Round") - _count_ops(s, "Round") == 2 * (6 * layers + 1)
    assert np.abs(Session(s, threads=2).run(feed)["probs"] - ref_batch).max() <= QUANT_TOL
    b = Session(export(halves_ckpt, tmp_path / "b.tflite", "tflite", "binary", "builtin"), threads=2).run(feed)
    assert np.abs(b["probs"] - ref_rows).max() <= BUILTIN_TOL
