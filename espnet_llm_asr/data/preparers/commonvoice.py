"""Common Voice reader (``--corpus commonvoice``)."""
from __future__ import annotations

import csv
from pathlib import Path

from espnet_llm_asr.data.preparers.rows import (LANGUAGE_DIR_NAMES, PrepareError, Problem, Row, SplitResult,
                                                 check_row, clean_text, lang_dir, need_file, safe_id)

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
    tsv = need_file(d / f"{split}.tsv", "Common Voice manifest")
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
            if check_row(row, out.problems):
                out.rows.append(row)
    return out
