"""ASR-shaped LM pretraining examples: plain copies and fixed-stride ("aligned") speech slots."""
import itertools

import pytest
import torch

from espnet_llm_asr.copy_examples import IGNORE, AlignedSlotConfig, CopyExampleMaker, aligned_slot

FILLER = 0
VOCAB = list(range(1, 50))


def collapse(slot):
    """CTC-style reading: drop fillers, merge repeats between them."""
    out = []
    for tok, _ in itertools.groupby(slot):
        if tok != FILLER:
            out.append(tok)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_aligned_slot_reads_back_as_the_transcript(seed):
    gen = torch.Generator().manual_seed(seed)
    ids = [5, 7, 7, 9, 5, 5, 5, 12]  # equal neighbours must stay apart
    chars = [3, 1, 1, 6, 2, 2, 2, 8]
    cfg = AlignedSlotConfig(noise=0.0)
    slot = aligned_slot(ids, chars, FILLER, VOCAB, gen, cfg)
    assert collapse(slot) == ids
    lo, hi = cfg.positions_per_char
    # duration-like: about rate * characters positions, plus silence at the edges
    inner = sum(max(1, round(lo * c)) for c in chars)
    assert inner <= len(slot) <= sum(max(2, round(hi * c) + 1) for c in chars) + 2 * cfg.edge_fill
    assert max(len(list(g)) for t, g in itertools.groupby(slot) if t != FILLER) <= cfg.max_repeat


def test_aligned_slot_spans_follow_characters_and_noise_replaces_positions():
    gen = torch.Generator().manual_seed(0)
    cfg = AlignedSlotConfig(positions_per_char=(1.0, 1.0), edge_fill=0, noise=0.0)
    slot = aligned_slot([3, 4], [2, 10], FILLER, VOCAB, gen, cfg)
    assert len(slot) == 12 and slot[:2].count(3) >= 1 and slot[2:].count(4) >= 1 and 3 not in slot[2:]
    noisy_cfg = AlignedSlotConfig(positions_per_char=(1.0, 1.0), edge_fill=0, noise=0.5)
    noisy = aligned_slot([3] * 40, [2] * 40, FILLER, [49], torch.Generator().manual_seed(0), noisy_cfg)
    assert 0.3 < noisy.count(49) / len(noisy) < 0.7
    with pytest.raises(ValueError, match="positions_per_char"):
        AlignedSlotConfig(positions_per_char=(2.0, 1.0))


def test_example_layouts_and_labels():
    maker = CopyExampleMaker(bos=[1], eos=2, suffix=[40, 41], filler=FILLER, chars=[2] * 50, vocab=VOCAB,
                             aligned=AlignedSlotConfig(noise=0.0))
    gen = torch.Generator().manual_seed(0)
    ids = [10, 11, 12]
    seq, lab = maker.make(ids, "text", gen)
    assert seq == [1, 10, 11, 12, 2] and lab == seq
    seq, lab = maker.make(ids, "copy", gen)
    assert seq == [1, 10, 11, 12, 40, 41, 10, 11, 12, 2] and lab == seq
    seq, lab = maker.make(ids, "aligned", gen)
    n_slot = len(seq) - 1 - 2 - 3 - 1
    assert seq[-6:] == [40, 41, 10, 11, 12, 2] and collapse(seq[1:1 + n_slot]) == ids
    # no loss on the slot; the prompt, the transcript and EOS are learned
    assert lab == [1] + [IGNORE] * n_slot + [40, 41, 10, 11, 12, 2]
    with pytest.raises(ValueError, match="unknown example kind"):
        maker.make(ids, "other", gen)
