"""Words a system never heard in training: how many a test set holds, how many come out exactly.

An open-vocabulary test set holds words that the training transcripts never
contain.  For each reference word that is not in the training text, the word
counts as transcribed exactly when the word-level alignment of reference and
hypothesis (jiwer's Levenshtein alignment, the one behind its WER) matches it
to the same word of the hypothesis.  Words are whitespace-separated, as in
the WER.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Sequence, Set, Union

from espnet_llm_asr.data_io import read_kaldi_map


@dataclass
class UnseenWordScore:
    """Reference words, those of them unseen in training, and the unseen ones transcribed exactly."""

    words: int = 0
    unseen: int = 0
    exact: int = 0

    @property
    def unseen_share(self) -> float:
        """Unseen words / reference words (0 for no words)."""
        return self.unseen / self.words if self.words else 0.0

    @property
    def exact_share(self) -> float:
        """Unseen words transcribed exactly / unseen words (0 for none)."""
        return self.exact / self.unseen if self.unseen else 0.0

    def __iadd__(self, other: "UnseenWordScore") -> "UnseenWordScore":
        self.words += other.words
        self.unseen += other.unseen
        self.exact += other.exact
        return self


def training_words(text_path: Union[str, Path]) -> Set[str]:
    """Every word of a Kaldi ``text`` file's transcripts (``<uttid> <transcript>`` a line)."""
    return {w for t in read_kaldi_map(text_path).values() for w in t.split()}


def score_unseen_words(ref: Dict[str, str], hyp: Dict[str, str], known: Set[str],
                       keys: Iterable[str]) -> UnseenWordScore:
    """Count, over the utterances ``keys``, the reference words not in ``known`` and those matched exactly.

    Args:
        ref, hyp: uttid -> transcript; an utterance missing from ``hyp`` is an empty hypothesis.
        known: the words of the training transcripts (:func:`training_words`).
    """
    import jiwer

    score = UnseenWordScore()
    for key in keys:
        ref_words = ref[key].split()
        if not ref_words:
            continue
        unseen = [w not in known for w in ref_words]
        score.words += len(ref_words)
        score.unseen += sum(unseen)
        hyp_text = hyp.get(key, "").strip()
        if not any(unseen) or not hyp_text:
            continue
        for chunk in jiwer.process_words(" ".join(ref_words), hyp_text).alignments[0]:
            if chunk.type == "equal":
                score.exact += sum(unseen[chunk.ref_start_idx: chunk.ref_end_idx])
    return score


def score_unseen_words_by_lang(ref: Dict[str, str], hyp: Dict[str, str], known: Set[str],
                               utt2lang: Dict[str, str], all_label: str = "all") -> Dict[str, UnseenWordScore]:
    """{language: score, ..., ``all_label``: score} over the utterances of ``ref``, in sorted language order."""
    by_lang: Dict[str, UnseenWordScore] = {}
    for lang in sorted(set(utt2lang.get(k, "") for k in ref) - {""}):
        by_lang[lang] = score_unseen_words(ref, hyp, known, [k for k in ref if utt2lang.get(k) == lang])
    by_lang[all_label] = score_unseen_words(ref, hyp, known, ref)
    return by_lang


def unseen_word_lines(rows: Sequence[tuple]) -> list:
    """A markdown table of ``(test set, language, UnseenWordScore)`` rows."""
    lines = ["|test set|lang|ref words|unseen in training|unseen transcribed exactly|",
             "|---|---|---|---|---|"]
    for test_set, lang, s in rows:
        lines.append(f"|{test_set}|{lang}|{s.words}|{s.unseen} ({100 * s.unseen_share:.1f} %)|"
                     f"{s.exact} ({100 * s.exact_share:.1f} %)|")
    return lines
