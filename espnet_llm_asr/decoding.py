"""Generation helpers of :meth:`espnet_llm_asr.model.LLMASRModel.generate`: KV-cache and
compile options for transformers' ``generate`` and the logits processors that keep a
batched hypothesis equal to the same utterance decoded alone (per-utterance length
caps, a padding-independent repetition penalty) and gather greedy scores."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch


CACHE_IMPLEMENTATIONS = ("dynamic", "static")


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def generation_cache_kwargs(cache_implementation: str, compile_decoding: Optional[bool], device: torch.device) -> Dict:
    """transformers ``generate`` kwargs for the KV cache and the compiled decoding step."""
    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(f"cache_implementation: unknown KV cache {cache_implementation!r}; "
                         f"choose one of {list(CACHE_IMPLEMENTATIONS)}")
    if compile_decoding not in (None, True, False):
        raise ValueError(f"compile_decoding must be true, false or null (auto), got {compile_decoding!r}")
    if cache_implementation == "dynamic":
        if compile_decoding:
            raise ValueError("compile_decoding: true needs cache_implementation: static "
                             "(a compiled decoding step needs the fixed shapes of a static KV cache)")
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
    """

    def __init__(self):
        self.chosen: List[torch.Tensor] = []  # (rows,) log-probability of token t, t = 0, 1, ...
        self.last: Optional[torch.Tensor] = None  # (rows, V) log-softmax of the latest step
        self.last_position = -1  # the token position ``last`` chooses

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        position = input_ids.size(1)  # the token about to be chosen
        if self.last is not None and self.last_position == position - 1 == len(self.chosen):
            self.chosen.append(self.last.gather(1, input_ids[:, -1:]).squeeze(1))
        self.last = torch.log_softmax(scores.float(), dim=-1)
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
    is ``(1 - weight) log P_LLM(h) + weight log psi(h)``.  Only the
    ``pre_beam`` best candidates by the LLM get the CTC term (ESPnet's
    pre-beam; the others -inf); ``None`` scores every token.

    Args:
        ctc_log_probs: one (T_i, V) array of CTC log-probabilities per utterance
            (T_i = the utterance's projected vectors).  An utterance with no
            vector keeps the LLM's scores alone.
        num_beams: rows of ``input_ids`` per utterance (adjacent).
        weight: in [0, 1].
        blank, eos: the CTC blank and the LLM's EOS ids.
        pre_beam: candidates per row that get the CTC term, or None for all.

    ``input_ids``: (rows, generated so far) (with ``inputs_embeds`` transformers
    passes only the generated ids); ``scores``: (rows, V) logits (greedy) or
    log-probabilities (beam search).  Returns (rows, V) joint log-scores.
    """

    def __init__(self, ctc_log_probs, num_beams: int, weight: float, blank: int, eos: int,
                 pre_beam: Optional[int] = None):
        from espnet.nets.ctc_prefix_score import CTCPrefixScore

        if pre_beam is not None and pre_beam < 1:
            raise ValueError(f"ctc_pre_beam must be >= 1 or null (every token), got {pre_beam}")
        self.scorers = [CTCPrefixScore(x, blank, eos, np) if len(x) else None for x in ctc_log_probs]
        self.num_beams = num_beams
        self.weight = check_ctc_weight(weight)
        self.eos = eos
        self.pre_beam = pre_beam
        self.states: Dict = {}  # (utterance, prefix) -> (CTC state (T, 2), log psi(prefix))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        joint = torch.full_like(logp, float("-inf"))
        length = input_ids.size(1)
        self.states = {k: v for k, v in self.states.items() if len(k[1]) >= length}
        vocab = logp.size(1)
        for row, ids in enumerate(input_ids.tolist()):
            utt = row // self.num_beams
            scorer = self.scorers[utt]
            if scorer is None or self.eos in ids:
                joint[row] = logp[row]
                continue
            prefix = tuple(ids)
            state = self.states.get((utt, prefix))
            r_prev, psi_prev = state if state is not None else (scorer.initial_state(), 0.0)
            if self.pre_beam is None or self.pre_beam >= vocab:
                cand = torch.arange(vocab)
            else:
                cand = logp[row].topk(self.pre_beam).indices.cpu()
            cs = cand.numpy()
            with np.errstate(invalid="ignore"):  # ESPnet leaves the unreachable early frames unset
                psi, r_new = scorer([-1] + list(prefix), cs, r_prev)
            delta = torch.from_numpy(np.asarray(psi - psi_prev, dtype=np.float32)).to(logp.device)
            cand = cand.to(logp.device)
            joint[row, cand] = (1.0 - self.weight) * logp[row, cand] + self.weight * delta
            for j, c in enumerate(cs.tolist()):
                self.states[(utt, prefix + (c,))] = (r_new[j], float(psi[j]))
        return joint
