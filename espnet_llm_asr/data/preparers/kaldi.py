"""Reader of an existing Kaldi data dir (``--corpus kaldi``)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

from espnet_llm_asr.data.preparers.rows import PrepareError, Problem, Row, SplitResult, check_row, clean_text, need_file

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
    wav_scp = need_file(src_dir / "wav.scp", "Kaldi file")
    text_file = need_file(src_dir / "text", "Kaldi file")
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
        if check_row(row, out.problems):
            out.rows.append(row)
    return out
