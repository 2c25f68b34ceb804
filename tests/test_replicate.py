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


def _summary(threads, ternary_s, member_s):
    st = {"teacher": {"seconds": 0.0}, "ternary": {"epochs": 1, "seconds": ternary_s}}
    st.update({f"member{i}": {"epochs": 2, "seconds": s} for i, s in enumerate(member_s)})
    return {"stages": st, "threads": threads} if threads else {"stages": st}


def test_training_times_compares_only_equal_condition_runs(tmp_path):
    rep = _load()
    runs = tmp_path / "runs"
    runs.mkdir()
    summaries = {"kdA-s1-lr0.0005": _summary(2, 50, [100, 100, 100]), "kdA-s2-lr0.0005": _summary(2, 70, [120, 120, 120]),
                 "kdC-s1-lr0.0005": _summary(2, 100, [300, 300, 300]),
                 "kdC-s2-lr0.0005": _summary(None, 1, [1, 1, 1]),   # unknown conditions: left out
                 "kdB-s1-lr0.0005": _summary(1, 60, [200, 200, 200])}  # other thread count: left out
    for name, s in summaries.items():
        (runs / f"{name}.summary.json").write_text(json.dumps(s))
    t = {r["kd"]: r for r in rep.training_times(runs.parent)}
    assert set(t) == {"A", "C"} and t["A"]["runs"] == 2 and t["C"]["runs"] == 1
    assert t["A"]["total_s"] == pytest.approx((350 + 430) / 2) and t["A"]["member_epoch_s"] == pytest.approx(55)
    assert t["C"]["total_s"] == 1000 and t["A"]["vs_C"] == pytest.approx(0.39)


def test_diversity_stats_on_hand_made_logits():
    import numpy as np

    rep = _load()
    gold = np.array([0, 1, 1, 0])
    m0 = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])   # right, right, wrong, right
    m1 = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])   # wrong, right, right, right
    m2 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])   # right, wrong, wrong, right
    d = rep.diversity_stats({"gold": gold, "logits": [m0, m1, m2], "alphas": [1.0, 1.0, 1.0], "vote": "hard"})
    assert d["member_acc"] == [0.75, 0.75, 0.5]
    assert d["disagree_with_0"] == [0.0, 0.5, 0.25]
    assert d["oracle_acc"] == 1.0
    # hard vote of equal alphas: 2 members tie -> class 0 (argmax picks the first); 3 members: majority
    assert d["ensemble_acc"][0] == 0.75 and d["ensemble_acc"][2] == 0.75
    # three members wrong on different sentences: the equal-weight majority is always right, while alphas 3/1/1
    # hand every decision to the first member
    onehot = np.eye(2)
    a, b, c = onehot[[1, 1, 1, 0]], onehot[[0, 0, 1, 0]], onehot[[0, 1, 0, 0]]
    d = rep.diversity_stats({"gold": gold, "logits": [a, b, c], "alphas": [3.0, 1.0, 1.0], "vote": "hard"})
    assert d["ensemble_acc"] == [0.75, 0.75, 0.75]
    assert d["equal_weight_acc"] == [0.75, 0.75, 1.0]
    assert d["oracle_acc"] == 1.0 and d["disagree_with_0"] == [0.0, 0.5, 0.5]


def test_pair_gains_on_hand_made_runs():
    """Two seeds' teachers and members on 4 sentences: the gain of each pair's equal vote over its better model
    (chosen on dev), grouped by pair kind."""
    import numpy as np

    spec = importlib.util.spec_from_file_location("grid_report", ROOT / "scripts/grid_report.py")
    gr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gr)
    gold = [0, 1, 1, 0]
    soft = {0: [0.6, 0.0], 1: [0.0, 0.6]}  # a weakly held right answer

    def lg(*ok):  # confident logits (3 for the chosen class), right where ok[i] else wrong
        return [[3.0 * (c == (g if o else 1 - g)) for c in (0, 1)] for g, o in zip(gold, ok)]

    def run(seed, teacher, m0, m1):
        L = {f"{s}/{n}": v for s in ("dev", "test") for n, v in (("teacher", teacher), ("m0", m0), ("m1", m1))}
        return {"mode": "indep-noextra", "seed": seed, "gold": {"dev": gold, "test": gold}, "logits": L}

    t1, t2 = lg(1, 1, 1, 0), lg(1, 1, 1, 0)  # the same mistake: nothing to gain
    a = lg(1, 1, 1, 0)
    b = [soft[0], soft[1], soft[1], soft[0]]  # right everywhere, weakly: a's confident error on sentence 4 wins
    g = gr.pair_gains([run(1, t1, a, a), run(2, t2, b, a)])
    assert [x["gain"] for x in g["members of one teacher"]] == [0.0, -0.25]
    assert [x["gain"] for x in g["two full-precision teachers"]] == [0.0]
    assert len(g["members of different teachers"]) == 4
    assert gr.pair_gains([run(1, t1, a, a)]) == {}  # one seed: no pairs across teachers
