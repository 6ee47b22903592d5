"""Sparse (hard) MoE projector: shared downsampler -> per-frame top-k routing with capacity."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import SharedDownsampler
from espnet_llm_asr.projectors.experts import ExpertBank
from espnet_llm_asr.projectors.masking import valid_mask


@dataclass
class Routing:
    """Routing of N real frames to E experts.

    Attributes:
        probs: (N, E) router softmax.
        experts: (N, k) chosen experts, best first.
        kept: (N, k) bool, False where the choice overflowed its expert's capacity.
        combine: (N, k) mixing weights: the chosen probabilities renormalised over
            the frame's top-k choices (a softmax of their router logits), zero
            where a choice overflowed (with ``renormalize_kept``: renormalised
            over the KEPT choices); all zero if every choice overflowed.
        capacity: frames per expert, or None when unlimited.
    """

    probs: torch.Tensor
    experts: torch.Tensor
    kept: torch.Tensor
    combine: torch.Tensor
    capacity: Optional[int]


class HardMoEProjector(AbsProjector):
    """Shared downsampler (Conv k3 -> ReLU -> Conv k5 s5) -> router Linear(D, E) -> top-k experts
    per frame -> weighted sum of the chosen experts' outputs.

    Only real frames are routed and counted.  Capacity (training; and at eval only
    if ``eval_capacity_factor`` is set) is ``ceil(capacity_factor * k * N / E)`` frames
    per expert, N = real frames in the batch.  Slots are given GShard-style: every
    frame's 1st choice before any 2nd choice, in frame order within a rank.
    Over capacity: the overflowing choice is dropped and the kept choices keep
    their top-k weights, as GShard combines (a frame whose 1st choice overflowed
    gets only g2 / (g1 + g2) of its 2nd expert); a frame whose every choice
    overflowed gets a ZERO embedding.  ``renormalize_kept=True`` (this
    projector's earlier behaviour) renormalises the kept choices instead (one
    kept choice gets weight 1); on the toy corpus its router collapsed onto one
    expert (egs2/indic/asr1/README.md, "Tried, not adopted").
    Load-balance loss (Switch/GShard): ``load_balance_weight * E * sum_e f_e * P_e``,
    f_e = share of the N*k choices (before capacity) that picked e, P_e = mean
    router probability (1.0 when balanced).
    Capacity makes outputs depend on the batch, so this projector is not padding
    invariant in training; with the default eval (no capacity) it is.
    Real sizes (1280 -> 3584, H=2048, E=4): 52,983,300 parameters (router 5,124).
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, num_experts: int = 4,
                 top_k: int = 2, capacity_factor: float = 1.0, eval_capacity_factor: Optional[float] = None,
                 load_balance_weight: float = 0.01, downsample_rate: int = 5, renormalize_kept: bool = False):
        super().__init__(input_dim, output_dim)
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..num_experts={num_experts}, got {top_k}")
        for key, value in (("capacity_factor", capacity_factor), ("eval_capacity_factor", eval_capacity_factor)):
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be > 0, got {value}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.load_balance_weight = load_balance_weight
        self.renormalize_kept = renormalize_kept
        self.downsampler = SharedDownsampler(input_dim, downsample_rate)
        self.router = torch.nn.Linear(input_dim, num_experts)
        self.experts = ExpertBank(num_experts, input_dim, hidden_dim, output_dim)

    def route(self, x: torch.Tensor) -> Routing:
        """Route real frames x (N, D) (see class docstring)."""
        n, e, k = x.size(0), self.num_experts, self.top_k
        logits = self.router(x)
        probs = torch.softmax(logits, dim=-1)
        top_e = logits.topk(k, dim=-1).indices  # (N, k), best first (the logits: no ties where probs underflow)
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        if factor is None:
            capacity = None
            kept = torch.ones_like(top_e, dtype=torch.bool)
        else:
            capacity = math.ceil(factor * k * n / e)
            # slot of each choice in its expert's queue, rank-major order
            order = top_e.t().reshape(-1)  # (k*N,)
            one_hot = torch.nn.functional.one_hot(order, e)
            slot = (one_hot.cumsum(0) * one_hot).sum(-1) - 1
            kept = (slot < capacity).view(k, n).t()
        # p_i / sum of the (kept) top-k p_j, as a softmax of their logits: dividing tiny
        # probabilities of a saturated router underflows (wrong weights, NaN gradients)
        top_logits = logits.gather(-1, top_e)
        if self.renormalize_kept:
            none_kept = ~kept.any(-1, keepdim=True)
            top_logits = top_logits.masked_fill(~kept, float("-inf")).masked_fill(none_kept, 0.0)
        combine = torch.softmax(top_logits, dim=-1) * kept
        return Routing(probs, top_e, kept, combine, capacity)

    def load_balance_loss(self, routing: Routing) -> torch.Tensor:
        """Weighted Switch/GShard auxiliary loss from a :class:`Routing` (0 for no frames)."""
        n = routing.probs.size(0)
        if n == 0:
            return routing.probs.new_zeros(())
        counts = torch.nn.functional.one_hot(routing.experts, self.num_experts).sum((0, 1))
        share = counts.to(routing.probs.dtype) / (n * self.top_k)
        return self.load_balance_weight * self.num_experts * (share * routing.probs.mean(0)).sum()

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        x, lengths = self.downsampler(feats, feats_lengths)
        mask = valid_mask(lengths, x.size(1))
        frames = x[mask]  # (N, D)
        routing = self.route(frames)
        out = frames.new_zeros(frames.size(0), self.output_dim)
        for e in range(self.num_experts):
            rows, cols = ((routing.experts == e) & routing.kept).nonzero(as_tuple=True)
            if rows.numel():
                y = self.experts.expert(frames[rows], e) * routing.combine[rows, cols].unsqueeze(-1)
                out = out.index_add(0, rows, y)
        embeds = x.new_zeros(x.size(0), x.size(1), self.output_dim).masked_scatter(mask.unsqueeze(-1), out)
        gates = self.utterance_shares(routing, mask, lengths)
        return ProjectorOutput(embeds, lengths, self.load_balance_loss(routing), gates=gates)

    def utterance_shares(self, routing: Routing, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, E): each utterance's mean over its frames of the weight each expert got.

        Detached, for analysis (usage, gate entropy, gate language-ID), not a
        merge weight.  Rows sum to 1 unless frames overflowed every choice
        (those count as 0) or, without ``renormalize_kept``, any choice; an
        utterance without frames gets 1/E each.
        """
        n_frames, e = routing.probs.size(0), self.num_experts
        per_frame = routing.probs.new_zeros(n_frames, e).scatter_add(
            1, routing.experts, routing.combine * routing.kept).detach()  # (N, E)
        utt = mask.nonzero(as_tuple=True)[0]  # (N,) utterance of each real frame, same order as x[mask]
        sums = per_frame.new_zeros(lengths.size(0), e).index_add(0, utt, per_frame)
        shares = sums / lengths.clamp_min(1).unsqueeze(1).to(sums.dtype)
        return torch.where((lengths > 0).unsqueeze(1), shares, torch.full_like(shares, 1.0 / e))
