"""Masking and length helpers shared by every projector.

Conventions: ``lengths`` is a (B,) long tensor of real frame counts; frames
``t >= lengths[b]`` of a (B, T, ...) tensor are padding and may hold garbage.
"""
from __future__ import annotations

import torch


def ceil_div(lengths: torch.Tensor, rate: int) -> torch.Tensor:
    """Output-length rule of every rate-``rate`` downsampler: ``ceil(L / rate)``.

    Args:
        lengths: (B,) long.
    Returns:
        (B,) long.
    """
    return torch.div(lengths + (rate - 1), rate, rounding_mode="floor")


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on real frames."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on padding frames."""
    return ~valid_mask(lengths, max_len)


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Set frames beyond ``lengths`` to exactly zero.

    Uses ``masked_fill`` (not a multiplication), so inf/NaN garbage in the
    padding cannot leak.

    Args:
        x: (B, T, ...) tensor.
        lengths: (B,) long.
    Returns:
        (B, T, ...) tensor, zero beyond lengths.
    """
    pad = make_pad_mask(lengths, x.size(1))
    return x.masked_fill(pad.view(*pad.shape, *([1] * (x.dim() - 2))), 0.0)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the real frames of each utterance.

    Args:
        x: (B, T, C).
        lengths: (B,) long.
    Returns:
        (B, C); zero for an empty utterance.
    """
    total = zero_padding(x, lengths).sum(dim=1)
    return total / lengths.clamp_min(1).unsqueeze(1).to(x.dtype)
