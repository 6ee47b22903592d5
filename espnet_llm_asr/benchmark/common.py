"""Shared settings and measuring tools of the benchmark (no benchmark part lives here).

* :class:`BenchSettings` / :class:`ProjectorSizes`: what one run measures and at which sizes.
* Time (:func:`best_time`): best (minimum) of ``repeats`` wall-clock runs; on a
  machine shared with other jobs the minimum is the least disturbed estimate.
* Peak memory (CPU, :func:`peak_rss_increase`): the kernel's resident-set
  high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` before
  the measured call and read after it; the figure is the peak minus the
  resident size before the call (parameters and inputs already resident are
  not counted; gradients created by a backward pass are).  glibc is told to
  serve every allocation above 128 KiB with ``mmap``
  (:func:`mmap_large_allocations`: ``mallopt(M_MMAP_THRESHOLD)``, its initial
  default, without the dynamic raise), so a freed tensor leaves the resident
  set at once and the next one cannot hide in recycled heap.
* Machine (:func:`machine_info`, :func:`load_average`): CPU, cores, torch
  threads, versions and load averages, what the timings depend on.

Imports no other benchmark module.
"""
from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch


# ---------------------------------------------------------------------- settings
@dataclass
class ProjectorSizes:
    """Projector benchmark sizes: input (B, T, input_dim) -> output (B, T', output_dim)."""

    input_dim: int = 1280      # Whisper-large-v3 d_model
    output_dim: int = 3584     # Gemma-2-9B hidden size
    hidden_dim: int = 2048
    num_experts: int = 4
    batch: int = 8
    frames: int = 500          # 10 s at 50 frames/s


REAL_SIZES = ProjectorSizes()
QUICK_SIZES = ProjectorSizes(input_dim=32, output_dim=48, hidden_dim=64, num_experts=4, batch=4, frames=50)


@dataclass
class BenchSettings:
    """What one benchmark run measures and how.

    Attributes:
        quick: tiny sizes everywhere (seconds; for tests).
        repeats: timed runs per measurement (the minimum is reported).
        tokens_per_second: transcript tokens per second of audio assumed where
            no transcript exists (CIF training targets of the projector part,
            generated tokens of the system estimate).
        num_utts: utterances decoded in the decoding part.
        data_dir: Kaldi data dir (wav.scp, text, optional utt2lang) to take
            utterances from; None synthesises audio and transcripts.
        asr_exp: trained experiment dir (config.yaml + checkpoint) decoded
            instead of the randomly initialised default model.
        models_dir: dir with ``whisper/`` and ``llm/`` (e.g. the recipe's
            ``exp/tiny_models``) used instead of random default-size models.
        encoder_layers: layers of the Whisper-large-v3-sized encoder actually
            run; its time is scaled to 32 layers.
        work_dir: scratch dir (tiny models, dumped features, training run).
        throughput_batches: decoding batch sizes of the GPU throughput part
            (greedy and beam 4 at each; the largest that fits is searched beyond).
        throughput_budget_s: seconds the throughput part may take; what is
            left when they are spent is reported as skipped.
        compile_decoding: the throughput part's compiled decoding step: None
            (transformers' rule: on a GPU with the static cache), True, False.
    """

    quick: bool = False
    repeats: int = 3
    tokens_per_second: float = 4.0
    num_utts: int = 16
    data_dir: Optional[str] = None
    asr_exp: Optional[str] = None
    models_dir: Optional[str] = None
    encoder_layers: int = 2
    work_dir: Optional[str] = None
    throughput_batches: Tuple[int, ...] = (1, 8, 64)
    throughput_budget_s: float = 420.0
    compile_decoding: Optional[bool] = None

    @property
    def sizes(self) -> ProjectorSizes:
        return QUICK_SIZES if self.quick else REAL_SIZES


# ---------------------------------------------------------------------- measuring
def best_time(fn: Callable[[], object], repeats: int, before: Optional[Callable[[], object]] = None) -> float:
    """Minimum wall-clock seconds of ``fn()`` over ``repeats`` runs (``before()`` untimed)."""
    best = math.inf
    for _ in range(max(1, repeats)):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


_MMAP_SET = False


def mmap_large_allocations(threshold: int = 128 * 1024) -> bool:
    """Have glibc serve allocations >= ``threshold`` bytes by mmap (freed memory leaves RSS at once).

    Returns False where it cannot be set (not glibc).
    """
    global _MMAP_SET
    if _MMAP_SET:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        _MMAP_SET = bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except OSError:
        _MMAP_SET = False
    return _MMAP_SET


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_increase(fn: Callable[[], object]) -> Optional[int]:
    """Bytes the resident set grew at its peak while ``fn()`` ran, or None where
    the high-water mark cannot be reset (not Linux)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        fn()
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info() -> Dict[str, object]:
    """CPU, cores, torch threads, load averages, bf16 units: what the timings depend on."""
    from espnet_llm_asr.torch_utils import bf16_matmul_support

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "loadavg_start": load_average(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "bf16": bf16_matmul_support()[1],
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info
