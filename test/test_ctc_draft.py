"""The CTC's draft (model_conf.ctc_draft): greedy paths collapsed by hand, and a spelled
sentence written back as the LLM's own tokens of that sentence (Gemma 3's tokenizer)."""
from __future__ import annotations

import pytest
import torch

from espnet_llm_asr.ctc_draft import ctc_greedy_units, draft_token_ids


def test_greedy_paths_collapse_repeats_and_drop_blanks():
    labels = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0],
                           [2, 2, 2, 0, 0, 0, 7, 7]])  # row 1: the last two lie beyond its length
    assert ctc_greedy_units(labels, torch.tensor([8, 6]), blank=0) == [[3, 3, 5], [2]]
    assert ctc_greedy_units(labels, torch.tensor([3, 0]), blank=0) == [[3], []]


@pytest.mark.real_models
def test_spelled_sentence_becomes_the_tokens_of_the_sentence():
    from transformers import AutoTokenizer

    from espnet_llm_asr.ctc_vocab import CharSpeller
    from espnet_llm_asr.ctc_vocab import word_boundary_id
    from test_real_models import GEMMA_DIR, require

    tokenizer = AutoTokenizer.from_pretrained(str(require(GEMMA_DIR)))
    sentence = "बच्चे स्कूल से घर लौटकर मैदान में खेलने गए"
    spelled = CharSpeller(tokenizer, boundary=word_boundary_id(tokenizer)).spell(sentence)
    units = [tokenizer.pad_token_id] + sorted(set(spelled))  # the CTC's outputs: blank first
    # a CTC path: each unit held two frames, a blank between units (so doubled letters survive)
    path = [0]
    for piece in spelled:
        path += [units.index(piece)] * 2 + [0]
    labels = torch.tensor([path])
    rows = ctc_greedy_units(labels, torch.tensor([len(path)]), blank=0)
    assert [units[u] for u in rows[0]] == spelled
    expected = tokenizer(sentence, add_special_tokens=False).input_ids
    assert len(expected) < len(spelled)  # ordinary tokens, not one a letter
    assert draft_token_ids(rows, units, tokenizer, max_tokens=100) == [expected]
    assert draft_token_ids(rows, units, tokenizer, max_tokens=3) == [expected[:3]]
    assert draft_token_ids([[]], units, tokenizer, max_tokens=100) == [[]]
