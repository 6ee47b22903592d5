"""Joint CTC / LLM decoding: the CTC prefix score of each candidate token, added to the
LLM's by a logits processor (:class:`CTCPrefixScoring`).

The CTC is the model's auxiliary one (``model_conf.ctc_weight``).  Over the
LLM's tokens (``ctc_unit: token``) a candidate token is one CTC label; over
characters (``ctc_unit: char``) a candidate token is the characters it adds
to the hypothesis' spelling (its text spelled in single-character pieces,
words apart by the word boundary, as the CTC was trained), zero or several
labels, scored one after the other.  The prefix score is Algorithm 2 of
Watanabe et al. 2017 ("Hybrid CTC/attention architecture for end-to-end
speech recognition"), as ESPnet's ``CTCPrefixScore`` computes it, here with
one state per candidate so that candidates can grow by different labels
(:func:`extend_prefixes`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from espnet_llm_asr.ctc_vocab import OUTSIDE_LOG_PROB

# the pre-beam (ctc_pre_beam): "all" scores every token; null (auto) the LLM's
# max(PRE_BEAM_RATIO * num_beams, PRE_BEAM_MIN) best (ESPnet's ratio), the CTC's choices (each
# frame's likeliest unit but the blank, and any with CTC_CHOICE_PROB or more in some frame) and EOS
CTC_PRE_BEAM_ALL = "all"
PRE_BEAM_RATIO = 1.5
PRE_BEAM_MIN = 20
CTC_CHOICE_PROB = 0.01


def check_ctc_weight(weight: float) -> float:
    """``weight`` if it is a joint-decoding CTC weight (in [0, 1]); a ValueError otherwise."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {weight}")
    return float(weight)


def auto_pre_beam(num_beams: int) -> int:
    """How many of the LLM's best tokens the automatic pre-beam takes (ESPnet's 1.5 x beam, at least
    :data:`PRE_BEAM_MIN`)."""
    return max(int(PRE_BEAM_RATIO * num_beams), PRE_BEAM_MIN)


def extend_prefixes(x: np.ndarray, blank: int, r_prev: np.ndarray, empty: np.ndarray, last: np.ndarray,
                    labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Extend n label prefixes by one label each: their CTC prefix log-probabilities and states.

    Args:
        x: (T, K) CTC log-probabilities.
        blank: the blank's column of ``x``.
        r_prev: (n, T, 2) each prefix's state: log-probability of the
            prefix over frames 0..t ending in a label (``[..., 0]``) or in a
            blank (``[..., 1]``).
        empty: (n,) bool, the prefix has no label yet.
        last: (n,) the prefix's last label (-1: none).
        labels: (n,) the label each prefix is extended by; one below -1: a
            label outside the CTC's (:data:`OUTSIDE_LOG_PROB` in every frame),
            each its own (:meth:`CTCPrefixScoring.labels_of`).
    Returns:
        log psi (n,): log-probability that the extended prefix starts the
        transcript; and the extended prefixes' states (n, T, 2).
    """
    n, frames = r_prev.shape[0], x.shape[0]
    xc = np.where(labels[:, None] >= 0, x[:, np.maximum(labels, 0)].T, OUTSIDE_LOG_PROB)  # (n, T)
    xb = x[:, blank]  # (T,)
    # phi[t]: the prefix over frames 0..t, ready for the new label at t + 1 (a repeated label
    # needs a blank between)
    phi = np.where((labels == last)[:, None], r_prev[:, :, 1],
                   np.logaddexp(r_prev[:, :, 0], r_prev[:, :, 1]))  # (n, T)
    start = np.where(empty, 0.0, -np.inf)[:, None]  # phi before frame 0: only the empty prefix
    phi_before = np.concatenate([start, phi[:, :-1]], axis=1)  # (n, T): phi[t - 1]
    r = np.full((n, frames, 2), -np.inf)
    with np.errstate(invalid="ignore"):
        r[:, 0, 0] = phi_before[:, 0] + xc[:, 0]
        for t in range(1, frames):
            r[:, t, 0] = np.logaddexp(r[:, t - 1, 0], phi_before[:, t]) + xc[:, t]
            r[:, t, 1] = np.logaddexp(r[:, t - 1, 0], r[:, t - 1, 1]) + xb[t]
        psi = np.logaddexp.reduce(phi_before + xc, axis=1)
    return psi, r


@dataclass(frozen=True)
class PrefixState:
    """A hypothesis' CTC state: ``r`` (T, 2) (:func:`extend_prefixes`), ``psi`` its log prefix
    probability, ``labels`` its CTC labels (the spelling, with a character CTC)."""

    r: np.ndarray
    psi: float
    labels: Tuple[int, ...]


class UtteranceCTC:
    """One utterance's CTC posteriors ``x`` (T, K) over K units, ``blank`` the blank's unit."""

    def __init__(self, x: np.ndarray, blank: int):
        self.x = x if x.flags.writeable else x.copy()
        self.blank = blank
        r = np.full((x.shape[0], 2), -np.inf)
        r[:, 1] = np.cumsum(x[:, blank])
        self.initial_state = PrefixState(r, 0.0, ())

    def choice_units(self) -> np.ndarray:
        """The CTC's choices: the units, blank aside, that are a frame's likeliest but for the blank,
        or have a posterior of at least :data:`CTC_CHOICE_PROB` in some frame."""
        blank = self.x[:, self.blank].copy()
        self.x[:, self.blank] = -np.inf  # for a moment: no (T, K) copy
        try:
            likeliest = self.x.argmax(axis=1)  # (T,)
            loud = np.nonzero(self.x.max(axis=0) >= math.log(CTC_CHOICE_PROB))[0]
        finally:
            self.x[:, self.blank] = blank
        return np.union1d(likeliest, loud)

    def end(self, state: PrefixState) -> float:
        """log P_CTC(the prefix is the whole transcript)."""
        return float(np.logaddexp(state.r[-1, 0], state.r[-1, 1]))

    def extend(self, state: PrefixState, extensions: Sequence[Tuple[int, ...]]) -> List[PrefixState]:
        """The states of ``state`` extended by each of the label sequences (some may be empty)."""
        n = len(extensions)
        r = np.broadcast_to(state.r, (n,) + state.r.shape).copy()
        psi = np.full(n, state.psi)
        for j in range(max((len(e) for e in extensions), default=0)):
            rows = np.array([i for i, e in enumerate(extensions) if len(e) > j])
            labels = np.array([extensions[i][j] for i in rows])
            done = [state.labels + tuple(extensions[i][:j]) for i in rows]
            empty = np.array([not d for d in done])
            last = np.array([d[-1] if d else -1 for d in done])
            psi[rows], r[rows] = extend_prefixes(self.x, self.blank, r[rows], empty, last, labels)
        return [PrefixState(r[i], float(psi[i]), state.labels + tuple(e)) for i, e in enumerate(extensions)]


class CTCPrefixScoring:
    """Joint CTC / LLM decoding (the hybrid scoring of Watanabe et al. 2017, ESPnet's
    ``ctc_weight`` at decoding) as the first logits processor.

    The CTC is the one the model was trained with (``model_conf.ctc_weight``):
    the projector's output vectors read by the LLM's output head, blank = the
    pad token.  Each candidate token c of a hypothesis h scores
    ``(1 - weight) * log p_LLM(c | h) + weight * (log psi(h c) - log psi(h))``
    with psi the CTC prefix probability (for EOS, the probability of h as the
    whole transcript), so a beam's accumulated score is
    ``(1 - weight) log P_LLM(h) + weight log psi(h)``.  Tokens that are not
    candidates (ESPnet's pre-beam) score -inf, and so does the blank.

    Args:
        ctc_log_probs: one (T_i, K) array of CTC log-probabilities per
            utterance (T_i = the utterance's projected vectors) over the CTC's
            K units.  An utterance with no vector keeps the LLM's scores alone.
        num_beams: rows of ``input_ids`` per utterance (adjacent).
        weight: in [0, 1].
        blank, eos: the CTC blank and the LLM's EOS (LLM ids).
        pre_beam: the candidates of each row and step: None (auto) the LLM's
            :func:`auto_pre_beam` best, the CTC's choices in the utterance
            (the tokens of the units that are each frame's likeliest but the
            blank, or have at least :data:`CTC_CHOICE_PROB` in some frame) and
            EOS: a few dozen whatever the vocabulary's size; an int K the
            LLM's K best only; ``"all"`` every token (V a step: slow for a
            large vocabulary, slower with ``speller``).
        unit_ids: the LLM id of each of the K units (the model's
            ``ctc_vocab``); units outside get :data:`OUTSIDE_LOG_PROB` in every
            frame.  None: K = V, unit k is token k.
        speller: a character CTC (``ctc_unit: char``): the
            :class:`~espnet_llm_asr.ctc_vocab.CharSpeller` of its targets
            (``spell_ids``: token ids -> the LLM ids of their text's
            single-character pieces, words apart by the word boundary); a
            candidate then adds the labels by which the hypothesis' spelling
            (a trailing word boundary included) grows, one outside label for
            a special token.  None: each token is one label.

    ``input_ids``: (rows, generated so far) (with ``inputs_embeds`` transformers
    passes only the generated ids); ``scores``: (rows, V) logits (greedy) or
    log-probabilities (beam search).  Returns (rows, V) joint log-scores.
    """

    def __init__(self, ctc_log_probs, num_beams: int, weight: float, blank: int, eos: int,
                 pre_beam: Union[int, str, None] = None, unit_ids: Optional[Sequence[int]] = None,
                 speller=None):
        if not (pre_beam is None or pre_beam == CTC_PRE_BEAM_ALL
                or (isinstance(pre_beam, int) and not isinstance(pre_beam, bool) and pre_beam >= 1)):
            raise ValueError(f"ctc_pre_beam must be >= 1, {CTC_PRE_BEAM_ALL!r} (every token) or null (auto), "
                             f"got {pre_beam!r}")
        if unit_ids is None:
            self._ids = self._order = self._sorted_ids = None
            blank_unit = blank
        else:
            self._ids = np.asarray(unit_ids, dtype=np.int64)
            self._order = np.argsort(self._ids, kind="stable")
            self._sorted_ids = self._ids[self._order]
            blank_unit = int(self.units_of(np.array([blank]))[0])
            if blank_unit < 0:
                raise ValueError(f"the CTC blank {blank} is not among the CTC's units")
        self.utterances = [UtteranceCTC(np.asarray(x, dtype=np.float32), blank_unit) if len(x) else None
                           for x in ctc_log_probs]
        self.num_beams = num_beams
        self.weight = check_ctc_weight(weight)
        self.blank = blank
        self.eos = eos
        self.pre_beam = pre_beam
        self.speller = speller
        self._special = set(speller.tokenizer.all_special_ids) if speller is not None else set()
        # auto: the CTC's choices in each utterance, found once
        self.ctc_choices = [None if u is None or pre_beam is not None else self.token_of(u.choice_units())
                            for u in self.utterances]
        self.scored = 0  # candidates scored so far (over rows and steps)
        self.states: Dict = {}  # (utterance, prefix) -> PrefixState

    def units_of(self, tokens: np.ndarray) -> np.ndarray:
        """LLM ids (n,) -> their CTC units (n,), -1 outside the CTC's units."""
        if self._order is None:
            return tokens
        pos = np.minimum(np.searchsorted(self._sorted_ids, tokens), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == tokens, self._order[pos], -1)

    def labels_of(self, tokens: Sequence[int]) -> np.ndarray:
        """LLM ids (n,) -> their CTC labels (n,): the unit, or ``-2 - id`` outside the CTC's units
        (one label per token, so that a repeated outside token is a repeated label)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        units = self.units_of(tokens)
        return np.where(units >= 0, units, -2 - tokens)

    def token_of(self, units: np.ndarray) -> np.ndarray:
        """CTC units (n,) -> their LLM ids (n,)."""
        return units if self._ids is None else self._ids[units]

    def candidates(self, logp_row: torch.Tensor, utt: int) -> np.ndarray:
        """Sorted LLM ids of one row's candidates (the blank left out unless it is EOS)."""
        vocab = logp_row.numel()
        if self.pre_beam == CTC_PRE_BEAM_ALL or (isinstance(self.pre_beam, int) and self.pre_beam >= vocab):
            cand = np.arange(vocab)
        elif self.pre_beam is not None:
            cand = np.sort(logp_row.topk(self.pre_beam).indices.cpu().numpy())
        else:
            best = logp_row.topk(min(auto_pre_beam(self.num_beams), vocab)).indices.cpu().numpy()
            cand = np.union1d(np.union1d(best, self.ctc_choices[utt]), [self.eos])
        if self.blank != self.eos:
            cand = cand[cand != self.blank]
        return cand

    def _extensions(self, prefix: Tuple[int, ...], state: PrefixState, cand: Sequence[int]
                    ) -> Tuple[List[Tuple[int, ...]], List[bool]]:
        """Per candidate, the labels it adds to ``state``, and whether they extend ``state`` (False:
        the spelling of prefix + candidate does not start with the prefix's; its labels are then the
        whole spelling, from the empty prefix)."""
        if self.speller is None:
            return [(int(u),) for u in self.labels_of(cand)], [True] * len(cand)
        exts, extends = [], []
        known = state.labels
        for c in cand:
            spelled = self.speller.spell_ids(list(prefix) + [int(c)], prefix=True)
            labels = tuple(int(u) for u in self.labels_of(spelled))
            if labels[: len(known)] == known:
                ext = labels[len(known):]
                if not ext and int(c) in self._special:
                    ext = (-2 - int(c),)  # a special token: outside the CTC
                exts.append(ext)
                extends.append(True)
            else:
                exts.append(labels)
                extends.append(False)
        return exts, extends

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        joint = torch.full_like(logp, float("-inf"))
        length = input_ids.size(1)
        self.states = {k: v for k, v in self.states.items() if len(k[1]) >= length}
        for row, ids in enumerate(input_ids.tolist()):
            utt = row // self.num_beams
            ctc = self.utterances[utt]
            if ctc is None or self.eos in ids:
                joint[row] = logp[row]
                continue
            prefix = tuple(ids)
            state = self.states.get((utt, prefix), ctc.initial_state)
            cand = self.candidates(logp[row], utt)
            tokens = [int(c) for c in cand if c != self.eos]
            exts, extends = self._extensions(prefix, state, tokens)
            new = [None] * len(tokens)
            for base, chosen in ((state, True), (ctc.initial_state, False)):
                rows = [i for i, e in enumerate(extends) if e == chosen]
                if rows:
                    for i, s in zip(rows, ctc.extend(base, [exts[i] for i in rows])):
                        new[i] = s
            psi = {c: s.psi for c, s in zip(tokens, new)}
            if self.eos in cand:
                psi[self.eos] = ctc.end(state)
            self.scored += len(cand)
            delta = torch.tensor([psi[int(c)] - state.psi for c in cand], dtype=torch.float32, device=logp.device)
            index = torch.from_numpy(cand).to(logp.device)
            joint[row, index] = (1.0 - self.weight) * logp[row, index] + self.weight * delta
            for c, s in zip(tokens, new):
                self.states[(utt, prefix + (c,))] = s
        return joint
