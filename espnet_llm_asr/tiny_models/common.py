"""Shared by the tiny-model builders: atomic model dirs, text reading, the
warm-up + cosine schedule, loss summaries, device choice, progress bars and
the batch sampler."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Union

import numpy as np
import torch

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_dir(out_dir: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary dir; on success it replaces ``out_dir`` (rename), on error it is removed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model dir is as readable as any other
    for f in tmp.rglob("*"):
        if f.is_file():
            os.chmod(f, 0o644)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_lines(text_file_or_lines: Union[PathLike, Iterable[str]]) -> List[str]:
    """A path (one sentence a line) or an iterable of lines -> non-empty lines, newline stripped."""
    if isinstance(text_file_or_lines, (str, Path)):
        path = Path(text_file_or_lines)
        if not path.is_file():
            raise FileNotFoundError(f"text file {str(path)!r} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = list(text_file_or_lines)
    return [ln.rstrip("\r\n") for ln in lines if ln.strip()]


class Schedule:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * final_ratio``."""

    def __init__(self, lr: float, steps: int, warmup: int, final_ratio: float = 0.1):
        self.lr, self.steps, self.warmup, self.final_ratio = lr, steps, max(0, warmup), final_ratio

    def __call__(self, step: int) -> float:  # step: 0-based
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def loss_summary(losses: List[float]) -> Dict[str, float]:
    """First/last loss, each the mean over ``k = clamp(steps // 5, 1, 10)`` steps (single steps are noisy)."""
    k = max(1, min(10, len(losses) // 5))
    return {"first_loss": float(np.mean(losses[:k])), "last_loss": float(np.mean(losses[-k:]))}


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def progress_bar(steps: int, desc: str):
    """A tqdm progress bar, shown on terminals only (log files get the logger's lines)."""
    from tqdm import tqdm

    return tqdm(total=steps, desc=desc, disable=None, dynamic_ncols=True)


def batch_indices(lengths: List[int], batch_size: int, generator: torch.Generator,
                  length_pool: Optional[int] = None) -> Iterator[List[int]]:
    """Endless batches of indices into ``lengths`` for the pretraining loops.

    ``length_pool`` ``None`` (or 0): each batch is ``batch_size`` indices drawn
    at random with replacement (what the pretraining always did).  An integer
    ``P``: pass after pass over a fresh shuffle, each run of
    ``P * batch_size`` indices is sorted by length and cut into batches, and the
    batches are served in random order (torchtext's bucket iterator): every
    item once a pass, and the utterances of a batch of similar length, so
    that little of a step's compute goes to padding (random batches of the
    default corpus are 38 % padding, pools of 32 batches under 2 %).

    Args:
        lengths: (N,) sizes of the items (samples, tokens, ...).
        batch_size: items per batch (the last batch of a pass may be smaller).
        generator: the only source of randomness (reproducible with its seed).
        length_pool: batches per sorted pool, or ``None`` for random batches.
    Yields:
        lists of at most ``batch_size`` indices.
    """
    n = len(lengths)
    if n == 0:
        raise ValueError("batch_indices: no items")
    if batch_size < 1:
        raise ValueError(f"batch_indices: batch_size must be >= 1, got {batch_size}")
    if length_pool is not None and length_pool < 0:
        raise ValueError(f"length_pool must be a number of batches >= 1 (or null for random batches), "
                         f"got {length_pool}")
    # checked here, at the call, not at the first next() (before the model is loaded and trained)
    return _batches(lengths, batch_size, generator, length_pool)


def _batches(lengths: List[int], batch_size: int, generator: torch.Generator,
             length_pool: Optional[int]) -> Iterator[List[int]]:
    """The generator behind :func:`batch_indices` (arguments already checked)."""
    n = len(lengths)
    if not length_pool:
        while True:
            yield torch.randint(n, (min(batch_size, n),), generator=generator).tolist()
    pool = length_pool * batch_size
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        batches = []
        for start in range(0, n, pool):
            chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
            batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
        for k in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[k]
