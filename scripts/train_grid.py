"""Issue 16's accuracy grid at full data: per seed one full-precision teacher, then each ensemble mode, then every
member's logits on dev, test, a cross-domain set and noisy-embedding copies of test, written as JSON. The tables
(and every choice: weights fitted on dev, never on test) are made from those files by
``scripts/replicate.py --grid DIR``.

    python scripts/train_grid.py --out grid [--seeds 1,2,3] [--modes indep,boost] [--device auto]
                                 [--base DIR] [--data-dir DIR] [--extra-text NAMES|FILE.txt] [--xdomain TSV]
                                 [--deadline-s S] [--parallel N]

With --parallel N the seeds run as N processes side by side (one GPU is shared: small models leave it idle
between kernel launches). Each finished run is skipped on a rerun; a run cut by --deadline-s leaves nothing
half-written (checkpoints and JSON are written atomically). Timings of runs trained side by side are
reported as such, never as training-time results.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

MODES = {
    # name: (TrainConfig overrides, members)
    "indep": (dict(ensemble="independent"), 3),
    "boost": (dict(ensemble="boost"), 3),
    "indep-noextra": (dict(ensemble="independent", extra_text="none", augment=0), 2),
    "tied-noextra": (dict(ensemble="independent", extra_text="none", augment=0, tws_tied=True), 2),
    # Q, K and V with one input quantizer (one GEMM for the three in the exported files)
    "qkv-noextra": (dict(ensemble="independent", extra_text="none", augment=0, quant=dict(qkv_shared_act=True)), 2),
    # both TWS halves of each slot with one input quantizer (one table set per slot), and with Q/K/V's shared too
    "halves-noextra": (dict(ensemble="independent", extra_text="none", augment=0, quant=dict(tws_shared_act=True)), 2),
    "halfqkv-noextra": (dict(ensemble="independent", extra_text="none", augment=0,
                             quant=dict(qkv_shared_act=True, tws_shared_act=True)), 2),
    "shared-noextra": (dict(ensemble="independent", extra_text="none", augment=0, share_embedding=True), 2),
    # the default extra text (--extra-text) distilled into 2 members, no augmentation: the cross-domain recipe at
    # the cost of one more pass over ~13k teacher-labelled sentences per stage
    "indep-extra": (dict(ensemble="independent", augment=0), 2),
    # the recipe's halves with BinaryBERT's two-stage KD (attention + hidden-state MSE, then prediction KD) in the
    # ternary and member stages: whether matching the teacher's layers keeps more of its reach out of domain
    "halves-2stage": (dict(ensemble="independent", extra_text="none", augment=0, kd="two_stage",
                           quant=dict(tws_shared_act=True)), 2),
    "halves-extra": (dict(ensemble="independent", augment=0, quant=dict(tws_shared_act=True)), 2),
}
NOISE_STDS = (0.1, 0.3, 0.5, 1.0)
NOISE_SEEDS = 3


def _write_json(path: Path, obj) -> None:
    from bebert_deploy.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def member_outputs(ck: Path, data_dir: str | None, xdomain: str | None, device, noise_stds=NOISE_STDS) -> dict:
    """Every member's and the teacher's logits (float lists [n][K]) on dev, test, the cross-domain TSV and
    noisy copies of test, plus gold labels and the checkpoint's alphas."""
    import torch

    from bebert_deploy.checkpoint import load_checkpoint
    from bebert_deploy.config import TrainConfig
    from bebert_deploy.data.tasks import get_task, read_tsv
    from bebert_deploy.tokenizer import load_tokenizer
    from bebert_deploy.training.pipeline import load_split, predict_logits, tensorize

    ck_ = load_checkpoint(ck, with_teacher=True)
    man = ck_.manifest
    task = get_task(man.task)
    tok = load_tokenizer(ck_.path)
    cfg = TrainConfig(task=man.task, data_dir=data_dir, max_len=man.max_len)
    splits = {s: load_split(cfg, task, s, tok, None) for s in ("dev", "test")}
    if xdomain:
        splits["xdomain"] = tensorize(read_tsv(Path(xdomain), task), task, tok, man.max_len)
    models = {"teacher": ck_.teacher, **{f"m{i}": m for i, m in enumerate(ck_.members)}}
    out = {"alphas": [m.alpha for m in man.members], "vote": man.vote, "gold": {}, "logits": {}}
    for s, data in splits.items():
        out["gold"][s] = data.labels.tolist()
        for name, m in models.items():
            m.to(device)
            out["logits"][f"{s}/{name}"] = predict_logits(m, data, 256).round(5).tolist()
    for std in noise_stds:
        for seed in range(NOISE_SEEDS):
            torch.manual_seed(seed)
            for name, m in models.items():
                out["logits"][f"test~{std}~{seed}/{name}"] = predict_logits(
                    m, splits["test"], 256, embedding_noise_std=std).round(5).tolist()
    return out


def run_seed(a, seed: int) -> None:
    """Every mode of one seed, in order; the first mode trains the teacher that the others reuse."""
    import torch

    from bebert_deploy.config import BoostConfig, TrainConfig
    from bebert_deploy.models.bert import QuantConfig
    from bebert_deploy.training.loop import resolve_device
    from bebert_deploy.training.pipeline import train_bebert

    out = Path(a.out)
    device = resolve_device(a.device)
    # every mode starts from untied halves (QuantConfig()), as the runs before --tws-shared-act became the recipe
    # did; modes that share a quantizer say so
    base = TrainConfig(base=a.base, data_dir=a.data_dir, seed=seed, device=a.device, extra_text=a.extra_text,
                       quant=QuantConfig(),
                       augment=a.augment, batch_size=a.batch_size, teacher_epochs=a.teacher_epochs,
                       ternary_epochs=a.ternary_epochs, member_epochs=a.member_epochs,
                       half_distill_epochs=a.half_distill_epochs, lr=a.lr, max_len=a.max_len)
    teacher = None
    for mode in a.modes.split(","):
        name = f"{mode}-s{seed}"
        res_file = out / f"{name}.json"
        ck = out / "runs" / name
        if res_file.is_file():
            teacher = teacher or str(ck)
            continue
        if time.time() > a.deadline:
            print(f"[{name}] skipped: deadline", flush=True)
            return
        over, members = MODES[mode]
        over = dict(over)
        cfg = replace(base, teacher=teacher, boost=BoostConfig(members=members),
                      quant=replace(base.quant, **over.pop("quant", {})), **over)
        t0 = time.time()
        summary = train_bebert(cfg, ck)
        wall = time.time() - t0
        outputs = member_outputs(ck, a.data_dir, a.xdomain, device, a.noise_stds)
        _write_json(res_file, {"run": name, "mode": mode, "seed": seed, "config": cfg.to_dict(), "summary": summary,
                               "wall_s": wall, "side_by_side": a.side_by_side, "threads": torch.get_num_threads(),
                               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                               **outputs})
        print(f"[{name}] done in {wall:.0f}s: ensemble dev {summary['ensemble_dev']}", flush=True)
        teacher = teacher or str(ck)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/grid")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--modes", default="indep,boost")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--base", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--extra-text", default="vader-tweets,vader-nyt,pang-lee")
    ap.add_argument("--augment", type=int, default=1)
    ap.add_argument("--xdomain", default=None, help="TSV in the task's layout from another domain (cross-domain rows)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--half-distill-epochs", type=int, default=1)
    ap.add_argument("--ternary-epochs", type=int, default=2)
    ap.add_argument("--member-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--noise", default=",".join(str(x) for x in NOISE_STDS),
                    help="embedding-noise stds of the robustness sweep ('none' skips it: ~9 CPU minutes per run)")
    ap.add_argument("--deadline-s", type=float, default=None, help="start no new run after this many seconds")
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)  # absolute, for the children
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.noise_stds = () if a.noise == "none" else tuple(float(x) for x in a.noise.split(","))
    a.deadline = a.deadline or (time.time() + a.deadline_s if a.deadline_s else float("inf"))
    seeds = [int(s) for s in a.seeds.split(",")]
    a.side_by_side = a.child  # only the children of a --parallel run share the machine
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.parallel > 1 and len(seeds) > 1:
        procs = []
        for s in seeds:
            args = [x for x in (argv if argv is not None else sys.argv[1:])]
            cmd = [sys.executable, __file__, *args, "--seeds", str(s), "--parallel", "1", "--child", "--deadline", str(a.deadline)]
            log = open(Path(a.out) / f"seed{s}.log", "w")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_MININTERVAL": "30"}))
        sys.exit(max(p.wait() for p in procs))
    for s in seeds:
        run_seed(a, s)


if __name__ == "__main__":
    main()
