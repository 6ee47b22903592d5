"""FLEURS reader (``--corpus fleurs``)."""
from __future__ import annotations

from pathlib import Path

from espnet_llm_asr.data.preparers.rows import Problem, Row, SplitResult, check_row, clean_text, lang_dir, need_file, safe_id

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
    tsv = need_file(d / f"{split}.tsv", "FLEURS manifest")
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
            if check_row(row, out.problems):
                out.rows.append(row)
    return out
