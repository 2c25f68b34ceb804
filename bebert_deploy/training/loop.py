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

    def batch(self, idx) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[idx], "attention_mask": self.attention_mask[idx],
                "token_type_ids": self.token_type_ids[idx], "labels": self.labels[idx]}

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


@torch.no_grad()
def predict_logits(model, data: TensorData, batch_size: int = 64, **kw) -> np.ndarray:
    """Logits float32 [n, K] of ``model`` in eval mode (restores its train/eval mode afterwards)."""
    was = model.training
    model.eval()
    out = []
    for s in range(0, len(data), batch_size):
        b = data.batch(slice(s, s + batch_size))
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
    'bibert' (BiBERT's prediction KD + direction-matching distillation)."""

    epochs: int
    lr: float
    loss: str = "task"
    step_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_size: int = 32
    seed: int = 42
    desc: str = "train"


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


def fit(model, train: TensorData, dev: TensorData, task: TaskSpec, spec: StageSpec, teacher=None,
        teacher_heads=None, sample_weights: np.ndarray | None = None, resample: bool = False):
    """Train ``model`` in place for one stage and load its best dev state (last state for 'inter').

    sample_weights float [n] (any positive scale): with ``resample`` False they scale the per-example loss
    (normalised to mean 1), with True they drive a weighted draw with replacement each epoch.
    Returns a dict: best dev metrics, epochs run, wall seconds.
    """
    import time

    rank, n_proc = world()
    torch.manual_seed(spec.seed)
    t0 = time.perf_counter()
    net = model
    if n_proc > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    if teacher is not None:
        teacher.eval()
    opt = torch.optim.AdamW(_param_groups(model, spec))
    n = len(train)
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
    bar = tqdm(total=total, desc=spec.desc, disable=rank != 0, leave=False)
    for epoch in range(spec.epochs):
        model.train()
        order = _epoch_order(n, epoch, spec, sample_weights, resample)[rank::n_proc]
        for s in range(0, len(order), spec.batch_size):
            idx = torch.as_tensor(order[s:s + spec.batch_size])
            b = train.batch(idx)
            need_int = spec.loss in ("inter", "bibert")
            out = net(b["input_ids"], b["attention_mask"], b["token_type_ids"], return_internals=need_int)
            sw = None if w_loss is None else w_loss[idx]
            if spec.loss == "task":
                loss = task_loss(out, b["labels"], task.is_regression, sw)
            else:
                with torch.no_grad():
                    t_out = teacher(b["input_ids"], b["attention_mask"], b["token_type_ids"], return_internals=need_int)
                if spec.loss == "inter":
                    loss = intermediate_loss(out[1], t_out[1], teacher_heads)
                elif spec.loss == "bibert":
                    loss = bibert_loss(out[0], t_out[0], out[1], t_out[1], b["labels"], task.is_regression, sw)
                else:
                    loss = prediction_loss(out, t_out, task.is_regression, sw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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
            "epochs": spec.epochs, "seconds": time.perf_counter() - t0}
