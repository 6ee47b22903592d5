"""Reading Kaldi data dirs: wav.scp, text, utt2lang, with errors that name file and line."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import numpy as np

SAMPLE_RATE = 16000


def read_kaldi_map(path: Union[str, Path], allow_empty_value: bool = False) -> Dict[str, str]:
    """``uttid value...`` lines -> dict; duplicate ids and malformed lines are errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    out: Dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            if not value.strip() and not allow_empty_value:
                raise ValueError(f"{path}:{lineno}: no value for '{key}'")
            if key in out:
                raise ValueError(f"{path}:{lineno}: duplicate id '{key}'")
            out[key] = value.strip()
    return out


def read_wav_scp(path: Union[str, Path]) -> Dict[str, str]:
    """wav.scp with plain file paths (``uttid /path/to.wav``)."""
    wavs = read_kaldi_map(path)
    for key, value in wavs.items():
        if value.endswith("|"):
            raise ValueError(f"{path}: '{key}' uses a pipe command; run stage 3 (format audio) first")
    return wavs


def load_mono_16k(path: str, uttid: str = "") -> np.ndarray:
    """Read a 16 kHz mono file as float32 (L,), with a clear error otherwise."""
    import soundfile

    try:
        wav, sr = soundfile.read(path, dtype="float32")
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError
        raise ValueError(f"utterance {uttid}: cannot read audio {path}: {e}") from e
    if wav.ndim == 2:
        if wav.shape[1] != 1:
            raise ValueError(f"utterance {uttid}: {path} has {wav.shape[1]} channels, expected mono")
        wav = wav[:, 0]
    if sr != SAMPLE_RATE:
        raise ValueError(f"utterance {uttid}: {path} has sample rate {sr}, expected {SAMPLE_RATE}")
    if wav.size == 0:
        raise ValueError(f"utterance {uttid}: {path} is empty")
    return wav


def load_audio_16k(path: str) -> np.ndarray:
    """Read any audio file soundfile can (any sample rate, any channel count) as 16 kHz mono float32 (L,).

    Channels are averaged; other rates are resampled with soxr (its high
    quality setting).  A ValueError names the file when it cannot be read or
    holds no samples.
    """
    import soundfile
    import soxr

    try:
        wav, sr = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError
        raise ValueError(f"cannot read audio {path}: {e}") from e
    if wav.size == 0:
        raise ValueError(f"{path} holds no samples")
    wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        wav = soxr.resample(wav, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(wav, dtype=np.float32)
