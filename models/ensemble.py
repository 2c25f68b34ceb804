"""BEBERT ensemble module: members' logits combined as sum_i alpha_i * softmax(logits_i) / sum_i alpha_i."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bert import BertClassifier


class BebertEnsemble(nn.Module):
    """forward(ids, mask, types) [B, L] int64 -> (probs [B, K] float32, member logits [m, B, K] float32).

    vote 'soft' averages probabilities with the alphas; 'hard' sums alphas of each member's argmax class
    (the official BEBERT code). For regression (K = 1) the output is the alpha-weighted mean of outputs.
    """

    def __init__(self, members: list[BertClassifier], alphas: list[float], vote: str = "soft"):
        super().__init__()
        if len(members) != len(alphas) or not members:
            raise ValueError("an ensemble needs one alpha per member and at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("alphas", torch.tensor(alphas, dtype=torch.float32))
        self.vote = vote

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, embedding_noise_std: float = 0.0):
        logits = torch.stack([m(input_ids, attention_mask, token_type_ids, embedding_noise_std=embedding_noise_std)
                              for m in self.members])
        return combine_votes(logits, self.alphas, self.vote), logits


def combine_votes(logits: torch.Tensor, alphas: torch.Tensor, vote: str = "soft") -> torch.Tensor:
    """The ensemble's output from member logits [m, B, K] and alphas [m]: sum_i w_i softmax(logits_i) with
    w = alpha / sum(alpha) ('soft'), the same with one-hot argmaxes ('hard'), or the weighted mean of the
    outputs for regression (K = 1). -> [B, K] float32."""
    w = (alphas / alphas.sum()).view(-1, 1, 1).to(logits.dtype)
    if logits.shape[-1] == 1:
        return (w * logits).sum(0)
    if vote == "hard":
        p = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    else:
        p = F.softmax(logits, -1)
    return (w * p).sum(0)
