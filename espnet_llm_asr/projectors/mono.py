"""SMEAR's single projector: Conv1d k5 stride 5 -> expert MLP."""
from __future__ import annotations

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import MonoBlock


class MonoProjector(AbsProjector):
    """(B, T, D) -> Conv1d(D, D, k5, s5) -> ReLU -> Linear(D, H) -> ReLU -> Linear(H, O).

    Output lengths ceil(L/5).  Real sizes (1280 -> 3584, H=2048): 18,160,384 parameters.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, downsample_rate: int = 5):
        super().__init__(input_dim, output_dim)
        self.block = MonoBlock(input_dim, hidden_dim, output_dim, downsample_rate)

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        embeds, lengths = self.block(feats, feats_lengths)
        return ProjectorOutput(embeds, lengths, feats.new_zeros(()))
