"""Vocabulary of one language: from an aspell dictionary or a plain word-list file.

Only plain words are kept: every character is a letter or combining mark of
the language's script (Unicode names "DEVANAGARI ..."), the first one a
letter (aspell dumps hold stray suffix fragments that start with a vowel
sign), length within ``word_length`` code points.  Digits, punctuation
(danda included), Latin letters and anything after an aspell ``/`` affix
flag are dropped.  Words are NFC-normalized.
"""
from __future__ import annotations

import random
import subprocess
import unicodedata
from pathlib import Path
from typing import List, Sequence, Tuple

from espnet_llm_asr.data.corpus_config import CorpusConfigError, LanguageSpec


def is_script_word(word: str, script: str, length: Tuple[int, int] = (2, 8)) -> bool:
    """True for a word of ``length[0]..length[1]`` letters/marks of ``script``, starting with a letter."""
    if not length[0] <= len(word) <= length[1]:
        return False
    if unicodedata.category(word[0])[0] != "L":
        return False
    prefix = script.upper() + " "
    for ch in word:
        if unicodedata.category(ch)[0] not in "LM" or not unicodedata.name(ch, "").startswith(prefix):
            return False
    return True


def read_aspell_words(dict_name: str, code: str = "?") -> List[str]:
    """All words of ``aspell -l DICT dump master`` (affix flags stripped)."""
    try:
        proc = subprocess.run(["aspell", "--encoding=utf-8", "-l", dict_name, "dump", "master"],
                              capture_output=True)
    except FileNotFoundError:
        raise CorpusConfigError(f"language {code!r}: 'aspell_dict: {dict_name}' needs the aspell program, "
                                "which is not installed (or give 'word_list' instead)")
    if proc.returncode != 0:
        raise CorpusConfigError(
            f"language {code!r}: aspell dictionary 'aspell_dict: {dict_name}' is not installed "
            f"({proc.stderr.decode('utf-8', 'replace').strip()}); install aspell-{dict_name} "
            "or give 'word_list: FILE' instead")
    return [line.split("/")[0].strip() for line in proc.stdout.decode("utf-8", "replace").splitlines()]


def read_word_list_file(path: str, code: str = "?") -> List[str]:
    """Words of a UTF-8 file, one a line; blank lines and ``#`` comments ignored."""
    p = Path(path)
    if not p.is_file():
        raise CorpusConfigError(f"language {code!r}: 'word_list' file {p} does not exist")
    words = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            words.append(line)
    return words


def load_vocabulary(lang: LanguageSpec, size: int, rng: random.Random,
                    length: Tuple[int, int] = (2, 8)) -> List[str]:
    """``size`` distinct words of ``lang``, chosen deterministically by ``rng``.

    Raises:
        CorpusConfigError: word source missing, or fewer than ``size`` usable words.
    """
    raw: Sequence[str]
    if lang.aspell_dict is not None:
        raw, source = read_aspell_words(lang.aspell_dict, lang.code), f"aspell_dict {lang.aspell_dict!r}"
    else:
        raw, source = read_word_list_file(lang.word_list, lang.code), f"word_list {lang.word_list}"
    normalized = (unicodedata.normalize("NFC", r) for r in raw)
    words = sorted({w for w in normalized if is_script_word(w, lang.script, length)})
    if len(words) < size:
        raise CorpusConfigError(
            f"language {lang.code!r}: {source} has only {len(words)} usable words of script {lang.script!r} "
            f"and length {length[0]}..{length[1]} (of {len(raw)} entries); need vocab_size={size}")
    return rng.sample(words, size)
