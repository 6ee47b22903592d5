"""A bank of E expert MLPs stored as stacked weights, and SMEAR's utterance gate.

Stacking lets SMEAR merge the experts with one contraction over E per layer
(no per-expert module, no weight copy), and lets a hard MoE call single experts.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from espnet_llm_asr.projectors.blocks import ExpertMLP
from espnet_llm_asr.projectors.masking import masked_mean, valid_mask


class ExpertBank(torch.nn.Module):
    """E experts of the form ReLU -> Linear(D, H) -> ReLU -> Linear(H, O).

    Parameters: w1 (E, H, D), b1 (E, H), w2 (E, O, H), b2 (E, O), each expert
    initialised like ``torch.nn.Linear``; same count as E :class:`ExpertMLP`.
    """

    def __init__(self, num_experts: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.num_experts = num_experts
        self.w1 = torch.nn.Parameter(torch.empty(num_experts, hidden_dim, in_dim))
        self.b1 = torch.nn.Parameter(torch.empty(num_experts, hidden_dim))
        self.w2 = torch.nn.Parameter(torch.empty(num_experts, out_dim, hidden_dim))
        self.b2 = torch.nn.Parameter(torch.empty(num_experts, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, as ``torch.nn.Linear``."""
        with torch.no_grad():
            for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
                bound = 1.0 / math.sqrt(w.size(-1))
                w.uniform_(-bound, bound)
                b.uniform_(-bound, bound)

    def expert(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Run expert ``e``: (..., D) -> (..., O)."""
        h = F.linear(torch.relu(x), self.w1[e], self.b1[e])
        return F.linear(torch.relu(h), self.w2[e], self.b2[e])

    def merged(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """SMEAR: one pass of the per-utterance virtual expert sum_m g_m * expert_m's weights.

        Args:
            x: (B, T, D) frames.
            gates: (B, E) merge weights.
        Returns:
            (B, T, O).
        """
        gates = gates.to(self.w1.dtype)
        w1 = torch.einsum("be,ehd->bdh", gates, self.w1)  # (B, D, H), ready for bmm
        w2 = torch.einsum("be,eoh->bho", gates, self.w2)  # (B, H, O)
        b1 = (gates @ self.b1).unsqueeze(1)  # (B, 1, H)
        b2 = (gates @ self.b2).unsqueeze(1)  # (B, 1, O)
        h = torch.baddbmm(b1, torch.relu(x), w1)
        return torch.baddbmm(b2, torch.relu(h), w2)

    @torch.no_grad()
    def load_expert_(self, e: int, mlp: ExpertMLP) -> None:
        """Copy an :class:`ExpertMLP`'s weights into expert ``e`` (tests, warm starts)."""
        self.w1[e].copy_(mlp.linear1.weight)
        self.b1[e].copy_(mlp.linear1.bias)
        self.w2[e].copy_(mlp.linear2.weight)
        self.b2[e].copy_(mlp.linear2.bias)


class SmearGate(torch.nn.Module):
    """Utterance-level SMEAR gate with its load-balance loss.

    Frame router Linear(D, E), softmax(logits / temperature) per frame; the gate
    of an utterance is the mean of its REAL frames' probabilities, so padding
    does not change it.  Load-balance loss: ``weight * MSE(P, 1/E)`` with P the
    mean router probability per expert over all real frames of the batch.

    Args:
        dim: frame size D.
        num_experts: E.
        temperature: softmax temperature (> 0).
        load_balance_weight: weight of the (returned, already weighted) loss.
    """

    def __init__(self, dim: int, num_experts: int, temperature: float = 1.0,
                 load_balance_weight: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.router = torch.nn.Linear(dim, num_experts)
        self.num_experts = num_experts
        self.temperature = temperature
        self.load_balance_weight = load_balance_weight

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B,) -> gates (B, E) (rows sum to 1; uniform for an empty utterance),
        weighted load-balance loss (scalar)."""
        probs = torch.softmax(self.router(x) / self.temperature, dim=-1)  # (B, T, E)
        gates = masked_mean(probs, lengths)
        uniform = 1.0 / self.num_experts
        gates = torch.where((lengths > 0).unsqueeze(1), gates, torch.full_like(gates, uniform))
        real = probs[valid_mask(lengths, x.size(1))]  # (N, E)
        if real.size(0) == 0:
            return gates, x.new_zeros(())
        usage = real.mean(dim=0)
        return gates, self.load_balance_weight * F.mse_loss(usage, torch.full_like(usage, uniform))
