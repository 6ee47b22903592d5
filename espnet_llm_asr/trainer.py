"""ESPnet's Trainer with crash-safe checkpoint files.

ESPnet writes ``checkpoint.pth``, ``<n>epoch.pth`` and the averaged models
with ``torch.save(obj, path)`` straight into the experiment dir: a job killed
while writing leaves a truncated file that ``--resume`` then fails on.  Here
every ``torch.save`` to a path made during training goes to a temporary file
in the same dir and is renamed over the target when complete, so a kill
leaves either the old file or the new one.
"""
from __future__ import annotations

import contextlib
import os

import torch
from espnet2.train.trainer import Trainer

from espnet_llm_asr.utils import atomic_path


def atomic_torch_save(obj, f, *args, _save=torch.save, **kwargs):
    """``torch.save`` that writes paths atomically (file objects pass through)."""
    if not isinstance(f, (str, os.PathLike)):
        return _save(obj, f, *args, **kwargs)
    with atomic_path(f) as tmp:
        _save(obj, tmp, *args, **kwargs)


@contextlib.contextmanager
def atomic_saves():
    """Within the block, ``torch.save`` to a path is atomic."""
    original = torch.save
    torch.save = lambda obj, f, *a, **k: atomic_torch_save(obj, f, *a, _save=original, **k)
    try:
        yield
    finally:
        torch.save = original


class AtomicCheckpointTrainer(Trainer):
    """ESPnet's Trainer; checkpoints and averaged models are written atomically."""

    @classmethod
    def run(cls, *args, **kwargs):
        with atomic_saves():
            return super().run(*args, **kwargs)
