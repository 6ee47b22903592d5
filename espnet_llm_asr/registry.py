"""The one place where espnet_llm_asr components are registered with ESPnet.

ESPnet has no plugin entry point: a component becomes selectable from a
training yaml when its class is added to the matching ``ClassChoices``
object.  ``import espnet_llm_asr`` calls :func:`register_all`, so spawned
data-parallel workers (which re-import modules) see the same choices.

Importing ``espnet2.tasks.asr`` takes 10-15 s, which CLIs that never touch
ESPnet's ASR task (corpus synthesis, scoring, data-dir tools) should not
pay.  So when that module is not imported yet, :func:`register_all` installs
an import hook that registers the components the moment it is imported.
Either way, ``espnet2.tasks.asr.frontend_choices`` holds every projector
frontend whenever anyone can look at it.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_TARGET = "espnet2.tasks.asr"
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


def _register_into(asr_task) -> None:
    global _REGISTERED
    from espnet_llm_asr.frontend import FRONTEND_CLASSES

    for name, cls in FRONTEND_CLASSES.items():
        _add_choice(asr_task.frontend_choices, name, cls)
    _REGISTERED = True


class _RegisterOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: loads ``espnet2.tasks.asr`` normally (offline-guarded), then registers."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        self._inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _remove_hook()
        _register_into(module)


_HOOK = _RegisterOnImport()


def _remove_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def register_all() -> None:
    """Register all frontends (projectors) in ``espnet2.tasks.asr.frontend_choices``."""
    if _REGISTERED:
        return
    module = sys.modules.get(_TARGET)
    if module is not None:
        _register_into(module)
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def is_registered() -> bool:
    return _REGISTERED
