"""Continuous Integrate-and-Fire (CIF): weight predictor and a vectorised integrator.

CIF (Dong & Xu, ICASSP 2020) gives every frame a weight alpha_t in (0, 1),
accumulates the weights over time and "fires" one output vector each time the
accumulated weight crosses a threshold; the output is the alpha-weighted sum of
the frames it integrated, the crossing frame's weight being split between the
two outputs it straddles.

Vectorised form used here: with c_t = alpha_1 + ... + alpha_t (c_0 = 0) and
threshold beta, the weight of frame t in output k (k = 0, 1, ...) is

    W[k, t] = max(0, min(c_t, (k+1)*beta) - max(c_{t-1}, k*beta))

so ``fired = W @ h`` (one bmm for the batch).  This also handles scaled
weights alpha_t > beta (a frame spread over several outputs).

Output count per utterance:
* training (``target_lengths`` given): the alphas are rescaled so that their
  sum equals ``n * beta`` with ``n = target_length``, and exactly ``n`` vectors
  are returned (n is set, not measured, so float round-off cannot change it).
  An empty target for a non-empty utterance still gets n = 1 (one audio vector).
* inference: ``floor(c_T / beta)`` full vectors, plus one tail vector if the
  remainder ``r = c_T - floor(c_T/beta)*beta`` is >= ``tail_threshold``; a
  non-empty utterance always gets at least one vector (its remainder).  Both
  comparisons allow ``ROUND_OFF`` (1e-5 threshold units) of float error, so
  e.g. 0.5 + 0.5 + 0.45 fires a tail at tail_threshold 0.45.

Tail convention: the tail vector is the plain weighted sum of the remaining
frame portions (total weight r, NOT renormalised), which is what FunASR's
CifPredictor produces (it appends a zero frame of weight tail_threshold, so
the zero frame adds nothing to the vector).  Note FunASR's firing condition is
``r + tail_threshold >= beta`` (r >= 0.55 for 0.45); here, as specified for
this project, it is ``r >= tail_threshold``.  ``normalize_tail=True`` divides
the tail vector by r / beta instead.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from espnet_llm_asr.projectors.blocks import MaskedConv1d
from espnet_llm_asr.projectors.masking import valid_mask, zero_padding

#: tolerance (in threshold units) for float round-off in the inference firing rule
ROUND_OFF = 1e-5


def cif_integrate(
    h: torch.Tensor,
    alphas: torch.Tensor,
    lengths: torch.Tensor,
    threshold: float = 1.0,
    tail_threshold: float = 0.45,
    target_lengths: Optional[torch.Tensor] = None,
    normalize_tail: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Integrate frames ``h`` with weights ``alphas`` and fire (see module docstring).

    Args:
        h: (B, T, D) frames; garbage beyond ``lengths`` is ignored.
        alphas: (B, T) non-negative weights; ignored beyond ``lengths``.
        lengths: (B,) long real frame counts.
        threshold: firing threshold beta (> 0).
        tail_threshold: inference only; minimum remainder that fires a tail vector.
        target_lengths: (B,) long; if given (training), rescale alphas and fire
            exactly max(target, 1) vectors per non-empty utterance.
        normalize_tail: inference only; rescale the tail vector to total weight beta.
    Returns:
        fired (B, K, D) with zeros beyond ``fired_lengths``, K = max(fired_lengths);
        fired_lengths (B,) long.
    """
    if threshold <= 0:
        raise ValueError(f"cif threshold must be > 0, got {threshold}")
    mask = valid_mask(lengths, h.size(1))
    h = zero_padding(h, lengths)
    alphas = alphas.masked_fill(~mask, 0.0)
    cum = alphas.cumsum(dim=1)  # (B, T)
    total = cum[:, -1] if cum.size(1) else alphas.new_zeros(alphas.size(0))
    nonempty = lengths > 0

    if target_lengths is not None:
        counts = torch.where(nonempty, target_lengths.clamp_min(1), torch.zeros_like(target_lengths))
        scale = counts.to(cum.dtype) * threshold / total.clamp_min(torch.finfo(cum.dtype).tiny)
        cum = cum * scale.unsqueeze(1)
        tail_index = None
    else:
        # sums within ROUND_OFF (in threshold units) of a boundary count as reaching it
        full = torch.floor(total / threshold + ROUND_OFF)
        remainder = (total / threshold - full).clamp_min(0.0)  # in threshold units
        fire_tail = (remainder >= tail_threshold / threshold - ROUND_OFF) | (full == 0)
        counts = torch.where(nonempty, full.long() + fire_tail.long(), torch.zeros_like(lengths))
        tail_index = torch.where(nonempty & fire_tail, full.long(), torch.full_like(lengths, -1))

    num_out = int(counts.max()) if counts.numel() else 0
    k = torch.arange(num_out, device=h.device, dtype=cum.dtype).view(1, -1, 1)  # (1, K, 1)
    prev = torch.nn.functional.pad(cum[:, :-1], (1, 0))  # c_{t-1}, (B, T)
    upper = torch.minimum(cum.unsqueeze(1), (k + 1) * threshold)  # (B, K, T)
    lower = torch.maximum(prev.unsqueeze(1), k * threshold)
    weights = (upper - lower).clamp_min(0.0)
    out_mask = valid_mask(counts, num_out)  # (B, K)
    weights = weights.masked_fill(~out_mask.unsqueeze(-1), 0.0)

    if tail_index is not None and normalize_tail and num_out:
        is_tail = torch.arange(num_out, device=h.device).unsqueeze(0) == tail_index.unsqueeze(1)
        mass = weights.sum(dim=-1, keepdim=True)  # (B, K, 1)
        factor = threshold / mass.clamp_min(torch.finfo(mass.dtype).tiny)
        weights = torch.where(is_tail.unsqueeze(-1), weights * factor, weights)

    fired = torch.bmm(weights.to(h.dtype), h)
    return fired, counts


class CifWeightPredictor(torch.nn.Module):
    """alpha_t = sigmoid(Linear(ReLU(conv(h) + h))), zero beyond the lengths.

    The conv is a depthwise Conv1d (k3, same padding) over time, as in FunASR's
    CifPredictor, on zeroed padding so that padding cannot leak into the last
    real frame.  (B, T, D), (B,) -> (B, T).
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"cif kernel_size must be odd, got {kernel_size}")
        self.conv = MaskedConv1d(dim, dim, kernel_size, left_pad=kernel_size // 2, groups=dim)
        self.linear = torch.nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = zero_padding(h, lengths)  # also keeps inf/NaN padding out of the gradients
        context, _ = self.conv(h, lengths)
        alphas = torch.sigmoid(self.linear(torch.relu(context + h))).squeeze(-1)
        return alphas.masked_fill(~valid_mask(lengths, h.size(1)), 0.0)


def quantity_loss(alphas: torch.Tensor, target_lengths: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Mean over the batch of |sum_t alpha_t / threshold - target| (unweighted).

    Args:
        alphas: (B, T) unscaled weights, zero beyond the lengths.
        target_lengths: (B,) long.
    Returns:
        scalar.
    """
    return (alphas.sum(dim=1) / threshold - target_lengths.to(alphas.dtype)).abs().mean()


class CifIntegrator(torch.nn.Module):
    """Weight predictor + integrate-and-fire, the shared front of ``cif`` and ``cif_smear``.

    Args:
        dim: frame size D.
        threshold, tail_threshold, normalize_tail: see :func:`cif_integrate`.
        quantity_loss_weight: weight of the quantity loss.
        kernel_size: weight predictor's conv kernel.
    """

    def __init__(self, dim: int, threshold: float = 1.0, tail_threshold: float = 0.45,
                 quantity_loss_weight: float = 1.0, normalize_tail: bool = False, kernel_size: int = 3):
        super().__init__()
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.predictor = CifWeightPredictor(dim, kernel_size)
        self.threshold = threshold
        self.tail_threshold = tail_threshold
        self.quantity_loss_weight = quantity_loss_weight
        self.normalize_tail = normalize_tail

    def forward(self, h: torch.Tensor, lengths: torch.Tensor,
                target_lengths: Optional[torch.Tensor] = None):
        """(B, T, D), (B,) -> fired (B, K, D), fired_lengths (B,), alphas (B, T), weighted quantity loss.

        Training mode with ``target_lengths`` fires exactly the target counts; otherwise
        the inference rule applies.  The quantity loss is computed whenever
        ``target_lengths`` is given (also in eval mode, for validation) and is 0 otherwise.
        """
        alphas = self.predictor(h, lengths)
        scale_to = target_lengths if (self.training and target_lengths is not None) else None
        fired, fired_lengths = cif_integrate(
            h, alphas, lengths, self.threshold, self.tail_threshold,
            target_lengths=scale_to, normalize_tail=self.normalize_tail,
        )
        if target_lengths is None:
            loss = h.new_zeros(())
        else:
            loss = self.quantity_loss_weight * quantity_loss(alphas, target_lengths, self.threshold)
        return fired, fired_lengths, alphas, loss
