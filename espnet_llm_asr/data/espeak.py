"""espeak-ng: which voices exist, and speaking one utterance into a 16 kHz wav.

espeak-ng writes 22050 Hz mono wavs; sox resamples them to 16 kHz mono
16-bit PCM.  The final file appears under its name only when complete
(temp name + rename).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import wave
from pathlib import Path
from typing import FrozenSet, Tuple

from espnet_llm_asr.data.corpus_config import CorpusConfigError, LanguageSpec

SAMPLE_RATE = 16000


def require_tools() -> None:
    """Fail early, naming the missing program."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install {tool}); "
                               "it is needed to synthesize the corpus")


@functools.lru_cache(maxsize=1)
def espeak_data_dir() -> Path:
    """espeak-ng's data directory, as ``espeak-ng --version`` reports it."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"Data at:\s*(\S.*)$", out.strip())
    if not m:
        raise RuntimeError(f"cannot find espeak-ng's data dir in `espeak-ng --version` output: {out!r}")
    return Path(m.group(1).strip())


@functools.lru_cache(maxsize=1)
def available_voices() -> FrozenSet[str]:
    """Names ``espeak-ng -v`` accepts: language codes, voice names and voice files (lower-cased)."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:  # Pty Language Age/Gender VoiceName File [Other]
            names.update({cols[1].lower(), cols[3].lower(), cols[4].lower(), cols[4].split("/")[-1].lower()})
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def available_variants() -> FrozenSet[str]:
    """Voice variants: the files in ``espeak-ng-data/voices/!v`` (case-sensitive)."""
    vdir = espeak_data_dir() / "voices" / "!v"
    return frozenset(p.name for p in vdir.iterdir()) if vdir.is_dir() else frozenset()


def check_language_voices(lang: LanguageSpec) -> None:
    """Raise :class:`CorpusConfigError` naming the language and key for an unknown voice or variant."""
    if lang.espeak_voice.lower() not in available_voices():
        raise CorpusConfigError(f"language {lang.code!r}: 'espeak_voice: {lang.espeak_voice}' is not an "
                                "espeak-ng voice (see `espeak-ng --voices`)")
    variants = available_variants()
    for key in ("train_variants", "heldout_variants"):
        bad = [v for v in getattr(lang, key) if v not in variants]
        if bad:
            raise CorpusConfigError(f"language {lang.code!r}: {key} {bad} are not espeak-ng variants "
                                    f"(files in {espeak_data_dir() / 'voices' / '!v'})")


def synthesize_wav(text: str, voice: str, speed: int, pitch: int, out_wav, uttid: str = "?") -> None:
    """Speak ``text`` with ``espeak-ng -v VOICE -s SPEED -p PITCH`` into a 16 kHz mono 16-bit ``out_wav``.

    Raises:
        RuntimeError: espeak-ng or sox failed, or the audio is empty; names the utterance.
    """
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    raw = out_wav.with_name(f".{out_wav.name}.espeak.wav")
    tmp = out_wav.with_name(f".{out_wav.name}.tmp.wav")
    steps = [
        ["espeak-ng", "-b", "1", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
        ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp)],
    ]
    try:
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"utterance {uttid}: `{' '.join(cmd)}` failed (rc={proc.returncode}): "
                                   f"{proc.stderr.strip()}")
        if wav_info(tmp)[1] == 0:
            raise RuntimeError(f"utterance {uttid}: espeak-ng produced no audio for {text!r} with voice {voice}")
        os.replace(tmp, out_wav)
    finally:
        for p in (raw, tmp):
            if p.exists():
                p.unlink()


def wav_info(path) -> Tuple[int, int, int]:
    """(sample_rate, num_samples, channels) of a PCM wav."""
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnframes(), w.getnchannels()
