"""Static multi-projector: one mono projector per language, picked by the oracle language id."""
from __future__ import annotations

import torch

from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.blocks import MonoBlock
from espnet_llm_asr.projectors.masking import ceil_div


class MultiProjector(AbsProjector):
    """``num_experts`` complete mono projectors (one per language); utterance b uses
    projector ``lang_ids[b]``.

    The batch is grouped by language and each group runs only its own projector
    (no running all of them and masking).  Projectors of languages absent from a
    batch get no gradient in that step (by design; use DDP with
    ``find_unused_parameters=True``).
    Real sizes (1280 -> 3584, H=2048, 4 languages): 72,641,536 parameters.
    """

    needs_lang_ids = True

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, num_experts: int = 4,
                 downsample_rate: int = 5):
        super().__init__(input_dim, output_dim)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts = num_experts
        self.downsample_rate = downsample_rate
        self.projectors = torch.nn.ModuleList(
            MonoBlock(input_dim, hidden_dim, output_dim, downsample_rate) for _ in range(num_experts)
        )

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        self._check_lang_ids(lang_ids, feats.size(0))
        lang_ids = lang_ids.to(feats.device)
        lengths = ceil_div(feats_lengths, self.downsample_rate)
        t_out = -(-feats.size(1) // self.downsample_rate)
        embeds = feats.new_zeros(feats.size(0), t_out, self.output_dim)
        for lang in torch.unique(lang_ids).tolist():
            idx = (lang_ids == lang).nonzero(as_tuple=True)[0]
            y, _ = self.projectors[lang](feats[idx], feats_lengths[idx])
            embeds = embeds.index_copy(0, idx, y)
        return ProjectorOutput(embeds, lengths, feats.new_zeros(()))

    def _check_lang_ids(self, lang_ids, batch: int) -> None:
        if lang_ids is None:
            raise ValueError(
                "MultiProjector needs lang_ids (one language index per utterance, "
                "e.g. from utt2lang); got lang_ids=None"
            )
        self._check_per_utterance("lang_ids", lang_ids, batch)
        if lang_ids.numel() and int(lang_ids.max()) >= self.num_experts:
            raise ValueError(
                f"MultiProjector: lang_ids {lang_ids.tolist()} out of range: "
                f"num_experts={self.num_experts} languages (valid ids 0..{self.num_experts - 1})"
            )
