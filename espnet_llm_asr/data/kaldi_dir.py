"""Writing Kaldi data dirs: wav.scp, text, utt2spk, spk2utt, utt2lang.

Every file is sorted in C-locale (byte) order, as Kaldi's
``utils/validate_data_dir.sh`` wants, and written atomically.  Utterance ids
must start with their speaker id so both orders agree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple

from espnet_llm_asr.datadir import DataDir
from espnet_llm_asr.utils import atomic_write_text

KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang")


class KaldiEntry(NamedTuple):
    uttid: str
    wav: str  # absolute path
    text: str
    speaker: str
    lang: str


def write_kaldi_dir(path, entries: Iterable[KaldiEntry]) -> None:
    """Write the files of :data:`KALDI_FILES` for ``entries`` into ``path``.

    Raises:
        ValueError: duplicate utterance id, an id not starting with its speaker id,
            or whitespace inside ids / a newline inside a transcript.
    """
    path = Path(path)
    by_id: Dict[str, KaldiEntry] = {}
    for e in entries:
        if e.uttid in by_id:
            raise ValueError(f"{path}: duplicate utterance id {e.uttid}")
        if not e.uttid.startswith(e.speaker):
            raise ValueError(f"{path}: utterance id {e.uttid} does not start with its speaker id {e.speaker}")
        for name, value in (("uttid", e.uttid), ("speaker", e.speaker), ("lang", e.lang)):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"{path}: {name} {value!r} of utterance {e.uttid} is empty or has whitespace")
        # a wav path may hold spaces: Kaldi/ESPnet read the rest of the line as the path
        if not e.wav or "\n" in e.wav:
            raise ValueError(f"{path}: wav path {e.wav!r} of utterance {e.uttid} is empty or has a newline")
        if "\n" in e.text or not e.text.strip():
            raise ValueError(f"{path}: transcript of utterance {e.uttid} is empty or has a newline")
        by_id[e.uttid] = e
    DataDir(
        wav={k: e.wav for k, e in by_id.items()},
        text={k: e.text for k, e in by_id.items()},
        utt2spk={k: e.speaker for k, e in by_id.items()},
        extra={"utt2lang": {k: e.lang for k, e in by_id.items()}},
    ).save(path)


def write_lang_list(path, codes: List[str]) -> None:
    """One language code a line; the line index is the language id."""
    atomic_write_text(Path(path), "".join(f"{c}\n" for c in codes))
