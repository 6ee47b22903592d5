"""Joint CTC / LLM decoding: the CTC prefix scores added to the LLM's by a logits processor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from espnet_llm_asr.decoding import CTCPrefixScoring

BLANK, EOS, V = 0, 1, 6


def _ctc_log_probs(seed: int, frames: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, V, generator=g).mul(2).log_softmax(-1).numpy()


def _ctc_log_likelihood(x: np.ndarray, labels) -> float:
    """log P_CTC(labels | x) by torch's own CTC loss (an independent implementation)."""
    lp = torch.from_numpy(x)[:, None]  # (T, 1, V)
    loss = F.ctc_loss(lp, torch.tensor([labels]), torch.tensor([x.shape[0]]), torch.tensor([len(labels)]),
                      blank=BLANK, reduction="sum")
    return -float(loss)


@pytest.mark.parametrize("labels", [[2, 3, 4], [3, 3], [5]])
def test_ctc_increments_sum_to_the_ctc_likelihood(labels):
    """With weight 1 the LLM is ignored and the joint scores along a hypothesis, EOS
    included, add up to log P_CTC(hypothesis), as torch's CTC loss computes it
    (repeated labels, which CTC must separate by a blank, included)."""
    x = _ctc_log_probs(0, frames=7)
    proc = CTCPrefixScoring([x], num_beams=1, weight=1.0, blank=BLANK, eos=EOS)
    llm_logits = torch.randn(1, V)
    total = 0.0
    for step, c in enumerate(labels + [EOS]):
        joint = proc(torch.tensor([labels[:step]], dtype=torch.long).view(1, step), llm_logits)
        total += float(joint[0, c])
    assert total == pytest.approx(_ctc_log_likelihood(x, labels), abs=1e-3)


def test_weight_mixes_llm_and_ctc_and_zero_weight_is_the_llm():
    x = _ctc_log_probs(1, frames=5)
    logits = torch.randn(2, V)
    empty = torch.zeros(2, 0, dtype=torch.long)
    llm = torch.log_softmax(logits, -1)
    zero = CTCPrefixScoring([x], num_beams=2, weight=0.0, blank=BLANK, eos=EOS)(empty, logits)
    ctc = CTCPrefixScoring([x], num_beams=2, weight=1.0, blank=BLANK, eos=EOS)(empty, logits)
    half = CTCPrefixScoring([x], num_beams=2, weight=0.5, blank=BLANK, eos=EOS)(empty, logits)
    keep = torch.arange(V) != BLANK  # the blank is never a candidate of the CTC
    assert torch.allclose(zero[:, keep], llm[:, keep])
    assert torch.allclose(half[:, keep], 0.5 * llm[:, keep] + 0.5 * ctc[:, keep], atol=1e-5)
    assert torch.isinf(ctc[:, BLANK]).all() or (ctc[:, BLANK] < -1e6).all()
    # both beams of the one utterance see the same CTC scores
    assert torch.allclose(ctc[0], ctc[1])


def test_ctc_steers_greedy_choice_and_pre_beam_limits_it():
    """A CTC certain of 4, 2 overrides an LLM that prefers 3; with a pre-beam of 1
    only the LLM's best token is a candidate, and every other token is -inf."""
    x = np.full((4, V), -20.0, dtype=np.float32)
    for t, c in enumerate([4, BLANK, 2, BLANK]):
        x[t, c] = 0.0
    logits = torch.zeros(1, V)
    logits[0, 3] = 2.0
    proc = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS)
    prefix = []
    for _ in range(3):
        joint = proc(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)), logits)
        prefix.append(int(joint.argmax()))
    assert prefix == [4, 2, EOS]
    narrow = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS, pre_beam=1)
    joint = narrow(torch.zeros(1, 0, dtype=torch.long), logits)
    assert int(joint.argmax()) == 3 and torch.isinf(joint[0, [0, 1, 2, 4, 5]]).all()


def test_utterance_without_vectors_keeps_llm_scores_and_bad_options_fail():
    logits = torch.randn(1, V)
    proc = CTCPrefixScoring([np.zeros((0, V), dtype=np.float32)], num_beams=1, weight=0.5, blank=BLANK, eos=EOS)
    assert torch.allclose(proc(torch.zeros(1, 0, dtype=torch.long), logits), torch.log_softmax(logits, -1))
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        CTCPrefixScoring([], num_beams=1, weight=1.5, blank=BLANK, eos=EOS)
    with pytest.raises(ValueError, match="ctc_pre_beam"):
        CTCPrefixScoring([], num_beams=1, weight=0.5, blank=BLANK, eos=EOS, pre_beam=0)


def test_every_recipe_decoding_config_parses():
    """The recipe's decoding configs hold only known options, with a valid ctc_weight;
    the shipped default decodes jointly, conf/decode_llm.yaml with the LLM alone."""
    from pathlib import Path

    from espnet_llm_asr.bin.llm_asr_inference import parse_args

    conf = Path(__file__).resolve().parents[1] / "egs2" / "indic" / "asr1" / "conf"
    configs = sorted(conf.glob("decode*.yaml")) + sorted(conf.glob("*/decode*.yaml"))
    assert conf / "decode.yaml" in configs and len(configs) >= 4
    weights = {}
    for path in configs:
        args = parse_args(["--config", str(path), "--output_dir", "x",
                           "--data_path_and_name_and_type", "wav.scp,speech,sound"])
        assert 0.0 <= args.ctc_weight <= 1.0, path
        weights[path.name if path.parent == conf else f"{path.parent.name}/{path.name}"] = args.ctc_weight
    assert weights["decode.yaml"] > 0 and weights["decode_llm.yaml"] == 0
    assert weights["decode_paper.yaml"] == 0  # the papers' configs train no CTC
