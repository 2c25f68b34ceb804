"""The int8 baselines quantize the word-embedding table too (issue 15, item 8), so BEBERT's size ratios compare
against a fair int8 model: on a tiny BERT whose vocabulary / hidden ratio is MiniLM's (V = 80 H; the word table
is then most of the weights, as in MiniLM-L6), the int8 file must be < 0.3x the fp32 file in both formats, its
stored table must dequantize to the PyTorch table within half a quantization step, and its outputs must stay
within the int8 bound of the PyTorch model's."""
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from bebert_deploy.checkpoint import save_checkpoint
from bebert_deploy.data.tasks import get_task
from bebert_deploy.exporters.export import export
from bebert_deploy.models.bert import FP_QUANT, BertArch, BertClassifier, QuantConfig
from bebert_deploy.runtime.session import Session

from test_onnx_export import _inputs

HIDDEN, VOCAB = 64, 64 * 80  # all-MiniLM-L6-v2: 384 hidden, 30522 words (~79.5 per hidden unit)
INT8_TOL = 0.1               # the int8 bound of the parity tests (dynamic-range int8 tracks the fp32 model)
SIZE_RATIO = 0.3


@pytest.fixture(scope="module")
def realistic_ckpt(tmp_path_factory):
    """(checkpoint path, teacher): a random 2-layer teacher with V = 80 H and one binary member (a checkpoint
    needs one). The classifier is scaled so probabilities spread over (0, 1): at BERT's init scale every
    probability is ~0.5 and any int8 bound would hold trivially."""
    torch.manual_seed(3)
    arch = BertArch(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=2, num_heads=4, head_dim=16,
                    intermediate_size=4 * HIDDEN, max_position_embeddings=64, num_labels=2)
    teacher = BertClassifier(arch, FP_QUANT).eval()
    with torch.no_grad():
        for p in teacher.classifier.parameters():
            p.mul_(8.0)
    member = BertClassifier(replace(arch, num_heads=2, intermediate_size=2 * HIDDEN),
                            QuantConfig(weight_mode="binary", embed_mode="binary", act_bits=4, split=True)).eval()
    ids, mask, types = _inputs(VOCAB)
    with torch.no_grad():
        member(ids, mask, types)  # initialises the LSQ steps
    tok = tmp_path_factory.mktemp("tok")
    ck = save_checkpoint(tmp_path_factory.mktemp("ck") / "ck", [member], [1.0], get_task("rotten-tomatoes"), 16, tok,
                         teacher=teacher)
    return ck, teacher


def _reference(teacher, seed):
    ids, mask, types = _inputs(VOCAB, n=8, seed=seed)
    with torch.no_grad():
        ref = torch.softmax(teacher(ids, mask, types), -1).numpy()
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    return feed, ref


def _tflite_const(path, name):
    """The constant tensor ``name`` of a TFLite file as a numpy array (its stored dtype and shape)."""
    from ai_edge_litert import schema_py_generated as tfl

    from bebert_deploy.runtime.tflite_file import numpy_dtypes

    m = tfl.Model.GetRootAs(path.read_bytes(), 0)
    sg = m.Subgraphs(0)
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        if t.Name().decode() == name:
            data = m.Buffers(t.Buffer()).DataAsNumpy()
            return np.frombuffer(data.tobytes(), numpy_dtypes()[t.Type()]).reshape(tuple(t.ShapeAsNumpy()))
    raise KeyError(name)


def test_tflite_int8_quantizes_the_word_table(realistic_ckpt, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    ck, teacher = realistic_ckpt
    fp = export(ck, tmp_path / "fp32.tflite", "tflite", "fp32")
    q = export(ck, tmp_path / "int8.tflite", "tflite", "int8")
    assert q.stat().st_size < SIZE_RATIO * fp.stat().st_size, (q.stat().st_size, fp.stat().st_size)
    # the stored rows: int8 [V, H] and one float scale per row, within half a step of PyTorch's table
    rows, scale = _tflite_const(q, "m0.word.table_int8"), _tflite_const(q, "m0.word.row_scale")
    assert rows.dtype == np.int8 and rows.shape == (VOCAB, HIDDEN) and scale.shape == (VOCAB,)
    table = teacher.word_embeddings.weight.detach().numpy()
    assert np.all(np.abs(rows * scale[:, None] - table) <= 0.5 * scale[:, None] * (1 + 1e-5))
    # outputs: the stock interpreter with its default (XNNPACK) delegate, and the bebert runtime
    feed, ref = _reference(teacher, seed=6)
    assert ref.max() - ref.min() > 0.5  # the probabilities really spread (see the fixture)
    runner = Interpreter(model_path=str(q), num_threads=2).get_signature_runner("serving_default")
    stock = np.concatenate([runner(**{k: v[r:r + 1] for k, v in feed.items()})["probs"] for r in range(len(ref))])
    assert np.abs(stock - ref).max() < INT8_TOL
    assert np.abs(Session(q, threads=2).run(feed)["probs"] - ref).max() < INT8_TOL


def test_onnx_int8_quantizes_the_word_table(realistic_ckpt, tmp_path):
    # onnxruntime.quantization.quantize_dynamic quantizes a Gather whose data is an initializer (GatherQuant,
    # part of its default op set): the table is stored as 8-bit values with one scale and zero point, and a
    # DequantizeLinear widens the gathered rows only.
    ck, teacher = realistic_ckpt
    fp = export(ck, tmp_path / "fp32.onnx", "onnx", "fp32")
    q = export(ck, tmp_path / "int8.onnx", "onnx", "int8")
    assert q.stat().st_size < SIZE_RATIO * fp.stat().st_size, (q.stat().st_size, fp.stat().st_size)
    m = onnx.load(str(q))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    word = [n for n in m.graph.node if n.op_type == "DequantizeLinear"
            and producer[n.input[0]].op_type == "Gather" and inits.get(producer[n.input[0]].input[0]) is not None
            and inits[producer[n.input[0]].input[0]].shape == (VOCAB, HIDDEN)]
    assert len(word) == 1
    stored = inits[producer[word[0].input[0]].input[0]]
    scale, zero = inits[word[0].input[1]], inits[word[0].input[2]]
    assert stored.dtype in (np.int8, np.uint8) and scale.size == 1
    table = teacher.word_embeddings.weight.detach().numpy()
    assert np.all(np.abs((stored.astype(np.float32) - zero) * scale - table) <= 0.5 * scale * (1 + 1e-5))
    feed, ref = _reference(teacher, seed=7)
    assert np.abs(Session(q, threads=2).run(feed)["probs"] - ref).max() < INT8_TOL
