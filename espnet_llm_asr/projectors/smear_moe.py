"""SMEAR-MoE projector: experts merged per utterance into one virtual expert."""
from __future__ import annotations

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import SharedDownsampler
from espnet_llm_asr.projectors.experts import ExpertBank, SmearGate, check_merge_mode


class SmearMoEProjector(AbsProjector):
    """Shared downsampler -> frame router softmax -> utterance gate g (mean over REAL
    downsampled frames) -> virtual expert W = sum_m g_m W_m, b = sum_m g_m b_m (both
    layers, one einsum over E each) -> one MLP pass (bmm) over all frames.

    Every expert gets gradient on every step (dense gradient, no collapse) while
    compute stays that of one expert.  aux_loss = ``load_balance_weight`` *
    MSE(mean router probability per expert over the batch's real frames, 1/E).
    Real sizes (1280 -> 3584, H=2048, E=4): 52,983,300 parameters (router 5,124).

    ``merge_mode`` picks how the virtual expert is computed, with the same
    result: ``merge`` (build the merged weights, then one pass), ``mix`` (run
    every expert layer and mix the layer outputs with the gates) or ``auto``
    (default: whichever needs fewer multiply-adds for the batch's shapes; see
    :func:`~espnet_llm_asr.projectors.experts.smear_multiply_adds`).

    Shapes: feats (B, T, D) -> embeds (B, ceil(T / downsample_rate), O), gates (B, E).
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, num_experts: int = 4,
                 temperature: float = 1.0, load_balance_weight: float = 0.2, downsample_rate: int = 5,
                 merge_mode: str = "auto"):
        super().__init__(input_dim, output_dim)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.merge_mode = check_merge_mode(merge_mode, "frontend_conf.merge_mode")
        self.downsampler = SharedDownsampler(input_dim, downsample_rate)
        self.gate = SmearGate(input_dim, num_experts, temperature, load_balance_weight)
        self.experts = ExpertBank(num_experts, input_dim, hidden_dim, output_dim)

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        x, lengths = self.downsampler(feats, feats_lengths)
        gates, aux = self.gate(x, lengths)
        return ProjectorOutput(self.experts.merged(x, gates, self.merge_mode), lengths, aux, gates=gates)
