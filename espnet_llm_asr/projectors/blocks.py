"""Building blocks of the projectors: padding-safe convolutions, frame stacking, MLPs.

Every block takes and returns ``(x, lengths)`` with x (B, T, C) and obeys one
length rule, ``L' = ceil(L / stride)``, computed identically for an utterance
alone (T = L) and inside a padded batch (T > L).  Blocks zero the padding of
their input before mixing frames, so garbage beyond ``lengths`` never reaches a
real output frame.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from espnet_llm_asr.projectors.masking import ceil_div, zero_padding


class MaskedConv1d(torch.nn.Module):
    """Conv1d over time on (B, T, C) with zeroed padding and the ``ceil(L / stride)`` rule.

    Output frame j reads input frames ``j*stride - left_pad ... j*stride - left_pad + kernel - 1``;
    frames outside [0, L) are zeros, both alone and in a batch.

    Args:
        in_dim, out_dim: channels.
        kernel_size, stride: as in ``torch.nn.Conv1d``.
        left_pad: zero frames added on the left (kernel_size // 2 for "same" convs).
        groups: as in ``torch.nn.Conv1d`` (``groups=in_dim`` is depthwise).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, stride: int = 1,
                 left_pad: int = 0, groups: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv1d(in_dim, out_dim, kernel_size, stride=stride, groups=groups)
        self.kernel_size = kernel_size
        self.stride = stride
        self.left_pad = left_pad

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, in_dim), (B,) -> (B, ceil(T/stride), out_dim), (B,) = ceil(lengths/stride)."""
        t_out = math.ceil(x.size(1) / self.stride)
        if t_out == 0:  # no frames at all: nothing to convolve
            return x.new_zeros(x.size(0), 0, self.conv.out_channels), ceil_div(lengths, self.stride)
        # enough right zeros for t_out windows
        right = max(0, (t_out - 1) * self.stride + self.kernel_size - self.left_pad - x.size(1))
        x = zero_padding(x, lengths).transpose(1, 2)
        y = self.conv(F.pad(x, (self.left_pad, right)))[:, :, :t_out]
        return y.transpose(1, 2), ceil_div(lengths, self.stride)


class FrameStacker(torch.nn.Module):
    """Concatenate every ``rate`` consecutive frames (SLAM-ASR): (B, T, C) -> (B, ceil(T/rate), rate*C).

    The last group of an utterance is completed with zero frames.
    """

    def __init__(self, rate: int):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b, t, c = x.shape
        t_out = math.ceil(t / self.rate)
        x = F.pad(zero_padding(x, lengths), (0, 0, 0, t_out * self.rate - t))
        return x.reshape(b, t_out, self.rate * c), ceil_div(lengths, self.rate)


class ExpertMLP(torch.nn.Module):
    """One expert: ReLU -> Linear(in, hidden) -> ReLU -> Linear(hidden, out), frame-wise.

    The leading ReLU is part of the expert everywhere (mono, MoEs, SMEAR's
    merged path), so SMEAR with identical experts equals one expert.
    (B, T, in_dim) -> (B, T, out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.linear1 = torch.nn.Linear(in_dim, hidden_dim)
        self.linear2 = torch.nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(torch.relu(x))))


class SharedDownsampler(torch.nn.Module):
    """MoE front: Conv1d k3 s1 (same) -> ReLU -> Conv1d k5 s5; (B, T, C) -> (B, ceil(T/5), C)."""

    def __init__(self, dim: int, rate: int = 5):
        super().__init__()
        self.conv1 = MaskedConv1d(dim, dim, kernel_size=3, left_pad=1)
        self.conv2 = MaskedConv1d(dim, dim, kernel_size=rate, stride=rate)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.conv1(x, lengths)
        return self.conv2(torch.relu(x), lengths)


class MonoBlock(torch.nn.Module):
    """SMEAR's single projector: Conv1d k5 s5 -> ExpertMLP.

    (B, T, in_dim) -> (B, ceil(T/5), out_dim), lengths ceil(L/5); output
    beyond the lengths is not zeroed (callers do).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, rate: int = 5):
        super().__init__()
        self.conv = MaskedConv1d(in_dim, in_dim, kernel_size=rate, stride=rate)
        self.mlp = ExpertMLP(in_dim, hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.conv(x, lengths)
        return self.mlp(x), lengths
