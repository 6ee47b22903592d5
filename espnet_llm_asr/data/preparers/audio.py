"""Audio that the later stages cannot read as it is (mp3/m4a/..., ``cmd |``
pipes, segments of a recording) decoded or cut into wav files at preparation."""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional

from espnet_llm_asr.data.preparers.rows import PrepareError, Problem, Row
from espnet_llm_asr.utils import atomic_path

#: audio that stage 3 cannot read (sox has no handler, or no soundfile support): decoded here
DECODE_EXTENSIONS = {".mp3", ".m4a", ".aac", ".mp4", ".webm", ".wma", ".opus"}


def _soundfile_reads(path: str) -> bool:
    import soundfile

    try:
        soundfile.info(path)
        return True
    except Exception:  # noqa: BLE001 - any failure: not readable by libsndfile
        return False


def find_decoder(path: str) -> Callable[[str, str], None]:
    """A function ``(src, dst_wav)`` able to decode ``path``: soundfile where libsndfile
    reads the format (mp3 with libsndfile >= 1.1), else ffmpeg, else an error."""
    if _soundfile_reads(path):
        return _decode_soundfile
    if shutil.which("ffmpeg"):
        return _decode_ffmpeg
    raise PrepareError(
        f"cannot decode {path}: this libsndfile does not read {Path(path).suffix or 'it'} and ffmpeg "
        "is not installed (apt-get install ffmpeg); or convert the audio to wav/flac yourself and "
        "use --corpus kaldi")


def _decode_soundfile(src: str, dst: str) -> None:
    import soundfile

    data, sr = soundfile.read(src, dtype="float32", always_2d=True)
    soundfile.write(dst, data, sr, subtype="PCM_16", format="WAV")


def _decode_ffmpeg(src: str, dst: str) -> None:
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", src, "-ac", "1",
                           "-ar", "16000", "-f", "wav", dst], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"ffmpeg failed on {src}")


def _run_pipe(cmd: str, dst: str) -> None:
    with open(dst, "wb") as f:
        proc = subprocess.run(["bash", "-c", cmd.rstrip().rstrip("|")], stdout=f, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"command '{cmd}' failed: {proc.stderr.decode(errors='replace').strip()}")


def _cut(src: str, start: float, end: float, dst: str) -> None:
    import soundfile

    with soundfile.SoundFile(src) as f:
        sr = f.samplerate
        first = int(round(start * sr))
        last = f.frames if end < 0 else min(f.frames, int(round(end * sr)))
        if last <= first:
            raise RuntimeError(f"segment {start}-{end} s of {src} is empty ({f.frames / sr:.2f} s long)")
        f.seek(first)
        data = f.read(last - first, dtype="float32", always_2d=True)
    soundfile.write(dst, data, sr, subtype="PCM_16", format="WAV")


def needs_local_copy(row: Row) -> bool:
    return row.audio.endswith("|") or row.segment is not None or Path(row.audio).suffix.lower() in DECODE_EXTENSIONS


def materialize_audio(rows: List[Row], wav_dir: Path, nj: int = 1) -> List[Problem]:
    """Point every row that needs it (pipe, segment, mp3/m4a/...) at a wav under
    ``wav_dir/<lang>/``; existing outputs are reused.  Returns failures as Problems."""
    todo = [r for r in rows if needs_local_copy(r)]
    if not todo:
        return []
    decoders: Dict[str, Callable[[str, str], None]] = {}
    for r in todo:  # one decoder probe per extension; a missing decoder stops before any work
        ext = Path(r.audio).suffix.lower()
        if not r.audio.endswith("|") and r.segment is None and ext not in decoders:
            decoders[ext] = find_decoder(r.audio)

    def work(r: Row) -> Optional[Problem]:
        dst = wav_dir / r.lang / f"{r.uttid}.wav"
        if dst.is_file():
            r.audio = str(dst.resolve())
            return None
        try:
            with atomic_path(dst) as tmp:
                if r.segment is not None:
                    if r.audio.endswith("|"):
                        with tempfile.NamedTemporaryFile(suffix=".wav", dir=dst.parent) as rec:
                            _run_pipe(r.audio, rec.name)
                            _cut(rec.name, r.segment[0], r.segment[1], tmp)
                    else:
                        _cut(r.audio, r.segment[0], r.segment[1], tmp)
                elif r.audio.endswith("|"):
                    _run_pipe(r.audio, tmp)
                else:
                    decoders[Path(r.audio).suffix.lower()](r.audio, tmp)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its row
            return Problem(r.source, f"utterance {r.uttid}: audio {r.audio}: {e}")
        r.audio = str(dst.resolve())
        return None

    with ThreadPoolExecutor(max(1, nj)) as pool:
        problems = [p for p in pool.map(work, todo) if p is not None]
    logging.info(f"audio: {len(todo) - len(problems)} of {len(todo)} utterance(s) decoded/cut into {wav_dir}")
    return problems
