"""Generate the synthetic multilingual corpus: plan, speak, write Kaldi dirs.

For each language: a vocabulary of ``vocab_size`` words, a pool of distinct
sentences of ``words_per_sentence`` random words, split in order into the sets
``train, dev, test, test_unseen_voice`` (so no sentence is in two sets).
With a ``sentences`` source (:class:`~espnet_llm_asr.data.corpus_config.SentenceSource`)
the pool is instead the language's sentences from message catalogs
(:mod:`espnet_llm_asr.data.sentences`), shuffled; dev, test and
test_unseen_voice take theirs first and train the next ones (all the others
when its size is ``rest``), so the evaluation sets do not depend on the train
size.  train/dev/test are spoken by the training voices (variant x speed x
pitch), test_unseen_voice only by the held-out variants.  Everything is drawn
from ``random.Random`` seeded by (purpose, seed, language), so a language's
corpus does not change when other languages are added.

After writing, the share of dev/test/test_unseen_voice words (occurrences and
distinct words) that train never holds is computed per language: how open the
vocabulary is (:meth:`CorpusSummary.format_unseen`).

Outputs (``out_dir`` is the recipe's ``data/``)::

    out_dir/{train,dev,test,test_unseen_voice}/{wav.scp,text,utt2spk,spk2utt,utt2lang}
    out_dir/lang_list                 one code a line, line index = language id
    out_dir/.synth_corpus.json        plan checksum + summary + unseen-word shares; present = complete
    wav_dir/<lang>/<uttid>.wav        16 kHz mono 16-bit

A re-run whose plan (texts, voices, paths) has the same checksum and whose
files all exist does nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from espnet_llm_asr.data.corpus_config import (
    REST,
    SET_NAMES,
    CorpusConfigError,
    LanguageSpec,
    SentenceSource,
    parse_sizes,
)
from espnet_llm_asr.data.espeak import SAMPLE_RATE, check_language_voices, require_tools, synthesize_wav, wav_info
from espnet_llm_asr.data.kaldi_dir import KALDI_FILES, KaldiEntry, write_kaldi_dir, write_lang_list
from espnet_llm_asr.data.sentences import load_sentences, unseen_word_share
from espnet_llm_asr.data.word_list import load_vocabulary
from espnet_llm_asr.utils import atomic_write_text

logger = logging.getLogger(__name__)

STAMP_NAME = ".synth_corpus.json"
EVAL_SETS = tuple(s for s in SET_NAMES if s != "train")


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to synthesize; ``voice`` is espeak-ng's ``-v`` argument ("hi+f3")."""

    set_name: str
    lang: str
    uttid: str
    speaker: str
    text: str
    voice: str
    speed: int
    pitch: int
    wav: str


@dataclass
class CorpusSummary:
    """Utterances and seconds of audio per set and language.

    ``unseen_words[set][lang]`` = {"tokens": share, "types": share} of the words of that set
    and language that the language's train set never holds (:func:`unseen_word_shares`).
    """

    utterances: Dict[str, Dict[str, int]] = field(default_factory=dict)
    seconds: Dict[str, Dict[str, float]] = field(default_factory=dict)
    skipped: bool = False
    unseen_words: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)

    def add(self, set_name: str, lang: str, seconds: float) -> None:
        self.utterances.setdefault(set_name, {}).setdefault(lang, 0)
        self.seconds.setdefault(set_name, {}).setdefault(lang, 0.0)
        self.utterances[set_name][lang] += 1
        self.seconds[set_name][lang] += seconds

    def format(self) -> str:
        """A table: one row per set, ``utterances/hours`` per language and in total."""
        langs = sorted({lang for per in self.utterances.values() for lang in per})
        rows = [["set"] + langs + ["total"]]
        for s in self.utterances:
            n, sec = self.utterances[s], self.seconds[s]
            rows.append([s] + [f"{n.get(lang, 0)} / {sec.get(lang, 0.0) / 3600:.3f} h" for lang in langs]
                        + [f"{sum(n.values())} / {sum(sec.values()) / 3600:.3f} h"])
        return _table(rows)

    def format_unseen(self) -> str:
        """A table: one row per evaluation set, ``tokens / types`` percent of words unseen in train per language."""
        langs = sorted({lang for per in self.unseen_words.values() for lang in per})
        rows = [["unseen words (tokens / types)"] + langs]
        for s, per in self.unseen_words.items():
            rows.append([s] + [f"{100 * per[lang]['tokens']:.1f} % / {100 * per[lang]['types']:.1f} %"
                               if lang in per else "-" for lang in langs])
        return _table(rows)


def _table(rows: List[List[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def unseen_word_shares(plan: Sequence[PlannedUtterance]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per evaluation set and language: shares of word tokens and types unseen in that language's train texts."""
    texts: Dict[str, Dict[str, List[str]]] = {}
    for u in plan:
        texts.setdefault(u.set_name, {}).setdefault(u.lang, []).append(u.text)
    shares: Dict[str, Dict[str, Dict[str, float]]] = {}
    for set_name in EVAL_SETS:
        for lang, lang_texts in texts.get(set_name, {}).items():
            tokens, types = unseen_word_share(texts.get("train", {}).get(lang, []), lang_texts)
            shares.setdefault(set_name, {})[lang] = {"tokens": tokens, "types": types}
    return shares


def _speaker_id(code: str, variant: str, speed: int, pitch: int) -> str:
    return f"{code}-{variant}s{speed:03d}p{pitch:03d}"


def _sentence_pool(vocab: Sequence[str], count: int, words_per_sentence: Tuple[int, int],
                   rng: random.Random, code: str) -> List[str]:
    """``count`` distinct sentences of distinct random words."""
    lo, hi = words_per_sentence
    if lo > len(vocab):
        raise CorpusConfigError(f"language {code!r}: words_per_sentence {list(words_per_sentence)} needs at least "
                                f"{lo} distinct words, vocab_size is {len(vocab)}")
    hi = min(hi, len(vocab))
    seen, pool = set(), []
    attempts, max_attempts = 0, 100 * count + 1000
    while len(pool) < count:
        attempts += 1
        if attempts > max_attempts:
            raise CorpusConfigError(f"language {code!r}: could only make {len(pool)} distinct sentences of "
                                    f"{lo}..{hi} words from {len(vocab)} words, need {count}; "
                                    "raise vocab_size or words_per_sentence, or lower sizes")
        sentence = " ".join(rng.sample(list(vocab), rng.randint(lo, hi)))
        if sentence not in seen:
            seen.add(sentence)
            pool.append(sentence)
    return pool


def _catalog_texts(lang: LanguageSpec, sizes: Dict[str, Union[int, str]], sentences: SentenceSource,
                   seed: int) -> Dict[str, List[str]]:
    """The texts of each set: the language's shuffled sentences, dev/test/test_unseen_voice first."""
    pool = load_sentences(sentences.globs(lang.code), lang.script, sentences.words, lang.code)
    random.Random(f"sentences:{seed}:{lang.code}").shuffle(pool)
    need = sum(sizes[s] for s in EVAL_SETS) + (1 if sizes["train"] == REST else sizes["train"])
    if len(pool) < need:
        raise CorpusConfigError(
            f"language {lang.code!r}: only {len(pool)} sentences of {sentences.words[0]}..{sentences.words[1]} words "
            f"in {sentences.globs(lang.code)}, the sizes {sizes} need {need}; lower the sizes or widen 'words'")
    texts, start = {}, 0
    for set_name in EVAL_SETS + ("train",):
        count = len(pool) - start if sizes[set_name] == REST else sizes[set_name]
        texts[set_name] = pool[start:start + count]
        start += count
    return texts


def _word_texts(lang: LanguageSpec, sizes: Dict[str, int], vocab_size: int, words_per_sentence: Tuple[int, int],
                word_length: Tuple[int, int], seed: int) -> Dict[str, List[str]]:
    """The texts of each set: distinct random word strings, split in set order."""
    if lang.aspell_dict is None and lang.word_list is None:
        raise CorpusConfigError(f"language {lang.code!r}: give exactly one of 'aspell_dict' or 'word_list' "
                                "(or a 'sentences' source)")
    bad = [s for s in SET_NAMES if sizes[s] == REST]
    if bad:
        raise CorpusConfigError(f"language {lang.code!r}: sizes {bad} = {REST!r} need a 'sentences' source "
                                "(a corpus of random words has no natural size)")
    vocab = load_vocabulary(lang, vocab_size, random.Random(f"vocab:{seed}:{lang.code}"), word_length)
    pool = _sentence_pool(vocab, sum(sizes[s] for s in SET_NAMES), words_per_sentence,
                          random.Random(f"sentences:{seed}:{lang.code}"), lang.code)
    texts, start = {}, 0
    for set_name in SET_NAMES:
        texts[set_name] = pool[start:start + sizes[set_name]]
        start += sizes[set_name]
    return texts


def plan_language(lang: LanguageSpec, sizes: Dict[str, Union[int, str]], wav_dir, vocab_size: int = 40,
                  words_per_sentence: Tuple[int, int] = (2, 5), word_length: Tuple[int, int] = (2, 8),
                  seed: int = 0, sentences: Optional[SentenceSource] = None) -> List[PlannedUtterance]:
    """Every utterance of one language, in set order (see the module doc).

    With ``sentences`` the texts come from its catalogs and ``vocab_size``, ``words_per_sentence``
    and ``word_length`` are not used; ``sizes["train"]`` may then be ``"rest"``.
    """
    check_language_voices(lang)
    if sentences is not None:
        texts = _catalog_texts(lang, sizes, sentences, seed)
    else:
        texts = _word_texts(lang, sizes, vocab_size, words_per_sentence, word_length, seed)
    voice_rng = random.Random(f"voices:{seed}:{lang.code}")
    voices = {
        held_out: [(v, s, p) for v in (lang.heldout_variants if held_out else lang.train_variants)
                   for s in lang.speeds for p in lang.pitches]
        for held_out in (False, True)
    }
    wav_dir = Path(wav_dir).resolve() / lang.code
    plan, index = [], 0
    for set_name in SET_NAMES:
        for text in texts[set_name]:
            variant, speed, pitch = voice_rng.choice(voices[set_name == "test_unseen_voice"])
            speaker = _speaker_id(lang.code, variant, speed, pitch)
            uttid = f"{speaker}_{lang.code}_{index:06d}"
            plan.append(PlannedUtterance(set_name, lang.code, uttid, speaker, text,
                                         f"{lang.espeak_voice}+{variant}", speed, pitch,
                                         str(wav_dir / f"{uttid}.wav")))
            index += 1
    return plan


def plan_corpus(languages: Sequence[LanguageSpec], wav_dir, sizes: Union[str, Dict[str, Union[int, str]]] = "default",
                vocab_size: int = 40, words_per_sentence: Tuple[int, int] = (2, 5),
                word_length: Tuple[int, int] = (2, 8), seed: int = 0,
                sentences: Optional[SentenceSource] = None) -> List[PlannedUtterance]:
    """Plan of all languages; checks voices and word or sentence sources first (errors name language and key).

    ``sentences`` (a config's ``sentences:``) replaces the random word strings for every language.
    """
    if not languages:
        raise CorpusConfigError("no languages given")
    sizes = parse_sizes(sizes)
    plan = []
    for lang in languages:
        plan.extend(plan_language(lang, sizes, wav_dir, vocab_size, words_per_sentence, word_length, seed,
                                  sentences))
    return plan


def _checksum(plan: Sequence[PlannedUtterance], codes: Sequence[str]) -> str:
    blob = json.dumps({"langs": list(codes), "plan": [asdict(u) for u in plan]}, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _already_done(out_dir: Path, checksum: str, plan: Sequence[PlannedUtterance]):
    """The stored summary when ``out_dir`` holds exactly this plan's complete output, else None."""
    stamp = out_dir / STAMP_NAME
    if not stamp.is_file():
        return None
    try:
        info = json.loads(stamp.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if info.get("checksum") != checksum or not (out_dir / "lang_list").is_file():
        return None
    if not all((out_dir / s / f).is_file() for s in SET_NAMES for f in KALDI_FILES):
        return None
    if not all(Path(u.wav).is_file() for u in plan):
        return None
    return CorpusSummary(info["summary"]["utterances"], info["summary"]["seconds"], skipped=True,
                         unseen_words=unseen_word_shares(plan))


def _speak(u: PlannedUtterance) -> float:
    synthesize_wav(u.text, u.voice, u.speed, u.pitch, u.wav, u.uttid)
    rate, frames, _ = wav_info(u.wav)
    return frames / rate


def synthesize_corpus(out_dir, wav_dir, languages: Sequence[LanguageSpec],
                      sizes: Union[str, Dict[str, Union[int, str]]] = "default", vocab_size: int = 40,
                      words_per_sentence: Tuple[int, int] = (2, 5), word_length: Tuple[int, int] = (2, 8),
                      seed: int = 0, nj: int = 1, progress: bool = True,
                      sentences: Optional[SentenceSource] = None) -> CorpusSummary:
    """Generate (or find complete and skip) the corpus; see the module doc for the layout.

    Args:
        out_dir: data dir root; gets one Kaldi dir per set and ``lang_list``.
        wav_dir: where the wavs go (``wav_dir/<lang>/<uttid>.wav``).
        languages: in language-id order.
        sizes: utterances per language per set: "default", "fast" or a dict with every set of SET_NAMES
            (train may be "rest" with ``sentences``).
        nj: parallel espeak-ng/sox processes.
        sentences: the config's sentence source; None for random word strings.
    Returns:
        utterances and seconds per set and language, unseen-word shares; ``skipped`` when nothing had to be done.
    """
    require_tools()
    out_dir = Path(out_dir)
    plan = plan_corpus(languages, wav_dir, sizes, vocab_size, words_per_sentence, word_length, seed, sentences)
    codes = [lang.code for lang in languages]
    checksum = _checksum(plan, codes)
    done = _already_done(out_dir, checksum, plan)
    if done is not None:
        logger.info(f"{out_dir}: corpus already complete for these settings ({len(plan)} utterances); skipped")
        return done

    (out_dir / STAMP_NAME).unlink(missing_ok=True)
    logger.info(f"synthesizing {len(plan)} utterances of {codes} into {Path(wav_dir).resolve()} with {nj} job(s)")
    seconds: Dict[str, float] = {}
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        futures = {pool.submit(_speak, u): u for u in plan}
        try:
            for fut in tqdm(as_completed(futures), total=len(futures), desc="espeak-ng", disable=not progress):
                seconds[futures[fut].uttid] = fut.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise

    summary = CorpusSummary(unseen_words=unseen_word_shares(plan))
    for set_name in SET_NAMES:
        utts = [u for u in plan if u.set_name == set_name]
        write_kaldi_dir(out_dir / set_name, [KaldiEntry(u.uttid, u.wav, u.text, u.speaker, u.lang) for u in utts])
        for u in utts:
            summary.add(set_name, u.lang, seconds[u.uttid])
    write_lang_list(out_dir / "lang_list", codes)
    stamp = {"checksum": checksum, "sample_rate": SAMPLE_RATE, "languages": codes, "seed": seed,
             "summary": {"utterances": summary.utterances, "seconds": summary.seconds},
             "unseen_words": summary.unseen_words}
    atomic_write_text(out_dir / STAMP_NAME, json.dumps(stamp, indent=2, ensure_ascii=False) + "\n")
    logger.info("share of words unseen in train, per language:\n" + summary.format_unseen())
    return summary
