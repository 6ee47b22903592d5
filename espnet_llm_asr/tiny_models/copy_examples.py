"""ASR-shaped training examples for pretraining the toy LM (stage 7).

A real LLM can repeat what its prompt holds and reads the blurred,
stretched "pseudo-tokens" a speech projector gives it; a toy LM trained on
random word sequences can do neither.  Besides plain text, the LM is
therefore also trained on examples laid out as the ASR model lays out an
utterance (``[BOS | speech slot | prompt after the speech | text | EOS]``),
with something speech-like in the slot:

``copy``
    the transcript's own tokens, one per token (what CIF's one vector per
    token resembles);
``aligned``
    the transcript laid out as a fixed-stride projector (stride 5 over 50 Hz
    encoder frames: 10 positions a second) lays it out, like a CTC
    alignment: each token spread over a duration-like span of positions
    (proportional to its characters, at a speaking rate drawn per example),
    repeated 1..``max_repeat`` times inside its span, filler (blank)
    positions around it and between words, and a few positions replaced by
    random tokens (noise).  The slot's positions get no loss: the LM learns
    to *read* alignments, not to write them.  ``unit: char`` lays out the
    transcript *spelled* (one vocabulary piece per character, a filler
    between words; :class:`~espnet_llm_asr.ctc_vocab.CharSpeller`) instead of its tokens: 100 ms of
    a character-CTC-trained encoder holds about one character, not a word,
    so this is closer to what a stride-5 projector over such an encoder
    gives, and the LM has to compose the words (the toy LM reads spelled
    slots worse than token slots: the recipe README, "Tried, not adopted").

Token ids in, token ids and labels (``-100`` = no loss) out.  The filler is
the LM's pad token, which is also the blank of the model's auxiliary CTC
(``model_conf.ctc_weight``), so what a CTC-trained projector emits between
words is what the LM saw here.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from espnet_llm_asr.ctc_vocab import CharSpeller

IGNORE = -100


@dataclass
class AlignedSlotConfig:
    """How an ``aligned`` speech slot is drawn.

    ``positions_per_char``: range of the speaking rate, in slot positions per
    transcript character (the default corpus: 8.8 characters a second, 4.5-13.9,
    at 10 positions a second gives 0.7-2.2); ``max_repeat``: a token appears
    1..max_repeat times in its span; ``edge_fill``: up to this many filler
    positions before the first and after the last word (silence);
    ``noise``: probability that a slot position is a random token;
    ``unit``: ``token`` (the transcript's tokens) or ``char`` (spelled).
    """

    positions_per_char: Tuple[float, float] = (0.7, 1.6)
    max_repeat: int = 3
    edge_fill: int = 3
    noise: float = 0.05
    unit: str = "token"

    def __post_init__(self):
        if self.unit not in ("token", "char"):
            raise ValueError(f"aligned slot: unit must be token or char, got {self.unit!r}")
        lo, hi = self.positions_per_char
        if not 0 < lo <= hi:
            raise ValueError(f"aligned positions_per_char must be 0 < low <= high, got {self.positions_per_char}")
        if self.max_repeat < 1 or self.edge_fill < 0 or not 0 <= self.noise < 1:
            raise ValueError(f"aligned slot: need max_repeat >= 1, edge_fill >= 0, 0 <= noise < 1; got {self}")


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def aligned_slot(ids: Sequence[int], chars: Sequence[int], filler: int, vocab: Sequence[int],
                 gen: torch.Generator, cfg: AlignedSlotConfig) -> List[int]:
    """A fixed-stride-projector-like layout of ``ids`` (token ids; ``chars[i]``: characters of token i).

    Length = edge fill + sum over tokens of max(1, round(rate * chars)) + edge fill.
    Reading it left to right and merging repeats between fillers gives ``ids``
    back when ``noise`` is 0 (two equal neighbouring tokens are always
    separated by a filler).
    """
    lo, hi = cfg.positions_per_char
    rate = lo + (hi - lo) * float(torch.rand(1, generator=gen))
    slot = [filler] * _randint(gen, 0, cfg.edge_fill)
    for i, (tok, n) in enumerate(zip(ids, chars)):
        span = max(1, round(rate * max(1, n)))
        if i > 0 and ids[i - 1] == tok and slot[-1] == tok:
            span = max(span, 2)
            slot.append(filler)
            span -= 1
        reps = _randint(gen, 1, min(cfg.max_repeat, span))
        offset = _randint(gen, 0, span - reps)
        slot += [filler] * offset + [tok] * reps + [filler] * (span - reps - offset)
    slot += [filler] * _randint(gen, 0, cfg.edge_fill)
    if cfg.noise > 0:
        hit = (torch.rand(len(slot), generator=gen) < cfg.noise).tolist()
        picks = torch.randint(len(vocab), (len(slot),), generator=gen).tolist()
        slot = [vocab[p] if h else s for s, h, p in zip(slot, hit, picks)]
    return slot


class CopyExampleMaker:
    """Builds ``text`` / ``copy`` / ``aligned`` examples from a transcript's token ids.

    Args:
        bos: BOS id list (empty when the tokenizer has none); eos: EOS id.
        suffix: ids of the prompt text after the speech slot.
        filler: the slot's filler (pad) id; chars: characters of every
            vocabulary id (for span lengths); vocab: ids that noise may draw
            (no special tokens).
        speller: spells the transcript for ``aligned`` examples when the
            slot's unit is ``char`` (:class:`~espnet_llm_asr.ctc_vocab.CharSpeller`, words apart by
            the filler, which the slot spreads over 1-2 positions like a pause).
        copy_slot_loss: whether ``copy`` examples learn their slot too (the
            first occurrence of the transcript, an LM target); ``False``
            leaves it without loss, as ``aligned`` slots are, so that every
            target of a copy example is a *read* (with random-word copies the
            slot is unpredictable noise to the loss).
    """

    def __init__(self, bos: List[int], eos: int, suffix: List[int], filler: int, chars: Sequence[int],
                 vocab: Sequence[int], aligned: AlignedSlotConfig, max_tokens: int = 256,
                 speller: Optional["CharSpeller"] = None, copy_slot_loss: bool = True):
        self.bos, self.eos, self.suffix, self.filler = bos, eos, suffix, filler
        self.chars, self.vocab, self.aligned, self.max_tokens = chars, vocab, aligned, max_tokens
        self.speller, self.copy_slot_loss = speller, copy_slot_loss

    def make(self, ids: List[int], kind: str, gen: torch.Generator,
             text: Optional[str] = None) -> Tuple[List[int], List[int]]:
        """(input ids, labels) of one example, truncated to ``max_tokens``.

        ``text``: the transcript ``ids`` encode, needed by ``aligned``
        examples when the slot's unit is ``char`` (it is spelled).
        """
        if kind == "text":
            seq = self.bos + ids + [self.eos]
            labels = list(seq)
        elif kind == "copy":
            seq = self.bos + ids + self.suffix + ids + [self.eos]
            labels = list(seq)
            if not self.copy_slot_loss:
                labels[len(self.bos):len(self.bos) + len(ids)] = [IGNORE] * len(ids)
        elif kind == "aligned":
            if self.aligned.unit == "char":
                if text is None or self.speller is None:
                    raise ValueError("aligned slot with unit char needs the transcript text and a CharSpeller")
                spelled = self.speller.spell(text)
                slot = aligned_slot(spelled, [1] * len(spelled), self.filler, self.vocab, gen, self.aligned)
            else:
                slot = aligned_slot(ids, [self.chars[t] for t in ids], self.filler, self.vocab, gen, self.aligned)
            head = self.bos + slot
            seq = head + self.suffix + ids + [self.eos]
            labels = self.bos + [IGNORE] * len(slot) + seq[len(head):]
        else:
            raise ValueError(f"unknown example kind {kind!r} (text | copy | aligned)")
        return seq[: self.max_tokens], labels[: self.max_tokens]


def token_char_counts(tokenizer) -> List[int]:
    """Characters of each vocabulary id's text (word-boundary markers and spaces not counted)."""
    counts = []
    for tok in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
        text = (tok or "").replace("\u2581", "").replace("\u0120", "").strip()
        counts.append(len(text))
    return counts


def _script(word: str) -> str:
    """Unicode script-like name of a word's first character (``DEVANAGARI``, ``TAMIL``, ``LATIN``...)."""
    try:
        return unicodedata.name(word[0]).split()[0]
    except ValueError:  # unnamed code point
        return "OTHER"


class RandomSentences:
    """Sentences of random words with the shape of the training text.

    ``draw`` takes a random training line and replaces each of its words by
    a random word of the same script from the training text.  Copy examples
    built from these cannot be answered from a memorised training sentence,
    so the LM must read the speech slot (espnet_llm_asr/benchmark/README.md,
    "Choices in the code").
    """

    def __init__(self, texts: Sequence[str]):
        self.lines = [t.split() for t in texts if t.split()]
        if not self.lines:
            raise ValueError("RandomSentences: no words in the text")
        pools = {}
        for words in self.lines:
            for w in words:
                pools.setdefault(_script(w), set()).add(w)
        self.pools = {k: sorted(v) for k, v in pools.items()}

    def draw(self, gen: torch.Generator) -> str:
        line = self.lines[_randint(gen, 0, len(self.lines) - 1)]
        out = []
        for w in line:
            pool = self.pools[_script(w)]
            out.append(pool[_randint(gen, 0, len(pool) - 1)])
        return " ".join(out)
