"""SLAM-ASR linear projector: stack k frames -> Linear -> ReLU -> Linear."""
from __future__ import annotations

import torch

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import FrameStacker

class LinearProjector(AbsProjector):
    """(B, T, D) -> stack ``downsample_rate`` frames (B, ceil(T/k), k*D) -> Linear(k*D, H) -> ReLU
    -> Linear(H, O).  Output lengths ceil(L/k); the last group is completed with zeros.

    Real sizes (1280 -> 3584, k=5, H=2048): 20,452,864 parameters.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, downsample_rate: int = 5):
        super().__init__(input_dim, output_dim)
        if downsample_rate < 1:
            raise ValueError(f"downsample_rate must be >= 1, got {downsample_rate}")
        self.stack = FrameStacker(downsample_rate)
        self.linear1 = torch.nn.Linear(input_dim * downsample_rate, hidden_dim)
        self.linear2 = torch.nn.Linear(hidden_dim, output_dim)

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        x, lengths = self.stack(feats, feats_lengths)
        embeds = self.linear2(torch.relu(self.linear1(x)))
        return ProjectorOutput(embeds, lengths, feats.new_zeros(()))
