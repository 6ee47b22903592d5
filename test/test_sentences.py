"""Sentences from gettext message catalogs: cleaning rules, reading .mo files, splitting into sets.

The .mo catalogs are written by :func:`write_mo` (GNU gettext's binary
format); one small corpus of two languages (Hindi, Tamil; fast size 6/2/2/2)
is synthesized once per module through the CLI.  The last tests read the
real LibreOffice catalogs that tools/install.sh unpacks into tools/l10n.
"""
import itertools
import json
import os
import re
import struct
import subprocess
import unicodedata
from pathlib import Path
from typing import Dict

import pytest

from espnet_llm_asr.bin import synthesize_corpus as cli
from espnet_llm_asr.data import SET_NAMES, CorpusConfigError, load_corpus_config, parse_sizes, plan_corpus
from espnet_llm_asr.data.corpus_config import SentenceSource
from espnet_llm_asr.data.sentences import (
    clean_message,
    drop_reason,
    load_sentences,
    read_catalog,
    unseen_word_share,
)
from espnet_llm_asr.data.synth_corpus import STAMP_NAME, _checksum
from espnet_llm_asr.data.word_list import is_script_word

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2" / "indic" / "asr1"
FAST = {"train": 6, "dev": 2, "test": 2, "test_unseen_voice": 2}
SCRIPT = {"hi": "DEVANAGARI", "ta": "TAMIL"}
SPEAKER_RE = re.compile(r"^(?P<lang>[a-z]+)-(?P<variant>[A-Za-z0-9]+)s(?P<speed>\d{3})p(?P<pitch>\d{3})$")
HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def write_mo(path: Path, entries: Dict[str, str]) -> Path:
    """Write a GNU .mo catalog of ``entries`` (msgid -> msgstr; ``\\0`` separates plural forms,
    ``\\4`` ends a context) with an empty hash table."""
    items = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in entries.items())
    n = len(items)
    originals, translations = 7 * 4, 7 * 4 + 8 * n
    data_start = translations + 8 * n
    data, tables = b"", {0: [], 1: []}
    for column in (0, 1):
        for item in items:
            tables[column].append(struct.pack("<2I", len(item[column]), data_start + len(data)))
            data += item[column] + b"\0"
    # magic, revision, N, original table, translation table, hash table size, hash table offset
    head = struct.pack("<7I", 0x950412DE, 0, n, originals, translations, 0, data_start)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b"".join(tables[0]) + b"".join(tables[1]) + data)
    return path


# ---------------------------------------------------------------- cleaning rules

@pytest.mark.parametrize("text, script, expected", [
    # danda and double danda become spaces; the rest is kept as written
    ("यह मान अमान्य है। कृपया फिर से प्रयास करें।", "DEVANAGARI", "यह मान अमान्य है कृपया फिर से प्रयास करें"),
    ("सब ठीक है॥ आगे बढ़ें", "DEVANAGARI", "सब ठीक है आगे बढ़ें"),
    # quotes, brackets, dashes, ellipsis, ? ! : ; , .
    ("'मौजूदा डेटाबेस' (चुनें) — फिर आगे…", "DEVANAGARI", "मौजूदा डेटाबेस चुनें फिर आगे"),
    ("क्या आप, सच में: हटाना चाहते हैं?!", "DEVANAGARI", "क्या आप सच में हटाना चाहते हैं"),
    ("“नई” पंक्ति-जोड़ें; [वैकल्पिक].", "DEVANAGARI", "नई पंक्ति जोड़ें वैकल्पिक"),
    # whitespace collapsed
    ("  नई   पंक्ति\nजोड़ें\tअभी  ", "DEVANAGARI", "नई पंक्ति जोड़ें अभी"),
    # NFC: the precomposed nukta letter U+095E becomes PHA + NUKTA
    ("\u095eाइल को सहेजें", "DEVANAGARI", "\u092b\u093c\u093eइल को सहेजें"),
    ("கோப்பை சேமிக்க முடியவில்லை.", "TAMIL", "கோப்பை சேமிக்க முடியவில்லை"),
])
def test_clean_message_keeps(text, script, expected):
    assert clean_message(text, script, words=(3, 12)) == expected
    assert clean_message(expected, script, words=(3, 12)) == expected  # idempotent


@pytest.mark.parametrize("text, rule", [
    ("TRUE को वापस करता है", "Latin letters"),
    ("सहेजें (~S) फ़ाइल को", "Latin letters"),
    ("3 पंक्तियाँ जोड़ें अभी", "digits"),
    ("३ पंक्तियाँ जोड़ें अभी", "digits"),        # Devanagari digit
    ("௩ வரிகளைச் சேர் இப்போது", "digits"),     # Tamil digit
    ("½ पंक्ति जोड़ें अभी", "digits"),
    ("%फ़ाइल% नहीं मिली अभी", "format code"),
    ("{फ़ाइल} नहीं मिली अभी", "format code"),
    ("$(ARG1) लोड करते समय त्रुटि", "Latin letters"),
    ("$ लोड करते समय त्रुटि", "format code"),
    ("<ख>मोटा</ख> पाठ लिखें", "markup or entity"),
    ("पाठ &चित्र; जोड़ें अभी", "markup or entity"),
    ("~सहेजें फ़ाइल को अभी", "accelerator"),
    ("_सहेजें फ़ाइल को अभी", "accelerator"),
    ("सहे&जें फ़ाइल को अभी", "accelerator"),
    ("फ़ोल्डर/फ़ाइल नहीं मिली अभी", "path or URL"),
    ("फ़ोल्डर\\फ़ाइल नहीं मिली अभी", "path or URL"),
    ("पाठ @ चित्र जोड़ें", "symbol"),
    ("पाठ # चित्र जोड़ें", "symbol"),
    ("पाठ + चित्र जोड़ें", "symbol"),
    ("पाठ = चित्र जोड़ें", "symbol"),
    ("पाठ | चित्र जोड़ें", "symbol"),
])
def test_clean_message_drops_by_rule(text, rule):
    assert drop_reason(unicodedata.normalize("NFC", text)) == rule
    script = "TAMIL" if "TAMIL" in unicodedata.name(text[-1]) else "DEVANAGARI"
    assert clean_message(text, script, words=(1, 40)) is None


@pytest.mark.parametrize("text, script, words", [
    ("ि पाठ जोड़ें अभी", "DEVANAGARI", (1, 12)),           # a word starting with a vowel sign
    ("पाठ (ि) जोड़ें अभी", "DEVANAGARI", (1, 12)),          # ... also after stripping brackets
    ("கோப்பை சேமிக்க முடியவில்லை", "DEVANAGARI", (1, 12)),  # another script
    ("नई पंक्ति\u200cजोड़ें अभी", "DEVANAGARI", (1, 12)),      # zero-width non-joiner
    ("नई पंक्ति जोड़ें", "DEVANAGARI", (4, 12)),             # too few words
    ("एक दो तीन चार पाँच छह", "DEVANAGARI", (2, 5)),          # too many words
    ("। ॥ … —", "DEVANAGARI", (1, 12)),                     # nothing but punctuation
])
def test_clean_message_drops_bad_words_and_counts(text, script, words):
    assert clean_message(text, script, words) is None


def test_clean_message_word_count_is_inclusive():
    text = "एक दो तीन चार"
    assert clean_message(text, "DEVANAGARI", (4, 4)) == text
    assert clean_message(text, "DEVANAGARI", (2, 3)) is None
    assert clean_message(text, "DEVANAGARI", (5, 6)) is None


# ---------------------------------------------------------------- .mo catalogs

def test_read_catalog_reads_translations_skips_header_and_other_plural_forms(tmp_path):
    mo = write_mo(tmp_path / "x.mo", {
        "": HEADER,
        "Save the file": "फ़ाइल को सहेजें",
        "menu\x04Open": "खोलें",  # with a context
        "%d row deleted\x00%d rows deleted": "एक पंक्ति हटाई गई\x00कई पंक्तियाँ हटाई गईं",
    })
    assert sorted(read_catalog(mo)) == sorted(["फ़ाइल को सहेजें", "खोलें", "एक पंक्ति हटाई गई"])


def test_read_catalog_names_a_broken_file(tmp_path):
    bad = tmp_path / "broken.mo"
    bad.write_bytes(b"not a catalog at all")
    with pytest.raises(CorpusConfigError, match="broken.mo"):
        read_catalog(bad)
    short = tmp_path / "short.mo"
    short.write_bytes(write_mo(tmp_path / "ok.mo", {"": HEADER, "a": "ब"}).read_bytes()[:30])
    with pytest.raises(CorpusConfigError, match="short.mo"):
        read_catalog(short)


def test_load_sentences_cleans_deduplicates_sorts(tmp_path):
    write_mo(tmp_path / "hi" / "a.mo", {"": HEADER, "a": "नई पंक्ति जोड़ें।", "b": "TRUE लौटाता है",
                                        "c": "पंक्ति हटाएँ अभी"})
    write_mo(tmp_path / "hi" / "b.mo", {"": HEADER, "x": "नई  पंक्ति जोड़ें", "y": "फ़ाइल (_F)"})
    got = load_sentences([str(tmp_path / "hi" / "*.mo")], "DEVANAGARI", (2, 12))
    assert got == sorted(["नई पंक्ति जोड़ें", "पंक्ति हटाएँ अभी"])
    with pytest.raises(CorpusConfigError) as err:
        load_sentences([str(tmp_path / "nope" / "*.mo")], "DEVANAGARI", (2, 12), code="hi")
    for piece in ("'hi'", "nope", "tools/install.sh"):
        assert piece in str(err.value)


def test_unseen_word_share():
    train = ["नई पंक्ति जोड़ें", "पंक्ति हटाएँ"]
    # tokens: नई फ़ाइल फ़ाइल खोलें हटाएँ -> 3 of 5 unseen; types: नई फ़ाइल खोलें हटाएँ -> 2 of 4
    tokens, types = unseen_word_share(train, ["नई फ़ाइल", "फ़ाइल खोलें हटाएँ"])
    assert tokens == pytest.approx(3 / 5) and types == pytest.approx(2 / 4)
    assert unseen_word_share(train, train) == (0.0, 0.0)
    assert unseen_word_share(train, []) == (0.0, 0.0)


# ---------------------------------------------------------------- a corpus of sentences

HI_WORDS = ["नई", "पंक्ति", "फ़ाइल", "खोलें", "सहेजें", "हटाएँ"]
TA_WORDS = ["புதிய", "வரிசை", "கோப்பு", "திற", "சேமி", "நீக்கு"]
JUNK = {"j1": "TRUE लौटाता है अभी", "j2": "३ पंक्तियाँ जोड़ें अभी", "j3": "~सहेजें फ़ाइल को अभी", "j4": "%s கோப்பு"}


def sentences_of(words, count):
    """``count`` distinct sentences of 3 distinct words each."""
    return [" ".join(p) for p in itertools.islice(itertools.permutations(words, 3), count)]


def write_catalogs(root: Path, count: int) -> Dict[str, list]:
    """root/cat/{hi,ta}/messages.mo with ``count`` sentences (ending in a danda / full stop) plus junk."""
    expected = {}
    for code, words, end in (("hi", HI_WORDS, "।"), ("ta", TA_WORDS, ".")):
        good = sentences_of(words, count)
        entries = {"": HEADER, **JUNK, **{f"m{i}": s + end for i, s in enumerate(good)}}
        write_mo(root / "cat" / code / "messages.mo", entries)
        expected[code] = sorted(unicodedata.normalize("NFC", s) for s in good)
    return expected


def config_text(catalogs='["cat/{code}/*.mo"]', extra=""):
    return f"""
sentences: {{catalogs: {catalogs}, words: [2, 6]}}
sizes:
  fast: {{train: 6, dev: 2, test: 2, test_unseen_voice: 2}}
  all: {{train: rest, dev: 1, test: 2, test_unseen_voice: 1}}
{extra}
defaults:
  train_variants: [m1, f2]
  heldout_variants: [m7, f5]
  speeds: [150]
  pitches: [50]
languages:
  - {{code: hi, espeak_voice: hi, script: DEVANAGARI}}
  - {{code: ta, espeak_voice: ta, script: TAMIL}}
"""


def read_map(path: Path):
    return [tuple(line.split(" ", 1)) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentences")
    expected = write_catalogs(root, 14)
    (root / "corpus.yaml").write_text(config_text(), encoding="utf-8")
    args = ["--config", str(root / "corpus.yaml"), "--out_dir", str(root / "data"),
            "--wav_dir", str(root / "wav"), "--size", "fast", "--nj", "2", "--no_progress"]
    assert cli.main(args) == 0
    return root, expected


def test_corpus_texts_are_catalog_sentences_in_one_set_each(corpus):
    root, expected = corpus
    seen = {}
    for s in SET_NAMES:
        utt2lang = dict(read_map(root / "data" / s / "utt2lang"))
        rows = read_map(root / "data" / s / "text")
        assert len(rows) == 2 * FAST[s]
        for uttid, text in rows:
            assert text in expected[utt2lang[uttid]], text
            assert all(is_script_word(w, SCRIPT[utt2lang[uttid]], (1, 40)) for w in text.split())
            assert text not in seen, f"{text!r} in {seen.get(text)} and {s}"
            seen[text] = s


def test_corpus_unseen_voice_only_heldout_variants(corpus):
    root, _ = corpus
    for s in SET_NAMES:
        variants = {SPEAKER_RE.match(spk)["variant"] for _, spk in read_map(root / "data" / s / "utt2spk")}
        assert variants <= ({"m7", "f5"} if s == "test_unseen_voice" else {"m1", "f2"}), (s, variants)


def test_corpus_stamp_holds_unseen_words(corpus, capsys):
    root, _ = corpus
    stamp = json.loads((root / "data" / STAMP_NAME).read_text(encoding="utf-8"))
    unseen = stamp["unseen_words"]
    assert sorted(unseen) == sorted(["dev", "test", "test_unseen_voice"])
    for s, per in unseen.items():
        assert sorted(per) == ["hi", "ta"]
        for lang, shares in per.items():
            train = [t for u, t in read_map(root / "data" / "train" / "text") if u.startswith(f"{lang}-")]
            texts = [t for u, t in read_map(root / "data" / s / "text") if u.startswith(f"{lang}-")]
            assert (shares["tokens"], shares["types"]) == pytest.approx(unseen_word_share(train, texts))
    # a re-run skips, and still prints the table
    args = ["--config", str(root / "corpus.yaml"), "--out_dir", str(root / "data"),
            "--wav_dir", str(root / "wav"), "--size", "fast", "--no_progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "unseen words" in out and "test_unseen_voice" in out


def _config(tmp_path, count=14, **kw):
    expected = write_catalogs(tmp_path, count)
    (tmp_path / "corpus.yaml").write_text(config_text(**kw), encoding="utf-8")
    return load_corpus_config(tmp_path / "corpus.yaml"), expected


def test_train_rest_takes_every_other_sentence(tmp_path):
    config, expected = _config(tmp_path)
    sizes = parse_sizes("all", config.sizes)
    assert sizes == {"train": "rest", "dev": 1, "test": 2, "test_unseen_voice": 1}
    assert parse_sizes("train=rest,dev=1,test=2,test_unseen_voice=1") == sizes
    plan = plan_corpus(config.languages, tmp_path / "wav", sizes, sentences=config.sentences)
    for code in ("hi", "ta"):
        texts = [u.text for u in plan if u.lang == code]
        assert sorted(texts) == expected[code]  # every sentence, once
        assert sum(u.set_name == "train" for u in plan if u.lang == code) == 14 - 4
    # the evaluation sets do not depend on the train size
    fixed = plan_corpus(config.languages, tmp_path / "wav", dict(sizes, train=3), sentences=config.sentences)
    evals = [(u.set_name, u.lang, u.text) for u in plan if u.set_name != "train"]
    assert evals == [(u.set_name, u.lang, u.text) for u in fixed if u.set_name != "train"]


def test_train_rest_needs_sentences(tmp_path):
    bn = RECIPE / "conf" / "words" / "bn.txt"
    cfg = tmp_path / "words.yaml"
    cfg.write_text(f"""
defaults: {{train_variants: [m1], heldout_variants: [f5]}}
languages:
  - {{code: bn, espeak_voice: bn, script: BENGALI, word_list: {bn}}}
""", encoding="utf-8")
    config = load_corpus_config(cfg)
    with pytest.raises(CorpusConfigError, match="'bn'.*sentences"):
        plan_corpus(config.languages, tmp_path / "wav", "train=rest,dev=1,test=1,test_unseen_voice=1")
    rest = "sizes:\n  x: {train: rest, dev: 1, test: 1, test_unseen_voice: 1}\n"
    cfg.write_text(cfg.read_text(encoding="utf-8") + rest, encoding="utf-8")
    with pytest.raises(CorpusConfigError, match="sizes.x.*sentences"):
        load_corpus_config(cfg)
    with pytest.raises(CorpusConfigError, match="dev"):
        parse_sizes("train=6,dev=rest,test=1,test_unseen_voice=1")


def test_too_few_sentences_names_language_and_counts(tmp_path):
    config, _ = _config(tmp_path, count=5)
    with pytest.raises(CorpusConfigError) as err:
        plan_corpus(config.languages, tmp_path / "wav", "fast", sentences=config.sentences)
    for piece in ("'hi'", "only 5 sentences", "need 12"):
        assert piece in str(err.value), f"{piece!r} not in: {err.value}"


def test_plan_changes_with_the_sentences(tmp_path):
    config, _ = _config(tmp_path)
    sizes = parse_sizes("all", config.sizes)
    plan = plan_corpus(config.languages, tmp_path / "wav", sizes, sentences=config.sentences)
    assert plan == plan_corpus(config.languages, tmp_path / "wav", sizes, sentences=config.sentences)
    write_catalogs(tmp_path, 15)  # one more sentence per language
    more = plan_corpus(config.languages, tmp_path / "wav", sizes, sentences=config.sentences)
    assert _checksum(more, ["hi", "ta"]) != _checksum(plan, ["hi", "ta"])
    fewer_words = SentenceSource(config.sentences.catalogs, (2, 2))  # no sentence has 2 words
    with pytest.raises(CorpusConfigError, match="only 0 sentences"):
        plan_corpus(config.languages, tmp_path / "wav", "fast", sentences=fewer_words)


@pytest.mark.parametrize("extra, language, expected", [
    ("vocab_size: 40", None, ["vocab_size", "sentences"]),
    ("", "{code: bn, espeak_voice: bn, script: BENGALI, aspell_dict: bn}", ["'bn'", "aspell_dict", "sentences"]),
])
def test_sentences_config_rejects_word_corpus_keys(tmp_path, extra, language, expected):
    text = config_text(extra=extra)
    if language:
        text += f"  - {language}\n"
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(CorpusConfigError) as err:
        load_corpus_config(tmp_path / "c.yaml")
    for piece in expected:
        assert piece in str(err.value), f"{piece!r} not in: {err.value}"


@pytest.mark.parametrize("sentences, expected", [
    ("{catalogs: [], words: [2, 6]}", "catalogs"),
    ("{catalogs: [3], words: [2, 6]}", "catalogs"),
    ("{catalogs: [a/*.mo], words: [5, 2]}", "sentences.words"),
    ("{catalogs: [a/*.mo], wrds: [2, 6]}", "unknown keys.*wrds"),
    ("[a/*.mo]", "expected a mapping"),
])
def test_bad_sentences_key(tmp_path, sentences, expected):
    text = config_text().replace("{catalogs: [\"cat/{code}/*.mo\"], words: [2, 6]}", sentences)
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(CorpusConfigError, match=expected):
        load_corpus_config(tmp_path / "c.yaml")


def test_relative_catalogs_are_relative_to_the_yaml(tmp_path):
    config, _ = _config(tmp_path)
    assert config.sentences.globs("ta") == [str(tmp_path.resolve() / "cat" / "ta" / "*.mo")]
    assert config.sentences.words == (2, 6)


# ---------------------------------------------------------------- the recipe's config and real catalogs

def test_recipe_config_has_1000_sentences_per_language():
    """tools/install.sh unpacks the catalogs; without them this fails (it does not skip)."""
    config = load_corpus_config(RECIPE / "conf" / "corpus_sentences.yaml")
    assert [lang.code for lang in config.languages] == ["hi", "mr", "ta", "te"]
    assert parse_sizes("fast", config.sizes) == FAST
    for lang in config.languages:
        sentences = load_sentences(config.sentences.globs(lang.code), lang.script, config.sentences.words, lang.code)
        assert len(sentences) >= 1000, f"{lang.code}: only {len(sentences)} sentences"
        lo, hi = config.sentences.words
        assert all(lo <= len(s.split()) <= hi for s in sentences)
    sizes = parse_sizes("default", config.sizes)
    assert sizes == {"train": "rest", "dev": 50, "test": 100, "test_unseen_voice": 100}
    plan = plan_corpus(config.languages, "/nonexistent/wav", sizes, sentences=config.sentences, seed=0)
    per_set = {s: sum(u.set_name == s for u in plan) for s in SET_NAMES}
    assert per_set["test"] == 4 * 100 and per_set["train"] >= 4 * 800
    assert len({(u.lang, u.text) for u in plan}) == len(plan)


def test_data_sh_with_sentences_config(tmp_path):
    """local/data.sh --config conf/corpus_sentences.yaml (fast, one language)."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    cmd = ["local/data.sh", "--config", "conf/corpus_sentences.yaml", "--size", "fast", "--nj", "2",
           "--languages", "te", "--data_dir", str(tmp_path / "data"), "--wav_dir", str(tmp_path / "wav")]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "successfully finished" in proc.stdout and "unseen words" in proc.stdout
    assert (tmp_path / "data" / "lang_list").read_text() == "te\n"
    texts = [t for s in SET_NAMES for _, t in read_map(tmp_path / "data" / s / "text")]
    assert len(texts) == sum(FAST.values()) == len(set(texts))
