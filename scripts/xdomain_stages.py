"""Where a member loses the teacher's reach: in-domain dev and cross-domain accuracy after every step of the
binary start (issue 16, item 7), from one trained teacher.

    python scripts/xdomain_stages.py --teacher CKPT_DIR --xdomain FILE.tsv [--out results/xdomain_stages.json]
                                     [--data-dir DIR] [--base DIR] [--max-len N]
                                     [--extra-text none|NAMES|FILE.txt] [--ablations] [--two-stage] [--member]
    python scripts/xdomain_stages.py --merge RUN.json RUN2.json --out results/xdomain_stages.json

Writes the JSON and a Markdown table beside it (same name, .md); --merge joins the steps of several runs of the
same teacher (a step met twice keeps its first row).

Steps, each scored on the task's dev split and on the cross-domain TSV (which no step trains on):
teacher -> its word table binarized with nothing retrained (how much the 1-bit table alone loses) -> width-pruned
(no training) -> pruned and distilled (fp32, half width) -> ternary W2-E2-A4 (trained) -> TWS binary split
(no training yet; the members start here). The pruning, distillation, ternary and TWS steps are the pipeline's own
(``train_bebert``'s binary start, ``_binary_init``, with the config defaults and seed offset 0), scored through its
per-step hook. The numbers say which step to fix. ``--ablations`` then trains the quantized step again from
the same distilled half-width model with one part of the quantization left out at a time (float word table;
float weights with 4-bit activations; 8-bit activations). ``--two-stage`` runs the pipeline's binary start a second
time with BinaryBERT's two-stage KD (``TrainConfig.kd='two_stage'``: attention + hidden-state MSE, then prediction KD)
and scores its distilled and ternary steps: whether matching the teacher's layers keeps more of its reach than
prediction KD alone. ``--member`` also trains and scores the first binary member after each binary start, as the pipeline does
(member 0's seeds). Without ``--teacher`` a teacher is trained first (``--seed``). Nothing here chooses a model on
the cross-domain set.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="checkpoint folder holding a full-precision teacher (default: train one)")
    ap.add_argument("--xdomain", help="TSV in the task's layout from another domain")
    ap.add_argument("--merge", nargs="+", help="earlier output JSON files to join (no training)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--base", default=None, help="the teacher's base model folder (its tokenizer; default: built-in)")
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--extra-text", default="none")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default="results/xdomain_stages.json")
    ap.add_argument("--ablations", action="store_true", help="also the quantized step with one part left out")
    ap.add_argument("--two-stage", action="store_true", help="also the binary start with two-stage KD")
    ap.add_argument("--member", action="store_true", help="also train and score member 0 after each binary start")
    a = ap.parse_args(argv)
    if a.merge:
        runs = [json.loads(Path(f).read_text()) for f in a.merge]
        rows, seen = [], set()
        for r in runs:
            for row in r["rows"]:
                if row["step"] not in seen:
                    seen.add(row["step"])
                    rows.append(row)
        write_report(dict(runs[0], rows=rows, merged_from=[str(f) for f in a.merge]), Path(a.out))
        return
    if not a.xdomain:
        ap.error("--xdomain is required (or --merge)")

    import torch

    from bebert_deploy.config import TrainConfig
    from bebert_deploy.data.tasks import read_tsv
    from bebert_deploy.training import pipeline as P
    from bebert_deploy.training.loop import evaluate_logits, predict_logits
    from bebert_deploy.training.prune import with_quant

    cfg = TrainConfig(teacher=a.teacher, data_dir=a.data_dir, extra_text=a.extra_text, augment=0, seed=a.seed,
                      batch_size=32)
    cfg = replace(cfg, **{k: v for k, v in (("base", a.base), ("max_len", a.max_len)) if v is not None})
    run = P._Run(cfg)
    P._train_teacher(run)
    xdom = P.tensorize(read_tsv(Path(a.xdomain), run.task), run.task, run.tokenizer, cfg.max_len)
    rows: list[dict] = []

    def score(name: str, model, t0: float) -> None:
        model.eval()
        r = {"step": name, "seconds": round(time.perf_counter() - t0, 1)}
        for split, data in (("dev", run.dev), ("xdomain", xdom)):
            r[split] = evaluate_logits(run.task, predict_logits(model, data, 256), data.labels.numpy())["accuracy"]
        rows.append(r)
        print(json.dumps(r), flush=True)

    t0 = time.perf_counter()
    score("teacher", run.teacher, t0)
    score("teacher, 1-bit word table (not retrained)",
          with_quant(run.teacher, replace(run.teacher.quant, embed_mode="binary")), t0)
    names = {"pruned": "half width, pruned (not retrained)", "distilled": "half width, distilled (fp32)",
             "ternary": "ternary W2-E2-A4 (trained)", "tws": "TWS binary W1-E1-A4 (split, not retrained)"}
    kept: dict = {}
    clock = [time.perf_counter()]

    def on_step(name: str, model) -> None:
        if name == "distilled" and a.ablations:
            kept["half"] = copy.deepcopy(model)  # the ablations' start
        score(names[name], model, clock[0])
        clock[0] = time.perf_counter()

    def member(init, kd: str) -> None:  # the pipeline's member 0 from this binary start
        t0 = time.perf_counter()
        model, _ = P._train_member(run, init, 0, 0)
        score(f"binary member W1-E1-A4 (trained, {kd})", model, t0)

    init = P._binary_init(run, 0, "", on_step)
    if a.member:
        member(init, "prediction KD")
    q = cfg.quant
    steps = [("ternary W2, float word table, A4 (trained)", replace(q, weight_mode="ternary", embed_mode="fp")),
             ("float weights and word table, A4 (trained)", replace(q, weight_mode="fp", embed_mode="fp")),
             ("ternary W2-E2, A8 (trained)", replace(q, weight_mode="ternary", embed_mode="ternary", act_bits=8))
             ] if a.ablations else []
    for name, qc in steps:
        model = with_quant(kept["half"], replace(qc, split=False)).to(run.device)
        t0 = time.perf_counter()
        run.fit(model, run.kd_data(), run.spec(cfg.ternary_epochs, cfg.lr, "pred", name, 0))
        score(name, model, t0)
    if a.two_stage:  # the same pruning and distillation (same seeds), then the ternary stage with two-stage KD
        run.cfg = replace(cfg, kd="two_stage")
        names.update(distilled="half width, distilled (fp32; the two-stage pass, same seeds)",
                     ternary="ternary W2-E2-A4, two-stage KD (trained)", pruned=None, tws=None)
        clock[0] = time.perf_counter()

        def on_scored_step(name: str, model) -> None:  # pruned and tws repeat the first pass: not scored again
            if names[name]:
                on_step(name, model)

        init = P._binary_init(run, 0, "", on_scored_step)
        if a.member:
            member(init, "two-stage KD")
        run.cfg = cfg
    write_report({"teacher": a.teacher or f"trained here (seed {a.seed})", "xdomain": a.xdomain, "config": cfg.to_dict(),
                  "threads": torch.get_num_threads(), "rows": rows}, Path(a.out))


def write_report(payload: dict, out: Path) -> None:
    """``out`` (JSON) and the same rows as a Markdown table (out with .md), both written atomically."""
    from bebert_deploy.io import atomic_path

    rows = payload["rows"]
    teacher = next((r for r in rows if r["step"] == "teacher"), rows[0])
    src = payload["teacher"]
    src = f"a teacher {src}" if src.startswith("trained here") else f"the teacher of `{Path(src).name}`"
    lines = ["# Where a member loses the teacher's reach (issue 16)", "",
             f"Generated by `scripts/xdomain_stages.py` from {src}; cross-domain set "
             f"`{Path(payload['xdomain']).name}` (never trained on). Each quantized step is trained from the same "
             "distilled half-width model on the task's training sentences with prediction KD (the pipeline's "
             "defaults) unless its row says two-stage KD; dev = the task's dev split.", "",
             "| step | dev | cross-domain | cross-domain - teacher | seconds (train + score) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['dev']:.4f} | {r['xdomain']:.4f} | "
                     f"{100 * (r['xdomain'] - teacher['xdomain']):+.2f} pts | {r['seconds']:.0f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
