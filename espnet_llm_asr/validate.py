"""Validation of a Kaldi data dir, naming the utterance and the file of every problem.

Checks: ids unique and sorted; every utterance in ``text`` has audio and the
reverse; UTF-8 text; empty or whitespace-only transcripts; missing,
unreadable, zero-length or silent ("clipped to nothing") audio; wrong sample
rate or several channels (when 16 kHz mono is required); audio over
``max_duration``; a language id for every utterance when ``need_lang``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from espnet_llm_asr.data_io import SAMPLE_RATE


@dataclass
class ValidationReport:
    problems: Dict[str, str] = field(default_factory=dict)        # uttid -> reason
    file_errors: List[str] = field(default_factory=list)          # problems not tied to one utterance
    warnings: List[str] = field(default_factory=list)
    info: Dict[str, Tuple[int, float, int]] = field(default_factory=dict)  # uttid -> (sr, seconds, channels)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.file_errors

    def add(self, uttid: str, reason: str) -> None:
        self.problems.setdefault(uttid, reason)

    def message(self, path, limit: int = 20) -> str:
        lines = [f"{path}: {len(self.file_errors)} file error(s), {len(self.problems)} bad utterance(s)"]
        lines += [f"  {e}" for e in self.file_errors]
        for k, v in list(sorted(self.problems.items()))[:limit]:
            lines.append(f"  utterance {k}: {v}")
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _read_lines(path: Path, report: ValidationReport) -> Dict[str, str]:
    """``uttid value`` lines, recording undecodable, duplicate and unsorted lines."""
    out: Dict[str, str] = {}
    prev = None
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError as e:
                key = raw.split(b" ", 1)[0].decode("utf-8", "replace")
                report.file_errors.append(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})")
                report.add(key, f"{path.name} line {lineno} is not UTF-8")
                continue
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            if key in out:
                report.file_errors.append(f"{path}:{lineno}: duplicate id {key}")
                continue
            if prev is not None and key.encode() < prev.encode():
                report.warnings.append(f"{path}:{lineno}: ids not sorted ({key} after {prev}); re-sorted on output")
            prev = key
            out[key] = value
    return out


def _check_audio(path: str, max_duration: Optional[float], require_16k_mono: bool) -> Tuple[Optional[str], Tuple]:
    import soundfile

    p = Path(path)
    if path.endswith("|"):
        return "pipe commands are not supported in wav.scp; give a file path", (0, 0.0, 0)
    if not p.exists():
        return f"audio file {path} does not exist", (0, 0.0, 0)
    try:
        info = soundfile.info(path)
    except Exception as e:
        return f"audio file {path} is unreadable: {e}", (0, 0.0, 0)
    meta = (info.samplerate, info.frames / max(info.samplerate, 1), info.channels)
    if info.frames == 0:
        return f"audio file {path} has zero length", meta
    if require_16k_mono and info.samplerate != SAMPLE_RATE:
        return f"audio file {path} has sample rate {info.samplerate}, expected {SAMPLE_RATE}", meta
    if require_16k_mono and info.channels != 1:
        return f"audio file {path} has {info.channels} channels, expected mono", meta
    if max_duration is not None and meta[1] > max_duration:
        return f"audio file {path} is {meta[1]:.1f} s long (> {max_duration} s)", meta
    try:
        wav, _ = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        return f"audio file {path} is unreadable: {e}", meta
    if not np.isfinite(wav).all():
        return f"audio file {path} contains NaN/inf samples", meta
    if np.abs(wav).max() < 1e-6:
        return f"audio file {path} is silent (all samples zero: clipped to nothing)", meta
    return None, meta


def validate_data_dir(path, max_duration: Optional[float] = None,
                      need_lang: bool = False, require_16k_mono: bool = False) -> ValidationReport:
    """Check a data dir; returns a :class:`ValidationReport` (nothing is modified)."""
    path = Path(path)
    report = ValidationReport()
    for name in ("wav.scp", "text"):
        if not (path / name).exists():
            report.file_errors.append(f"{path / name} does not exist")
    if report.file_errors:
        return report
    wav = _read_lines(path / "wav.scp", report)
    text = _read_lines(path / "text", report)
    lang = _read_lines(path / "utt2lang", report) if (path / "utt2lang").exists() else None
    if need_lang and lang is None:
        report.file_errors.append(f"{path / 'utt2lang'} does not exist but the projector needs language ids")
    for k in sorted(set(text) - set(wav)):
        report.add(k, f"in {path / 'text'} but has no audio in wav.scp")
    for k in sorted(set(wav) - set(text)):
        report.add(k, f"in {path / 'wav.scp'} but has no transcript in text")
    for k, t in text.items():
        if k in wav and not t.strip():
            report.add(k, f"empty transcript in {path / 'text'}")
    if lang is not None:
        for k in sorted(set(wav) - set(lang)):
            report.add(k, f"no language id in {path / 'utt2lang'}")
    for k, p in sorted(wav.items()):
        err, meta = _check_audio(p.strip(), max_duration, require_16k_mono)
        report.info[k] = meta
        if err:
            report.add(k, err)
    return report
