"""CTC compression: one speech vector per unit the auxiliary CTC hears (``model_conf.ctc_compress``).

A fixed-stride projector gives the LLM a vector every 1/rate seconds, most
of them pauses or the middle of a sound.  With an auxiliary CTC over the
projected vectors (read by the LLM's own head, so that a vector the CTC
labels ``k`` lies near token ``k``'s embedding), the CTC's greedy path says
which vectors carry a unit and which are blank: consecutive vectors with
the same label are averaged into one and blank vectors are dropped, so the
LLM reads about one vector per character (``ctc_unit: char``) or token, in
its own embedding space.  The selection follows the CTC's current argmax
(not differentiable); the averaged vectors are, so the LLM's loss still
trains the projector through them.

An utterance whose path is blank everywhere (a CTC that has not learnt yet)
keeps one vector, the mean of all of its vectors, so that no utterance
reaches the LLM empty.
"""
from __future__ import annotations

from typing import Tuple

import torch


def ctc_compress(embeds: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                 blank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Average the runs of equal CTC labels, drop the blank runs.

    Args:
        embeds: (B, T', D) projected vectors, any values beyond ``lengths``.
        lengths: (B,) valid vectors per row (each >= 1).
        labels: (B, T') the CTC's label per vector (its argmax).
        blank: the blank's label.
    Returns:
        (B, N, D) the averaged vectors of the non-blank runs in order, zero
        beyond the new lengths, N = the longest row; (B,) long, the new lengths.
    """
    rows = []
    for i, n in enumerate(lengths.tolist()):
        n = int(n)
        if n < 1:
            raise ValueError(f"ctc_compress: row {i} has no vectors (length {n})")
        lab, vec = labels[i, :n], embeds[i, :n]
        starts = torch.ones(n, dtype=torch.bool, device=lab.device)
        starts[1:] = lab[1:] != lab[:-1]
        run = starts.long().cumsum(0) - 1  # (n,) the run of each vector
        n_runs = int(run[-1]) + 1
        sums = vec.new_zeros(n_runs, vec.size(-1)).index_add(0, run, vec)
        counts = torch.bincount(run, minlength=n_runs).to(vec.dtype).unsqueeze(-1)
        keep = lab[starts] != blank
        rows.append((sums / counts)[keep] if bool(keep.any()) else vec.mean(0, keepdim=True))
    out_lengths = torch.tensor([r.size(0) for r in rows], dtype=torch.long, device=embeds.device)
    out = embeds.new_zeros(len(rows), int(out_lengths.max()), embeds.size(-1))
    for i, r in enumerate(rows):
        out[i, : r.size(0)] = r
    return out, out_lengths
