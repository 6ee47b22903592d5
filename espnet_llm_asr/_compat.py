"""Import-time shims for ESPnet's dependencies.

espnet2.text.phoneme_tokenizer imports ``g2p_en``, which calls
``nltk.download()`` at import time when its English data is missing: a
network access on every ``import espnet2.tasks.asr``.  We never use English
G2P, so while espnet2 is imported through :func:`quiet_espnet_import`,
``nltk.download`` is replaced by a function that only reports "not
downloaded".  The original is restored afterwards.

espnet's attention module also ``print``s "Failed to import Flash Attention"
on every import on machines without flash_attn (all CPU machines).  That
line is logged at DEBUG level instead; anything else espnet prints while
being imported is re-emitted as a Python warning, so
``import espnet_llm_asr`` writes nothing to stdout.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings


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
def guarded_espnet_import(name: str):
    """Import espnet2 modules inside this block: no nltk download, no stray prints."""
    captured = io.StringIO()
    with no_nltk_download(), contextlib.redirect_stdout(captured):
        yield
    for line in captured.getvalue().splitlines():
        if not line.strip():
            continue
        if "Flash Attention" in line:
            logging.getLogger(__name__).debug(line)
        else:
            warnings.warn(f"{name}: {line}", stacklevel=3)


def import_espnet(module: str):
    """Import an espnet2 module with the guards on; returns the module."""
    with guarded_espnet_import(module):
        return importlib.import_module(module)
