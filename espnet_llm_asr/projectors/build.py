"""Projector registry and factory."""
from __future__ import annotations

import inspect
from typing import Dict, Type

from espnet_llm_asr.projectors.abs_projector import AbsProjector
from espnet_llm_asr.projectors.cif_projector import CifProjector
from espnet_llm_asr.projectors.cif_smear import CifSmearProjector
from espnet_llm_asr.projectors.conv import ConvProjector
from espnet_llm_asr.projectors.dense import DenseProjector
from espnet_llm_asr.projectors.hard_moe import HardMoEProjector
from espnet_llm_asr.projectors.linear import LinearProjector
from espnet_llm_asr.projectors.mono import MonoProjector
from espnet_llm_asr.projectors.multi import MultiProjector
from espnet_llm_asr.projectors.smear_moe import SmearMoEProjector

#: projector name -> class
PROJECTOR_CLASSES: Dict[str, Type[AbsProjector]] = {
    "linear": LinearProjector,
    "conv": ConvProjector,
    "mono": MonoProjector,
    "multi": MultiProjector,
    "dense": DenseProjector,
    "hard_moe": HardMoEProjector,
    "smear_moe": SmearMoEProjector,
    "cif": CifProjector,
    "cif_smear": CifSmearProjector,
}


def projector_conf_keys(name: str) -> Dict[str, object]:
    """Conf keys accepted by projector ``name`` with their defaults."""
    params = inspect.signature(_projector_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "input_dim", "output_dim")}


def build_projector(name: str, input_dim: int, output_dim: int, **conf) -> AbsProjector:
    """Build projector ``name`` mapping (B, T, input_dim) to (B, T', output_dim).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        TypeError: a conf key the projector does not take (the message names it).
    """
    cls = _projector_class(name)
    valid = projector_conf_keys(name)
    unknown = sorted(set(conf) - set(valid))
    if unknown:
        raise TypeError(
            f"projector {name!r}: unknown conf key(s) {unknown}; valid keys: {sorted(valid)}"
        )
    return cls(input_dim, output_dim, **conf)


def _projector_class(name: str) -> Type[AbsProjector]:
    if name not in PROJECTOR_CLASSES:
        raise ValueError(f"unknown projector {name!r}; valid names: {sorted(PROJECTOR_CLASSES)}")
    return PROJECTOR_CLASSES[name]
