"""Kaldi data dirs from real corpora: FLEURS, Common Voice, Kathbath, IndicVoices,
and any existing Kaldi data dir (``local/data.sh --corpus ...``).

Each corpus layout has one small reader (``read_<corpus>``) that turns the
corpus's manifests into :class:`Row` records, naming the manifest file and
line of every row.  :func:`prepare_corpus` then

1. reads every requested split of every requested language (nothing is
   written yet), collecting bad rows (no transcript, missing audio,
   malformed line, duplicate id) as :class:`Problem` s;
2. stops with an error listing them (file:line and reason), or with
   ``skip_bad`` drops them, logs the count and lists them in
   ``<set>/dropped_prepare``;
3. decodes audio that stage 3 (sox/soundfile) cannot read (mp3, m4a, ...)
   or that is a pipe / a segment of a recording into wav files under
   ``wav_dir``, each written atomically;
4. writes every output set to a temporary dir next to it and renames it into
   place, so a failure never leaves a half-written data dir, and merges the
   languages into ``lang_list`` (existing codes keep their line, i.e. their id).

Output sets (``--suffix`` is appended to each name, e.g. ``test_fleurs``):

=============  ==============================================================
corpus         native split -> data dir
=============  ==============================================================
fleurs         train -> train, dev -> dev, test -> test
commonvoice    train -> train, dev -> dev, test -> test
kathbath       train -> train, valid -> dev, test_known, test_unknown
indicvoices    train -> train, valid -> dev, test -> test
kaldi          the source dir -> ``set_name`` (default: its basename)
=============  ==============================================================

Utterance ids are ``<lang>_<corpus>_<speaker or file id>...`` so that sets of
several languages and corpora never collide and each id starts with its
speaker id (Kaldi's sort order).  Transcripts are whitespace-normalised
(tabs, newlines and no-break spaces become single spaces); nothing else is
changed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from espnet_llm_asr.data.kaldi_dir import KaldiEntry, write_kaldi_dir
from espnet_llm_asr.utils import _umask, atomic_path, atomic_write_text

DEFAULT_LANGS = ("hi", "mr", "ta", "te")

#: language code -> directory name used by Kathbath and IndicVoices
LANGUAGE_DIR_NAMES = {
    "hi": "hindi", "mr": "marathi", "ta": "tamil", "te": "telugu", "bn": "bengali",
    "gu": "gujarati", "kn": "kannada", "ml": "malayalam", "pa": "punjabi", "ur": "urdu",
    "or": "odia", "as": "assamese", "ne": "nepali", "sa": "sanskrit", "en": "english",
}

#: audio that stage 3 cannot read (sox has no handler, or no soundfile support): decoded here
DECODE_EXTENSIONS = {".mp3", ".m4a", ".aac", ".mp4", ".webm", ".wma", ".opus"}


class PrepareError(ValueError):
    """A corpus cannot be prepared; the message names the file (and line)."""


@dataclass
class Row:
    """One utterance as read from a manifest."""

    uttid: str
    speaker: str
    audio: str                      # file path, or a command ending in "|"
    text: str
    lang: str
    source: str                     # "file:line" of the manifest row
    segment: Optional[Tuple[float, float]] = None  # (start, end) seconds; end < 0: to the end


@dataclass
class Problem:
    source: str   # file:line
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class SplitResult:
    rows: List[Row] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    inputs: List[Path] = field(default_factory=list)  # manifests read (for the skip signature)


# ------------------------------------------------------------------ helpers
_BAD_ID_CHARS = re.compile(r"[\s/\\]+")


def safe_id(s: str) -> str:
    """An id without whitespace or path separators."""
    return _BAD_ID_CHARS.sub("_", s.strip())


def clean_text(s: str) -> str:
    """Whitespace runs (incl. tabs, newlines, no-break spaces) -> one space, stripped."""
    return " ".join(s.split())


def lang_dir(root: Path, lang: str, candidates: Sequence[str], corpus: str) -> Path:
    """The first existing ``root/<candidate>``, or an error naming every path tried."""
    tried = [root / c for c in candidates]
    for p in tried:
        if p.is_dir():
            return p
    raise PrepareError(f"{corpus}: no directory for language '{lang}': tried "
                       + ", ".join(str(p) for p in tried))


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise PrepareError(f"{what} {path} does not exist")
    return path


def _check_row(row: Row, problems: List[Problem]) -> Optional[Row]:
    """``row`` if it has a transcript and existing audio, else None with a Problem."""
    if not row.text:
        problems.append(Problem(row.source, f"utterance {row.uttid}: empty transcript"))
        return None
    if not row.audio.endswith("|") and not os.path.isfile(row.audio):
        problems.append(Problem(row.source, f"utterance {row.uttid}: audio file {row.audio} does not exist"))
        return None
    return row


# ------------------------------------------------------------------ FLEURS
FLEURS_SPLITS = {"train": "train", "dev": "dev", "test": "test"}


def read_fleurs(root: Path, lang: str, split: str) -> SplitResult:
    """FLEURS (google/fleurs as downloaded): ``<root>/<lang>_in/<split>.tsv`` and
    ``<root>/<lang>_in/audio/<split>/<file name>``.

    The tsv has no header; its tab-separated columns are: sentence id, audio
    file name, raw transcription, normalised transcription, characters of the
    normalised transcription, number of samples, gender.  The normalised
    transcription (column 4) is used: FLEURS's own WER references.  FLEURS
    names no speaker, so every utterance is its own speaker; the audio is
    16 kHz wav.  A language directory ``<lang>`` (without ``_in``) is also
    accepted.
    """
    d = lang_dir(root, lang, [f"{lang}_in", lang], "FLEURS")
    tsv = _need_file(d / f"{split}.tsv", "FLEURS manifest")
    audio_dir = d / "audio" / split
    out = SplitResult(inputs=[tsv])
    with tsv.open(encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            src = f"{tsv}:{lineno}"
            cols = line.split("\t")
            if len(cols) < 4:
                out.problems.append(Problem(src, f"expected >= 4 tab-separated columns, got {len(cols)}"))
                continue
            name = cols[1].strip()
            uttid = safe_id(f"{lang}_fleurs_{Path(name).stem}")
            row = Row(uttid, uttid, str(audio_dir / name), clean_text(cols[3]), lang, src)
            if _check_row(row, out.problems):
                out.rows.append(row)
    return out


# ------------------------------------------------------------------ Common Voice
COMMONVOICE_SPLITS = {"train": "train", "dev": "dev", "test": "test"}


def read_commonvoice(root: Path, lang: str, split: str) -> SplitResult:
    """Common Voice (a ``cv-corpus-*`` release): ``<root>/<lang>/<split>.tsv`` and
    ``<root>/<lang>/clips/<path>``.

    The tsv has a header line; the columns used are ``path`` (mp3 file name
    under clips/), ``sentence`` and ``client_id`` (the speaker: its first 16
    characters).  Quotes are literal (no CSV quoting).  The mp3 clips are
    decoded to wav at preparation (see :func:`decode_audio`).
    """
    d = lang_dir(root, lang, [lang, LANGUAGE_DIR_NAMES.get(lang, lang)], "Common Voice")
    tsv = _need_file(d / f"{split}.tsv", "Common Voice manifest")
    out = SplitResult(inputs=[tsv])
    with tsv.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or "path" not in header or "sentence" not in header:
            raise PrepareError(f"{tsv}:1: header must name the columns 'path' and 'sentence', got {header}")
        ipath, isent = header.index("path"), header.index("sentence")
        ispk = header.index("client_id") if "client_id" in header else None
        for lineno, cols in enumerate(reader, 2):
            if not any(c.strip() for c in cols):
                continue
            src = f"{tsv}:{lineno}"
            if len(cols) <= max(ipath, isent):
                out.problems.append(Problem(src, f"expected {len(header)} columns, got {len(cols)}"))
                continue
            name = cols[ipath].strip()
            client = cols[ispk].strip()[:16] if ispk is not None and ispk < len(cols) else ""
            speaker = safe_id(f"{lang}_cv_{client}") if client else safe_id(f"{lang}_cv_{Path(name).stem}")
            uttid = speaker if not client else safe_id(f"{speaker}-{Path(name).stem}")
            row = Row(uttid, speaker, str(d / "clips" / name), clean_text(cols[isent]), lang, src)
            if _check_row(row, out.problems):
                out.rows.append(row)
    return out


# ------------------------------------------------------------------ Kathbath
KATHBATH_SPLITS = {"train": "train", "valid": "dev", "test_known": "test_known", "test_unknown": "test_unknown"}
_KATHBATH_NAME = re.compile(r"^(\d+)-\d+-[mfMF]$")


def read_kathbath(root: Path, lang: str, split: str) -> SplitResult:
    """Kathbath (AI4Bharat IndicSUPERB, ``kb_data_clean_m4a``): ``<root>/<language>/<split>/``
    with ``transcription_n2w.txt`` (``<audio file name><TAB><transcript>`` a
    line, numbers written as words) and the audio files, either beside it or
    under ``audio/``.

    Assumptions (from the public README and users' scripts, not from the
    corpus itself): ``<language>`` is the English name in lower case
    (``hindi``) or the code (``hi``); the audio and transcript archives are
    extracted into the same tree; file names look like
    ``844424931537866-594-f.m4a`` whose first field is the speaker; if
    ``transcription_n2w.txt`` is absent, the only other ``*.txt`` of the split
    is read; a line without a tab is split at its first whitespace.  The
    m4a audio is decoded to wav at preparation (needs ffmpeg).
    """
    d = lang_dir(root, lang, [LANGUAGE_DIR_NAMES.get(lang, lang), lang], "Kathbath")
    split_dir = d / split
    if not split_dir.is_dir():
        raise PrepareError(f"Kathbath split directory {split_dir} does not exist")
    txt = split_dir / "transcription_n2w.txt"
    if not txt.is_file():
        others = sorted(split_dir.glob("*.txt"))
        if len(others) != 1:
            raise PrepareError(f"Kathbath transcript {txt} does not exist"
                               + (f" (and several other .txt files: {[p.name for p in others]})" if others else ""))
        txt = others[0]
    out = SplitResult(inputs=[txt])
    with txt.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            src = f"{txt}:{lineno}"
            name, sep, text = line.partition("\t")
            if not sep:
                parts = line.split(None, 1)
                name, text = parts[0], (parts[1] if len(parts) > 1 else "")
            name = name.strip()
            stem = Path(name).stem
            m = _KATHBATH_NAME.match(stem)
            speaker = safe_id(f"{lang}_kb_{m.group(1)}" if m else f"{lang}_kb_{stem}")
            uttid = safe_id(f"{speaker}-{stem}") if m else speaker
            audio = split_dir / name
            if not audio.is_file() and (split_dir / "audio" / name).is_file():
                audio = split_dir / "audio" / name
            row = Row(uttid, speaker, str(audio), clean_text(text), lang, src)
            if _check_row(row, out.problems):
                out.rows.append(row)
    return out


# ------------------------------------------------------------------ IndicVoices
INDICVOICES_SPLITS = {"train": "train", "valid": "dev", "test": "test"}
_IV_AUDIO_KEYS = ("audio_filepath", "audio_path", "filepath")
_IV_TEXT_KEYS = ("text", "verbatim", "transcript")
_IV_SPEAKER_KEYS = ("speaker_id", "speaker")


def read_indicvoices(root: Path, lang: str, split: str) -> SplitResult:
    """IndicVoices as NeMo-style manifests: ``<root>/<language>/<split>.jsonl`` (or
    ``.json``: JSON lines, or one JSON list of objects).

    Assumptions (IndicVoices is distributed in several forms; this reads the
    manifest form its ASR models are trained from): each object has the
    audio path in ``audio_filepath`` (or ``audio_path``/``filepath``),
    relative to the manifest's directory unless absolute; the transcript in
    ``text`` (or ``verbatim``/``transcript``); optionally ``speaker_id``
    (or ``speaker``); with ``offset`` (and ``duration``) in seconds, the row is a
    segment of a longer recording, cut out at preparation (``duration`` alone
    is just the file's length and is ignored).  ``<language>`` is the
    English name in lower case (``hindi``) or the code.
    """
    d = lang_dir(root, lang, [LANGUAGE_DIR_NAMES.get(lang, lang), lang], "IndicVoices")
    manifest = next((d / f"{split}{ext}" for ext in (".jsonl", ".json") if (d / f"{split}{ext}").is_file()), None)
    if manifest is None:
        raise PrepareError(f"IndicVoices manifest {d / split}.jsonl (or .json) does not exist")
    out = SplitResult(inputs=[manifest])
    text = manifest.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = [(i + 1, obj) for i, obj in enumerate(json.loads(text))]
        except json.JSONDecodeError as e:
            raise PrepareError(f"{manifest}:{e.lineno}: not valid JSON ({e.msg})") from e
        where = "item"
    else:
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                out.problems.append(Problem(f"{manifest}:{lineno}", f"not valid JSON ({e.msg})"))
        where = "line"
    for n, obj in items:
        src = f"{manifest}:{n}" if where == "line" else f"{manifest}: item {n}"
        if not isinstance(obj, dict):
            out.problems.append(Problem(src, "not a JSON object"))
            continue
        audio = next((obj[k] for k in _IV_AUDIO_KEYS if obj.get(k)), None)
        if audio is None:
            out.problems.append(Problem(src, f"no audio path (one of {list(_IV_AUDIO_KEYS)})"))
            continue
        audio_path = Path(audio) if os.path.isabs(audio) else manifest.parent / audio
        spk = next((str(obj[k]) for k in _IV_SPEAKER_KEYS if obj.get(k) not in (None, "")), None)
        stem = Path(audio).stem
        segment = None
        if obj.get("offset") is not None:  # NeMo manifests always give duration; only offset makes a segment
            start = float(obj["offset"])
            dur = obj.get("duration")
            segment = (start, start + float(dur) if dur is not None else -1.0)
            stem = f"{stem}_{int(round(start * 100)):07d}"
        speaker = safe_id(f"{lang}_iv_{spk}") if spk else safe_id(f"{lang}_iv_{stem}")
        uttid = safe_id(f"{speaker}-{stem}") if spk else speaker
        row = Row(uttid, speaker, str(audio_path), clean_text(str(next(
            (obj[k] for k in _IV_TEXT_KEYS if obj.get(k) is not None), ""))), lang, src, segment)
        if _check_row(row, out.problems):
            out.rows.append(row)
    return out


# ------------------------------------------------------------------ Kaldi dir
def _read_kaldi_lines(path: Path) -> Iterable[Tuple[int, str, str]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                key, _, value = line.partition(" ")
                yield lineno, key, value.strip()


def read_kaldi(src_dir: Path, lang: Optional[str] = None, utt2lang: Optional[Path] = None) -> SplitResult:
    """An existing Kaldi data dir: ``wav.scp``, ``text``, optionally ``utt2spk``,
    ``segments`` and ``utt2lang``.

    The language of each utterance comes from ``utt2lang`` (the given file,
    else ``src_dir/utt2lang``) or, for all, from ``lang``.  wav.scp entries may
    be files (relative paths are taken from the current directory, then from
    the recipe dir two levels above ``src_dir``) or commands ending in ``|``,
    which are run once at preparation and stored as wav.  With ``segments``
    (``<uttid> <recording id> <start> <end>``, end -1 = to the end) each
    segment is cut into its own wav, since the later stages read one file an
    utterance.  When utt2spk's speaker ids are not prefixes of the utterance
    ids, every utterance becomes its own speaker (a warning says so).
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise PrepareError(f"Kaldi source dir {src_dir} does not exist")
    wav_scp = _need_file(src_dir / "wav.scp", "Kaldi file")
    text_file = _need_file(src_dir / "text", "Kaldi file")
    out = SplitResult(inputs=[wav_scp, text_file])

    def read_map(path: Path) -> Dict[str, Tuple[str, str]]:
        m: Dict[str, Tuple[str, str]] = {}
        for lineno, key, value in _read_kaldi_lines(path):
            if key in m:
                out.problems.append(Problem(f"{path}:{lineno}", f"duplicate id {key}"))
                continue
            m[key] = (value, f"{path}:{lineno}")
        return m

    wavs = read_map(wav_scp)
    texts = read_map(text_file)
    spk = read_map(src_dir / "utt2spk") if (src_dir / "utt2spk").is_file() else {}
    lang_file = Path(utt2lang) if utt2lang else (src_dir / "utt2lang")
    if utt2lang and not lang_file.is_file():
        raise PrepareError(f"utt2lang file {lang_file} does not exist")
    langs = read_map(lang_file) if lang_file.is_file() else {}
    if not langs and not lang:
        raise PrepareError(f"{src_dir}: no utt2lang: give --utt2lang FILE or --lang CODE")
    segments: Dict[str, Tuple[str, str]] = {}
    if (src_dir / "segments").is_file():
        segments = read_map(src_dir / "segments")
        out.inputs.append(src_dir / "segments")

    def resolve(value: str) -> str:
        if value.endswith("|") or os.path.isabs(value) or os.path.exists(value):
            return os.path.abspath(value) if not value.endswith("|") else value
        return str((src_dir.parent.parent / value).resolve())

    per_utt = all(u.startswith(s) for u, (s, _) in spk.items())
    if spk and not per_utt:
        logging.warning(f"{src_dir}/utt2spk: speaker ids are not prefixes of the utterance ids; "
                        "every utterance becomes its own speaker")
    for uttid, (text, src) in texts.items():
        seg = None
        if segments:
            if uttid not in segments:
                out.problems.append(Problem(src, f"utterance {uttid} has no line in {src_dir / 'segments'}"))
                continue
            parts = segments[uttid][0].split()
            try:
                rec, start, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                out.problems.append(Problem(segments[uttid][1], "expected '<uttid> <recording> <start> <end>'"))
                continue
            seg = (start, end)
        else:
            rec = uttid
        if rec not in wavs:
            out.problems.append(Problem(src, f"utterance {uttid}: recording {rec} not in {wav_scp}"))
            continue
        code = langs[uttid][0] if uttid in langs else lang
        if not code:
            out.problems.append(Problem(src, f"utterance {uttid}: no language in {lang_file}"))
            continue
        speaker = spk[uttid][0] if uttid in spk and per_utt else uttid
        row = Row(uttid, speaker, resolve(wavs[rec][0]), clean_text(text), code, src, seg)
        if _check_row(row, out.problems):
            out.rows.append(row)
    return out


READERS: Dict[str, Tuple[Callable[[Path, str, str], SplitResult], Dict[str, str]]] = {
    "fleurs": (read_fleurs, FLEURS_SPLITS),
    "commonvoice": (read_commonvoice, COMMONVOICE_SPLITS),
    "kathbath": (read_kathbath, KATHBATH_SPLITS),
    "indicvoices": (read_indicvoices, INDICVOICES_SPLITS),
}
CORPORA = tuple(READERS) + ("kaldi",)


# ------------------------------------------------------------------ audio
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


# ------------------------------------------------------------------ writing
def merge_lang_list(path: Path, codes: Sequence[str]) -> List[str]:
    """Existing codes keep their line (their id); new codes are appended."""
    old = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()] if path.is_file() else []
    merged = old + [c for c in codes if c not in old]
    atomic_write_text(path, "".join(c + "\n" for c in merged))
    return merged


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Rename ``tmp`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _signature(options: dict, inputs: Sequence[Path]) -> str:
    h = hashlib.md5(json.dumps(options, sort_keys=True).encode())
    for p in sorted(set(inputs)):
        st = p.stat()
        h.update(f"{p} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()


def _format_problems(problems: Sequence[Problem], limit: int = 20) -> str:
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


@dataclass
class PrepareSummary:
    sets: Dict[str, Dict[str, int]]      # set -> lang -> utterances
    dropped: Dict[str, int]               # set -> bad rows dropped
    lang_list: List[str]
    skipped: bool = False

    def format(self) -> str:
        lines = []
        for s, by_lang in self.sets.items():
            per = ", ".join(f"{lang} {n}" for lang, n in sorted(by_lang.items()))
            extra = f"; {self.dropped[s]} bad row(s) dropped (listed in {s}/dropped_prepare)" if self.dropped.get(s) else ""
            lines.append(f"{s}: {sum(by_lang.values())} utterances ({per}){extra}")
        lines.append(f"lang_list: {' '.join(self.lang_list)}")
        return "\n".join(lines)


def prepare_corpus(corpus: str, out_dir, *, root=None, langs: Optional[Sequence[str]] = None,
                   splits: Optional[Sequence[str]] = None, suffix: str = "", wav_dir=None,
                   skip_bad: bool = False, nj: int = 1, src_dir=None, lang: Optional[str] = None,
                   utt2lang=None, set_name: Optional[str] = None) -> PrepareSummary:
    """Prepare ``corpus`` into Kaldi dirs under ``out_dir`` (see the module docstring).

    Args:
        corpus: one of :data:`CORPORA`.
        root: corpus root (not for ``kaldi``).
        langs: language codes; default hi, mr, ta, te (``kaldi``: every language found).
        splits: native split names to prepare (default: all of the layout).
        suffix: appended to every output set name.
        wav_dir: where decoded / cut audio goes (default ``<out_dir>/../downloads/<corpus>``).
        skip_bad: drop bad rows (counted, listed) instead of stopping.
        src_dir, lang, utt2lang, set_name: ``kaldi`` only.

    Raises:
        PrepareError: bad layout, or bad rows without ``skip_bad``; nothing is written then.
    """
    out_dir = Path(out_dir)
    wav_dir = Path(wav_dir) if wav_dir else out_dir.resolve().parent / "downloads" / corpus
    options = dict(corpus=corpus, root=str(root), langs=list(langs or []), splits=list(splits or []),
                   suffix=suffix, skip_bad=skip_bad, src_dir=str(src_dir), lang=lang,
                   utt2lang=str(utt2lang), set_name=set_name, wav_dir=str(wav_dir))
    results: Dict[str, SplitResult] = {}
    if corpus == "kaldi":
        if src_dir is None:
            raise PrepareError("--corpus kaldi needs --src_dir (an existing Kaldi data dir)")
        name = (set_name or Path(src_dir).resolve().name) + suffix
        res = read_kaldi(Path(src_dir), lang=lang, utt2lang=utt2lang)
        if langs:
            res.rows = [r for r in res.rows if r.lang in langs]
        results[name] = res
    elif corpus in READERS:
        reader, split_map = READERS[corpus]
        if not root:
            raise PrepareError(f"--corpus {corpus}: the corpus root is not set: set {corpus.upper()} in db.sh "
                               "or pass --root")
        root = Path(root)
        if not root.is_dir():
            raise PrepareError(f"{corpus} root {root} does not exist")
        unknown = sorted(set(splits or []) - set(split_map))
        if unknown:
            raise PrepareError(f"{corpus}: unknown split(s) {unknown}; the layout has {list(split_map)}")
        for split in (splits or list(split_map)):
            res = SplitResult()
            for code in (langs or DEFAULT_LANGS):
                part = reader(root, code, split)
                res.rows += part.rows
                res.problems += part.problems
                res.inputs += part.inputs
            results[split_map[split] + suffix] = res
    else:
        raise PrepareError(f"unknown corpus {corpus!r}; choose one of {list(CORPORA)}")

    # duplicate ids within a set are bad rows too
    for res in results.values():
        seen: Dict[str, str] = {}
        keep = []
        for r in res.rows:
            if r.uttid in seen:
                res.problems.append(Problem(r.source, f"duplicate utterance id {r.uttid} (first at {seen[r.uttid]})"))
            else:
                seen[r.uttid] = r.source
                keep.append(r)
        res.rows = keep

    sig = _signature(options, [p for res in results.values() for p in res.inputs])
    if all((out_dir / s / ".prepare_signature").is_file()
           and (out_dir / s / ".prepare_signature").read_text().strip() == sig for s in results):
        codes = sorted({r.lang for res in results.values() for r in res.rows})
        return PrepareSummary({s: _count(res.rows) for s, res in results.items()},
                              {s: len(res.problems) for s, res in results.items()},
                              merge_lang_list(out_dir / "lang_list", codes), skipped=True)

    _stop_or_report(results, skip_bad, "reading")
    seen_problems = {s: len(res.problems) for s, res in results.items()}
    for s, res in results.items():
        failed = materialize_audio(res.rows, wav_dir, nj)
        if failed:
            bad = {p.source for p in failed}
            res.rows = [r for r in res.rows if r.source not in bad]
            res.problems += failed
    _stop_or_report(results, skip_bad, "decoding", seen_problems)
    for s, res in results.items():
        if not res.rows:
            raise PrepareError(f"{corpus}: set {s} has no usable utterance"
                               + (f"; problems:\n{_format_problems(res.problems)}" if res.problems else ""))

    out_dir.mkdir(parents=True, exist_ok=True)
    for s, res in results.items():
        tmp = Path(tempfile.mkdtemp(prefix=f".{s}.", suffix=".tmp", dir=out_dir))
        try:
            write_kaldi_dir(tmp, [KaldiEntry(r.uttid, os.path.abspath(r.audio), r.text, r.speaker, r.lang)
                                  for r in res.rows])
            if res.problems:
                atomic_write_text(tmp / "dropped_prepare", "".join(f"{p}\n" for p in res.problems))
            atomic_write_text(tmp / ".prepare_signature", sig + "\n")
            os.chmod(tmp, 0o777 & ~_umask())
            _replace_dir(tmp, out_dir / s)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    codes = [c for c in (langs or []) if any(r.lang == c for res in results.values() for r in res.rows)]
    codes += sorted({r.lang for res in results.values() for r in res.rows} - set(codes))
    return PrepareSummary({s: _count(res.rows) for s, res in results.items()},
                          {s: len(res.problems) for s, res in results.items()},
                          merge_lang_list(out_dir / "lang_list", codes))


def _count(rows: Sequence[Row]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for r in rows:
        out[r.lang] = out.get(r.lang, 0) + 1
    return out


def _stop_or_report(results: Dict[str, SplitResult], skip_bad: bool, what: str,
                    already: Optional[Dict[str, int]] = None) -> None:
    """Raise on the problems found since ``already`` (set -> count), or log them with ``skip_bad``."""
    new = {s: res.problems[(already or {}).get(s, 0):] for s, res in results.items()}
    problems = [p for ps in new.values() for p in ps]
    if not problems:
        return
    if not skip_bad:
        raise PrepareError(f"{len(problems)} bad row(s) found while {what} (no data dir was written; "
                           f"--skip_bad true drops and lists them):\n{_format_problems(problems)}")
    for s, ps in new.items():
        if ps:
            logging.warning(f"{s}: {len(ps)} bad row(s) dropped while {what}:\n{_format_problems(ps, 10)}")
