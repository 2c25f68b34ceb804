"""Width pruning of a fine-tuned full-precision model: the half-width start of BinaryBERT's TWS.

BinaryBERT starts from DynaBERT's width-0.5 sub-network. We have no DynaBERT, so we derive it the way
DynaBERT ranks width: attention heads by the loss gradient w.r.t. a head mask (Michel et al. 2019), FFN
neurons by sum |activation * gradient| over a few training batches; the most important ``width`` fraction
of heads and neurons is kept in every layer and the weights are sliced (no re-training here: the ternary
stage that follows trains the pruned model with distillation from the full teacher).
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from bebert_deploy.models.bert import BertClassifier


def importance_scores(model: BertClassifier, batches, regression: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Head importance [layers, heads] and per-layer FFN neuron importance ([intermediate] each)."""
    a = model.arch
    device = next(model.parameters()).device
    head_masks = [torch.ones(a.num_heads, device=device, requires_grad=True) for _ in range(a.num_layers)]
    head_imp = torch.zeros(a.num_layers, a.num_heads)
    neuron_imp = [torch.zeros(a.intermediate_size) for _ in range(a.num_layers)]
    model.eval()
    for batch in batches:
        logits, internals = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                  return_internals=True, head_masks=head_masks)
        for f in internals["ffn_inner"]:
            f.retain_grad()
        loss = F.mse_loss(logits.squeeze(-1), batch["labels"].float()) if regression else F.cross_entropy(logits, batch["labels"])
        model.zero_grad()
        for m in head_masks:
            m.grad = None
        loss.backward()
        for i, m in enumerate(head_masks):
            head_imp[i] += m.grad.abs().cpu()
        for i, f in enumerate(internals["ffn_inner"]):
            neuron_imp[i] += (f * f.grad).abs().sum(dim=(0, 1)).detach().cpu()
    model.zero_grad()
    return head_imp, neuron_imp


def prune_width(model: BertClassifier, batches, width: float = 0.5, regression: bool = False
                ) -> tuple[BertClassifier, list[list[int]]]:
    """Return (pruned copy of a full-precision ``model``, kept head indices per layer).

    The copy keeps round(width * heads) heads and round(width * intermediate) FFN neurons per layer.
    """
    if not model.quant.is_fp:
        raise ValueError("prune_width expects a full-precision model")
    head_imp, neuron_imp = importance_scores(model, batches, regression)
    a = model.arch
    nh = max(1, round(a.num_heads * width))
    ni = max(1, round(a.intermediate_size * width))
    new_arch = replace(a, num_heads=nh, intermediate_size=ni)
    out = BertClassifier(new_arch, model.quant)
    sd = model.state_dict()
    new_sd = out.state_dict()
    kept_heads = []
    for li in range(a.num_layers):
        heads = sorted(torch.topk(head_imp[li], nh).indices.tolist())
        kept_heads.append(heads)
        cols = torch.cat([torch.arange(h * a.head_dim, (h + 1) * a.head_dim) for h in heads])
        neurons = torch.sort(torch.topk(neuron_imp[li], ni).indices).values
        pre = f"layers.{li}."
        for name in ("query", "key", "value"):
            new_sd[pre + name + ".weight"] = sd[pre + name + ".weight"][cols]
            new_sd[pre + name + ".bias"] = sd[pre + name + ".bias"][cols]
        new_sd[pre + "attn_out.weight"] = sd[pre + "attn_out.weight"][:, cols]
        new_sd[pre + "ffn_in.weight"] = sd[pre + "ffn_in.weight"][neurons]
        new_sd[pre + "ffn_in.bias"] = sd[pre + "ffn_in.bias"][neurons]
        new_sd[pre + "ffn_out.weight"] = sd[pre + "ffn_out.weight"][:, neurons]
    for k, v in sd.items():
        if new_sd[k].shape == v.shape and not any(k.endswith(s) for s in (
                "query.weight", "query.bias", "key.weight", "key.bias", "value.weight", "value.bias",
                "attn_out.weight", "ffn_in.weight", "ffn_in.bias", "ffn_out.weight")):
            new_sd[k] = v
    out.load_state_dict(new_sd)
    return out, kept_heads


def with_quant(model: BertClassifier, quant) -> BertClassifier:
    """A copy of ``model``'s weights in a model built with another QuantConfig (same arch, unsplit)."""
    out = BertClassifier(model.arch, quant)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    bad = [k for k in missing if not k.endswith((".step", ".initialized"))]
    if bad or unexpected:
        raise ValueError(f"cannot re-quantize: missing {bad[:3]}, unexpected {unexpected[:3]}")
    return out

