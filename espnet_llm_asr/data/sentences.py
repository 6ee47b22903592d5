"""Sentences from gettext message catalogs: translated program messages as transcripts.

Every translation (``msgstr``) of a GNU ``.mo`` catalog is a candidate: text
that people wrote in the language, with an open vocabulary.  Plural entries
contribute their first form only; the header entry (empty ``msgid``) is
skipped.

:func:`clean_message` keeps a message only when it can be read aloud as it
is written.  The rules, in order:

1. Unicode NFC.
2. Drop the message when it holds any of

   - Latin letters (product names, function names: "TRUE को ...");
   - digits or other numbers (Unicode category N: ASCII digits, Devanagari,
     Tamil and Telugu digits, fractions), whose spoken form the transcript
     would not show;
   - format codes: ``%`` ``$`` ``{`` ``}`` (``%s``, ``%1``, ``%d``,
     ``%name%``, ``$1``, ``$(ARG1)``, ``{0}``, ``{name}``);
   - markup or entities: ``<`` ``>`` (``<b>``, ``<br/>``), ``&amp;``-style;
   - accelerator markers: ``~`` ``_`` ``&`` anywhere (``~Save``,
     ``सहेजें (_S)``), whose letter is not spoken;
   - paths and URLs: ``/`` ``\\``;
   - other symbols: Unicode category S (``+ = | ^ ©`` ...) and
     ``@ # * § ¶ † ‡ •``.

3. Replace the punctuation a transcript does not hold by spaces: danda
   ``।``, double danda ``॥``, abbreviation sign ``॰``, ``. , ; : ! ?``,
   quotes (``" '`` and typographic ones), brackets ``( ) [ ]``, ellipsis,
   hyphens and dashes.
4. Collapse whitespace (single spaces, none at the ends).
5. Keep the message only when every word consists of letters and combining
   marks of the language's script and starts with a letter
   (:func:`espnet_llm_asr.data.word_list.is_script_word`; any other
   character, such as a zero-width joiner, drops the message), and the
   number of words lies in the given range.
"""
from __future__ import annotations

import gettext
import glob
import re
import struct
import unicodedata
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from espnet_llm_asr.data.corpus_config import CorpusConfigError
from espnet_llm_asr.data.word_list import is_script_word

# a word of a message may be long (compounds), but not absurdly so
WORD_LENGTH = (1, 40)

# (what, pattern): a message matching any pattern is dropped (rule 2)
DROP_RULES: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    ("format code", re.compile(r"[%${}]")),
    ("markup or entity", re.compile(r"[<>]|&#?[^\s;&]+;")),
    ("accelerator", re.compile(r"[~_&]")),
    ("path or URL", re.compile(r"[/\\]")),
    ("symbol", re.compile(r"[@#*§¶†‡•]")),
)
# rule 3: replaced by a space
STRIP_PUNCTUATION = "।॥॰.,;:!?\"'()[]“”‘’„‚«»‹›…‐‑‒–—―-"
_STRIP_RE = re.compile("[" + re.escape(STRIP_PUNCTUATION) + "]")


def _has_latin_letter(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "L" and unicodedata.name(ch, "").startswith("LATIN ")
               for ch in text)


def _has_number(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "N" for ch in text)


def _has_symbol(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "S" for ch in text)


def drop_reason(text: str) -> Optional[str]:
    """Which rule of step 2 (module doc) drops the NFC ``text``: "Latin letters", ..., or None."""
    if _has_latin_letter(text):
        return "Latin letters"
    if _has_number(text):
        return "digits"
    for what, pattern in DROP_RULES:
        if pattern.search(text):
            return what
    if _has_symbol(text):
        return "symbol"
    return None


def clean_message(text: str, script: str, words: Tuple[int, int] = (4, 12)) -> Optional[str]:
    """The transcript a message becomes (single-spaced words), or None when it is dropped.

    Args:
        text: one translated message.
        script: prefix of the Unicode names of the language's letters ("DEVANAGARI").
        words: (min, max) number of words, inclusive.
    """
    text = unicodedata.normalize("NFC", text)
    if drop_reason(text) is not None:
        return None
    tokens = _STRIP_RE.sub(" ", text).split()
    if not words[0] <= len(tokens) <= words[1]:
        return None
    if not all(is_script_word(w, script, WORD_LENGTH) for w in tokens):
        return None
    return " ".join(tokens)


def read_catalog(path) -> List[str]:
    """Every translation of the ``.mo`` file ``path``, in catalog order.

    Plural entries give their first form only; the header entry is skipped.

    Raises:
        CorpusConfigError: the file cannot be read or is not a valid ``.mo`` catalog (names the file).
    """
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except (OSError, struct.error, UnicodeDecodeError, ValueError, LookupError) as e:
        raise CorpusConfigError(f"{path}: cannot read it as a gettext .mo catalog ({type(e).__name__}: {e})")
    texts = []
    for key, value in catalog.items():
        msgid, form = key if isinstance(key, tuple) else (key, 0)
        if msgid != "" and form == 0:
            texts.append(value)
    return texts


def load_sentences(catalog_globs: Sequence[str], script: str, words: Tuple[int, int] = (4, 12),
                   code: str = "?") -> List[str]:
    """All distinct cleaned messages (:func:`clean_message`) of every file matching ``catalog_globs``, sorted.

    Args:
        catalog_globs: glob patterns of ``.mo`` files (``**`` allowed).
        script: prefix of the Unicode names of the language's letters.
        words: (min, max) words per sentence, inclusive.
        code: the language, for error messages.
    Raises:
        CorpusConfigError: no file matches, or a file is not a ``.mo`` catalog.
    """
    files = sorted({p for pattern in catalog_globs for p in glob.glob(str(pattern), recursive=True)
                    if Path(p).is_file()})
    if not files:
        raise CorpusConfigError(
            f"language {code!r}: no message catalog matches 'sentences: catalogs' {list(catalog_globs)}; "
            "run tools/install.sh (it unpacks the LibreOffice language packs into tools/l10n)")
    sentences = set()
    for path in files:
        for text in read_catalog(path):
            cleaned = clean_message(text, script, words)
            if cleaned is not None:
                sentences.add(cleaned)
    return sorted(sentences)


def unseen_word_share(train_texts: Iterable[str], texts: Iterable[str]) -> Tuple[float, float]:
    """Share of the words of ``texts`` that never occur in ``train_texts`` (whitespace-separated words).

    Returns:
        (tokens, types): unseen word occurrences / all word occurrences of ``texts``, and unseen
        distinct words / distinct words of ``texts``; each in [0, 1], 0.0 when ``texts`` has no words.
    """
    known = {w for t in train_texts for w in t.split()}
    tokens = [w for t in texts for w in t.split()]
    types = set(tokens)
    token_share = sum(w not in known for w in tokens) / len(tokens) if tokens else 0.0
    type_share = len(types - known) / len(types) if types else 0.0
    return token_share, type_share
