"""Import-time shims for ESPnet's dependencies, installed by ``import espnet_llm_asr``.

- espnet2.text.phoneme_tokenizer imports ``g2p_en``, which calls
  ``nltk.download()`` at import time when its English data is missing: a
  network access on every ``import espnet2.tasks.*``.  We never use English
  G2P, so ``g2p_en`` is executed with ``nltk.download`` replaced by a
  function that only reports "not downloaded" (restored afterwards).
- espnet's attention module ``print``s "Failed to import Flash Attention" on
  every machine without flash_attn (all CPU machines).  That line is logged
  at DEBUG level instead; anything else it prints becomes a Python warning.

Both are done by an import hook, so they hold however espnet is reached
(our modules, a user's script, a DataLoader worker), as long as
``espnet_llm_asr`` was imported first.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import io
import logging
import sys
import warnings
from typing import Callable, Dict


@contextlib.contextmanager
def no_nltk_download():
    """Within the block, ``nltk.download`` never touches the network."""
    try:
        import nltk
    except ImportError:  # nltk not installed: nothing to guard
        yield
        return
    original = nltk.download

    def _offline_download(*args, **kwargs):
        logging.getLogger(__name__).debug("skipped nltk.download%s (offline)", args)
        return False

    nltk.download = _offline_download
    try:
        yield
    finally:
        nltk.download = original


@contextlib.contextmanager
def quiet_prints(name: str):
    """Capture stdout of an import: the flash-attn notice to DEBUG, the rest as warnings."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    for line in captured.getvalue().splitlines():
        if not line.strip():
            continue
        if "Flash Attention" in line:
            logging.getLogger(__name__).debug(line)
        else:
            warnings.warn(f"{name}: {line}", stacklevel=3)


@contextlib.contextmanager
def guarded_espnet_import(name: str):
    """Both guards, for importing espnet2 modules explicitly."""
    with no_nltk_download(), quiet_prints(name):
        yield


_GUARDS: Dict[str, Callable] = {
    "g2p_en": no_nltk_download,
    "espnet.nets.pytorch_backend.transformer.attention": quiet_prints,
}


class _GuardedLoader(importlib.abc.Loader):
    def __init__(self, inner, guard):
        self.inner, self.guard = inner, guard

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        guard = self.guard
        ctx = guard(module.__name__) if guard is quiet_prints else guard()
        with ctx:
            self.inner.exec_module(module)


class _GuardFinder(importlib.abc.MetaPathFinder):
    """Wraps the loaders of the modules in ``_GUARDS``."""

    def find_spec(self, fullname, path, target=None):
        guard = _GUARDS.get(fullname)
        if guard is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _GuardedLoader(spec.loader, guard)
        return spec


_FINDER = _GuardFinder()


def install_import_guards() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def import_espnet(module: str):
    """Import an espnet2 module with the guards on; returns the module."""
    install_import_guards()
    with guarded_espnet_import(module):
        return importlib.import_module(module)
