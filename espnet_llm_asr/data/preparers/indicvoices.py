"""IndicVoices reader (``--corpus indicvoices``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from espnet_llm_asr.data.preparers.rows import (LANGUAGE_DIR_NAMES, PrepareError, Problem, Row, SplitResult,
                                                 check_row, clean_text, lang_dir, safe_id)

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
        if check_row(row, out.problems):
            out.rows.append(row)
    return out
