"""ONNX export parity: exported graphs (custom-op and builtin lowerings, baselines) vs the PyTorch models."""
import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from bebert_deploy.checkpoint import load_checkpoint, save_checkpoint
from bebert_deploy.cli import main
from bebert_deploy.data.tasks import get_task
from bebert_deploy.exporters.export import export
from bebert_deploy.models.bert import BertArch, BertClassifier, QuantConfig
from bebert_deploy.models.ensemble import BebertEnsemble
from bebert_deploy.runtime.session import Session

# Quantized members: ONNX Runtime and PyTorch compute LayerNorm/Softmax/MatMul with different float summation
# orders (differences ~1e-7 relative); an activation that lands within that distance of an LSQ rounding boundary
# moves one level, which shifts probabilities by up to ~1e-3 in these small models. Float paths match to 1e-5.
QUANT_TOL = 2e-3
FLOAT_TOL = 1e-5


def _inputs(vocab, n=6, seq=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[3, 4:] = 0
    types = torch.zeros_like(ids)
    types[2, 8:] = 1
    return ids, mask, types


def _torch_probs(ck, members=None):
    idx = members or list(range(len(ck.members)))
    ens = BebertEnsemble([ck.members[i] for i in idx], [ck.manifest.members[i].alpha for i in idx], ck.manifest.vote).eval()
    return ens


def _run(path, ids, mask, types, threads=2):
    s = Session(path, threads=threads)
    return s.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})


@pytest.mark.parametrize("ops", ["custom", "builtin"])
def test_ensemble_parity(tiny_ckpt, tmp_path, ops):
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size)
    with torch.no_grad():
        ref, ref_logits = _torch_probs(ck)(ids, mask, types)
    out = _run(export(tiny_ckpt, tmp_path / f"ens-{ops}.onnx", "onnx", "binary", ops), ids, mask, types)
    assert np.array_equal(out["probs"].argmax(-1), ref.numpy().argmax(-1))
    assert np.abs(out["probs"] - ref.numpy()).max() <= QUANT_TOL
    for i in range(2):
        assert np.abs(out[f"logits_{i}"] - ref_logits[i].numpy()).max() <= 10 * QUANT_TOL


def test_custom_and_builtin_lowerings_agree(tiny_ckpt, tmp_path):
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=1)
    a = _run(export(tiny_ckpt, tmp_path / "c.onnx", "onnx", "binary", "custom"), ids, mask, types)
    b = _run(export(tiny_ckpt, tmp_path / "b.onnx", "onnx", "binary", "builtin"), ids, mask, types)
    assert np.abs(a["probs"] - b["probs"]).max() <= QUANT_TOL
    assert np.array_equal(a["probs"].argmax(-1), b["probs"].argmax(-1))


def test_baselines_fp32_and_int8(tiny_ckpt, tmp_path):
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=2)
    with torch.no_grad():
        ref = torch.softmax(ck.teacher(ids, mask, types), -1).numpy()
    fp = _run(export(tiny_ckpt, tmp_path / "fp32.onnx", "onnx", "fp32"), ids, mask, types)
    assert np.abs(fp["probs"] - ref).max() <= FLOAT_TOL
    q = export(tiny_ckpt, tmp_path / "int8.onnx", "onnx", "int8")
    m = onnx.load(str(q))
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul") for n in m.graph.node)
    i8 = _run(q, ids, mask, types)
    assert np.abs(i8["probs"] - ref).max() < 0.1  # dynamic int8 is lossy; it must still track the fp32 model


def test_member_subset_and_metadata(tiny_ckpt, tmp_path):
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=3)
    p = export(tiny_ckpt, tmp_path / "m1.onnx", "onnx", "binary", "custom", members=[1])
    out = _run(p, ids, mask, types)
    assert set(out) == {"probs", "logits_0"}
    with torch.no_grad():
        ref = torch.softmax(ck.members[1](ids, mask, types), -1).numpy()
    assert np.abs(out["probs"] - ref).max() <= QUANT_TOL
    m = onnx.load(str(p))
    meta = {x.key: x.value for x in m.metadata_props}
    assert json.loads(meta["bebert.json"])["format_version"] == 1 and meta["members"] == "[1]"
    assert {(o.domain, o.version) for o in m.opset_import} >= {("bebert", 1)}
    with pytest.raises(ValueError, match="member 2 out of range"):
        export(tiny_ckpt, tmp_path / "bad.onnx", "onnx", members=[2])
    assert not (tmp_path / "bad.onnx").exists()


def random_member(tiny_base, act_bits, per_row, split):
    """A random (untrained) 3-class binary member with its LSQ steps initialised, and inputs for it."""
    torch.manual_seed(act_bits)
    arch = BertArch.from_hf_config(tiny_base, num_labels=3)
    q = QuantConfig(weight_mode="binary", per_row=per_row, embed_mode="binary", act_bits=act_bits, split=split)
    m = BertClassifier(arch, q).eval()
    ids, mask, types = _inputs(arch.vocab_size, seed=4)
    with torch.no_grad():
        m(ids, mask, types)  # initialises LSQ steps
    return m, ids, mask, types


@pytest.mark.parametrize("act_bits,per_row,split", [(32, False, False), (4, True, False), (1, False, True), (8, False, True)])
def test_every_activation_mode(tmp_path, tiny_base, act_bits, per_row, split):
    """Random (untrained) binary members with float / 4-bit / 1-bit / 8-bit activations, per-row or per-tensor."""
    m, ids, mask, types = random_member(tiny_base, act_bits, per_row, split)
    with torch.no_grad():
        ref = torch.softmax(m(ids, mask, types), -1).numpy()
    task = replace(get_task("mnli"))
    ck = save_checkpoint(tmp_path / "ck", [m], [1.0], task, 16, tiny_base)
    for ops in ("custom", "builtin"):
        out = _run(export(ck, tmp_path / f"{ops}.onnx", "onnx", "binary", ops), ids, mask, types)
        tol = FLOAT_TOL * 10 if act_bits == 32 else QUANT_TOL
        assert np.abs(out["probs"] - ref).max() <= tol, (ops, np.abs(out["probs"] - ref).max())


def test_onnx_graph_hygiene(tiny_ckpt, tmp_path):
    p = export(tiny_ckpt, tmp_path / "b.onnx", "onnx", "binary", "builtin")
    m = onnx.load(str(p))
    onnx.checker.check_model(m, full_check=True)
    assert {n.domain for n in m.graph.node} <= {"", None}
    p = export(tiny_ckpt, tmp_path / "c.onnx", "onnx", "binary", "custom")
    nodes = onnx.load(str(p)).graph.node
    names = {n.op_type for n in nodes if n.domain == "bebert"}
    assert names == {"BinaryLinear", "BinaryEmbedding", "QuantAttention", "AddLayerNorm"}
    # the members' FFN ReLU is fused into the first FFN linear (attribute relu=1), not a node of its own
    fused = [n.input[1] for n in nodes if n.op_type == "BinaryLinear" and
             any(a.name == "relu" and a.i == 1 for a in n.attribute)]
    assert fused and all(w.endswith("ffn_in.packed") for w in fused)
    assert not any(n.op_type == "Relu" for n in nodes)


def test_cli_export_and_predict(tiny_ckpt, tmp_path):
    out = tmp_path / "cli.onnx"
    r = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--target", "onnx", "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", str(out), "good great movie", "awful boring plot", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert [x["label"] in ("rotten", "fresh") for x in res] == [True, True]
    assert all(abs(sum(x["probs"]) - 1) < 1e-5 for x in res)
    r = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--members", "0,x"])
    assert r.exit_code == 1 and "member indices" in r.output


def test_dynamic_sequence_axis(tiny_ckpt, tmp_path):
    """Every ONNX export (binary custom / builtin, fp32, int8) declares a symbolic [batch, seq] input, and a file
    exported for max_len = 16 runs at a shorter L and matches PyTorch run at that same L (nothing in the graph
    hard-codes L: the position rows are sliced to the input's length, reshapes copy or infer the other axes)."""
    ck = load_checkpoint(tiny_ckpt, with_teacher=True)
    assert ck.manifest.max_len == 16
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=9)
    ids, mask, types = ids[:, :7], mask[:, :7], types[:, :7]  # rows 1 (0 from 10) and 3 (0 from 4) keep padding
    with torch.no_grad():
        ens, _ = _torch_probs(ck)(ids, mask, types)
        teacher = torch.softmax(ck.teacher(ids, mask, types), -1).numpy()
    cases = [("binary", "custom", ens.numpy(), QUANT_TOL), ("binary", "builtin", ens.numpy(), QUANT_TOL),
             ("fp32", "builtin", teacher, FLOAT_TOL), ("int8", "builtin", teacher, 0.1)]
    for precision, ops, ref, tol in cases:
        p = export(tiny_ckpt, tmp_path / f"{precision}-{ops}.onnx", "onnx", precision, ops)
        for inp in onnx.load(str(p)).graph.input:
            dims = inp.type.tensor_type.shape.dim
            assert [d.dim_param for d in dims] == ["batch", "seq"] and not any(d.HasField("dim_value") for d in dims)
        out = _run(p, ids, mask, types)
        assert out["probs"].shape == ref.shape
        assert np.abs(out["probs"] - ref).max() <= tol, (precision, ops, np.abs(out["probs"] - ref).max())


def test_members_run_side_by_side(tiny_ckpt, tmp_path):
    """parallel_members=True with threads >= members runs the ONNX members in ORT's parallel executor (one thread
    per op each); the outputs equal the one-after-the-other session's; a one-member file stays sequential."""
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=9)
    p = export(tiny_ckpt, tmp_path / "ens.onnx", "onnx", "binary", "custom")
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    par, seq = Session(p, threads=2, parallel_members=True), Session(p, threads=2)
    wide = Session(p, threads=4, parallel_members=True)  # 2 threads per op in each member (a pool per caller)
    assert (par.parallel_members, seq.parallel_members, wide.parallel_members) == (2, 1, 2)
    a, b, c = par.run(feed), seq.run(feed), wide.run(feed)
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= 1e-6 and np.abs(c[k] - b[k]).max() <= 1e-6, k
    one = Session(export(tiny_ckpt, tmp_path / "m0.onnx", "onnx", "binary", "custom", members=[0]), threads=2,
                  parallel_members=True)
    assert one.parallel_members == 1
    assert Session(p, threads=1, parallel_members=True).parallel_members == 1
