"""Projectors: frozen-encoder features (B, T, input_dim) -> LLM embeddings (B, T', output_dim).

    from espnet_llm_asr.projectors import build_projector
    proj = build_projector("smear_moe", 1280, 3584, num_experts=4)
    out = proj(feats, feats_lengths)      # ProjectorOutput(embeds, lengths, aux_loss, gates, alphas)

Names: linear, conv, mono, multi, dense, hard_moe, smear_moe, cif, cif_smear
(see :data:`PROJECTOR_CLASSES` and each class's docstring).
"""
from espnet_llm_asr.projectors.abs_projector import AbsProjector, ProjectorOutput
from espnet_llm_asr.projectors.build import PROJECTOR_CLASSES, build_projector, projector_conf_keys
from espnet_llm_asr.projectors.cif import cif_integrate

__all__ = [
    "AbsProjector",
    "ProjectorOutput",
    "PROJECTOR_CLASSES",
    "build_projector",
    "projector_conf_keys",
    "cif_integrate",
]
