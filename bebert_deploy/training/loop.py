"""One training stage: optimiser, schedule, weighted/resampled batches, distillation, best-dev selection.

Runs unchanged on one CPU, one GPU, or several processes under ``torchrun`` (DDP, gloo on CPU): every rank
draws the same seeded index order per epoch and takes its own stride of it, so sample weights (indexed by
example) and resampling work identically in all cases.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bebert_deploy.data.metrics import compute_metrics
from bebert_deploy.data.tasks import TaskSpec

from .kd import bibert_loss, intermediate_loss, prediction_loss, task_loss


@dataclass
class TensorData:
    """Tokenized examples as tensors: ids/mask/types int64 [n, L], labels int64 [n] (float32 for regression)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, idx, device=None, trim: bool = False) -> dict[str, torch.Tensor]:
        """Rows ``idx`` as a dict of tensors on ``device``; ``trim`` drops the columns that are padding in every
        row (dynamic padding: sentences average ~25-30 tokens, the files pad to max_len)."""
        ids, mask, types = self.input_ids[idx], self.attention_mask[idx], self.token_type_ids[idx]
        if trim and ids.dim() == 2 and ids.shape[0]:
            L = max(1, int(mask.sum(1).max()))
            ids, mask, types = ids[:, :L], mask[:, :L], types[:, :L]
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": self.labels[idx]}
        return out if device is None else {k: v.to(device, non_blocking=True) for k, v in out.items()}

    def lengths(self) -> np.ndarray:
        """Tokens per row (int64 [n])."""
        return self.attention_mask.sum(1).numpy()

    @staticmethod
    def concat(parts: list["TensorData"]) -> "TensorData":
        """Rows of every part, in order (all parts share max_len)."""
        return TensorData(*(torch.cat([getattr(p, f) for p in parts]) for f in
                            ("input_ids", "attention_mask", "token_type_ids", "labels")))

    def subset(self, idx) -> "TensorData":
        idx = torch.as_tensor(idx)
        return TensorData(self.input_ids[idx], self.attention_mask[idx], self.token_type_ids[idx], self.labels[idx])

    def to(self, device) -> "TensorData":
        return TensorData(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.token_type_ids, self.labels)))


def world() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun (gloo on CPU, nccl on GPU)."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), n) if n > 1 else (0, 1)


def is_main() -> bool:
    return world()[0] == 0


def resolve_device(name: str = "auto") -> torch.device:
    """'cpu', 'cuda' (error if none) or 'auto' (cuda when available) -> torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected cpu, cuda or auto")
    return torch.device(name)


def model_device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict_logits(model, data: TensorData, batch_size: int = 64, trim: bool = False, **kw) -> np.ndarray:
    """Logits float32 [n, K] of ``model`` in eval mode (restores its train/eval mode afterwards). ``trim`` drops
    all-padding columns per batch: exact for full-precision models only (an asymmetric activation quantizer's
    minimum sees the padded positions, so quantized members are evaluated at the padded length they deploy with)."""
    was = model.training
    model.eval()
    device = model_device(model)
    out = []
    for s in range(0, len(data), batch_size):
        b = data.batch(slice(s, s + batch_size), device, trim=trim)
        out.append(model(b["input_ids"], b["attention_mask"], b["token_type_ids"], **kw).float().cpu())
    model.train(was)
    return torch.cat(out).numpy()


def evaluate_logits(task: TaskSpec, logits: np.ndarray, labels) -> dict[str, float]:
    """Task metrics from logits [n, K] (or scores [n, 1] for regression)."""
    pred = logits[:, 0] if task.is_regression else logits.argmax(-1)
    return compute_metrics(task.metrics, pred, np.asarray(labels))


@dataclass
class StageSpec:
    """What one stage optimises. loss: 'task' (hard labels), 'pred' (prediction KD), 'inter' (stage-1 KD),
    'bibert' (BiBERT's prediction KD + direction-matching distillation). hard_weight > 0 adds that multiple of the
    hard-label loss to 'pred' on the labelled rows (rows labelled -1, teacher-labelled extra text, have none)."""

    epochs: int
    lr: float
    loss: str = "task"
    step_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_size: int = 32
    seed: int = 42
    desc: str = "train"
    hard_weight: float = 0.0


def _param_groups(model, spec: StageSpec):
    decay, no_decay, steps = [], [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if n.endswith(".step"):
            steps.append(p)
        elif n.endswith("bias") or ".ln_" in n or n.startswith("ln_"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": spec.weight_decay, "lr": spec.lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": spec.lr},
            {"params": steps, "weight_decay": 0.0, "lr": spec.step_lr}]


def _epoch_order(n: int, epoch: int, spec: StageSpec, weights: np.ndarray | None, resample: bool) -> np.ndarray:
    rng = np.random.default_rng(spec.seed * 1000 + epoch)
    if resample:
        return rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    return rng.permutation(n)


def length_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   window: int = 50) -> list[np.ndarray]:
    """Split ``order`` (int [n]) into batches of similar length: within each window of ``window`` batches the
    rows are sorted by length, then the batches are shuffled, so dynamic padding trims most padding while the
    data order stays random. Every row of ``order`` appears exactly once."""
    batches = []
    span = window * batch_size
    for s in range(0, len(order), span):
        chunk = order[s:s + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def clamp_steps(model, floor: float = 1e-4) -> None:
    """Keep every LSQ step positive: a step pushed to <= 0 by the optimizer flips or collapses the grid."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".step"):
                p.clamp_(min=floor)


def _stage_loss(spec: StageSpec, out, b, task: TaskSpec, sw, teacher, t_logits, teacher_heads, need_int):
    labelled = None
    if not task.is_regression:
        labelled = b["labels"] >= 0
    if spec.loss == "task":
        if labelled is not None and not bool(labelled.all()):
            return task_loss(out[labelled], b["labels"][labelled], False, None if sw is None else sw[labelled])
        return task_loss(out, b["labels"], task.is_regression, sw)
    if t_logits is not None and spec.loss == "pred":
        t_out = t_logits
    else:
        with torch.no_grad():
            t_out = teacher(b["input_ids"], b["attention_mask"], b["token_type_ids"], return_internals=need_int)
    if spec.loss == "inter":
        return intermediate_loss(out[1], t_out[1], teacher_heads)
    if spec.loss == "bibert":
        return bibert_loss(out[0], t_out[0], out[1], t_out[1], b["labels"], task.is_regression, sw)
    loss = prediction_loss(out, t_out, task.is_regression, sw)
    if spec.hard_weight > 0 and labelled is not None and bool(labelled.any()):
        loss = loss + spec.hard_weight * task_loss(out[labelled], b["labels"][labelled], False,
                                                   None if sw is None else sw[labelled])
    return loss


def fit(model, train: TensorData, dev: TensorData, task: TaskSpec, spec: StageSpec, teacher=None,
        teacher_heads=None, sample_weights: np.ndarray | None = None, resample: bool = False,
        teacher_logits: torch.Tensor | None = None):
    """Train ``model`` in place for one stage and load its best dev state (last state for 'inter').

    Runs on the model's device; batches are length-bucketed and trimmed to their longest row.
    sample_weights float [n] (any positive scale): with ``resample`` False they scale the per-example loss
    (normalised to mean 1), with True they drive a weighted draw with replacement each epoch.
    teacher_logits float32 [n, K]: the teacher's outputs on ``train`` computed once (prediction KD then skips
    the teacher's forward pass). Returns a dict: best dev metrics, epochs run, wall seconds.
    """
    import time

    rank, n_proc = world()
    torch.manual_seed(spec.seed)
    device = model_device(model)
    t0 = time.perf_counter()
    net = model
    if n_proc > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    if teacher is not None:
        teacher.eval()
    opt = torch.optim.AdamW(_param_groups(model, spec))
    n = len(train)
    lengths = train.lengths()
    steps_per_epoch = math.ceil(math.ceil(n / n_proc) / spec.batch_size)
    total = max(1, steps_per_epoch * spec.epochs)
    warm = int(total * spec.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    w_loss = None
    if sample_weights is not None and not resample:
        w_loss = torch.as_tensor(sample_weights / sample_weights.mean(), dtype=torch.float32)
    headline = task.metrics[0]
    best, best_state, history = -math.inf, None, []
    need_int = spec.loss in ("inter", "bibert")
    bar = tqdm(total=total, desc=spec.desc, disable=rank != 0, leave=False)
    for epoch in range(spec.epochs):
        model.train()
        order = _epoch_order(n, epoch, spec, sample_weights, resample)[rank::n_proc]
        rng = np.random.default_rng(spec.seed * 7919 + epoch)
        for idx in length_batches(order, lengths, spec.batch_size, rng):
            idx = torch.as_tensor(idx)
            b = train.batch(idx, device, trim=True)
            out = net(b["input_ids"], b["attention_mask"], b["token_type_ids"], return_internals=need_int)
            sw = None if w_loss is None else w_loss[idx].to(device)
            t_log = None if teacher_logits is None else teacher_logits[idx].to(device)
            loss = _stage_loss(spec, out, b, task, sw, teacher, t_log, teacher_heads, need_int)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clamp_steps(model)
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if spec.loss != "inter":
            metrics = evaluate_logits(task, predict_logits(model, dev, spec.batch_size * 2), dev.labels.numpy())
            history.append(metrics)
            if metrics[headline] > best:
                best, best_state = metrics[headline], copy.deepcopy(model.state_dict())
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"dev": history[int(np.argmax([h[headline] for h in history]))] if history else {},
            "epochs": spec.epochs, "seconds": time.perf_counter() - t0,
            "examples_per_s": spec.epochs * n / max(1e-9, time.perf_counter() - t0)}
