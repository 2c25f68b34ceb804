"""Issue 16's training pieces against independent references: gathered-row embedding quantization, length
buckets, unlabeled rows, LSQ step clamping, extra text deduplication, independent members, ensemble statistics."""
import math

import numpy as np
import pytest
import torch

from bebert_deploy.models.layers import QuantEmbedding
from bebert_deploy.models.quantizers import binarize_weight, ternarize_weight
from bebert_deploy.training.ensemble_stats import fit_vote_weights, mcnemar, soft_vote
from bebert_deploy.training.loop import TensorData, clamp_steps, length_batches, resolve_device


@pytest.mark.parametrize("mode,ref", [("binary", binarize_weight), ("ternary", ternarize_weight)])
def test_embedding_quantizes_gathered_rows_like_the_whole_table(mode, ref):
    torch.manual_seed(0)
    emb = QuantEmbedding(50, 8, mode, padding_idx=0)
    ids = torch.randint(0, 50, (3, 7))
    ids[0, -2:] = 0
    out = emb(ids)
    table = ref(emb.weight, True)  # the old path: quantize every row, then gather
    np.testing.assert_allclose(out.detach().numpy(), table[ids].detach().numpy(), rtol=0, atol=1e-7)
    out.sum().backward()
    g_new = emb.weight.grad.clone()
    emb.weight.grad = None
    torch.nn.functional.embedding(ids, ref(emb.weight, True), 0).sum().backward()
    np.testing.assert_allclose(g_new.numpy(), emb.weight.grad.numpy(), rtol=0, atol=1e-6)


def test_length_batches_cover_every_row_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    order = rng.permutation(1000)
    batches = length_batches(order, lengths, 32, np.random.default_rng(1), window=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    # within a batch, lengths are close (sorted windows): mean spread far below that of random batches
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    rand_spread = np.mean([lengths[order[i:i + 32]].max() - lengths[order[i:i + 32]].min() for i in range(0, 1000, 32)])
    assert spread < rand_spread / 3


def test_batch_trims_padding_columns_only():
    ids = torch.tensor([[2, 5, 3, 0, 0, 0], [2, 6, 7, 8, 3, 0]])
    mask = (ids != 0).long()
    d = TensorData(ids, mask, torch.zeros_like(ids), torch.tensor([0, 1]))
    b = d.batch(torch.tensor([0, 1]), trim=True)
    assert b["input_ids"].shape == (2, 5)
    assert torch.equal(b["input_ids"], ids[:, :5])
    assert d.batch(torch.tensor([0]), trim=True)["input_ids"].shape == (1, 3)


def test_clamp_steps_keeps_lsq_steps_positive():
    from bebert_deploy.models.quantizers import make_act_quantizer

    q = torch.nn.Sequential(make_act_quantizer(4, True))
    with torch.no_grad():
        q[0].step.fill_(-0.5)
    clamp_steps(q)
    assert float(q[0].step.detach()) > 0


def test_resolve_device_refuses_cuda_without_one():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_extra_text_file_is_deduplicated_against_held_out(tmp_path):
    from bebert_deploy.data.extra_text import augmented, extra_sentences, normalize

    f = tmp_path / "corpus.txt"
    f.write_text("A fine film.\nA FINE film!\nsomething new here\n\nthe test sentence\n")
    out = extra_sentences([str(f)], exclude=["The test sentence."])
    assert out == ["A fine film.", "something new here"]
    aug = augmented(["one two three four five six"], 3, seed=0)
    assert all(normalize(a) != "one two three four five six" for a in aug)
    assert all(set(a.split()) <= set("one two three four five six".split()) for a in aug)
    with pytest.raises(ValueError, match="unknown extra text"):
        extra_sentences(["no-such-corpus"], [])


def test_unlabeled_rows_get_no_hard_label_loss():
    from bebert_deploy.data.tasks import get_task
    from bebert_deploy.training.loop import StageSpec, _stage_loss
    from bebert_deploy.training.kd import prediction_loss, task_loss

    task = get_task("rotten-tomatoes")
    s = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.9]])
    t = torch.tensor([[0.1, 0.2], [0.7, -0.5], [0.0, 0.3]])
    labels = torch.tensor([1, -1, 0])
    spec = StageSpec(1, 1e-3, "pred", hard_weight=0.5)
    got = _stage_loss(spec, s, {"labels": labels}, task, None, None, t, None, False)
    want = prediction_loss(s, t, False) + 0.5 * task_loss(s[[0, 2]], labels[[0, 2]], False)
    assert torch.allclose(got, want)
    spec_task = StageSpec(1, 1e-3, "task")
    got = _stage_loss(spec_task, s, {"labels": labels}, task, None, None, None, None, False)
    assert torch.allclose(got, task_loss(s[[0, 2]], labels[[0, 2]], False))


def test_mcnemar_exact_against_binomial_reference():
    a = np.array([1] * 10 + [0] * 2 + [1] * 50, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 50, bool)
    r = mcnemar(a, b)
    assert (r["b"], r["c"]) == (10, 2)
    ref = 2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12
    assert r["p"] == pytest.approx(ref)
    assert mcnemar(a, a)["p"] == 1.0


def test_vote_weights_are_fitted_on_dev():
    gold = np.array([0, 1, 0, 1, 1, 0])
    good = np.stack([np.where(gold == 1, -1.0, 1.0), np.where(gold == 1, 1.0, -1.0)], 1)
    bad = -good
    w = fit_vote_weights([good, bad], gold)
    assert w[0] > w[1]
    assert (soft_vote([good, bad], w).argmax(1) == gold).all()


def test_independent_members_train_and_vote_equally(tmp_path, tiny_base, tiny_data):
    from bebert_deploy.checkpoint import read_manifest
    from bebert_deploy.config import BoostConfig, TrainConfig
    from bebert_deploy.training.pipeline import train_bebert

    cfg = TrainConfig(data_dir=str(tiny_data), base=str(tiny_base), max_len=16, batch_size=16, teacher_epochs=1,
                      ternary_epochs=1, member_epochs=1, lr=1e-3, teacher_lr=1e-3, ensemble="independent",
                      augment=1, device="cpu", boost=BoostConfig(members=2))
    s = train_bebert(cfg, tmp_path / "ck")
    assert {"half_fp", "ternary", "member0", "half_fp-m1", "ternary-m1", "member1"} <= set(s["stages"])
    assert s["extra_examples"] > 0
    steps = s["stages"]["member0"]["lsq_steps"]
    assert steps["after"] and all(v > 0 for v in steps["after"].values())
    man = read_manifest(tmp_path / "ck")
    assert [m.alpha for m in man.members] == [1.0, 1.0] and man.vote == "soft"


def test_trimmed_padding_leaves_full_precision_logits_unchanged(tiny_base, tiny_data):
    from bebert_deploy.config import TrainConfig
    from bebert_deploy.data.tasks import get_task
    from bebert_deploy.tokenizer import load_tokenizer
    from bebert_deploy.training.pipeline import build_fp_model, load_split, predict_logits

    task = get_task("rotten-tomatoes")
    data = load_split(TrainConfig(data_dir=str(tiny_data), max_len=32), task, "dev", load_tokenizer(tiny_base), None)
    assert int(data.attention_mask.sum(1).max()) < 32  # the rows are padded
    model = build_fp_model(tiny_base, task)
    np.testing.assert_allclose(predict_logits(model, data, 8, trim=True), predict_logits(model, data, 8), atol=1e-5)


def test_checkpoint_files_respect_the_umask(tmp_path, tiny_base):
    import os
    import stat

    from bebert_deploy.checkpoint import save_checkpoint
    from bebert_deploy.data.tasks import get_task
    from bebert_deploy.models.bert import BertArch, BertClassifier, QuantConfig

    arch = BertArch.from_hf_config(tiny_base, 2)
    m = BertClassifier(arch, QuantConfig())
    old = os.umask(0o022)
    try:
        out = save_checkpoint(tmp_path / "ck", [m], [1.0], get_task("rotten-tomatoes"), 16, tiny_base)
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()}
    assert modes["member_0.safetensors"] == 0o644 and all(v == 0o644 for v in modes.values()), modes


def test_bootstrap_members_see_the_teacher_logits_of_their_own_rows(tmp_path, tiny_base, tiny_data, monkeypatch):
    from bebert_deploy.config import BoostConfig, TrainConfig
    from bebert_deploy.training import pipeline
    from bebert_deploy.training.pipeline import predict_logits, train_bebert

    seen = []
    real_fit = pipeline.fit

    def spy(model, train, dev, task, spec, teacher=None, *args, **kw):
        # fit(model, train, dev, task, spec, teacher, teacher_heads, sample_weights, resample, teacher_logits)
        t_log = kw.get("teacher_logits", args[3] if len(args) > 3 else None)
        if t_log is not None and spec.desc.startswith("member"):
            seen.append((train, teacher, t_log.clone()))
        return real_fit(model, train, dev, task, spec, teacher, *args, **kw)

    monkeypatch.setattr(pipeline, "fit", spy)
    cfg = TrainConfig(data_dir=str(tiny_data), base=str(tiny_base), max_len=16, batch_size=16, teacher_epochs=1,
                      half_distill_epochs=0, ternary_epochs=1, member_epochs=1, lr=1e-3, teacher_lr=1e-3,
                      bootstrap=True, device="cpu", boost=BoostConfig(members=1))
    train_bebert(cfg, tmp_path / "ck")
    assert seen
    for data, teacher, t_log in seen:
        # the bootstrap sample reorders and repeats rows: the cached logits must follow the sample
        np.testing.assert_allclose(t_log.numpy(), predict_logits(teacher, data, 64, trim=True), atol=1e-5)
