"""prepare_corpus: read every split of every language, stop on (or drop) bad
rows, decode audio, and write each Kaldi data dir atomically (see the
package docstring)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from espnet_llm_asr.data.kaldi_dir import KaldiEntry, write_kaldi_dir
from espnet_llm_asr.data.preparers.audio import materialize_audio
from espnet_llm_asr.data.preparers.commonvoice import COMMONVOICE_SPLITS, read_commonvoice
from espnet_llm_asr.data.preparers.fleurs import FLEURS_SPLITS, read_fleurs
from espnet_llm_asr.data.preparers.indicvoices import INDICVOICES_SPLITS, read_indicvoices
from espnet_llm_asr.data.preparers.kaldi import read_kaldi
from espnet_llm_asr.data.preparers.kathbath import KATHBATH_SPLITS, read_kathbath
from espnet_llm_asr.data.preparers.rows import DEFAULT_LANGS, PrepareError, Problem, Row, SplitResult
from espnet_llm_asr.utils import _umask, atomic_write_text


READERS: Dict[str, Tuple[Callable[[Path, str, str], SplitResult], Dict[str, str]]] = {
    "fleurs": (read_fleurs, FLEURS_SPLITS),
    "commonvoice": (read_commonvoice, COMMONVOICE_SPLITS),
    "kathbath": (read_kathbath, KATHBATH_SPLITS),
    "indicvoices": (read_indicvoices, INDICVOICES_SPLITS),
}
CORPORA = tuple(READERS) + ("kaldi",)


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
