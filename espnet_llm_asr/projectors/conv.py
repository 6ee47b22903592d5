"""MLC-SLM baseline projector: 2 convolutions + 2 linear layers (4x downsampling)."""
from __future__ import annotations

from typing import Optional

import torch

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import MaskedConv1d


class ConvProjector(AbsProjector):
    """Conv1d(D, D, k3, same) -> GELU -> Conv1d(D, 4D, k3, stride 4, left pad 1) -> Linear(4D, D)
    -> ReLU -> Linear(D, O) -> ReLU -> LayerNorm(O).

    Output lengths ceil(L/4).  ``hidden_dim`` is the width H between the two linear
    layers (Linear(4D, H) -> ReLU -> Linear(H, O)); None (default) means H = D, the
    MLC-SLM baseline.  Real sizes (1280 -> 3584, H = 1280): 35,735,552 parameters.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: Optional[int] = None,
                 downsample_rate: int = 4):
        super().__init__(input_dim, output_dim)
        wide = input_dim * downsample_rate
        hidden = input_dim if hidden_dim is None else hidden_dim
        self.conv1 = MaskedConv1d(input_dim, input_dim, kernel_size=3, left_pad=1)
        self.conv2 = MaskedConv1d(input_dim, wide, kernel_size=3, stride=downsample_rate, left_pad=1)
        self.linear1 = torch.nn.Linear(wide, hidden)
        self.linear2 = torch.nn.Linear(hidden, output_dim)
        self.norm = torch.nn.LayerNorm(output_dim)

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        x, lengths = self.conv1(feats, feats_lengths)
        x, lengths = self.conv2(torch.nn.functional.gelu(x), lengths)
        x = torch.relu(self.linear2(torch.relu(self.linear1(x))))
        return ProjectorOutput(self.norm(x), lengths, feats.new_zeros(()))
