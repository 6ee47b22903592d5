"""Shared pytest fixtures: tiny synthetic audio and offline settings.

Every test runs with the Hugging Face hub switched off, so anything that
tries to fetch weights fails loudly instead of downloading.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SAMPLE_RATE = 16000


def synth_wave(seconds: float, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A few seconds of speech-like audio: harmonic tones with a moving pitch plus noise.

    Returns float32 (L,) in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    wave = 0.3 * wave * envelope + 0.01 * rng.standard_normal(n)
    return (wave / np.abs(wave).max() * 0.8).astype(np.float32)


@pytest.fixture
def wave_factory():
    """Factory fixture: ``wave_factory(seconds, seed)`` -> float32 waveform at 16 kHz."""
    return synth_wave
