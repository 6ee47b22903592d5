"""CTC compression (model_conf.ctc_compress): runs averaged, blanks dropped, by hand."""
from __future__ import annotations

import pytest
import torch

from espnet_llm_asr.ctc_compress import ctc_compress


def test_runs_are_averaged_and_blanks_dropped():
    embeds = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    labels = torch.tensor([[0, 3, 3, 0, 4, 4],
                           [5, 5, 0, 5, 9, 9]])  # row 1: vectors 4 and 5 lie beyond its length
    out, lengths = ctc_compress(embeds, torch.tensor([6, 4]), labels, blank=0)
    assert lengths.tolist() == [2, 2]
    e0, e1 = embeds[0], embeds[1]
    torch.testing.assert_close(out[0], torch.stack([(e0[1] + e0[2]) / 2, (e0[4] + e0[5]) / 2]))
    # a run split by a blank stays two vectors (CTC's repeated label)
    torch.testing.assert_close(out[1], torch.stack([(e1[0] + e1[1]) / 2, e1[3]]))


def test_all_blank_row_keeps_its_mean_and_padding_is_zero():
    embeds = torch.randn(2, 5, 3)
    labels = torch.tensor([[0, 0, 0, 0, 0], [1, 2, 3, 0, 4]])
    out, lengths = ctc_compress(embeds, torch.tensor([3, 5]), labels, blank=0)
    assert lengths.tolist() == [1, 4] and out.shape == (2, 4, 3)
    torch.testing.assert_close(out[0, 0], embeds[0, :3].mean(0))
    assert (out[0, 1:] == 0).all()


def test_gradient_flows_to_the_kept_vectors_only():
    embeds = torch.randn(1, 4, 2, requires_grad=True)
    out, _ = ctc_compress(embeds, torch.tensor([4]), torch.tensor([[0, 7, 7, 0]]), blank=0)
    out.sum().backward()
    torch.testing.assert_close(embeds.grad[0, :, 0], torch.tensor([0.0, 0.5, 0.5, 0.0]))


def test_empty_row_is_an_error():
    with pytest.raises(ValueError, match="row 1"):
        ctc_compress(torch.randn(2, 3, 2), torch.tensor([3, 0]), torch.zeros(2, 3, dtype=torch.long), blank=0)
