"""TFLite export parity: custom-op files in LiteRT with our kernels, stock (INT4) files in the TFLite interpreter,
fp32 / int8 baselines, against the PyTorch models and the ONNX exports. TFLite files run row by row (at the
feed's length when resizable, the default; padded to L when exported with a fixed seq_len), so references are
computed row by row too (the asymmetric LSQ quantizer of the attention probabilities takes its minimum over the
whole tensor, i.e. over the batch)."""
import json
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bebert_deploy.checkpoint import load_checkpoint, save_checkpoint
from bebert_deploy.cli import main
from bebert_deploy.data.tasks import get_task
from bebert_deploy.exporters.export import export
from bebert_deploy.exporters.lowering import ensemble_spec
from bebert_deploy.exporters.tflite_export import build_tflite, save_tflite
from bebert_deploy.exporters.tflite_quant import pack_int4
from bebert_deploy.models.bert import BertArch, BertClassifier, QuantConfig
from bebert_deploy.models.ensemble import BebertEnsemble
from bebert_deploy.runtime.session import Session
from bebert_deploy.runtime.tflite_file import read_tflite

from test_onnx_export import FLOAT_TOL, QUANT_TOL, _inputs, random_member

# Stock lowering: the interpreter quantizes the (already 4-bit) activations of every INT4 FULLY_CONNECTED to int8
# on the fly; in these tiny random-ish models that moves probabilities by a few 1e-2 at most.
BUILTIN_TOL = 0.08
SIGN_XNNPACK_TOL = 0.15


def _feed(ids, mask, types):
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}


def _torch_rows(model_fn, ids, mask, types):
    """Reference outputs computed one row at a time (as the fixed-shape TFLite files run)."""
    outs = []
    with torch.no_grad():
        for r in range(ids.shape[0]):
            outs.append(model_fn(ids[r:r + 1], mask[r:r + 1], types[r:r + 1]))
    return outs


def _ensemble(ck, members=None):
    idx = members or list(range(len(ck.members)))
    return BebertEnsemble([ck.members[i] for i in idx], [ck.manifest.members[i].alpha for i in idx], ck.manifest.vote).eval()


def _tensor_types(path):
    from ai_edge_litert import schema_py_generated as tfl

    m = tfl.Model.GetRootAs(open(path, "rb").read(), 0)
    sg = m.Subgraphs(0)
    return {sg.Tensors(i).Type() for i in range(sg.TensorsLength())}


def test_both_lowerings_implement_every_graph_primitive():
    # exporters/graph.py writes the graph once; a primitive left to the base class would fail only at export time
    from bebert_deploy.exporters.graph import Primitives
    from bebert_deploy.exporters.onnx_export import OnnxLowering
    from bebert_deploy.exporters.tflite_export import TfliteLowering

    names = [n for n, f in vars(Primitives).items() if callable(f) and not n.startswith("_")]
    assert {"linear", "embedding", "layer_norm", "matmul", "softmax", "one_hot_argmax"} <= set(names)
    for cls in (OnnxLowering, TfliteLowering):
        assert [n for n in names if getattr(cls, n) is getattr(Primitives, n)] == [], cls.__name__


def test_pack_int4_layout():
    # TFLite packs INT4 two per byte, the first element in the low nibble; -1 is 0xF.
    assert pack_int4(np.array([1, -1, -8, 7, 3], np.int8)).tolist() == [0xF1, 0x78, 0x03]


def _opcodes(path) -> set[int]:
    """The builtin operator codes a .tflite file uses."""
    from ai_edge_litert import schema_py_generated as tfl

    m = tfl.Model.GetRootAs(Path(path).read_bytes(), 0)
    return {max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
            for i in range(m.OperatorCodesLength())}


def test_custom_ensemble_parity(tiny_ckpt, tmp_path):
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size)
    ens = _ensemble(ck)
    p = export(tiny_ckpt, tmp_path / "ens.tflite", "tflite", "binary", "custom")
    info = read_tflite(p)
    assert info.custom_ops == ["BebertAddLayerNorm", "BebertBinaryEmbedding", "BebertBinaryFC", "BebertQuantAttention"]
    from ai_edge_litert import schema_py_generated as tfl

    # the members' FFN ReLU (a RELU op in the builtin lowering) is fused into each FFN's first BebertBinaryFC
    assert tfl.BuiltinOperator.RELU in _opcodes(export(tiny_ckpt, tmp_path / "b.tflite", "tflite", "binary", "builtin"))
    assert tfl.BuiltinOperator.RELU not in _opcodes(p)
    s = Session(p, threads=2)
    assert s.isa in ("avx512", "avx2", "neon", "scalar")
    out = s.run(_feed(ids, mask, types))
    refs = _torch_rows(ens, ids, mask, types)
    ref = np.concatenate([r[0].numpy() for r in refs])
    assert np.array_equal(out["probs"].argmax(-1), ref.argmax(-1))
    assert np.abs(out["probs"] - ref).max() <= QUANT_TOL
    for i in range(2):
        lg = np.concatenate([r[1][i].numpy() for r in refs])
        assert np.abs(out[f"logits_{i}"] - lg).max() <= 10 * QUANT_TOL
    # the same ensemble through ONNX Runtime (custom ops), row by row
    onnx_s = Session(export(tiny_ckpt, tmp_path / "ens.onnx", "onnx", "binary", "custom"), threads=2)
    onnx_rows = np.concatenate([onnx_s.run({k: v[r:r + 1] for k, v in _feed(ids, mask, types).items()})["probs"]
                                for r in range(ids.shape[0])])
    assert np.abs(out["probs"] - onnx_rows).max() <= QUANT_TOL


def test_builtin_lowering_is_stock_int4(tiny_ckpt, tmp_path):
    from ai_edge_litert import schema_py_generated as tfl
    from ai_edge_litert.interpreter import Interpreter

    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=1)
    p = export(tiny_ckpt, tmp_path / "b.tflite", "tflite", "binary", "builtin")
    assert read_tflite(p).custom_ops == []
    assert tfl.TensorType.INT4 in _tensor_types(p) and tfl.TensorType.FLOAT32 in _tensor_types(p)
    # the stock interpreter runs it directly (no bebert code involved)
    runner = Interpreter(model_path=str(p), num_threads=1).get_signature_runner("serving_default")
    f = _feed(ids, mask, types)
    stock = np.concatenate([runner(**{k: v[r:r + 1] for k, v in f.items()})["probs"] for r in range(ids.shape[0])])
    ref = np.concatenate([r[0].numpy() for r in _torch_rows(_ensemble(ck), ids, mask, types)])
    assert np.abs(stock - ref).max() <= BUILTIN_TOL
    assert np.array_equal(stock.argmax(-1), ref.argmax(-1))
    custom = Session(export(tiny_ckpt, tmp_path / "c.tflite", "tflite", "binary", "custom"), threads=1).run(f)
    assert np.abs(stock - custom["probs"]).max() <= BUILTIN_TOL


def test_baselines_fp32_and_int8(tiny_ckpt, tmp_path):
    from ai_edge_litert import schema_py_generated as tfl

    ck = load_checkpoint(tiny_ckpt, with_teacher=True)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, seed=2)
    with torch.no_grad():
        ref = torch.softmax(ck.teacher(ids, mask, types), -1).numpy()  # the float model is batch-independent
    fp = Session(export(tiny_ckpt, tmp_path / "fp32.tflite", "tflite", "fp32"), threads=2).run(_feed(ids, mask, types))
    assert np.abs(fp["probs"] - ref).max() <= FLOAT_TOL
    q = export(tiny_ckpt, tmp_path / "int8.tflite", "tflite", "int8")
    assert tfl.TensorType.INT8 in _tensor_types(q)
    i8 = Session(q, threads=2).run(_feed(ids, mask, types))
    assert np.abs(i8["probs"] - ref).max() < 0.1  # dynamic-range int8 is lossy; it must still track fp32
    assert (tmp_path / "int8.tflite").stat().st_size < 0.75 * (tmp_path / "fp32.tflite").stat().st_size


@pytest.mark.parametrize("act_bits,per_row,split", [(32, False, False), (4, True, False), (1, False, True), (8, False, True)])
def test_every_activation_mode(tmp_path, tiny_base, act_bits, per_row, split):
    """Random binary members with float / 4-bit / 1-bit / 8-bit activations, per-row or per-tensor scales."""
    m, ids, mask, types = random_member(tiny_base, act_bits, per_row, split)
    refs = _torch_rows(lambda *a: torch.softmax(m(*a), -1), ids, mask, types)
    ref = np.concatenate([r.numpy() for r in refs])
    ck = save_checkpoint(tmp_path / "ck", [m], [1.0], replace(get_task("mnli")), 16, tiny_base)
    out = Session(export(ck, tmp_path / "c.tflite", "tflite", "binary", "custom"), threads=2).run(_feed(ids, mask, types))
    tol = FLOAT_TOL * 10 if act_bits == 32 else QUANT_TOL
    assert np.abs(out["probs"] - ref).max() <= tol
    bp = export(ck, tmp_path / "b.tflite", "tflite", "binary", "builtin")
    b = Session(bp, threads=2).run(_feed(ids, mask, types))
    if act_bits != 1:
        assert np.abs(b["probs"] - ref).max() <= BUILTIN_TOL  # hybrid FC: int8 activations on the fly, even for float ones
        return
    # Sign activations: the file asks for symmetric int8 input quantization, which keeps +-1 exact; TFLite's own
    # kernels honour it (exact), XNNPACK quantizes asymmetrically anyway, and W1A1 sums are often exactly 0, so
    # its rounding of +-1 can flip the next sign: a looser bound there.
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(bp), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner, f = it.get_signature_runner("serving_default"), _feed(ids, mask, types)
    exact = np.concatenate([runner(**{k: v[r:r + 1] for k, v in f.items()})["probs"] for r in range(ids.shape[0])])
    assert np.abs(exact - ref).max() <= QUANT_TOL
    assert np.abs(b["probs"] - ref).max() <= SIGN_XNNPACK_TOL


def test_signature_metadata_and_short_inputs(tiny_ckpt, tmp_path):
    p = export(tiny_ckpt, tmp_path / "m1.tflite", "tflite", "binary", "custom", members=[1], seq_len=12)
    info = read_tflite(p)
    assert [t.name for t in info.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(t.shape == (1, 12) and t.dtype == np.int64 for t in info.inputs)
    assert [t.name for t in info.outputs] == ["probs", "logits_0"]
    meta = info.metadata
    assert json.loads(meta["bebert.json"])["format_version"] == 1 and meta["members"] == "[1]"
    assert meta["ops"] == "custom" and meta["seq_len"] == "12" and json.loads(meta["labels"]) == ["rotten", "fresh"]
    # inputs shorter than the fixed length are padded (mask 0): same result as the explicitly padded input
    ck = load_checkpoint(tiny_ckpt)
    ids, mask, types = _inputs(ck.members[0].arch.vocab_size, n=4, seq=12, seed=5)
    s = Session(p)
    padded = torch.zeros_like(mask)  # [4, 12]
    padded[:, :8] = 1
    full = s.run(_feed(ids, padded, types))
    short = s.run(_feed(ids[:, :8], torch.ones(4, 8, dtype=mask.dtype), types[:, :8]))
    assert np.abs(full["probs"] - short["probs"]).max() == 0.0
    with pytest.raises(ValueError, match="exceeds"):
        s.run(_feed(*_inputs(ck.members[0].arch.vocab_size, n=4, seq=13)))
    with pytest.raises(ValueError, match="exceeds the checkpoint's max_len"):
        export(tiny_ckpt, tmp_path / "long.tflite", "tflite", seq_len=17)
    assert not (tmp_path / "long.tflite").exists()


def _signature_shapes(path):
    """(shape, shape_signature) of each signature input of a .tflite file."""
    from ai_edge_litert import schema_py_generated as tfl

    m = tfl.Model.GetRootAs(Path(path).read_bytes(), 0)
    sg, sig = m.Subgraphs(0), m.SignatureDefs(0)
    ts = [sg.Tensors(sig.Inputs(i).TensorIndex()) for i in range(sig.InputsLength())]
    return [(t.ShapeAsNumpy().tolist(), t.ShapeSignatureAsNumpy().tolist() if t.ShapeSignatureLength() else None)
            for t in ts]


@pytest.mark.parametrize("precision,ops", [("binary", "custom"), ("binary", "builtin"), ("fp32", "builtin"),
                                           ("int8", "builtin")])
def test_resizable_length_matches_onnx(tiny_ckpt, tmp_path, precision, ops):
    """Default TFLite exports take any length up to max_len: each row runs at the feed's own length and gives
    what the ONNX file (dynamic axes) gives at that length, for lengths met in any order (LiteRT resizes back
    and forth)."""
    ck = load_checkpoint(tiny_ckpt)
    p = export(tiny_ckpt, tmp_path / "m.tflite", "tflite", precision, ops)
    assert _signature_shapes(p) == [([1, 16], [1, -1])] * 3
    assert read_tflite(p).metadata["dynamic_length"] == "1"
    s = Session(p, threads=2)
    assert s.dynamic_length
    onnx_s = Session(export(tiny_ckpt, tmp_path / "m.onnx", "onnx", precision, ops if precision == "binary" else "builtin"),
                     threads=2)
    # custom ops: the same kernels in both runtimes; stock files: XNNPACK's and ORT's own float / int8 kernels, whose
    # summation orders differ, so an activation at a 4-bit rounding boundary can land one level apart (QUANT_TOL;
    # with both TWS halves reading one quantizer a flip moves both halves: 1.3e-3 seen at one length)
    tol = {"custom": 1e-6, "builtin": QUANT_TOL}[ops]
    for seq in (5, 16, 1, 9, 5):
        ids, mask, types = _inputs(ck.members[0].arch.vocab_size, n=4, seq=seq, seed=seq)
        f = _feed(ids, mask, types)
        got = s.run(f)["probs"]
        want = np.concatenate([onnx_s.run({k: v[r:r + 1] for k, v in f.items()})["probs"] for r in range(4)])
        assert got.shape == want.shape and np.abs(got - want).max() <= tol, seq
    with pytest.raises(ValueError, match="exceeds"):
        s.run(_feed(*_inputs(ck.members[0].arch.vocab_size, n=4, seq=17)))
    if precision == "binary" and ops == "custom":  # predict runs each text at its own length, as ONNX files do
        texts = ["good", "a long and winding but ultimately rewarding film", "bad plot"]
        assert np.abs(s.predict(texts)[1] - onnx_s.predict(texts)[1]).max() <= tol


def test_fixed_length_file_refuses_a_resize_and_keeps_running(tiny_ckpt, tmp_path):
    """A --seq-len file has static inputs: LiteRT refuses to resize it (one clear error), and the runner still
    runs it at its own length afterwards with the same outputs (its buffers are rebuilt, not left half-made)."""
    from bebert_deploy.runtime.errors import ModelError

    p = export(tiny_ckpt, tmp_path / "fixed.tflite", "tflite", "binary", "custom", seq_len=12)
    assert _signature_shapes(p) == [([1, 12], None)] * 3
    runner = Session(p)._litert
    feed = [np.full((1, 12), 7, np.int64), np.ones((1, 12), np.int64), np.zeros((1, 12), np.int64)]
    before = runner.run(feed)
    with pytest.raises(ModelError, match="cannot run the model at length 5"):
        runner.resize(5)
    after = runner.run(feed)
    assert all(np.array_equal(x, y) for x, y in zip(before, after))


def test_length_dependent_constant_is_refused(tiny_ckpt, monkeypatch):
    """A lowering whose constants (other than shape arguments) depend on the length cannot be made resizable:
    the export says so instead of writing a file that breaks at another length."""
    from bebert_deploy.exporters import tflite_export as te

    def fixed_rows(self, ids, word, position, name, position_name):  # the fixed-length lowering's position slice
        g = self.g
        return g.binary("ADD", self.word_embedding(ids, word, name), g.init(position_name, position[:g.shape(ids)[1]]))

    monkeypatch.setattr(te.TfliteLowering, "embedding", fixed_rows)
    spec = ensemble_spec(load_checkpoint(tiny_ckpt), [0])
    with pytest.raises(ValueError, match="constant 'm0.position' depends on the sequence length"):
        build_tflite(spec, "builtin")
    assert build_tflite(spec, "builtin", seq_len=16)  # a fixed length needs no generalization


def test_members_side_by_side_match_one_after_the_other(tiny_ckpt, tmp_path):
    """Ensemble files carry signatures member_<i> (inputs -> logits_<i>) and vote (logits -> probs) over the same
    operators and constants. With a thread per member the runtime runs the members' signatures at once, each on
    its own thread, then the file's vote: bit-identical to serving_default, at any length, resized back and
    forth. The stock interpreter composes the builtin file's signatures to its serving_default result too, so
    the signatures are plain TFLite, not something only our runner understands."""
    from ai_edge_litert.interpreter import Interpreter

    ck = load_checkpoint(tiny_ckpt)
    p = export(tiny_ckpt, tmp_path / "ens.tflite", "tflite", "binary", "custom")
    sigs = read_tflite(p).signatures
    assert list(sigs) == ["serving_default", "member_0", "member_1", "vote"]
    assert [t.name for t in sigs["member_1"][1]] == ["logits_1"]
    assert [t.name for t in sigs["vote"][0]] == ["logits_0", "logits_1"] and [t.name for t in sigs["vote"][1]] == ["probs"]
    assert "member_0" not in read_tflite(export(tiny_ckpt, tmp_path / "one.tflite", "tflite", members=[0])).signatures
    side = Session(p, threads=2)
    one = Session(p, threads=2, parallel_members=False)
    # side by side whenever every member gets a thread; more threads go to the members' kernels (a pool per
    # calling thread), the first members first
    wide, odd = Session(p, threads=4), Session(p, threads=3)
    assert (side.parallel_members, one.parallel_members, Session(p, threads=1).parallel_members,
            odd.parallel_members, wide.parallel_members) == (2, 1, 1, 2, 2)
    assert (side._litert.member_threads, odd._litert.member_threads, wide._litert.member_threads) == ([1, 1], [2, 1], [2, 2])
    for seq in (5, 16, 1, 9):
        f = _feed(*_inputs(ck.members[0].arch.vocab_size, n=4, seq=seq, seed=seq))
        a, b, c = side.run(f), one.run(f), wide.run(f)
        assert list(a) == list(b) == list(c) == ["probs", "logits_0", "logits_1"]
        assert all(np.array_equal(a[k], b[k]) and np.array_equal(c[k], b[k]) for k in a), seq
    bp = export(tiny_ckpt, tmp_path / "b.tflite", "tflite", "binary", "builtin")
    it = Interpreter(model_path=str(bp), num_threads=1)
    f = {k: v[:1] for k, v in _feed(*_inputs(ck.members[0].arch.vocab_size, seq=16, seed=3)).items()}
    logits = {f"logits_{i}": it.get_signature_runner(f"member_{i}")(**f)[f"logits_{i}"] for i in range(2)}
    whole = it.get_signature_runner("serving_default")(**f)
    assert all(np.array_equal(logits[k], whole[k]) for k in logits)
    assert np.array_equal(it.get_signature_runner("vote")(**logits)["probs"], whole["probs"])


def test_kernel_error_in_a_member_running_side_by_side(tiny_ckpt, tmp_path):
    ck = load_checkpoint(tiny_ckpt)
    spec = ensemble_spec(ck, [0, 1])
    lin = spec.members[1].layers[0].query
    spec.members[1].layers[0].query = replace(lin, k=lin.k + 64)
    p = save_tflite(build_tflite(spec, "custom"), tmp_path / "bad2.tflite")
    with pytest.raises(ValueError, match="kernel error: BebertBinaryFC: shape mismatch"):
        Session(p, threads=2)


def test_kernel_errors_are_reported(tiny_ckpt, tmp_path):
    """LiteRT ignores a custom op's error status: our own flag must turn a bad node into a clear error."""
    ck = load_checkpoint(tiny_ckpt)
    spec = ensemble_spec(ck, [0])
    lin = spec.members[0].layers[0].query
    spec.members[0].layers[0].query = replace(lin, k=lin.k + 64)  # params say K+64; the packed rows say K
    p = save_tflite(build_tflite(spec, "custom"), tmp_path / "bad.tflite")
    with pytest.raises(ValueError, match="kernel error: BebertBinaryFC: shape mismatch"):
        Session(p)


def test_bad_files_and_versions(tmp_path, tiny_ckpt, monkeypatch):
    (tmp_path / "empty.tflite").write_bytes(b"")
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    for name in ("empty.tflite", "junk.tflite"):
        with pytest.raises(ValueError, match="not a TFLite"):
            Session(tmp_path / name)
    good = export(tiny_ckpt, tmp_path / "c.tflite", "tflite", "binary", "custom", members=[0])
    data = good.read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[:4096])
    with pytest.raises(ValueError, match="cut.tflite"):
        Session(tmp_path / "cut.tflite")
    import bebert_deploy.runtime.litert_session as ls

    monkeypatch.setattr(ls, "SUPPORTED_LITERT", ("0.0.1",))
    with pytest.raises(RuntimeError, match="not supported for custom-op .tflite files"):
        Session(good)


def test_cli_export_tflite_and_predict(tiny_ckpt, tmp_path):
    for ops in ("custom", "builtin"):
        out = tmp_path / f"cli-{ops}.tflite"
        r = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--target", "tflite", "--ops", ops, "--out", str(out)])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["predict", str(out), "good great movie", "awful boring plot", "--json"])
        assert r.exit_code == 0, r.output
        res = json.loads(r.output)
        assert all(x["label"] in ("rotten", "fresh") and abs(sum(x["probs"]) - 1) < 1e-5 for x in res)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_hard_vote_and_regression_heads(tmp_path, tiny_base, target):
    """The official code's hard weighted vote (ARG_MAX + ONE_HOT in TFLite, ArgMax + OneHot in ONNX) and a
    regression head (K = 1: the alpha-weighted mean of the members' outputs) in both exporters."""
    torch.manual_seed(11)
    ids, mask, types = _inputs(BertArch.from_hf_config(tiny_base, num_labels=2).vocab_size, seed=8)
    for task, labels, vote in [("rotten-tomatoes", 2, "hard"), ("sts-b", 1, "soft")]:
        arch = replace(BertArch.from_hf_config(tiny_base, num_labels=labels))
        q = QuantConfig(weight_mode="binary", embed_mode="binary", act_bits=4)
        ms = [BertClassifier(arch, q).eval() for _ in range(2)]
        with torch.no_grad():
            for m in ms:
                m(ids, mask, types)  # LSQ steps
        ens = BebertEnsemble(ms, [0.7, 1.3], vote).eval()
        ref = np.concatenate([r[0].numpy() for r in _torch_rows(ens, ids, mask, types)])
        ck = save_checkpoint(tmp_path / f"ck-{task}", ms, [0.7, 1.3], get_task(task), 16, tiny_base, vote=vote)
        out = Session(export(ck, tmp_path / f"{task}.{target}", target, "binary", "custom")).run(_feed(ids, mask, types))
        if target == "onnx":  # ONNX runs the batch at once: compare row by row there too
            s = Session(tmp_path / f"{task}.{target}")
            out = {"probs": np.concatenate([s.run({k: v[r:r + 1] for k, v in _feed(ids, mask, types).items()})["probs"]
                                            for r in range(ids.shape[0])])}
        assert out["probs"].shape == ref.shape
        assert np.abs(out["probs"] - ref).max() <= (1e-5 if vote == "hard" else QUANT_TOL), (task, vote)
    with pytest.raises(ValueError, match="TFLite files only"):
        export(ck, tmp_path / "x.onnx", "onnx", seq_len=8)
