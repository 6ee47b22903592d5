"""Generation helpers of :meth:`espnet_llm_asr.model.LLMASRModel.generate`: KV-cache and
compile options for transformers' ``generate`` and the logits processors that keep a
batched hypothesis equal to the same utterance decoded alone (per-utterance length
caps, a padding-independent repetition penalty) and gather greedy scores.  Joint CTC
decoding's processor: :mod:`espnet_llm_asr.ctc_prefix_scoring`; the options
themselves: :mod:`espnet_llm_asr.decoding_options`."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

CACHE_IMPLEMENTATIONS = ("dynamic", "static")


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
