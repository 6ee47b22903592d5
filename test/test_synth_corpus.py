"""Synthetic corpus generator (espeak-ng + sox): layout, consistency, audio, splits, re-runs, errors.

One small corpus (2 languages: Hindi from aspell, Bengali from the shipped
word-list file; fast size 6/2/2/2) is generated once per module through the
CLI and inspected by several tests.
"""
import os
import re
import subprocess
import unicodedata
import wave
from pathlib import Path

import pytest

from espnet_llm_asr.bin import synthesize_corpus as cli
from espnet_llm_asr.data import (
    SET_NAMES,
    CorpusConfigError,
    LanguageSpec,
    load_corpus_config,
    parse_sizes,
    plan_corpus,
    synthesize_corpus,
)
from espnet_llm_asr.data.kaldi_dir import KaldiEntry, write_kaldi_dir
from espnet_llm_asr.data.synth_corpus import STAMP_NAME
from espnet_llm_asr.data.word_list import is_script_word

RECIPE = Path(__file__).resolve().parents[1] / "egs2" / "indic" / "asr1"
BN_WORDS = RECIPE / "conf" / "words" / "bn.txt"
FAST = {"train": 6, "dev": 2, "test": 2, "test_unseen_voice": 2}
SPEAKER_RE = re.compile(r"^(?P<lang>[a-z]+)-(?P<variant>[A-Za-z0-9]+)s(?P<speed>\d{3})p(?P<pitch>\d{3})$")
SCRIPT = {"hi": "DEVANAGARI", "bn": "BENGALI"}

CONFIG = f"""
sizes:
  fast: {{train: 6, dev: 2, test: 2, test_unseen_voice: 2}}
vocab_size: 20
defaults:
  train_variants: [m1, m3, f2]
  heldout_variants: [m7, f5]
  speeds: [140, 170]
  pitches: [40, 60]
languages:
  - {{code: hi, espeak_voice: hi, script: DEVANAGARI, aspell_dict: hi}}
  - {{code: bn, espeak_voice: bn, script: BENGALI, word_list: {BN_WORDS}}}
"""


def read_map(path: Path):
    """Lines of a Kaldi file as (key, value) pairs, in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(" ", 1)) for line in lines]


def snapshot(*dirs):
    """mtime_ns of every file under ``dirs``."""
    return {str(p): p.stat().st_mtime_ns for d in dirs for p in Path(d).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    (root / "corpus.yaml").write_text(CONFIG, encoding="utf-8")
    args = ["--config", str(root / "corpus.yaml"), "--out_dir", str(root / "data"),
            "--wav_dir", str(root / "wav"), "--size", "fast", "--nj", "2", "--seed", "0", "--no_progress"]
    assert cli.main(args) == 0
    return root, args


def test_layout_and_lang_list(corpus):
    root, _ = corpus
    data = root / "data"
    assert (data / "lang_list").read_text(encoding="utf-8") == "hi\nbn\n"
    for s in SET_NAMES:
        for f in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang"):
            assert (data / s / f).is_file(), f"{s}/{f} missing"
    # no temp files left behind
    assert not [p for p in root.rglob("*.tmp*")]


def test_files_sorted_and_consistent(corpus):
    root, _ = corpus
    for s in SET_NAMES:
        d = root / "data" / s
        tables = {f: read_map(d / f) for f in ("wav.scp", "text", "utt2spk", "utt2lang")}
        ids = [k for k, _ in tables["wav.scp"]]
        assert len(ids) == FAST[s] * 2, (s, len(ids))
        assert ids == sorted(ids, key=lambda k: k.encode()), f"{s}/wav.scp not in C sort order"
        assert len(set(ids)) == len(ids)
        for f, rows in tables.items():
            assert [k for k, _ in rows] == ids, f"{s}/{f} has other uttids or order than wav.scp"
        utt2spk, utt2lang = dict(tables["utt2spk"]), dict(tables["utt2lang"])
        for uttid in ids:
            spk = utt2spk[uttid]
            assert uttid.startswith(spk + "_"), (uttid, spk)
            m = SPEAKER_RE.match(spk)
            assert m and m["lang"] == utt2lang[uttid], (spk, utt2lang[uttid])
        # spk2utt is the inverse of utt2spk, sorted by speaker
        spk2utt = [(spk, utts.split()) for spk, utts in read_map(d / "spk2utt")]
        assert [spk for spk, _ in spk2utt] == sorted({v for v in utt2spk.values()}, key=lambda k: k.encode())
        assert sorted(u for _, us in spk2utt for u in us) == sorted(ids)
        assert all(utt2spk[u] == spk for spk, us in spk2utt for u in us)


def test_transcripts_are_words_of_their_language(corpus):
    root, _ = corpus
    for s in SET_NAMES:
        utt2lang = dict(read_map(root / "data" / s / "utt2lang"))
        for uttid, text in read_map(root / "data" / s / "text"):
            words = text.split(" ")
            assert 2 <= len(words) <= 5, text
            assert len(set(words)) == len(words), text
            assert text == unicodedata.normalize("NFC", text)
            assert all(is_script_word(w, SCRIPT[utt2lang[uttid]]) for w in words), (uttid, text)
    bn_words = {unicodedata.normalize("NFC", w) for w in BN_WORDS.read_text(encoding="utf-8").split()}
    bn_used = {w for s in SET_NAMES for u, t in read_map(root / "data" / s / "text") if u.startswith("bn-")
               for w in t.split()}
    assert bn_used and bn_used <= bn_words


def test_wavs_are_16k_mono_and_not_empty(corpus):
    root, _ = corpus
    for s in SET_NAMES:
        for uttid, path in read_map(root / "data" / s / "wav.scp"):
            assert os.path.isabs(path) and Path(path).name == f"{uttid}.wav"
            with wave.open(path, "rb") as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
                assert w.getnframes() > 0.3 * 16000, f"{path}: only {w.getnframes()} samples"


def test_sentences_disjoint_between_sets(corpus):
    root, _ = corpus
    texts = {s: [t for _, t in read_map(root / "data" / s / "text")] for s in SET_NAMES}
    for s in SET_NAMES:
        assert len(set(texts[s])) == len(texts[s]), f"repeated sentence inside {s}"
    for i, a in enumerate(SET_NAMES):
        for b in SET_NAMES[i + 1:]:
            assert not set(texts[a]) & set(texts[b]), f"{a} and {b} share sentences"


def test_unseen_voices_never_in_training_sets(corpus):
    root, _ = corpus

    def variants(s):
        return {SPEAKER_RE.match(spk)["variant"] for _, spk in read_map(root / "data" / s / "utt2spk")}

    seen = variants("train") | variants("dev") | variants("test")
    unseen = variants("test_unseen_voice")
    assert seen <= {"m1", "m3", "f2"}
    assert unseen and unseen <= {"m7", "f5"}
    assert not seen & unseen


def test_rerun_is_a_noop(corpus, capsys):
    root, args = corpus
    before = snapshot(root / "data", root / "wav")
    assert cli.main(args) == 0
    assert "skipped" in capsys.readouterr().out
    assert snapshot(root / "data", root / "wav") == before


def test_changed_settings_regenerate(tmp_path):
    """Another seed into the same dirs is not skipped and gives other sentences."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    langs = load_corpus_config(cfg).select(["bn"])
    kw = dict(sizes=FAST, vocab_size=20, nj=2, progress=False)
    first = synthesize_corpus(tmp_path / "data", tmp_path / "wav", langs, seed=0, **kw)
    text0 = (tmp_path / "data" / "train" / "text").read_text(encoding="utf-8")
    again = synthesize_corpus(tmp_path / "data", tmp_path / "wav", langs, seed=0, **kw)
    assert not first.skipped and again.skipped
    assert again.utterances == first.utterances == {s: {"bn": n} for s, n in FAST.items()}
    other = synthesize_corpus(tmp_path / "data", tmp_path / "wav", langs, seed=1, **kw)
    assert not other.skipped
    assert (tmp_path / "data" / "train" / "text").read_text(encoding="utf-8") != text0
    assert (tmp_path / "data" / STAMP_NAME).is_file()


def test_shipped_config_plans_four_languages():
    config = load_corpus_config(RECIPE / "conf" / "corpus.yaml")
    assert [lang.code for lang in config.languages] == ["hi", "mr", "ta", "te"]
    assert [lang.code for lang in config.select(["te", "hi"])] == ["hi", "te"]  # config order = language id order
    assert parse_sizes("fast", config.sizes) == FAST
    assert parse_sizes("default", config.sizes) == {"train": 400, "dev": 40, "test": 40, "test_unseen_voice": 40}
    plan = plan_corpus(config.languages, "/nonexistent/wav", "fast", vocab_size=config.vocab_size, seed=0)
    assert len(plan) == 4 * sum(FAST.values())
    for lang in config.languages:
        words = {w for u in plan if u.lang == lang.code for w in u.text.split()}
        assert 2 <= len(words) <= config.vocab_size
        assert all(is_script_word(w, lang.script) for w in words)
    # deterministic given the seed, different for another seed
    assert plan == plan_corpus(config.languages, "/nonexistent/wav", "fast", vocab_size=config.vocab_size, seed=0)
    assert plan != plan_corpus(config.languages, "/nonexistent/wav", "fast", vocab_size=config.vocab_size, seed=1)


@pytest.mark.parametrize("word, script, ok", [
    ("नमस्ते", "DEVANAGARI", True),
    ("ि", "DEVANAGARI", False),          # a lone vowel sign
    ("िकल", "DEVANAGARI", False),        # starts with a combining mark
    ("नमस्ते।", "DEVANAGARI", False),     # danda is punctuation
    ("नम३", "DEVANAGARI", False),        # digit
    ("अनुसंधानकर्ता", "DEVANAGARI", False),  # longer than 8 code points
    ("தமிழ்", "DEVANAGARI", False),      # other script
    ("தமிழ்", "TAMIL", True),
    ("ab", "DEVANAGARI", False),
])
def test_word_filter(word, script, ok):
    assert is_script_word(word, script, (2, 8)) is ok


def _bad(tmp_path, language_line, extra=""):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"""
defaults: {{train_variants: [m1], heldout_variants: [f5]}}
{extra}
languages:
  - {language_line}
""", encoding="utf-8")
    config = load_corpus_config(cfg)
    plan_corpus(config.languages, tmp_path / "wav", FAST, vocab_size=10)


@pytest.mark.parametrize("language_line, expected", [
    ("{code: xx, espeak_voice: nosuchvoice, script: DEVANAGARI, aspell_dict: hi}",
     ["'xx'", "espeak_voice", "nosuchvoice"]),
    ("{code: bn, espeak_voice: bn, script: BENGALI, word_list: no/such/words.txt}",
     ["'bn'", "word_list", "words.txt", "does not exist"]),
    ("{code: hi, espeak_voice: hi, script: DEVANAGARI, aspell_dict: nosuchdict}",
     ["'hi'", "aspell_dict", "nosuchdict"]),
    ("{code: hi, espeak_voice: hi, script: DEVANAGARI, aspell_dict: hi, train_variants: [m1, zz9]}",
     ["'hi'", "train_variants", "zz9"]),
    ("{code: hi, espeak_voice: hi, script: DEVANAGARI, aspell_dict: hi, heldout_variants: [m1]}",
     ["'hi'", "heldout_variants", "m1"]),
    ("{code: hi, espeak_voice: hi, script: DEVANAGARI}", ["'hi'", "aspell_dict", "word_list"]),
    ("{code: hi, espeak_voice: hi, script: DEVANAGARI, aspell_dict: hi, speeds: [900]}", ["'hi'", "speeds"]),
    ("{code: hi, espeak_voice: hi, script: DEVANAGARI, aspel_dict: hi}", ["'hi'", "unknown keys", "aspel_dict"]),
    ("{code: hi, espeak_voice: hi, script: TAMIL, aspell_dict: hi}", ["'hi'", "usable words", "TAMIL"]),
])
def test_bad_config_names_language_and_key(tmp_path, language_line, expected):
    with pytest.raises(CorpusConfigError) as err:
        _bad(tmp_path, language_line)
    for piece in expected:
        assert piece in str(err.value), f"{piece!r} not in: {err.value}"


def test_bad_sizes_and_cli_error(tmp_path, caplog):
    with pytest.raises(CorpusConfigError, match="test_unseen_voice"):
        parse_sizes("train=5,dev=1,test=1")
    with pytest.raises(CorpusConfigError, match="huge"):
        parse_sizes("huge")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("languages:\n  - {code: bn, espeak_voice: bn, script: BENGALI, word_list: missing.txt,"
                   " train_variants: [m1], heldout_variants: [f5]}\n", encoding="utf-8")
    rc = cli.main(["--config", str(cfg), "--out_dir", str(tmp_path / "d"), "--wav_dir", str(tmp_path / "w"),
                   "--size", "fast", "--no_progress"])
    assert rc == 1
    assert "'bn'" in caplog.text and "word_list" in caplog.text
    assert not (tmp_path / "d").exists()


def test_kaldi_dir_rejects_uttid_without_speaker_prefix(tmp_path):
    with pytest.raises(ValueError, match="does not start with its speaker id"):
        write_kaldi_dir(tmp_path, [KaldiEntry("utt1", "/a.wav", "text", "spkA", "hi")])
    LanguageSpec("hi", "hi", "DEVANAGARI", ("m1",), ("f5",), aspell_dict="hi")  # a valid spec builds


def test_data_sh_fast(tmp_path):
    """The recipe's stage-1 script, standalone (it activates the venv itself)."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    cmd = ["local/data.sh", "--size", "fast", "--nj", "2", "--languages", "ta",
           "--data_dir", str(tmp_path / "data"), "--wav_dir", str(tmp_path / "wav")]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "successfully finished" in proc.stdout
    assert (tmp_path / "data" / "lang_list").read_text() == "ta\n"
    assert len(read_map(tmp_path / "data" / "train" / "wav.scp")) == FAST["train"]
    bad = subprocess.run(["local/data.sh", "--no_such_option", "1"], cwd=RECIPE, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no_such_option" in bad.stderr
