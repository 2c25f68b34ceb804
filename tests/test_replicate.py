"""The accuracy-table aggregation of scripts/replicate.py on rows worked by hand."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("replicate", ROOT / "scripts/replicate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(model, kd, n, seed, acc, teacher, noise_std, secs):
    return {"model": model, "kd": kd, "members": n, "tws": True, "seed": seed, "metric": "accuracy",
            "test": {"accuracy": acc}, "teacher_test": {"accuracy": teacher}, "noise_mean": acc,
            "noise_std": noise_std, "train_seconds": secs, "size_mb": 5.0 * n}


def test_write_results_aggregates_over_seeds(tmp_path):
    rep = _load()
    rows = [_row("BinaryBERT", "A", 1, 1, 0.70, 0.80, 0.02, 100), _row("BinaryBERT", "A", 1, 2, 0.74, 0.82, 0.04, 120),
            _row("BEBERT", "A", 2, 1, 0.76, 0.80, 0.01, 200), _row("BEBERT", "A", 2, 2, 0.78, 0.82, 0.01, 220)]
    rep.write_results(rows, tmp_path)
    res = json.loads((tmp_path / "accuracy.json").read_text())
    table = {(t["model"], t["members"]): t for t in res["table"]}
    teacher = table[("full precision (teacher)", 1)]
    assert teacher["seeds"] == 2 and teacher["metric_mean"] == pytest.approx(0.81)
    single = table[("BinaryBERT", 1)]
    assert single["metric_mean"] == pytest.approx(0.72) and single["metric_std"] == pytest.approx(0.02)
    assert single["noise_std_mean"] == pytest.approx(0.03) and single["train_seconds"] == pytest.approx(110)
    assert table[("BEBERT", 2)]["size_mb"] == 10.0
    md = (tmp_path / "accuracy.md").read_text()
    assert "| BEBERT | A | 2 | 10.0 | 0.7700 ± 0.0100 |" in md
