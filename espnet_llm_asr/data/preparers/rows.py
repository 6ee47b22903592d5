"""What every corpus reader produces and shares: :class:`Row` (one utterance and
the manifest line it came from), :class:`Problem` (a bad row, ``file:line:
reason``), :class:`SplitResult`, :class:`PrepareError`, and the id / text /
directory helpers the readers use."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

DEFAULT_LANGS = ("hi", "mr", "ta", "te")

#: language code -> directory name used by Kathbath and IndicVoices
LANGUAGE_DIR_NAMES = {
    "hi": "hindi", "mr": "marathi", "ta": "tamil", "te": "telugu", "bn": "bengali",
    "gu": "gujarati", "kn": "kannada", "ml": "malayalam", "pa": "punjabi", "ur": "urdu",
    "or": "odia", "as": "assamese", "ne": "nepali", "sa": "sanskrit", "en": "english",
}



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


def need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise PrepareError(f"{what} {path} does not exist")
    return path


def check_row(row: Row, problems: List[Problem]) -> Optional[Row]:
    """``row`` if it has a transcript and existing audio, else None with a Problem."""
    if not row.text:
        problems.append(Problem(row.source, f"utterance {row.uttid}: empty transcript"))
        return None
    if not row.audio.endswith("|") and not os.path.isfile(row.audio):
        problems.append(Problem(row.source, f"utterance {row.uttid}: audio file {row.audio} does not exist"))
        return None
    return row

