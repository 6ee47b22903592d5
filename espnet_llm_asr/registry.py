"""The one place where espnet_llm_asr components are registered with ESPnet.

ESPnet has no plugin entry point: a component becomes selectable from a
training yaml when its class is added to the matching ``ClassChoices``
object.  This module does that at ``import espnet_llm_asr`` time, so that
spawned data-parallel workers (which re-import modules) see the same choices.
"""
from __future__ import annotations

_REGISTERED = False


def _add_choice(class_choices, name: str, cls) -> None:
    """Add ``cls`` under ``name`` to an espnet2 ``ClassChoices`` (idempotent)."""
    existing = class_choices.classes.get(name)
    if existing is not None and existing is not cls:
        raise RuntimeError(
            f"{class_choices.name}_choices already has '{name}' -> {existing}; "
            f"refusing to override with {cls}"
        )
    class_choices.classes[name] = cls


def register_all() -> None:
    """Register all frontends (projectors) with ``espnet2.tasks.asr``."""
    global _REGISTERED
    if _REGISTERED:
        return
    from espnet_llm_asr._compat import import_espnet

    asr_task = import_espnet("espnet2.tasks.asr")
    from espnet_llm_asr.frontend import FRONTEND_CLASSES

    for name, cls in FRONTEND_CLASSES.items():
        _add_choice(asr_task.frontend_choices, name, cls)
    _REGISTERED = True
