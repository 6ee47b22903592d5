"""Scoring with sclite (recipe stage 13): WER and CER, overall and per language.

For a decode dir ``hyp_dir`` (holding the hypotheses ``text``) and the
reference data dir ``ref_dir`` (``text``, ``utt2spk``, optionally
``utt2lang``), :func:`score_dir` writes, ESPnet style::

    hyp_dir/score_wer/{ref.trn,hyp.trn,result.txt}      words
    hyp_dir/score_wer/<lang>/{ref.trn,hyp.trn,result.txt}
    hyp_dir/score_wer/utt2lang                          the language map used
    hyp_dir/score_cer/...                               characters, same layout
    hyp_dir/missing_hyp                                 reference ids with no hypothesis

``result.txt`` is the output of
``sclite -r ref.trn trn -h hyp.trn trn -i rm -o all stdout -e utf-8``.
A trn line is ``tokens (spk-uttid)``; sclite reads the part of the id before
the first ``-`` as the speaker, which only groups its per-speaker table.

Conventions (kept from ESPnet's scoring):

* sclite compares case-insensitively for ASCII letters (no ``-s`` flag);
  other scripts have no case.
* CER tokens are Unicode **code points**, one per token, with ``<space>`` at
  word boundaries.  Indic dependent vowel signs (matras), viramas and nuktas
  are therefore separate characters: ``नमस्ते`` is the 6 tokens
  ``न म स ् त े``.  Runs of whitespace count as a single ``<space>``.
* Non-linguistic symbols (``nlsyms``, e.g. ``<noise>``) are removed from
  reference and hypothesis: as whole words for WER, anywhere for CER.
* No other text normalisation, unless ``unicode_norm`` (e.g. ``"NFC"``) is
  given, which makes differently composed but equal strings match (for
  example the precomposed and the nukta-decomposed forms of ``ज़``).

Utterances of the reference without a hypothesis are scored as an empty
hypothesis (all deletions), logged and listed in ``missing_hyp``: they are
never silently skipped.  A hypothesis for an utterance the reference does not
have is an error.  Every score dir is built in a temporary dir and renamed
into place, so a failure never leaves a half-written ``result.txt``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from espnet_llm_asr.data_io import read_kaldi_map
from espnet_llm_asr.utils import atomic_write_text

SCLITE_FALLBACK_DIRS = ("/usr/lib/sctk/bin",)
SCLITE_INSTALL_HINT = (
    "install it with `apt-get install sctk` (Debian/Ubuntu; binaries in /usr/lib/sctk/bin) "
    "or run tools/install.sh, or pass its path with --sclite"
)
SPACE_SYMBOL = "<space>"
UNITS = ("wer", "cer")
_SAFE_LANG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ScliteNotFoundError(FileNotFoundError):
    """sclite is not installed or the given path is not an executable."""


# ------------------------------------------------------------------ sclite
def find_sclite(sclite: Optional[str] = None) -> str:
    """Path of the sclite binary: ``sclite`` if given, else PATH, else /usr/lib/sctk/bin."""
    if sclite:
        path = shutil.which(sclite)  # accepts a full path to an executable file
        if path is None:
            raise ScliteNotFoundError(f"--sclite {sclite!r}: no such executable; {SCLITE_INSTALL_HINT}")
        return path
    path = shutil.which("sclite")
    if path is not None:
        return path
    for d in SCLITE_FALLBACK_DIRS:
        candidate = Path(d) / "sclite"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ScliteNotFoundError(
        f"sclite not found on PATH nor in {', '.join(SCLITE_FALLBACK_DIRS)}; {SCLITE_INSTALL_HINT}")


def run_sclite(sclite: str, work_dir: Path) -> str:
    """Run sclite on ``work_dir/{ref,hyp}.trn``; returns its report (the text of result.txt)."""
    cmd = [sclite, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-o", "all", "stdout",
           "-e", "utf-8"]
    proc = subprocess.run(cmd, cwd=work_dir, capture_output=True, text=True, encoding="utf-8",
                          errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"sclite failed (exit {proc.returncode}) in {work_dir}: "
                           f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


@dataclass
class ScliteScore:
    """The ``Sum`` row of an sclite report.

    Counts (``snt`` sentences, ``wrd`` reference tokens, ``corr``, ``sub``,
    ``dele``, ``ins``, ``err`` = sub + dele + ins, ``s_err`` sentences with an
    error) come from the counts table; ``pct`` holds sclite's own rounded
    percentages of the ``Sum/Avg`` row, keys ``Corr Sub Del Ins Err S.Err``
    (``None`` where sclite prints no percentage, i.e. no reference tokens).
    """

    snt: int
    wrd: int
    corr: int
    sub: int
    dele: int
    ins: int
    err: int
    s_err: int
    pct: Dict[str, Optional[float]]

    @property
    def error_rate(self) -> float:
        """Unrounded error rate in % (``err / wrd``); ``inf`` with no reference tokens."""
        return 100.0 * self.err / self.wrd if self.wrd else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["error_rate"] = self.error_rate
        return d


PCT_KEYS = ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")
_SUM_AVG = re.compile(r"^\s*\|\s*Sum/Avg\s*\|\s*(\d+)\s+(\d+)\s*\|([^|]*)\|", re.M)
_SUM = re.compile(r"^\s*\|\s*Sum\s*\|\s*(\d+)\s+(\d+)\s*\|([^|]*)\|", re.M)


def parse_sclite_report(text: str, source: str = "sclite report") -> ScliteScore:
    """Read the ``Sum/Avg`` (percent) and ``Sum`` (count) rows of ``sclite -o all`` output."""
    m_pct, m_cnt = _SUM_AVG.search(text), _SUM.search(text)
    if m_pct is None or m_cnt is None:
        missing = "'Sum/Avg'" if m_pct is None else "'Sum'"
        raise ValueError(f"{source}: no {missing} row; not the output of `sclite -o all` (or `-o sum dtl`)")
    counts = [int(float(v)) for v in m_cnt.group(3).split()]
    if len(counts) != 6:
        raise ValueError(f"{source}: 'Sum' row has {len(counts)} numbers, expected 6: {m_cnt.group(0)!r}")
    pct: Dict[str, Optional[float]] = {}
    values = m_pct.group(3).split()
    if len(values) != 6:
        raise ValueError(f"{source}: 'Sum/Avg' row has {len(values)} numbers, expected 6: {m_pct.group(0)!r}")
    for key, v in zip(PCT_KEYS, values):
        # sclite marks counts given instead of percentages with '*' (no reference words)
        pct[key] = None if "*" in v else float(v.rstrip("+"))
    corr, sub, dele, ins, err, s_err = counts
    return ScliteScore(int(m_cnt.group(1)), int(m_cnt.group(2)), corr, sub, dele, ins, err, s_err, pct)


def read_sclite_result(path) -> ScliteScore:
    """Parse an sclite ``result.txt`` file (not recomputed: sclite's own numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run scoring (stage 13) first")
    return parse_sclite_report(path.read_text(encoding="utf-8", errors="replace"), str(path))


# ------------------------------------------------------------ tokenisation
def read_nlsyms(path) -> List[str]:
    """Non-linguistic symbols, one a line (ESPnet's ``nlsyms_txt``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--nlsyms {path}: no such file (one symbol a line)")
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def normalize_text(text: str, unicode_norm: Optional[str] = None) -> str:
    """Optional Unicode normalisation (NFC/NFKC/NFD/NFKD) and whitespace collapsing."""
    if unicode_norm:
        text = unicodedata.normalize(unicode_norm, text)
    return " ".join(text.split())


def word_tokens(text: str, nlsyms: Sequence[str] = ()) -> List[str]:
    """Whitespace-separated words, non-linguistic symbols removed."""
    drop = set(nlsyms)
    return [w for w in text.split() if w not in drop]


def char_tokens(text: str, nlsyms: Sequence[str] = ()) -> List[str]:
    """Code points, ``<space>`` between words, non-linguistic symbols removed anywhere.

    ``"नमस्ते जी"`` -> ``['न', 'म', 'स', '्', 'त', 'े', '<space>', 'ज', 'ी']``.
    """
    for sym in sorted(nlsyms, key=len, reverse=True):
        text = text.replace(sym, " ")
    return [SPACE_SYMBOL if c == " " else c for c in " ".join(text.split())]


def tokenize(text: str, unit: str, nlsyms: Sequence[str] = ()) -> List[str]:
    if unit == "wer":
        return word_tokens(text, nlsyms)
    if unit == "cer":
        return char_tokens(text, nlsyms)
    raise ValueError(f"unknown scoring unit {unit!r}; expected one of {UNITS}")


def trn_lines(tokens: Dict[str, List[str]], utt2spk: Dict[str, str], keys: Iterable[str]) -> str:
    """``tok tok ... (spk-uttid)`` lines, one per key."""
    lines = []
    for k in keys:
        text = " ".join(tokens[k])
        # a line starting with ';;' is a comment to sclite; a leading blank keeps it a sentence
        lead = " " if text.startswith(";;") else ""
        lines.append(f"{lead}{text} ({utt2spk.get(k, k)}-{k})\n")
    return "".join(lines)


# ---------------------------------------------------------- cross-check
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def jiwer_errors(ref: Dict[str, List[str]], hyp: Dict[str, List[str]], keys: Sequence[str]) -> Tuple[int, int]:
    """(errors, reference tokens) from jiwer on the same tokens, ASCII case folded as sclite does."""
    import jiwer

    refs = [" ".join(ref[k]).translate(_ASCII_LOWER) for k in keys]
    hyps = [" ".join(hyp[k]).translate(_ASCII_LOWER) for k in keys]
    out = jiwer.process_words(refs, hyps)
    n_ref = out.hits + out.substitutions + out.deletions
    return out.substitutions + out.deletions + out.insertions, n_ref


# ------------------------------------------------------------------ main
def _check_lang(lang: str, source: Path) -> str:
    if not _SAFE_LANG.match(lang):
        raise ValueError(f"{source}: language {lang!r} cannot name a directory (letters, digits, _ . - only)")
    return lang


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Move the finished ``tmp`` dir to ``dst``, replacing an older ``dst``."""
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
    if dst.exists():
        old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old."))
        os.replace(dst, old / dst.name)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dst)


def _score_subset(sclite: str, work: Path, ref_tok, hyp_tok, utt2spk, keys, label: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "ref.trn").write_text(trn_lines(ref_tok, utt2spk, keys), encoding="utf-8")
    (work / "hyp.trn").write_text(trn_lines(hyp_tok, utt2spk, keys), encoding="utf-8")
    report = run_sclite(sclite, work)
    (work / "result.txt").write_text(report, encoding="utf-8")
    score = parse_sclite_report(report, f"sclite report for {label}")
    if score.snt != len(keys):
        raise RuntimeError(f"{label}: sclite scored {score.snt} sentences, expected {len(keys)}; "
                           f"a trn line it did not read as a sentence (ids with '(' ')' or spaces?)")
    j_err, j_ref = jiwer_errors(ref_tok, hyp_tok, keys)
    out = score.to_dict()
    out["jiwer_error_rate"] = 100.0 * j_err / j_ref if j_ref else float("inf")
    logging.info(f"{label}: {score.error_rate:.2f} % sclite ({score.err}/{score.wrd}), "
                 f"{out['jiwer_error_rate']:.2f} % jiwer ({j_err}/{j_ref})")
    if (j_err, j_ref) != (score.err, score.wrd):
        logging.log(disagreement_level(score.err, score.wrd, j_err, j_ref),
                    f"{label}: sclite and jiwer differ (errors {score.err} vs {j_err}, tokens {score.wrd} vs "
                    f"{j_ref}); sclite's weighted alignment (sub 4, ins/del 3) can count slightly more errors")
    return out


def disagreement_level(sclite_err: int, sclite_tokens: int, jiwer_err: int, jiwer_tokens: int,
                       tolerance_pct: float = 1.0) -> int:
    """Log level for sclite's and jiwer's error counts of the same hypotheses.

    sclite's alignment minimises 4*sub + 3*(ins + del), jiwer's the plain error count, so
    sclite may count more errors, never fewer: that is INFO up to ``tolerance_pct`` points
    of error rate.  A different token count, fewer sclite errors or a larger gap mean the
    two did not score the same text: WARNING.
    """
    if sclite_tokens != jiwer_tokens or sclite_err < jiwer_err or not sclite_tokens:
        return logging.WARNING
    gap = 100.0 * (sclite_err - jiwer_err) / sclite_tokens
    return logging.WARNING if gap > tolerance_pct else logging.INFO


def score_dir(ref_dir, hyp_dir, sclite: Optional[str] = None, nlsyms: Sequence[str] = (),
              unicode_norm: Optional[str] = None) -> dict:
    """Score ``hyp_dir/text`` against ``ref_dir/text`` with sclite (layout: module docstring).

    Returns ``{"wer": d, "cer": d, "per_lang": {lang: {"wer": d, "cer": d}},
    "missing_hyp": [uttid, ...], "n_utts": int}`` where each ``d`` is
    :meth:`ScliteScore.to_dict` plus ``jiwer_error_rate``, the cross-check: jiwer
    minimises the plain error count, sclite a weighted cost (sub 4, ins/del 3),
    so sclite can count a few more errors on long or very wrong hypotheses.
    """
    ref_dir, hyp_dir = Path(ref_dir), Path(hyp_dir)
    sclite_bin = find_sclite(sclite)  # before anything is written
    if unicode_norm and unicode_norm not in ("NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"unicode_norm {unicode_norm!r}: expected NFC, NFKC, NFD or NFKD")
    refs = read_kaldi_map(ref_dir / "text", allow_empty_value=True)
    if not refs:
        raise ValueError(f"{ref_dir / 'text'} is empty: nothing to score")
    hyps = read_kaldi_map(hyp_dir / "text", allow_empty_value=True)
    utt2spk = read_kaldi_map(ref_dir / "utt2spk") if (ref_dir / "utt2spk").exists() else {}
    utt2lang = read_kaldi_map(ref_dir / "utt2lang") if (ref_dir / "utt2lang").exists() else {}

    unknown = sorted(set(hyps) - set(refs))
    if unknown:
        raise ValueError(f"{hyp_dir / 'text'}: {len(unknown)} hypothesis id(s) not in {ref_dir / 'text'}, "
                         f"e.g. '{unknown[0]}' (all: {' '.join(unknown[:20])}{' ...' if len(unknown) > 20 else ''})")
    keys = sorted(refs, key=lambda k: k.encode("utf-8"))
    missing = [k for k in keys if k not in hyps]
    if missing:
        logging.warning(f"{hyp_dir / 'text'}: {len(missing)} of {len(keys)} utterance(s) have no hypothesis; "
                        f"scored as empty (all deletions), listed in {hyp_dir / 'missing_hyp'}: "
                        f"{' '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
    no_lang = [k for k in keys if utt2lang and k not in utt2lang]
    if no_lang:
        raise ValueError(f"{ref_dir / 'utt2lang'}: no language for {len(no_lang)} utterance(s), e.g. '{no_lang[0]}'")
    langs = sorted({_check_lang(utt2lang[k], ref_dir / "utt2lang") for k in keys}) if utt2lang else []

    result: dict = {"per_lang": {lang: {} for lang in langs}, "missing_hyp": missing, "n_utts": len(keys)}
    tmp_dirs: Dict[str, Path] = {}
    try:
        for unit in UNITS:
            tmp = Path(tempfile.mkdtemp(dir=hyp_dir, prefix=f".score_{unit}.tmp."))
            tmp_dirs[unit] = tmp
            ref_tok = {k: tokenize(normalize_text(refs[k], unicode_norm), unit, nlsyms) for k in keys}
            hyp_tok = {k: tokenize(normalize_text(hyps.get(k, ""), unicode_norm), unit, nlsyms) for k in keys}
            result[unit] = _score_subset(sclite_bin, tmp, ref_tok, hyp_tok, utt2spk, keys,
                                         f"{hyp_dir} {unit.upper()}")
            for lang in langs:
                sub_keys = [k for k in keys if utt2lang[k] == lang]
                result["per_lang"][lang][unit] = _score_subset(
                    sclite_bin, tmp / lang, ref_tok, hyp_tok, utt2spk, sub_keys, f"{hyp_dir} {unit.upper()} [{lang}]")
            if utt2lang:
                (tmp / "utt2lang").write_text("".join(f"{k} {utt2lang[k]}\n" for k in keys), encoding="utf-8")
        for unit in UNITS:
            _replace_dir(tmp_dirs.pop(unit), hyp_dir / f"score_{unit}")
        atomic_write_text(hyp_dir / "missing_hyp", "".join(k + "\n" for k in missing))
    finally:
        for tmp in tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
    return result
