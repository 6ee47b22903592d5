"""Kathbath reader (``--corpus kathbath``)."""
from __future__ import annotations

import re
from pathlib import Path

from espnet_llm_asr.data.preparers.rows import (LANGUAGE_DIR_NAMES, PrepareError, Row, SplitResult, check_row,
                                                 clean_text, lang_dir, safe_id)

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
            if check_row(row, out.problems):
                out.rows.append(row)
    return out
