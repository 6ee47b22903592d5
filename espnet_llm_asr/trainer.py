"""ESPnet's Trainer with crash-safe checkpoint files.

ESPnet writes ``checkpoint.pth``, ``<n>epoch.pth`` and the averaged models
with ``torch.save(obj, path)`` straight into the experiment dir: a job killed
while writing leaves a truncated file that ``--resume`` then fails on.  Here
every ``torch.save`` to a path made during training goes to a temporary file
in the same dir and is renamed over the target when complete, so a kill
leaves either the old file or the new one.

ESPnet's ``--resume`` unpickles ``checkpoint.pth`` with
``torch.load(weights_only=False)``: a crafted file runs arbitrary code.
Here it is loaded with ``weights_only=True`` and an allow-list of the few
non-tensor types a training checkpoint holds (numpy numbers and
``datetime.timedelta`` in the reporter's statistics); anything else is
refused with an error naming the types.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from pathlib import Path
from typing import Union

import numpy as np
import torch
from espnet2.train.trainer import Trainer

from espnet_llm_asr.utils import atomic_path


def _checkpoint_safe_globals() -> list:
    """Types besides tensors and containers found in ESPnet's ``checkpoint.pth``."""
    numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64)]
    return [numpy_core.multiarray.scalar, numpy_core.multiarray._reconstruct, np.ndarray, np.dtype,
            *dtype_classes, datetime.timedelta]


def load_checkpoint(path: Union[str, Path], map_location="cpu", _load=torch.load):
    """``torch.load(path, weights_only=True)`` allowing the types of a training checkpoint.

    Raises a one-line ``pickle.UnpicklingError`` naming the file and the
    types it refused; nothing from the file is executed.
    """
    with torch.serialization.safe_globals(_checkpoint_safe_globals()):
        try:
            return _load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            try:
                unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            except Exception:  # not a zip checkpoint at all
                unsafe = []
            found = f"it holds {', '.join(unsafe)}" if unsafe else "it is not a plain tensor checkpoint"
    raise pickle.UnpicklingError(
        f"refusing to load {str(path)!r} with weights_only=True: {found}, which a training "
        "checkpoint never contains (was it written by someone else?); delete it to train from scratch"
    )


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


@contextlib.contextmanager
def weights_only_loads():
    """Within the block, ``torch.load(f, map_location=...)`` is :func:`load_checkpoint`
    (whatever ``weights_only`` the caller asks for)."""
    original = torch.load
    torch.load = lambda f, map_location="cpu", **_: load_checkpoint(f, map_location, _load=original)
    try:
        yield
    finally:
        torch.load = original


class AtomicCheckpointTrainer(Trainer):
    """ESPnet's Trainer; checkpoints and averaged models are written atomically,
    ``--resume`` loads ``checkpoint.pth`` with ``weights_only=True``."""

    @staticmethod
    def resume(checkpoint, *args, **kwargs):
        """ESPnet's ``Trainer.resume``, its ``torch.load`` replaced by :func:`load_checkpoint`."""
        with weights_only_loads():
            return Trainer.resume(checkpoint, *args, **kwargs)

    @classmethod
    def run(cls, *args, **kwargs):
        with atomic_saves():
            return super().run(*args, **kwargs)
