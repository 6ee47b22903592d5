"""Dense ensemble: all E mono projectors on every utterance, mixed with static learned weights."""
from __future__ import annotations

import torch

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import MonoBlock


class DenseProjector(AbsProjector):
    """y = sum_e softmax(logits)_e * mono_e(x), with E learnable logits (input independent).

    Best sharing at E times the compute.  ``gates`` reports the static weights
    expanded to (B, E).
    Real sizes (1280 -> 3584, H=2048, E=4): 72,641,536 + E parameters.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, num_experts: int = 4,
                 downsample_rate: int = 5):
        super().__init__(input_dim, output_dim)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.projectors = torch.nn.ModuleList(
            MonoBlock(input_dim, hidden_dim, output_dim, downsample_rate) for _ in range(num_experts)
        )
        self.mix_logits = torch.nn.Parameter(torch.zeros(num_experts))

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        weights = torch.softmax(self.mix_logits, dim=0).to(feats.dtype)  # (E,)
        embeds = 0.0
        for w, proj in zip(weights, self.projectors):
            y, lengths = proj(feats, feats_lengths)
            embeds = embeds + w * y
        gates = weights.unsqueeze(0).expand(feats.size(0), -1)
        return ProjectorOutput(embeds, lengths, feats.new_zeros(()), gates=gates)
