"""The CTC's draft: its greedy transcript in the LLM's own tokens (``model_conf.ctc_draft``).

A pretrained LLM reads text in its own tokenization at once (an untrained
Gemma-3-270M repeats a sentence it is shown) but not the same text spelled
one character piece at a time (the recipe README's default section has the
numbers).  The draft gives the LLM what the
auxiliary CTC hears as text: the greedy CTC path collapsed (repeats merged,
blanks dropped), its units written out as a string and tokenized again by
the LLM's tokenizer, so the LLM reads ordinary tokens after the speech and
learns to correct them instead of learning to spell.  It is not
differentiable; the CTC's loss trains the projector that makes it.
"""
from __future__ import annotations

from typing import List, Sequence

import torch


def ctc_greedy_units(labels: torch.Tensor, lengths: torch.Tensor, blank: int) -> List[List[int]]:
    """Collapse greedy CTC paths: repeats merged, blanks dropped.

    Args:
        labels: (B, T') the CTC's label per vector (its argmax).
        lengths: (B,) valid vectors per row.
        blank: the blank's label.
    Returns:
        per row, its labels (indices into the CTC's outputs) in order.
    """
    rows = []
    for i, n in enumerate(lengths.tolist()):
        lab = labels[i, : int(n)]
        if lab.numel() == 0:
            rows.append([])
            continue
        starts = torch.ones_like(lab, dtype=torch.bool)
        starts[1:] = lab[1:] != lab[:-1]
        kept = lab[starts]
        rows.append(kept[kept != blank].tolist())
    return rows


def draft_token_ids(units: Sequence[Sequence[int]], unit_token_ids: Sequence[int], tokenizer,
                    max_tokens: int) -> List[List[int]]:
    """The CTC's collapsed paths as the LLM's tokens of their text.

    Args:
        units: per row, CTC labels (:func:`ctc_greedy_units`).
        unit_token_ids: the LLM token id of each CTC label (the CTC's
            vocabulary: single-character pieces and the word boundary with
            ``ctc_unit: char``, whole tokens otherwise).
        tokenizer: the LLM's Hugging Face tokenizer.
        max_tokens: at most this many tokens a row (a runaway CTC cannot
            flood the prompt).
    Returns:
        per row, the token ids of ``tokenizer(text)`` without special tokens,
        where text is the units' pieces joined into a string, whitespace
        normalised (empty for an empty path).
    """
    out = []
    for row in units:
        pieces = tokenizer.convert_ids_to_tokens([int(unit_token_ids[u]) for u in row])
        text = " ".join(tokenizer.convert_tokens_to_string(pieces).split()) if pieces else ""
        ids = tokenizer(text, add_special_tokens=False).input_ids if text else []
        out.append(ids[:max_tokens])
    return out
