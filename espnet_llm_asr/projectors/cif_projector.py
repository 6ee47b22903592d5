"""CIF projector: integrate-and-fire dynamic downsampling -> expert MLP."""
from __future__ import annotations

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import ExpertMLP
from espnet_llm_asr.projectors.cif import CifIntegrator


class CifProjector(AbsProjector):
    """Encoder frames (full rate, input_dim) -> CIF (about one vector per token) -> ExpertMLP.

    Training (``target_lengths`` given, training mode): exactly ``target_lengths``
    vectors (>= 1); inference: fire at ``threshold`` with the tail rule of
    :mod:`espnet_llm_asr.projectors.cif`.  aux_loss = ``quantity_loss_weight`` *
    mean |sum(alpha) - target| whenever ``target_lengths`` is given.
    ``alphas`` (B, T) are the predicted (unscaled) weights.
    """

    uses_target_lengths = True

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, threshold: float = 1.0,
                 tail_threshold: float = 0.45, quantity_loss_weight: float = 1.0, normalize_tail: bool = False,
                 kernel_size: int = 3):
        super().__init__(input_dim, output_dim)
        self.cif = CifIntegrator(input_dim, threshold, tail_threshold, quantity_loss_weight,
                                 normalize_tail, kernel_size)
        self.mlp = ExpertMLP(input_dim, hidden_dim, output_dim)

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        fired, lengths, alphas, aux = self.cif(feats, feats_lengths, target_lengths)
        return ProjectorOutput(self.mlp(fired), lengths, aux, alphas=alphas)
