"""ASR-shaped LM pretraining examples: plain copies and fixed-stride ("aligned") speech slots."""
import itertools

import pytest
import torch

from espnet_llm_asr.tiny_models.copy_examples import IGNORE, AlignedSlotConfig, CopyExampleMaker, aligned_slot

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
    reader = CopyExampleMaker(bos=[1], eos=2, suffix=[40, 41], filler=FILLER, chars=[2] * 50, vocab=VOCAB,
                              aligned=AlignedSlotConfig(noise=0.0), copy_slot_loss=False)
    seq, lab = reader.make(ids, "copy", gen)  # same layout, no loss on the slot
    assert seq == [1, 10, 11, 12, 40, 41, 10, 11, 12, 2] and lab == [1] + [IGNORE] * 3 + [40, 41, 10, 11, 12, 2]


class _CharVocab:
    """Just enough of a tokenizer for CharSpeller: a sentencepiece-style vocabulary."""

    def __init__(self, pieces):
        self.vocab = {p: i for i, p in enumerate(pieces)}
        self.unk_token_id = 0

    def get_vocab(self):
        return dict(self.vocab)

    def convert_tokens_to_ids(self, tok):
        return self.vocab.get(tok, self.unk_token_id)


def test_char_speller_spells_words_with_boundaries():
    from espnet_llm_asr.ctc_vocab import CharSpeller

    vocab = _CharVocab(["<unk>", "<pad>", "क", "ि", "त", "ा", "\u2581कि"])
    assert CharSpeller(vocab, boundary=1).spell("कि ता") == [2, 3, 1, 4, 5]
    speller = CharSpeller(vocab)
    assert speller.spell("कि  ता") == [2, 3, 4, 5]  # single-character pieces, never the multi-character ones
    assert speller.spell("कx") == [2, 0]  # no piece of its own -> unknown


def test_char_unit_slot_holds_the_spelling():
    from espnet_llm_asr.ctc_vocab import CharSpeller

    speller = CharSpeller(_CharVocab(["<unk>", "a", "b", "c", "d", "क", "ि", "त"]), boundary=FILLER)
    maker = CopyExampleMaker(bos=[1], eos=2, suffix=[40], filler=FILLER, chars=[9] * 50, vocab=VOCAB,
                             aligned=AlignedSlotConfig(noise=0.0, unit="char", positions_per_char=(1.0, 1.6)),
                             speller=speller)
    for seed in range(5):
        seq, lab = maker.make([10, 11], "aligned", torch.Generator().manual_seed(seed), text="किि त")
        n_slot = len(seq) - 1 - 1 - 2 - 1
        assert collapse(seq[1:1 + n_slot]) == [5, 6, 6, 7]  # each character 1-2 positions, repeats kept apart
        slot = seq[1:1 + n_slot]
        last6 = max(i for i, t in enumerate(slot) if t == 6)
        assert FILLER in slot[last6 + 1:slot.index(7)]  # a pause before the second word
        assert n_slot <= 2 * 5 + 2 + 2 * 3
        assert lab == [1] + [IGNORE] * n_slot + [40, 10, 11, 2]
    with pytest.raises(ValueError, match="transcript text"):
        maker.make([10, 11], "aligned", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="unit"):
        AlignedSlotConfig(unit="word")


def test_random_sentences_keep_shape_and_script_but_not_the_lines():
    from espnet_llm_asr.tiny_models.copy_examples import RandomSentences

    texts = ["राम सीता", "गीता राम सीता", "தமிழ் உலகம் நாடு", "a b"]
    rs = RandomSentences(texts)
    gen = torch.Generator().manual_seed(0)
    drawn = [rs.draw(gen) for _ in range(300)]
    words = {w for t in texts for w in t.split()}
    assert all(set(d.split()) <= words for d in drawn)
    assert {len(d.split()) for d in drawn} == {2, 3}
    tamil = set("தமிழ் உலகம் நாடு".split())
    # a sentence keeps each position's script: Tamil words only where the Tamil line had them
    assert all(set(d.split()) <= tamil or not set(d.split()) & tamil for d in drawn)
    assert len(set(drawn) - set(texts)) > 10  # mostly sentences that are not training lines
    with pytest.raises(ValueError, match="no words"):
        RandomSentences(["", " "])
