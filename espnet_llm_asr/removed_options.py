"""Options removed from ``llm_conf`` and ``model_conf``, and what replaced them.

A config that still sets one (an older experiment's ``config.yaml``, a user's
yaml) keeps loading: :func:`migrate_removed_options` maps each removed key to
its replacement and logs one warning line naming it.

- ``llm_conf.speech_embed_scale: X`` and ``llm_conf.speech_rms: Y`` (the
  second won when both were set) -> ``llm_conf.speech_scale``: ``rms:Y``
  when ``Y`` is set, else ``factor:X``
  (:func:`espnet_llm_asr.llm.resolve_speech_scale`);
- ``model_conf.llm_hold_steps: N`` and ``model_conf.lora_hold_steps: M`` (one
  count from the first batch for both) -> ``model_conf.hold_steps: {llm: N,
  lora: max(0, M - N)}`` (the adapters' hold now starts when the LLM's ends);
- ``model_conf.extract_feats_in_collect_stats``: no replacement (stage 10
  computes the shapes without the model), dropped.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional


def _speech_scale(conf: Dict) -> Optional[str]:
    """``speech_scale`` for the removed ``speech_rms`` / ``speech_embed_scale`` of ``conf`` (None: neither set)."""
    rms = conf.pop("speech_rms", None)
    factor = conf.pop("speech_embed_scale", None)
    if rms is not None:
        return "rms" if rms == "auto" else f"rms:{rms}"
    if factor is not None:
        return "factor" if factor == "auto" else f"factor:{factor}"
    return None


def _hold_steps(conf: Dict) -> Optional[Dict[str, int]]:
    """``hold_steps`` for the removed ``llm_hold_steps`` / ``lora_hold_steps`` of ``conf`` (None: neither set)."""
    llm = int(conf.pop("llm_hold_steps", 0) or 0)
    lora = int(conf.pop("lora_hold_steps", 0) or 0)
    hold = {k: v for k, v in (("llm", llm), ("lora", max(0, lora - llm))) if v}
    return hold or None


#: section -> (removed keys, the key replacing them or None, the function giving its value from them)
_REMOVED = {
    "llm_conf": [(("speech_embed_scale", "speech_rms"), "speech_scale", _speech_scale)],
    "model_conf": [(("llm_hold_steps", "lora_hold_steps"), "hold_steps", _hold_steps),
                   (("extract_feats_in_collect_stats",), None, lambda conf: conf.pop("extract_feats_in_collect_stats"))],
}


def removed_keys(section: str) -> set:
    """The keys removed from ``section`` (``llm_conf`` or ``model_conf``)."""
    return {key for keys, _, _ in _REMOVED.get(section, []) for key in keys}


def migrate_removed_options(section: str, conf: Optional[Dict], warn: bool = True) -> Dict:
    """A copy of ``conf`` (the ``section`` of a config) with every removed key replaced.

    Each removed key found is logged (``warn``) in one line naming its
    replacement and the value it gets; a replacement already set in ``conf``
    wins over the removed keys it replaces.
    """
    conf = dict(conf or {})
    for keys, new, replace in _REMOVED.get(section, []):
        found = [k for k in keys if k in conf]
        if not found:
            continue
        given = new is not None and new in conf
        value = replace(conf)
        if new is not None and not given and value is not None:
            conf[new] = value
        if warn:
            for key in found:
                if new is None:
                    logging.warning(f"{section}.{key} is removed and has no effect (stage 10 computes the "
                                    "shapes without the model): drop it from the config")
                else:
                    shown = f"{section}.{new} as given" if given else f"{section}.{new}: {conf.get(new)}"
                    logging.warning(f"{section}.{key} is removed: use {section}.{new} (read as {shown})")
    return conf
