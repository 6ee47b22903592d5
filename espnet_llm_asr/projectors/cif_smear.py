"""MoE + CIF: SMEAR expert merging with CIF dynamic downsampling in one projector."""
from __future__ import annotations

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.cif import CifIntegrator
from espnet_llm_asr.projectors.experts import ExpertBank, SmearGate, check_merge_mode
from espnet_llm_asr.projectors.masking import zero_padding


class CifSmearProjector(AbsProjector):
    """CIF replaces the shared downsampler; a SMEAR-merged virtual expert maps to the LLM.

    Order::

        encoder frames h (B, T, D) --CIF--> token-rate vectors (B, K, D) --virtual expert--> (B, K, O)
                         \\--router softmax, mean over real frames--> gates (B, E) --^

    * CIF integrates the full-rate encoder frames, so the firing positions use the
      finest time resolution, and CIF is the only downsampler (no conv in front).
    * The gate is computed from the encoder frames, not from the CIF outputs: the
      utterance-level language decision then does not depend on where CIF fires,
      is identical in training (target-scaled alphas) and inference (threshold
      firing), and early CIF mistakes cannot destabilise the routing.  The router
      is one Linear(D, E) per frame: negligible next to the MLP.
    * The merged expert runs once over the K fired vectors (about one per token),
      fewer frames than the 5x conv downsampler gives, so the expensive MLP is cheap.

    aux_loss = CIF quantity loss (when ``target_lengths`` is given) + SMEAR load-balance loss.
    ``merge_mode`` (``auto`` | ``merge`` | ``mix``): how the virtual expert is
    computed, same result (see :class:`~espnet_llm_asr.projectors.smear_moe.SmearMoEProjector`).
    """

    uses_target_lengths = True

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, num_experts: int = 4,
                 temperature: float = 1.0, load_balance_weight: float = 0.2, threshold: float = 1.0,
                 tail_threshold: float = 0.45, quantity_loss_weight: float = 1.0, normalize_tail: bool = False,
                 kernel_size: int = 3, merge_mode: str = "auto"):
        super().__init__(input_dim, output_dim)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.merge_mode = check_merge_mode(merge_mode, "frontend_conf.merge_mode")
        self.cif = CifIntegrator(input_dim, threshold, tail_threshold, quantity_loss_weight,
                                 normalize_tail, kernel_size)
        self.gate = SmearGate(input_dim, num_experts, temperature, load_balance_weight)
        self.experts = ExpertBank(num_experts, input_dim, hidden_dim, output_dim)

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        gates, balance = self.gate(zero_padding(feats, feats_lengths), feats_lengths)
        fired, lengths, alphas, quantity = self.cif(feats, feats_lengths, target_lengths)
        embeds = self.experts.merged(fired, gates, self.merge_mode)
        return ProjectorOutput(embeds, lengths, quantity + balance, gates=gates, alphas=alphas)
