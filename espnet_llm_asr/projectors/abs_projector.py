"""Base class and output type shared by all projectors."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch

from espnet_llm_asr.projectors.masking import zero_padding


@dataclass
class ProjectorOutput:
    """What every projector returns.

    Attributes:
        embeds: (B, T', output_dim) LLM-space embeddings, exactly zero beyond ``lengths``;
            T' = max(lengths).
        lengths: (B,) long, number of real output vectors per utterance.
        aux_loss: scalar tensor, already weighted (load balance, CIF quantity);
            a zero tensor on the right device when the projector has none.
        gates: (B, E) utterance-level expert weights (rows sum to 1) for
            utterance-gated MoEs (smear_moe, cif_smear), the static weights of
            ``dense`` expanded to B, and for ``hard_moe`` each expert's share of
            the utterance's routing weight (analysis only); else None.
        alphas: (B, T) CIF weights over the input frames (unscaled, zero beyond
            the input lengths), for CIF projectors; else None.
    """

    embeds: torch.Tensor
    lengths: torch.Tensor
    aux_loss: torch.Tensor
    gates: Optional[torch.Tensor] = None
    alphas: Optional[torch.Tensor] = None


class AbsProjector(torch.nn.Module, ABC):
    """Encoder features (B, T, input_dim) -> LLM embeddings (B, T', output_dim).

    Subclasses implement :meth:`project`; :meth:`forward` checks the inputs,
    trims the output to T' = max(lengths) and zeroes it beyond the output
    lengths, so every projector honours the
    :class:`ProjectorOutput` contract.

    Class attributes:
        needs_lang_ids: True if ``forward`` requires ``lang_ids`` (oracle language).
        uses_target_lengths: True for CIF projectors (training uses token counts).
    """

    needs_lang_ids: bool = False
    uses_target_lengths: bool = False

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        for key, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}: {key} must be a positive int, got {value!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim

    def output_size(self) -> int:
        return self.output_dim

    def forward(
        self,
        feats: torch.Tensor,
        feats_lengths: torch.Tensor,
        lang_ids: Optional[torch.Tensor] = None,
        target_lengths: Optional[torch.Tensor] = None,
    ) -> ProjectorOutput:
        """Project encoder frames into the LLM embedding space.

        Args:
            feats: (B, T, input_dim) float; frames beyond ``feats_lengths`` may be garbage.
            feats_lengths: (B,) long.
            lang_ids: (B,) long language index; required iff ``needs_lang_ids``.
            target_lengths: (B,) long token counts; CIF projectors use them in training.
        Returns:
            :class:`ProjectorOutput`.
        """
        self._check_inputs(feats, feats_lengths, target_lengths)
        feats_lengths = feats_lengths.to(feats.device)
        if lang_ids is not None and torch.is_tensor(lang_ids):
            lang_ids = lang_ids.to(feats.device)
        if target_lengths is not None:
            target_lengths = target_lengths.to(feats.device)
        out = self.project(feats, feats_lengths, lang_ids=lang_ids, target_lengths=target_lengths)
        t_out = int(out.lengths.max()) if out.lengths.numel() else 0
        out.embeds = zero_padding(out.embeds[:, :t_out], out.lengths)
        return out

    @abstractmethod
    def project(
        self,
        feats: torch.Tensor,
        feats_lengths: torch.Tensor,
        lang_ids: Optional[torch.Tensor] = None,
        target_lengths: Optional[torch.Tensor] = None,
    ) -> ProjectorOutput:
        """Same arguments as :meth:`forward`; inputs are already checked."""

    def _check_inputs(self, feats, feats_lengths, target_lengths) -> None:
        name = type(self).__name__
        if feats.dim() != 3 or feats.size(-1) != self.input_dim:
            raise ValueError(
                f"{name}: feats must be (B, T, {self.input_dim}), got shape {tuple(feats.shape)}"
            )
        if not feats.is_floating_point():
            raise ValueError(f"{name}: feats must be a float tensor, got {feats.dtype}")
        self._check_per_utterance("feats_lengths", feats_lengths, feats.size(0))
        if feats_lengths.numel() and int(feats_lengths.max()) > feats.size(1):
            raise ValueError(
                f"{name}: feats_lengths max {int(feats_lengths.max())} exceeds feats time size {feats.size(1)}"
            )
        if target_lengths is not None:
            self._check_per_utterance("target_lengths", target_lengths, feats.size(0))

    def _check_per_utterance(self, key: str, value: torch.Tensor, batch: int) -> None:
        """``value`` must be a (batch,) integer tensor with no negative entry."""
        name = type(self).__name__
        if not torch.is_tensor(value) or value.shape != (batch,) or value.is_floating_point():
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"{name}: {key} must be a ({batch},) integer tensor, got {shape}")
        if value.numel() and int(value.min()) < 0:
            raise ValueError(f"{name}: {key} has a negative entry: {value.tolist()}")
