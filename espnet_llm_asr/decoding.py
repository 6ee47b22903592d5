"""Generation helpers of :meth:`espnet_llm_asr.model.LLMASRModel.generate`: KV-cache and
compile options for transformers' ``generate`` and the logits processors that keep a
batched hypothesis equal to the same utterance decoded alone (per-utterance length
caps, a padding-independent repetition penalty), gather greedy scores, and add the
CTC prefix scores of joint CTC / LLM decoding (:class:`CTCPrefixScoring`).  The
options themselves: :mod:`espnet_llm_asr.decoding_options`."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from espnet_llm_asr.ctc_vocab import OUTSIDE_LOG_PROB

CACHE_IMPLEMENTATIONS = ("dynamic", "static")
# joint CTC decoding's pre-beam (ctc_pre_beam): "all" scores every token; null (auto) the LLM's
# max(PRE_BEAM_RATIO * num_beams, PRE_BEAM_MIN) best (ESPnet's ratio), the CTC's choices (each
# frame's likeliest token but the blank, and any with CTC_CHOICE_PROB or more in some frame) and EOS
CTC_PRE_BEAM_ALL = "all"
PRE_BEAM_RATIO = 1.5
PRE_BEAM_MIN = 20
CTC_CHOICE_PROB = 0.01


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def check_cache_options(cache_implementation: str, compile_decoding: Optional[bool]) -> None:
    """A ValueError (starting with the option's name) unless the KV cache and compile options go together."""
    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(f"cache_implementation: unknown KV cache {cache_implementation!r}; "
                         f"choose one of {list(CACHE_IMPLEMENTATIONS)}")
    if compile_decoding not in (None, True, False):
        raise ValueError(f"compile_decoding: must be true, false or null (auto), got {compile_decoding!r}")
    if cache_implementation == "dynamic" and compile_decoding:
        raise ValueError("compile_decoding: true needs cache_implementation: static "
                         "(a compiled decoding step needs the fixed shapes of a static KV cache)")


def generation_cache_kwargs(cache_implementation: str, compile_decoding: Optional[bool], device: torch.device) -> Dict:
    """transformers ``generate`` kwargs for the KV cache and the compiled decoding step."""
    check_cache_options(cache_implementation, compile_decoding)
    if cache_implementation == "dynamic":
        return {}
    kwargs: Dict = {"cache_implementation": "static"}
    if compile_decoding is False:
        kwargs["disable_compile"] = True
    elif compile_decoding and torch.device(device).type != "cuda":
        from transformers import CompileConfig

        conf = CompileConfig(mode="default")  # "reduce-overhead" means CUDA graphs
        conf._compile_all_devices = True  # transformers compiles on GPUs only unless told so
        kwargs["compile_config"] = conf
    return kwargs


class RepetitionPenalty:
    """Logits processor of the repetition penalty (CTRL's: a token already generated gets its
    score divided by ``penalty`` if positive, multiplied if negative), over the generated
    tokens of each row, whatever the row's left padding.

    ``input_ids``: (rows, generated so far); ``scores``: (rows, V).
    """

    def __init__(self, penalty: float):
        if not penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.size(1) == 0:
            return scores
        seen = torch.gather(scores, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, input_ids, seen)


class PerUtteranceCap:
    """Logits processor forcing EOS once utterance i has generated caps[i] tokens.

    ``input_ids`` rows are ``batch * num_beams`` (beams of one utterance adjacent).
    With ``inputs_embeds`` HF passes only the generated ids, so their length is
    the number of tokens generated so far.  No host-device synchronisation: the
    caps go to the device once and the forcing is a masked fill.
    """

    def __init__(self, caps: List[int], num_beams: int, eos_token_id: int):
        self.caps = torch.tensor(caps).repeat_interleave(num_beams)
        self.eos = eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.caps.device != scores.device:
            self.caps = self.caps.to(scores.device)
        done = (self.caps <= input_ids.size(1)).unsqueeze(1)  # (rows, 1)
        scores = scores.masked_fill(done, float("-inf"))
        eos = scores[:, self.eos: self.eos + 1]
        return scores.scatter(1, torch.full_like(done, self.eos, dtype=torch.long),
                              torch.where(done, torch.zeros_like(eos), eos))


class GreedyScores:
    """Greedy decoding's per-token scores, gathered as generation goes.

    The last logits processor: it sees the final processed scores of each step
    (what transformers returns with ``output_scores``) and keeps only their
    log-softmax at the token chosen, read at the next step from ``input_ids``
    (the last step's in :meth:`finish`): one (rows, V) buffer instead of one per
    step.  Same values as ``compute_transition_scores(..., normalize_logits=True)``.
    ``normalize=False``: the final scores are log-scores already (joint CTC
    decoding's, -inf for the tokens it did not score) and are kept as they
    are, so that a hypothesis' score is its joint score whichever tokens the
    pre-beam scored.
    """

    def __init__(self, normalize: bool = True):
        self.normalize = normalize
        self.chosen: List[torch.Tensor] = []  # (rows,) log-probability of token t, t = 0, 1, ...
        self.last: Optional[torch.Tensor] = None  # (rows, V) log-softmax of the latest step
        self.last_position = -1  # the token position ``last`` chooses

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        position = input_ids.size(1)  # the token about to be chosen
        if self.last is not None and self.last_position == position - 1 == len(self.chosen):
            self.chosen.append(self.last.gather(1, input_ids[:, -1:]).squeeze(1))
        self.last = torch.log_softmax(scores.float(), dim=-1) if self.normalize else scores.float()
        self.last_position = position
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, steps) generated ids -> (rows, steps) log-probabilities of those ids."""
        steps = sequences.size(1)
        if self.last is not None and self.last_position == len(self.chosen) < steps:
            self.chosen.append(self.last.gather(1, sequences[:, self.last_position:self.last_position + 1]).squeeze(1))
        self.last = None
        if len(self.chosen) < steps:
            raise RuntimeError(f"greedy scores: {len(self.chosen)} steps recorded for {steps} generated tokens")
        return torch.stack(self.chosen[:steps], dim=1) if steps else sequences.new_zeros(sequences.size(0), 0).float()


def check_ctc_weight(weight: float) -> float:
    """``weight`` if it is a joint-decoding CTC weight (in [0, 1]); a ValueError otherwise."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {weight}")
    return float(weight)


def auto_pre_beam(num_beams: int) -> int:
    """How many of the LLM's best tokens the automatic pre-beam takes (ESPnet's 1.5 x beam, at least
    :data:`PRE_BEAM_MIN`)."""
    return max(int(PRE_BEAM_RATIO * num_beams), PRE_BEAM_MIN)


class _UtteranceCTC:
    """One utterance's CTC posteriors and the prefix scoring of candidate tokens over them.

    ``x``: (T, K) log-probabilities over the CTC's K units; ``blank_unit``:
    the blank's unit.  Scoring runs ESPnet's :class:`CTCPrefixScore` over the
    candidates' columns only ((T, 1 + n): the blank, then the n candidates),
    so that its cost follows n, not the vocabulary.
    """

    def __init__(self, x: np.ndarray, blank_unit: int):
        from espnet.nets.ctc_prefix_score import CTCPrefixScore

        self.x = x if x.flags.writeable else x.copy()
        self.blank_unit = blank_unit
        self.initial_state = CTCPrefixScore(x[:, blank_unit: blank_unit + 1], 0, -1, np).initial_state()  # (T, 2)

    def choice_units(self) -> np.ndarray:
        """The CTC's choices: the units, blank aside, that are a frame's likeliest but for the blank,
        or have a posterior of at least :data:`CTC_CHOICE_PROB` in some frame."""
        blank = self.x[:, self.blank_unit].copy()
        self.x[:, self.blank_unit] = -np.inf  # for a moment: no (T, K) copy
        try:
            likeliest = self.x.argmax(axis=1)  # (T,)
            loud = np.nonzero(self.x.max(axis=0) >= math.log(CTC_CHOICE_PROB))[0]
        finally:
            self.x[:, self.blank_unit] = blank
        return np.union1d(likeliest, loud)

    def columns(self, units: np.ndarray) -> np.ndarray:
        """(T, 1 + n): the blank's column, then each candidate unit's (-1: outside the CTC's units,
        :data:`OUTSIDE_LOG_PROB` in every frame)."""
        out = np.empty((self.x.shape[0], 1 + len(units)), dtype=np.float32)
        out[:, 0] = self.x[:, self.blank_unit]
        inside = units >= 0
        out[:, 1:][:, inside] = self.x[:, units[inside]]
        out[:, 1:][:, ~inside] = OUTSIDE_LOG_PROB
        return out

    def score(self, prefix: Sequence[int], cand: np.ndarray, units: np.ndarray, eos: int, r_prev: np.ndarray):
        """log psi(prefix + c) (n,) for the candidate tokens ``cand`` (n,) (their CTC ``units``), and
        their CTC states (n, T, 2).

        ESPnet's scorer runs on local labels: 0 the blank, j + 1 candidate j,
        so only the labels it compares are mapped (EOS, and the prefix's last
        token for the rule that a repeated label needs a blank between).
        """
        from espnet.nets.ctc_prefix_score import CTCPrefixScore

        local = {c: j + 1 for j, c in enumerate(cand.tolist())}
        scorer = CTCPrefixScore(self.columns(units), 0, local.get(eos, -1), np)
        y = [-1] * len(prefix) + [local.get(prefix[-1], -1) if prefix else -1]
        with np.errstate(invalid="ignore"):  # ESPnet leaves the unreachable early frames unset
            return scorer(y, np.arange(1, len(cand) + 1), r_prev)


class CTCPrefixScoring:
    """Joint CTC / LLM decoding (the hybrid scoring of Watanabe et al. 2017, ESPnet's
    ``ctc_weight`` at decoding) as the first logits processor.

    The CTC is the one the model was trained with (``model_conf.ctc_weight``):
    the projector's output vectors read by the LLM's output head, blank = the
    pad token.  Each candidate token c of a hypothesis h scores
    ``(1 - weight) * log p_LLM(c | h) + weight * (log psi(h c) - log psi(h))``
    with psi the CTC prefix probability (ESPnet's
    :class:`espnet.nets.ctc_prefix_score.CTCPrefixScore`; for EOS, the
    probability of h as the whole transcript), so a beam's accumulated score
    is ``(1 - weight) log P_LLM(h) + weight log psi(h)``.  Tokens that are not
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
            (each frame's likeliest token but the blank, and every token with
            at least :data:`CTC_CHOICE_PROB` in some frame) and EOS: a few
            dozen whatever the vocabulary's size, and the hypotheses of
            scoring every token where those cover what the joint score
            chooses; an int K the LLM's K best only; ``"all"`` every token
            (V columns a step: slow for a large vocabulary).
        unit_ids: the LLM id of each of the K units (the model's
            ``ctc_vocab``); tokens outside get :data:`OUTSIDE_LOG_PROB` in every
            frame.  None: K = V, unit k is token k.

    ``input_ids``: (rows, generated so far) (with ``inputs_embeds`` transformers
    passes only the generated ids); ``scores``: (rows, V) logits (greedy) or
    log-probabilities (beam search).  Returns (rows, V) joint log-scores.
    """

    def __init__(self, ctc_log_probs, num_beams: int, weight: float, blank: int, eos: int,
                 pre_beam: Union[int, str, None] = None, unit_ids: Optional[Sequence[int]] = None):
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
        self.utterances = [_UtteranceCTC(np.asarray(x, dtype=np.float32), blank_unit) if len(x) else None
                           for x in ctc_log_probs]
        self.num_beams = num_beams
        self.weight = check_ctc_weight(weight)
        self.blank = blank
        self.eos = eos
        self.pre_beam = pre_beam
        # auto: the CTC's choices in each utterance, found once
        self.ctc_choices = [None if u is None or pre_beam is not None else self.token_of(u.choice_units())
                      for u in self.utterances]
        self.scored = 0  # candidates scored so far (over rows and steps)
        self.states: Dict = {}  # (utterance, prefix) -> (CTC state (T, 2), log psi(prefix))

    def units_of(self, tokens: np.ndarray) -> np.ndarray:
        """LLM ids (n,) -> their CTC units (n,), -1 outside the CTC's units."""
        if self._order is None:
            return tokens
        pos = np.minimum(np.searchsorted(self._sorted_ids, tokens), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == tokens, self._order[pos], -1)

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
            r_prev, psi_prev = self.states.get((utt, prefix), (ctc.initial_state, 0.0))
            cand = self.candidates(logp[row], utt)
            psi, r_new = ctc.score(prefix, cand, self.units_of(cand), self.eos, r_prev)
            self.scored += len(cand)
            delta = torch.from_numpy(np.asarray(psi - psi_prev, dtype=np.float32)).to(logp.device)
            index = torch.from_numpy(cand).to(logp.device)
            joint[row, index] = (1.0 - self.weight) * logp[row, index] + self.weight * delta
            for j, c in enumerate(cand.tolist()):
                if c != self.eos:
                    self.states[(utt, prefix + (c,))] = (r_new[j], float(psi[j]))
        return joint
