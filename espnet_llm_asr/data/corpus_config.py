"""Configuration of the synthetic corpus: which languages, which voices, how much.

A YAML file (see ``egs2/indic/asr1/conf/corpus.yaml``)::

    sizes:                       # utterances per language and set
      default: {train: 400, dev: 40, test: 40, test_unseen_voice: 40}
      fast: {train: 6, dev: 2, test: 2, test_unseen_voice: 2}
    vocab_size: 40               # words per language
    words_per_sentence: [2, 5]
    word_length: [2, 8]          # Unicode code points
    defaults:                    # per-language keys every language inherits
      train_variants: [m1, f1]   # espeak-ng variants (files in espeak-ng-data/voices/!v)
      heldout_variants: [m7]     # only used by test_unseen_voice
      speeds: [140, 160]         # espeak-ng -s (words per minute)
      pitches: [35, 55]          # espeak-ng -p (0..99)
    languages:
      - {code: hi, espeak_voice: hi, script: DEVANAGARI, aspell_dict: hi}
      - {code: bn, espeak_voice: bn, script: BENGALI, word_list: words/bn.txt}

``script`` is the prefix of the Unicode character names of the language's
letters (``unicodedata.name``: "DEVANAGARI LETTER KA").  Every language takes
its words from exactly one of ``aspell_dict`` (``aspell -l NAME dump master``)
or ``word_list`` (UTF-8, one word a line, ``#`` comments; a relative path is
relative to the directory of the YAML file).

Real sentences instead of random words (see
``egs2/indic/asr1/conf/corpus_sentences.yaml``)::

    sentences:
      catalogs: ["../../../../tools/l10n/usr/lib/libreoffice/program/resource/{code}/LC_MESSAGES/*.mo"]
      words: [4, 12]             # words per sentence, inclusive (default [4, 12])
    sizes:
      default: {train: rest, dev: 50, test: 100, test_unseen_voice: 100}

``catalogs`` are glob patterns of gettext ``.mo`` files (``tools/install.sh``
unpacks LibreOffice's translations into ``tools/l10n``); ``{code}`` stands
for the language code, and a relative pattern is relative to the directory
of the YAML file.  Each language's sentences are the translations of its
catalogs that :mod:`espnet_llm_asr.data.sentences` keeps, with ``words``
words.  They replace the random word strings for every language, so
``vocab_size``, ``words_per_sentence``, ``word_length``, ``aspell_dict`` and
``word_list`` are not used and must not be given.  A size preset's
``train`` may then be ``rest``: every sentence that dev, test and
test_unseen_voice do not take.

Whether voices, word lists and catalogs really exist is checked by
:func:`espnet_llm_asr.data.synth_corpus.plan_corpus`, not here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml

SET_NAMES = ("train", "dev", "test", "test_unseen_voice")

DEFAULT_SIZES = {"train": 400, "dev": 40, "test": 40, "test_unseen_voice": 40}
FAST_SIZES = {"train": 6, "dev": 2, "test": 2, "test_unseen_voice": 2}
REST = "rest"  # a train size: every sentence the other sets do not take

_TOP_KEYS = {"sizes", "vocab_size", "words_per_sentence", "word_length", "defaults", "languages", "sentences"}
_WORD_CORPUS_KEYS = ("vocab_size", "words_per_sentence", "word_length")
_SENTENCE_KEYS = {"catalogs", "words"}
_LANG_KEYS = {"code", "espeak_voice", "script", "aspell_dict", "word_list",
              "train_variants", "heldout_variants", "speeds", "pitches"}
_INHERITED_KEYS = _LANG_KEYS - {"code", "espeak_voice", "script", "aspell_dict", "word_list"}
_NAME_RE = re.compile(r"^[A-Za-z0-9]+$")


class CorpusConfigError(ValueError):
    """A corpus configuration that cannot work; the message names the key."""


@dataclass(frozen=True)
class LanguageSpec:
    """One language of the corpus.

    Speaker ids are ``{code}-{variant}s{speed:03d}p{pitch:03d}``: a speaker is
    one (variant, speed, pitch) combination of this language.
    """

    code: str
    espeak_voice: str
    script: str
    train_variants: Tuple[str, ...]
    heldout_variants: Tuple[str, ...]
    speeds: Tuple[int, ...] = (140, 160, 180)
    pitches: Tuple[int, ...] = (35, 50, 65)
    aspell_dict: Optional[str] = None
    word_list: Optional[str] = None  # absolute path

    def __post_init__(self):
        where = f"language {self.code!r}"
        if not _NAME_RE.match(self.code or ""):
            raise CorpusConfigError(f"{where}: 'code' must be letters/digits only (it is part of utterance ids)")
        if self.aspell_dict is not None and self.word_list is not None:
            raise CorpusConfigError(f"{where}: give exactly one of 'aspell_dict' or 'word_list' "
                                    f"(got aspell_dict={self.aspell_dict!r}, word_list={self.word_list!r})")
        if not self.script:
            raise CorpusConfigError(f"{where}: 'script' is empty (e.g. DEVANAGARI, TAMIL, BENGALI)")
        for key in ("train_variants", "heldout_variants", "speeds", "pitches"):
            if len(getattr(self, key)) == 0:
                raise CorpusConfigError(f"{where}: {key!r} is empty")
        for v in self.train_variants + self.heldout_variants:
            if not _NAME_RE.match(str(v)):
                raise CorpusConfigError(f"{where}: variant {v!r} must be letters/digits only "
                                        "(it is part of speaker ids)")
        both = sorted(set(self.train_variants) & set(self.heldout_variants))
        if both:
            raise CorpusConfigError(f"{where}: variants {both} are in both 'train_variants' and 'heldout_variants'; "
                                    "held-out voices must never be used in training")
        for s in self.speeds:
            if not 80 <= s <= 450:
                raise CorpusConfigError(f"{where}: speed {s} outside espeak-ng's 80..450 words per minute ('speeds')")
        for p in self.pitches:
            if not 0 <= p <= 99:
                raise CorpusConfigError(f"{where}: pitch {p} outside espeak-ng's 0..99 ('pitches')")


@dataclass(frozen=True)
class SentenceSource:
    """The ``sentences:`` key: where every language's sentences come from.

    ``catalogs`` are absolute glob patterns in which ``{code}`` stands for the language code.
    """

    catalogs: Tuple[str, ...]
    words: Tuple[int, int] = (4, 12)

    def globs(self, code: str) -> List[str]:
        """The catalog patterns of language ``code``."""
        return [pattern.replace("{code}", code) for pattern in self.catalogs]


@dataclass
class CorpusConfig:
    """A parsed corpus YAML; ``sentences`` is None for a corpus of random words."""

    languages: List[LanguageSpec]
    sizes: Dict[str, Dict[str, Union[int, str]]] = field(default_factory=lambda: {"default": dict(DEFAULT_SIZES),
                                                                                  "fast": dict(FAST_SIZES)})
    vocab_size: int = 40
    words_per_sentence: Tuple[int, int] = (2, 5)
    word_length: Tuple[int, int] = (2, 8)
    sentences: Optional[SentenceSource] = None

    def select(self, codes: Optional[Sequence[str]]) -> List[LanguageSpec]:
        """The languages named in ``codes`` (all when None), in config order."""
        if not codes:
            return list(self.languages)
        known = {lang.code: lang for lang in self.languages}
        missing = [c for c in codes if c not in known]
        if missing:
            raise CorpusConfigError(f"languages {missing} are not in the config (it has {sorted(known)})")
        return [lang for lang in self.languages if lang.code in codes]


def _count(value, set_name: str) -> Union[int, str]:
    if set_name == "train" and str(value).strip() == REST:
        return REST
    try:
        return int(value)
    except (TypeError, ValueError):
        allowed = f"a count or {REST!r}" if set_name == "train" else "a count"
        raise CorpusConfigError(f"sizes: {set_name} = {value!r} is not {allowed}")


def parse_sizes(spec, presets: Optional[Dict[str, Dict[str, Union[int, str]]]] = None) -> Dict[str, Union[int, str]]:
    """Sizes per set from a preset name ("fast"), a spec "train=100,dev=10,..." or a dict.

    Every set of :data:`SET_NAMES` must be given and be >= 1; ``train`` may instead be
    :data:`REST` (only a corpus of sentences can use that).
    """
    presets = presets if presets is not None else {"default": DEFAULT_SIZES, "fast": FAST_SIZES}
    if isinstance(spec, str):
        if spec in presets:
            spec = presets[spec]
        elif "=" in spec:
            try:
                spec = {k.strip(): v.strip() for k, v in (item.split("=") for item in spec.split(","))}
            except ValueError:
                raise CorpusConfigError(f"size spec {spec!r}: expected 'train=N,dev=N,test=N,test_unseen_voice=N'")
        else:
            raise CorpusConfigError(f"size {spec!r}: not a preset ({sorted(presets)}) nor 'train=N,dev=N,...'")
    unknown = sorted(set(spec) - set(SET_NAMES))
    missing = [s for s in SET_NAMES if s not in spec]
    if unknown or missing:
        raise CorpusConfigError(f"sizes {dict(spec)}: unknown sets {unknown}, missing sets {missing} "
                                f"(need exactly {list(SET_NAMES)})")
    sizes = {s: _count(spec[s], s) for s in SET_NAMES}
    bad = {s: n for s, n in sizes.items() if n != REST and n < 1}
    if bad:
        raise CorpusConfigError(f"sizes {bad}: every set needs at least 1 utterance per language")
    return sizes


def _pair(value, key: str) -> Tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and 1 <= int(value[0]) <= int(value[1])):
        raise CorpusConfigError(f"{key!r}: expected [min, max] with 1 <= min <= max, got {value!r}")
    return int(value[0]), int(value[1])


def _language(entry: dict, defaults: dict, base_dir: Path, index: int, has_sentences: bool = False) -> LanguageSpec:
    if not isinstance(entry, dict):
        raise CorpusConfigError(f"languages[{index}]: expected a mapping, got {entry!r}")
    code = entry.get("code")
    where = f"language {code!r}" if code else f"languages[{index}]"
    unknown = sorted(set(entry) - _LANG_KEYS)
    if unknown:
        raise CorpusConfigError(f"{where}: unknown keys {unknown} (known: {sorted(_LANG_KEYS)})")
    merged = {**defaults, **entry}
    for key in ("code", "espeak_voice", "script", "train_variants", "heldout_variants"):
        if key not in merged:
            raise CorpusConfigError(f"{where}: missing key {key!r}")
    if not has_sentences and "aspell_dict" not in merged and "word_list" not in merged:
        raise CorpusConfigError(f"{where}: give exactly one of 'aspell_dict' or 'word_list' "
                                "(or a top-level 'sentences:' source for all languages)")
    if has_sentences:
        given = [k for k in ("aspell_dict", "word_list") if k in merged]
        if given:
            raise CorpusConfigError(f"{where}: {given} not used: the top-level 'sentences:' gives every "
                                    "language its sentences; remove them")
    word_list = merged.get("word_list")
    if word_list is not None:
        path = Path(str(word_list)).expanduser()
        word_list = str(path if path.is_absolute() else (base_dir / path).resolve())
    aspell = merged.get("aspell_dict")
    return LanguageSpec(
        code=str(merged["code"]),
        espeak_voice=str(merged["espeak_voice"]),
        script=str(merged["script"]).upper(),
        train_variants=tuple(str(v) for v in merged["train_variants"]),
        heldout_variants=tuple(str(v) for v in merged["heldout_variants"]),
        speeds=tuple(int(s) for s in merged.get("speeds", LanguageSpec.speeds)),
        pitches=tuple(int(p) for p in merged.get("pitches", LanguageSpec.pitches)),
        aspell_dict=None if aspell is None else str(aspell),
        word_list=word_list,
    )


def _sentence_source(raw, path: Path) -> SentenceSource:
    """The ``sentences:`` mapping of the YAML ``path``, its patterns made absolute."""
    where = f"{path}: sentences"
    if not isinstance(raw, dict):
        raise CorpusConfigError(f"{where}: expected a mapping with {sorted(_SENTENCE_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - _SENTENCE_KEYS)
    if unknown:
        raise CorpusConfigError(f"{where}: unknown keys {unknown} (known: {sorted(_SENTENCE_KEYS)})")
    catalogs = raw.get("catalogs")
    if isinstance(catalogs, str):
        catalogs = [catalogs]
    if not catalogs or not isinstance(catalogs, list) or not all(isinstance(c, str) and c for c in catalogs):
        raise CorpusConfigError(f"{where}.catalogs: expected a list of glob patterns of .mo files, got {catalogs!r}")
    base_dir = str(path.parent.resolve())
    patterns = tuple(os.path.normpath(os.path.join(base_dir, os.path.expanduser(c))) for c in catalogs)
    return SentenceSource(catalogs=patterns, words=_pair(raw.get("words", [4, 12]), "sentences.words"))


def load_corpus_config(path) -> CorpusConfig:
    """Parse and check a corpus YAML; errors name the offending key and language."""
    path = Path(path)
    if not path.is_file():
        raise CorpusConfigError(f"corpus config {path} does not exist")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise CorpusConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise CorpusConfigError(f"{path}: unknown keys {unknown} (known: {sorted(_TOP_KEYS)})")
    defaults = raw.get("defaults") or {}
    bad = sorted(set(defaults) - _INHERITED_KEYS)
    if bad:
        raise CorpusConfigError(f"{path}: 'defaults' may only hold {sorted(_INHERITED_KEYS)}, got {bad}")
    sentences = _sentence_source(raw["sentences"], path) if "sentences" in raw else None
    if sentences:
        given = [k for k in _WORD_CORPUS_KEYS if k in raw]
        if given:
            raise CorpusConfigError(f"{path}: {given} not used with 'sentences' (they shape random word "
                                    "strings); remove them")
    entries = raw.get("languages") or []
    if not entries:
        raise CorpusConfigError(f"{path}: 'languages' is empty")
    languages = [_language(e, defaults, path.parent.resolve(), i, sentences is not None)
                 for i, e in enumerate(entries)]
    codes = [lang.code for lang in languages]
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise CorpusConfigError(f"{path}: language codes {dup} appear more than once")
    presets = {"default": dict(DEFAULT_SIZES), "fast": dict(FAST_SIZES)}
    for name, spec in (raw.get("sizes") or {}).items():
        if not isinstance(spec, dict):
            raise CorpusConfigError(f"{path}: sizes.{name} must map each of {list(SET_NAMES)} to a count, got {spec!r}")
        presets[str(name)] = parse_sizes(spec, presets)
        if presets[str(name)]["train"] == REST and not sentences:
            raise CorpusConfigError(f"{path}: sizes.{name}: train {REST!r} needs a 'sentences:' source "
                                    "(a corpus of random words has no natural size)")
    vocab_size = int(raw.get("vocab_size", 40))
    if vocab_size < 2:
        raise CorpusConfigError(f"{path}: 'vocab_size' must be >= 2, got {vocab_size}")
    return CorpusConfig(
        languages=languages,
        sizes=presets,
        vocab_size=vocab_size,
        words_per_sentence=_pair(raw.get("words_per_sentence", [2, 5]), "words_per_sentence"),
        word_length=_pair(raw.get("word_length", [2, 8]), "word_length"),
        sentences=sentences,
    )
