"""The tokens an auxiliary CTC through the LLM's output head may emit (``model_conf.ctc_vocab``).

The CTC of :class:`~espnet_llm_asr.model.LLMASRModel` reads each projected
speech vector (B, T', D) with the LLM's own output head.  Over the whole
vocabulary that is a (T' x D) @ (D x V) product per utterance, for Gemma 3
(V = 262,144) a large part of a CPU training step (the numbers:
espnet_llm_asr/benchmark/README.md, "Choices in the code").  The transcripts
of a corpus use a few hundred of those tokens; restricting the CTC's softmax
to them (plus the blank) keeps the same head rows (the LLM's, frozen) at a
fraction of the cost.

``model_conf.ctc_vocab``:

- ``null`` (default): the whole vocabulary;
- ``train_text``: the tokens of the training transcripts, resolved by the
  task when the model is built for training (:func:`transcript_token_ids`)
  and written into ``config.yaml`` as the list of ids, so that decoding uses
  the same set without the training data;
- ``train_scripts``: every vocabulary piece written in the scripts of the
  training transcripts (:func:`script_token_ids`: for Hindi, Marathi, Tamil
  and Telugu, every Devanagari, Tamil and Telugu piece of the LLM), plus
  the transcripts' own tokens; resolved and recorded like ``train_text``.
  Unlike ``train_text`` it can emit the pieces of words that the training
  text never holds (an open vocabulary), at the cost of a larger softmax;
- a list of token ids.

With ``model_conf.ctc_unit: char`` the CTC spells: ``train_text`` is then the
single-character pieces of the training text's letters, ``train_scripts``
those of every letter and mark of its scripts (:func:`script_char_ids`), each
with the word-boundary piece (:func:`word_boundary_id`).

A transcript with a token outside the set cannot be a CTC target; such an
utterance adds nothing to the CTC loss (its cross-entropy is unaffected).
In joint decoding (:class:`~espnet_llm_asr.ctc_prefix_scoring.CTCPrefixScoring`) a
candidate token outside the set has the CTC log-probability
:data:`OUTSIDE_LOG_PROB` in every frame (finite, so that a beam whose LLM
candidates all lie outside the set still has finite scores).
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

OUTSIDE_LOG_PROB = -1e4  # CTC log-probability of a token outside the set, in decoding


def transcript_token_ids(text_path: str, tokenizer) -> List[int]:
    """Sorted ids of every token of a Kaldi ``text`` file (``<uid> <transcript>`` a line).

    Tokenized as the task's preprocessor does (no special tokens).  Raises a
    ValueError naming the file and line of a line without a transcript.
    """
    ids = set()
    with open(text_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split(maxsplit=1)
            if len(parts) < 2 or not parts[1].strip():
                raise ValueError(f"{text_path}:{lineno}: no transcript after the utterance id {parts[0]!r}")
            ids.update(tokenizer(parts[1].strip(), add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"{text_path}: no transcripts, so no CTC vocabulary")
    return sorted(int(i) for i in ids)


def char_script(ch: str) -> str:
    """The Unicode script of a letter or mark, as the first word of its name ("DEVANAGARI"); "" otherwise."""
    if unicodedata.category(ch)[0] not in "LM":
        return ""
    return unicodedata.name(ch, "").split(" ", 1)[0]


def transcript_scripts(text_path: str) -> List[str]:
    """Sorted scripts of the letters of a Kaldi ``text`` file's transcripts (the utterance ids skipped)."""
    scripts = sorted({char_script(ch) for ch in transcript_chars(text_path)})
    if not scripts:
        raise ValueError(f"{text_path}: no letters in the transcripts, so no script for the CTC vocabulary")
    return scripts


def script_token_ids(tokenizer, scripts: Iterable[str]) -> List[int]:
    """Sorted ids of the vocabulary pieces whose text is letters and marks of ``scripts`` only.

    A piece's text is what the tokenizer decodes it to, word-boundary spaces
    removed; pieces of other scripts, digits, punctuation, special tokens and
    byte fragments (which decode to U+FFFD) are left out.
    """
    wanted = set(scripts)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    ids = []
    for i, text in enumerate(texts):
        text = "".join(text.split())
        if text and all(char_script(ch) in wanted for ch in text):
            ids.append(i)
    if not ids:
        raise ValueError(f"model_conf.ctc_vocab: the tokenizer has no piece written in {sorted(wanted)}")
    return ids


def piece_id(tokenizer, piece: str) -> Optional[int]:
    """The id of a vocabulary piece, or None when the tokenizer has no such piece (unknown)."""
    tid = tokenizer.convert_tokens_to_ids(piece)
    return None if tid is None or tid == tokenizer.unk_token_id else int(tid)


def word_boundary_id(tokenizer) -> int:
    """The id of the tokenizer's bare word-boundary piece (SentencePiece's ``▁``, byte-level BPE's ``Ġ``)."""
    for piece in ("\u2581", "\u0120"):
        tid = piece_id(tokenizer, piece)
        if tid is not None:
            return tid
    raise ValueError("model_conf.ctc_unit: char: the tokenizer has no word-boundary piece "
                     "(neither '\u2581' nor '\u0120') to spell the space between words with")


def char_piece_ids(tokenizer, chars: Iterable[str]) -> List[int]:
    """Sorted ids of the single-character pieces of ``chars`` that the tokenizer has (others left out)."""
    return sorted({tid for tid in (piece_id(tokenizer, ch) for ch in chars) if tid is not None})


class CharSpeller:
    """Spells text as the tokenizer's single-character pieces.

    ``spell("ab cd")`` -> ids of ``a b c d``, with ``boundary`` (an id, e.g.
    the slot filler: a pause) between words when given.  Characters without
    a piece of their own map to the unknown token (a tokenizer trained with
    full character coverage, as the tiny ones are, has none).  Used for the
    model's character CTC (``model_conf.ctc_unit: char``, words apart by
    :func:`word_boundary_id`) and for the toy LM's ``unit: char`` aligned
    slots (:mod:`espnet_llm_asr.tiny_models.copy_examples`, words apart by a
    filler, as speech has pauses).
    """

    def __init__(self, tokenizer, boundary: Optional[int] = None):
        self.tokenizer = tokenizer
        self.boundary = boundary
        self.unk = tokenizer.unk_token_id
        self._cache = {}

    def char_id(self, char: str) -> int:
        if char not in self._cache:
            tid = piece_id(self.tokenizer, char)
            self._cache[char] = self.unk if tid is None else tid
        return self._cache[char]

    def spell(self, text: str, prefix: bool = False) -> List[int]:
        """``prefix``: ``text`` starts a longer one, so a word boundary after its last word is kept."""
        ids: List[int] = []
        for w, word in enumerate(text.split()):
            if w > 0 and self.boundary is not None:
                ids.append(self.boundary)
            ids += [self.char_id(c) for c in word]
        if prefix and ids and text[-1].isspace() and self.boundary is not None:
            ids.append(self.boundary)
        return ids

    def spell_ids(self, token_ids: Sequence[int], prefix: bool = False) -> List[int]:
        """The spelling of a token-id sequence's text (special tokens dropped); ``prefix``: see :meth:`spell`."""
        return self.spell(self.tokenizer.decode(list(token_ids), skip_special_tokens=True), prefix)


def script_char_ids(tokenizer, scripts: Iterable[str]) -> List[int]:
    """Sorted ids of the single-character pieces of every letter and mark of ``scripts`` (Unicode's BMP)."""
    wanted = set(scripts)
    ids = char_piece_ids(tokenizer, (chr(c) for c in range(0x10000) if char_script(chr(c)) in wanted))
    if not ids:
        raise ValueError(f"model_conf.ctc_vocab: the tokenizer has no single-character piece in {sorted(wanted)}")
    return ids


def transcript_chars(text_path: str) -> List[str]:
    """Sorted letters and marks of a Kaldi ``text`` file's transcripts (the utterance ids skipped)."""
    chars = set()
    with open(text_path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(maxsplit=1)
            if len(parts) == 2:
                chars.update(ch for ch in parts[1] if char_script(ch))
    return sorted(chars)


def training_text_path(data_path_and_name_and_type: Sequence[Sequence[str]]) -> str:
    """The file of the ``text`` entry of ESPnet's ``--train_data_path_and_name_and_type``."""
    for entry in data_path_and_name_and_type or []:
        if len(entry) >= 2 and entry[1] == "text":
            if not Path(entry[0]).is_file():
                raise FileNotFoundError(f"model_conf.ctc_vocab: train_text: {entry[0]} does not exist")
            return entry[0]
    raise ValueError("model_conf.ctc_vocab: train_text needs a 'text' entry in --train_data_path_and_name_and_type")


class CTCVocabulary(torch.nn.Module):
    """A subset of the LLM's vocabulary (always with the blank) and the maps into it.

    Args:
        token_ids: the ids the CTC may emit (any order, repeats allowed).
        blank: the CTC blank id (the LLM's pad token); added if missing.
        vocab_size: rows of the LLM's output head.

    Buffers (not saved: they are rebuilt from the config): ``ids`` (K,) the
    sorted subset, ``index`` (V,) each token's place in it or -1.
    """

    def __init__(self, token_ids: Sequence[int], blank: int, vocab_size: int):
        super().__init__()
        if isinstance(token_ids, str) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                 for i in token_ids):
            raise ValueError("model_conf.ctc_vocab must be null, train_text (resolved by the task "
                             f"when training) or a list of token ids; got {str(token_ids)[:80]!r}")
        bad = [i for i in token_ids if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(f"model_conf.ctc_vocab: token ids {bad[:10]} outside the LLM's vocabulary "
                             f"of {vocab_size}")
        ids = sorted(set(token_ids) | {blank})
        index = torch.full((vocab_size,), -1, dtype=torch.long)
        index[torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.register_buffer("index", index, persistent=False)
        self.blank_index = ids.index(blank)
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.ids.numel()

    def rows(self, param: torch.Tensor) -> torch.Tensor:
        """The subset's rows of a head parameter (V, ...) -> (K, ...).

        A frozen parameter's rows are gathered once and kept (a gather of
        K x D values at every step otherwise), gathered again when the
        parameter is replaced, moved or changed in place.
        """
        if param.requires_grad:
            return param[self.ids]
        key = (param.data_ptr(), param._version, param.dtype, param.device, self.ids.device)
        cache = self.__dict__.setdefault("_rows_cache", {})
        if cache.get(id(param), (None,))[0] != key:
            cache[id(param)] = (key, param.detach()[self.ids])
        return cache[id(param)][1]

    def logits(self, embeds: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
        """(B, T', D) vectors -> (B, T', K) float32 logits of the head's rows for the subset."""
        weight = self.rows(head.weight)
        bias = None if head.bias is None else self.rows(head.bias)
        return F.linear(embeds.to(weight.dtype), weight, bias).float()

    def targets(self, texts: List[List[int]]) -> Tuple[List[List[int]], List[bool]]:
        """Token ids -> places in the subset; per utterance whether all its tokens are in it
        (an utterance that is not keeps only the tokens that are)."""
        mapped, complete = [], []
        for ids in texts:
            places = self.index[torch.tensor(ids, dtype=torch.long)].tolist() if ids else []
            mapped.append([p for p in places if p >= 0])
            complete.append(all(p >= 0 for p in places))
        return mapped, complete

    def expand(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(B, T', K) log-probabilities -> (B, T', V), :data:`OUTSIDE_LOG_PROB` outside the subset."""
        full = log_probs.new_full((*log_probs.shape[:-1], self.vocab_size), OUTSIDE_LOG_PROB)
        full[..., self.ids] = log_probs
        return full
