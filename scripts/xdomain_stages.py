"""Where a member loses the teacher's reach: in-domain dev and cross-domain accuracy after every step of the
binary start (issue 16, item 7), from one trained teacher.

    python scripts/xdomain_stages.py --teacher CKPT_DIR --xdomain FILE.tsv [--out results/xdomain_stages.json]
                                     [--data-dir DIR] [--extra-text none|NAMES|FILE.txt] [--ablations [--skip-main]]
    python scripts/xdomain_stages.py --merge RUN.json RUN2.json --out results/xdomain_stages.json

Writes the JSON and a Markdown table beside it (same name, .md); --merge joins the steps of several runs of the
same teacher (a step met twice keeps its first row).

Steps, each scored on the task's dev split and on the cross-domain TSV (which no step trains on):
teacher -> its word table binarized with nothing retrained (how much the 1-bit table alone loses) -> width-pruned
(no training) -> pruned and distilled (fp32, half width) -> ternary W2-E2-A4 (trained) -> TWS binary split
(no training yet; the members start here). The steps call the functions ``train_bebert``'s binary start calls
(prune_width, fit, with_quant, tws_split) with the same config defaults, spelled out here so that each step's
model can be scored; only the 8 pruning batches are drawn differently (torch's generator, seeded), so the models
match a pipeline run's in recipe, not bit for bit. The numbers say which step to fix. ``--ablations`` then trains the quantized step again from
the same distilled half-width model with one part of the quantization left out at a time (float word table;
float weights with 4-bit activations; 8-bit activations). Nothing here chooses a model on the cross-domain set.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="checkpoint folder holding a full-precision teacher")
    ap.add_argument("--xdomain", help="TSV in the task's layout from another domain")
    ap.add_argument("--merge", nargs="+", help="earlier output JSON files to join (no training)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--extra-text", default="none")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default="results/xdomain_stages.json")
    ap.add_argument("--ablations", action="store_true", help="also the quantized step with one part left out")
    ap.add_argument("--skip-main", action="store_true", help="with --ablations: skip the ternary and TWS steps")
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
    if not (a.teacher and a.xdomain):
        ap.error("--teacher and --xdomain are required (or --merge)")

    import torch

    from bebert_deploy.config import TrainConfig
    from bebert_deploy.data.tasks import read_tsv
    from bebert_deploy.training import pipeline as P
    from bebert_deploy.training.loop import evaluate_logits, predict_logits
    from bebert_deploy.training.prune import prune_width, with_quant
    from bebert_deploy.training.tws import tws_split

    cfg = TrainConfig(teacher=a.teacher, data_dir=a.data_dir, extra_text=a.extra_text, augment=0, seed=a.seed,
                      batch_size=32)
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
    pick = torch.randperm(len(run.train), generator=torch.Generator().manual_seed(a.seed))[:8 * cfg.batch_size]
    batches = [run.train.batch(pick[s:s + cfg.batch_size], run.device, trim=True)
               for s in range(0, len(pick), cfg.batch_size)]
    half, run.teacher_heads = prune_width(run.teacher, batches, cfg.width, run.task.is_regression)
    t0 = time.perf_counter()
    score("half width, pruned (not retrained)", half, t0)
    for p in half.parameters():
        p.requires_grad_(True)
    t0 = time.perf_counter()
    run.fit(half, run.kd_data(), run.spec(cfg.half_distill_epochs, cfg.teacher_lr * 2, "pred", "half-fp", 11))
    score("half width, distilled (fp32)", half, t0)
    q = cfg.quant
    steps = [] if a.skip_main else [("ternary W2-E2-A4 (trained)", replace(q, weight_mode="ternary", embed_mode="ternary"))]
    if a.ablations:
        steps += [("ternary W2, float word table, A4 (trained)", replace(q, weight_mode="ternary", embed_mode="fp")),
                  ("float weights and word table, A4 (trained)", replace(q, weight_mode="fp", embed_mode="fp")),
                  ("ternary W2-E2, A8 (trained)", replace(q, weight_mode="ternary", embed_mode="ternary", act_bits=8))]
    for name, qc in steps:
        model = with_quant(half, replace(qc, split=False))
        t0 = time.perf_counter()
        run.fit(model, run.kd_data(), run.spec(cfg.ternary_epochs, cfg.lr, "pred", name, 0))
        score(name, model, t0)
        if name.startswith("ternary W2-E2-A4"):
            t0 = time.perf_counter()
            score("TWS binary W1-E1-A4 (split, not retrained)", tws_split(model.cpu()), t0)
            model.to(run.device)
    write_report({"teacher": a.teacher, "xdomain": a.xdomain, "config": cfg.to_dict(),
                  "threads": torch.get_num_threads(), "rows": rows}, Path(a.out))


def write_report(payload: dict, out: Path) -> None:
    """``out`` (JSON) and the same rows as a Markdown table (out with .md), both written atomically."""
    from bebert_deploy.io import atomic_path

    rows = payload["rows"]
    teacher = next((r for r in rows if r["step"] == "teacher"), rows[0])
    lines = ["# Where a member loses the teacher's reach (issue 16)", "",
             f"Generated by `scripts/xdomain_stages.py` from the teacher of `{Path(payload['teacher']).name}`; cross-domain set "
             f"`{Path(payload['xdomain']).name}` (never trained on). Each quantized step is trained from the same "
             "distilled half-width model with prediction KD on the task's training sentences (the pipeline's "
             "defaults); dev = the task's dev split.", "",
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
