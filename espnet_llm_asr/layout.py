"""Where prompt, speech and transcript sit in the LLM's input batch.

One utterance (``P``: prompt text before the speech, ``S``: prompt text after
it, ``y``: transcript tokens)::

    [ emb(P) | c * speech | emb(S) | emb(y) | emb(EOS) ]

``c * speech`` is the speech scaled as :attr:`CausalLLM.speech_scale` says
(:func:`rescale_speech`): times a factor (by default Gemma's sqrt(hidden),
which its embedding layer applies to token embeddings but not to
``inputs_embeds``; 1 for Llama, Qwen), or each vector rescaled to a
root-mean-square.

Training (:func:`training_batch`): the padding of a row goes between its
speech and ``S``, so that every row's ``S`` ends at the same position ``A``
and its transcript starts at ``A``; the rest of the batch is padded on the
right::

    row 1:  P  s s s s  S  y y y EOS
    row 2:  P  s s . .  S  y EOS . .        (. : padding, attention mask 0)

Padding inside a row is a key no query attends to, and the position ids count
real tokens only, so every real position sees exactly what it sees alone.
The predictions the loss reads are then the last ``M + 1`` positions but one
(``M``: the longest ``y + EOS``), and the LLM's output head runs only there
(``logits_to_keep``) instead of at every prompt and speech position.  Rows
never start with padding, so no query of the batch has all its keys masked.

Generation (:func:`generation_prefix`): ``[P | c * speech | S]`` left padded,
so that each row's next token comes from the last position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from espnet_llm_asr.decoding import round_up

IGNORE_ID = -100


@dataclass
class Prompted:
    """One utterance's pieces, as embeddings: ``head`` = [P | speech], ``tail`` = [S] (+ [y | EOS] when training)."""

    head: torch.Tensor  # (H_i, D)
    tail: torch.Tensor  # (T_i, D)


def rescale_speech(llm, vectors: torch.Tensor) -> torch.Tensor:
    """(T', D) projected vectors -> the (T', D) vectors the LLM reads (``llm.speech_scale``): times its
    factor, or each vector rescaled to its RMS (computed in float32)."""
    scale = llm.speech_scale
    if scale.mode == "rms":
        x = vectors.float()
        x = x * (scale.value * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12))
        return x.to(vectors.dtype)
    if scale.value != 1.0:
        return vectors * scale.value
    return vectors


def utterance_pieces(llm, speech: torch.Tensor, speech_lengths: torch.Tensor, langs: Sequence[Optional[str]],
                     texts: Optional[List[List[int]]] = None,
                     drafts: Optional[List[List[int]]] = None) -> List[Prompted]:
    """Embed each utterance's prompt (and transcript) around its speech vectors.

    Args:
        llm: the :class:`~espnet_llm_asr.llm.CausalLLM`.
        speech: (B, T', D) projected speech vectors.
        speech_lengths: (B,) valid vectors per row.
        langs: language code (or None) per row, for the prompt.
        texts: transcript token ids per row (training), or None (generation).
        drafts: token ids per row read as text right after the speech (the
            CTC's draft, ``model_conf.ctc_draft``), or None.
    Returns:
        per row, ``head`` (len(P) + T'_i [+ len(draft_i)], D) and ``tail`` (len(S) [+ N_i + 1], D)
        in the LLM's dtype;
        the speech through :func:`rescale_speech` (in its own dtype, then cast).
    """
    pieces = []
    for i, lang in enumerate(langs):
        prefix, suffix = llm.prompt_ids(lang)
        draft = list(drafts[i]) if drafts is not None else []
        tail = suffix + (texts[i] + [llm.eos_token_id] if texts is not None else [])
        emb = llm.embed(torch.tensor(prefix + draft + tail, dtype=torch.long, device=speech.device))
        vectors = rescale_speech(llm, speech[i, : int(speech_lengths[i])])
        head = torch.cat([emb[: len(prefix)], vectors.to(emb.dtype), emb[len(prefix): len(prefix) + len(draft)]], dim=0)
        pieces.append(Prompted(head, emb[len(prefix) + len(draft):]))
    return pieces


@dataclass
class TrainingBatch:
    """The padded training input.

    ``inputs`` (B, L, D), ``attention_mask`` (B, L), ``position_ids`` (B, L),
    ``targets`` (B, K) token ids or ``IGNORE_ID``: the target of the k-th of
    the K predictions that ``logits_to_keep`` selects (the last K + 1
    positions but the very last); ``logits_to_keep`` is K + 1, or 0 when the
    batch is laid out right padded and every position's logits are kept
    (then K = L - 1 and prediction k is position k's).
    """

    inputs: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    logits_to_keep: int


def training_batch(pieces: List[Prompted], texts: List[List[int]], eos_id: int,
                   max_aligned_length: Optional[int] = None) -> TrainingBatch:
    """Pad the pieces into one batch, transcripts aligned, or right padded when the aligned batch is
    longer than ``max_aligned_length``.

    ``tail`` of each piece must end with the ``len(texts[i]) + 1`` embeddings
    of the transcript and EOS.  The right-padded layout keeps every
    position's logits; it is what a sliding-window attention shorter than the
    aligned batch needs (:attr:`CausalLLM.max_aligned_length`): the padding
    inside a row would otherwise push real keys out of a query's window.
    """
    first = pieces[0].head
    device, dim = first.device, first.size(-1)
    batch = len(pieces)
    labels_len = [len(t) + 1 for t in texts]
    prompt_len = [p.head.size(0) + p.tail.size(0) - n for p, n in zip(pieces, labels_len)]  # [P | speech | S]
    start = max(prompt_len)  # A: where every transcript starts
    width = max(labels_len)  # M
    align = max_aligned_length is None or start + width <= max_aligned_length
    if align:
        length = start + width
    else:
        length = max(p.head.size(0) + p.tail.size(0) for p in pieces)
    inputs = first.new_zeros(batch, length, dim)
    attention_mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    labels = torch.full((batch, length), IGNORE_ID, dtype=torch.long, device=device)
    for i, (p, n) in enumerate(zip(pieces, labels_len)):
        h, t = p.head.size(0), p.tail.size(0)
        gap = start - prompt_len[i] if align else 0
        inputs[i, :h] = p.head
        inputs[i, h + gap: h + gap + t] = p.tail
        attention_mask[i, :h] = 1
        attention_mask[i, h + gap: h + gap + t] = 1
        end = h + gap + t
        labels[i, end - n: end] = torch.tensor(texts[i] + [eos_id], device=device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    if align:
        return TrainingBatch(inputs, attention_mask, position_ids, labels[:, start:], width + 1)
    return TrainingBatch(inputs, attention_mask, position_ids, labels[:, 1:], 0)


def generation_prefix(pieces: List[Prompted], length_multiple: int = 1):
    """Left-pad ``[P | speech | S]`` rows: ((B, L, D) inputs, (B, L) attention mask), L a multiple of ``length_multiple``."""
    rows = [torch.cat([p.head, p.tail], dim=0) for p in pieces]
    longest = max(r.size(0) for r in rows)
    length = round_up(longest, length_multiple)
    inputs = rows[0].new_zeros(len(rows), length, rows[0].size(-1))
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        inputs[i, length - row.size(0):] = row
        attention_mask[i, length - row.size(0):] = 1
    return inputs, attention_mask
