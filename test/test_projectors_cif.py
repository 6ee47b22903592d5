"""CIF: hand-computed integrate-and-fire, exact training counts, tail rule, quantity loss, cif_smear."""
import pytest
import torch

from espnet_llm_asr.projectors import build_projector, cif_integrate
from espnet_llm_asr.projectors.blocks import ExpertMLP
from projector_setup import D_IN, D_OUT, HIDDEN

F64 = torch.float64


def one_utt(alphas):
    """Identity frames h = I (so fired vectors show the frame weights) for one utterance."""
    a = torch.tensor([alphas], dtype=F64)
    n = a.size(1)
    return torch.eye(n, dtype=F64).unsqueeze(0), a, torch.tensor([n])


ALPHAS = [0.3, 0.5, 0.4, 0.9, 0.2]  # cumsum 0.3 0.8 1.2 2.1 2.3


def test_hand_made_alphas_inference():
    h, a, n = one_utt(ALPHAS)
    fired, count = cif_integrate(h, a, n, threshold=1.0, tail_threshold=0.45)
    assert count.tolist() == [2]  # remainder 0.3 < 0.45: no tail
    expected = torch.tensor([[0.3, 0.5, 0.2, 0.0, 0.0],
                             [0.0, 0.0, 0.2, 0.8, 0.0]], dtype=F64)
    torch.testing.assert_close(fired[0], expected)


def test_hand_made_alphas_on_real_vectors():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, 5, 3, generator=g, dtype=F64)
    _, a, n = one_utt(ALPHAS)
    fired, _ = cif_integrate(h, a, n)
    x = h[0]
    torch.testing.assert_close(fired[0, 0], 0.3 * x[0] + 0.5 * x[1] + 0.2 * x[2])
    torch.testing.assert_close(fired[0, 1], 0.2 * x[2] + 0.8 * x[3])


def test_tail_threshold():
    h, a, n = one_utt(ALPHAS)
    fired, count = cif_integrate(h, a, n, tail_threshold=0.25)  # remainder 0.3 >= 0.25 fires
    assert count.tolist() == [3]
    # tail vector is NOT normalised: total weight = remainder 0.3
    torch.testing.assert_close(fired[0, 2], torch.tensor([0, 0, 0, 0.1, 0.2], dtype=F64))
    fired, count = cif_integrate(h, a, n, tail_threshold=0.25, normalize_tail=True)
    torch.testing.assert_close(fired[0, 2], torch.tensor([0, 0, 0, 0.1, 0.2], dtype=F64) / 0.3)
    torch.testing.assert_close(fired[0, 0].sum(), torch.tensor(1.0, dtype=F64))
    # boundary: remainder exactly at the threshold fires; just below does not
    for alphas, expected in (([0.5, 0.5, 0.5], 2), ([0.5, 0.5, 0.4], 1), ([0.5, 0.5, 0.45], 2)):
        h, a, n = one_utt(alphas)
        assert cif_integrate(h, a, n, tail_threshold=0.45)[1].tolist() == [expected], alphas


def test_non_empty_utterance_never_fires_zero_vectors():
    h, a, n = one_utt([0.1, 0.1])
    fired, count = cif_integrate(h, a, n)
    assert count.tolist() == [1]
    torch.testing.assert_close(fired[0, 0], torch.tensor([0.1, 0.1], dtype=F64))
    # an empty utterance fires nothing
    fired, count = cif_integrate(torch.zeros(1, 3, 2, dtype=F64), torch.zeros(1, 3, dtype=F64), torch.tensor([0]))
    assert count.tolist() == [0] and fired.shape == (1, 0, 2)


@pytest.mark.parametrize("target", [1, 2, 3, 4, 7, 12])
def test_training_fires_exactly_target_length(target):
    h, a, n = one_utt(ALPHAS)
    fired, count = cif_integrate(h, a, n, target_lengths=torch.tensor([target]))
    assert count.tolist() == [target] and fired.size(1) == target
    # every vector has total weight 1 (frames with scaled alpha > 1 spread over several)
    torch.testing.assert_close(fired[0].sum(-1), torch.ones(target, dtype=F64))
    # weights per frame are the scaled alphas
    scale = target / sum(ALPHAS)
    torch.testing.assert_close(fired[0].sum(0), torch.tensor(ALPHAS, dtype=F64) * scale)


def test_training_hand_computed_scaled_firing():
    h, a, n = one_utt(ALPHAS)
    fired, count = cif_integrate(h, a, n, target_lengths=torch.tensor([2]))
    # sum 2.3 scaled to 2: factor 2/2.3
    s = 2 / 2.3
    c = [0.3 * s, 0.8 * s, 1.2 * s]  # 1.2*s = 1.0435 > 1: frame 2 crosses the threshold
    expected0 = torch.tensor([0.3 * s, 0.5 * s, 1 - c[1], 0, 0], dtype=F64)
    torch.testing.assert_close(fired[0, 0], expected0)
    torch.testing.assert_close(fired[0, 1], torch.tensor([0, 0, c[2] - 1, 0.9 * s, 0.2 * s], dtype=F64))


def test_training_counts_exact_under_float_round_off():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (64,), generator=g)
    alphas = torch.rand(64, 60, generator=g)  # float32
    targets = torch.randint(0, 40, (64,), generator=g)
    h = torch.randn(64, 60, 4, generator=g)
    fired, count = cif_integrate(h, alphas, lengths, target_lengths=targets)
    assert count.tolist() == targets.clamp_min(1).tolist()  # empty transcript: still one vector
    # every fired vector of an identity-like check: mass of each output is ~1
    eye = torch.eye(60).expand(64, 60, 60)
    w, _ = cif_integrate(eye, alphas, lengths, target_lengths=targets)
    mass = w.sum(-1)
    valid = torch.arange(w.size(1))[None] < count[:, None]
    torch.testing.assert_close(mass[valid], torch.ones(int(valid.sum())), atol=1e-4, rtol=0)
    assert bool((mass[~valid] == 0).all())


def test_batch_with_garbage_equals_alone():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([7, 3, 5])
    h = torch.randn(3, 7, 4, generator=g, dtype=F64)
    alphas = torch.rand(3, 7, generator=g, dtype=F64)
    for b, n in enumerate(lengths.tolist()):
        h[b, n:] = 1e6
        alphas[b, n:] = 5.0
    for targets in (None, torch.tensor([4, 1, 6])):
        fired, count = cif_integrate(h, alphas, lengths, target_lengths=targets)
        for b, n in enumerate(lengths.tolist()):
            t = None if targets is None else targets[b:b + 1]
            f1, c1 = cif_integrate(h[b:b + 1, :n], alphas[b:b + 1, :n], lengths[b:b + 1], target_lengths=t)
            assert int(count[b]) == int(c1[0])
            torch.testing.assert_close(fired[b, :int(c1[0])], f1[0])
            assert bool((fired[b, int(c1[0]):] == 0).all())


def _cif_with_constant_alpha(name="cif", **conf):
    """CIF projector whose weight predictor outputs alpha = 0.5 on every real frame."""
    torch.manual_seed(0)
    proj = build_projector(name, D_IN, D_OUT, hidden_dim=HIDDEN, **conf).double()
    with torch.no_grad():
        proj.cif.predictor.linear.weight.zero_()
        proj.cif.predictor.linear.bias.zero_()  # sigmoid(0) = 0.5
    return proj


def test_quantity_loss():
    proj = _cif_with_constant_alpha(quantity_loss_weight=0.5).train()
    feats = torch.randn(2, 8, D_IN, dtype=F64)
    lens = torch.tensor([6, 8])  # sum(alpha) = 3 and 4
    out = proj(feats, lens, target_lengths=torch.tensor([3, 4]))
    assert float(out.aux_loss.detach()) == 0.0
    assert out.lengths.tolist() == [3, 4]
    out = proj(feats, lens, target_lengths=torch.tensor([5, 1]))  # |3-5| = 2, |4-1| = 3
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.5 * 2.5, dtype=F64))
    assert out.lengths.tolist() == [5, 1]
    # inference: threshold firing, no targets -> no loss
    out = proj.eval()(feats, lens)
    assert out.lengths.tolist() == [3, 4] and float(out.aux_loss.detach()) == 0.0
    torch.testing.assert_close(out.alphas, torch.tensor([[0.5] * 6 + [0] * 2, [0.5] * 8], dtype=F64))


def test_cif_projector_output_is_mlp_of_fired_vectors():
    proj = _cif_with_constant_alpha().eval()
    feats = torch.randn(1, 5, D_IN, dtype=F64)
    out = proj(feats, torch.tensor([5]))  # alphas .5 x5: 2 full vectors, remainder .5 >= .45: tail
    x = feats[0]
    fired = torch.stack([0.5 * (x[0] + x[1]), 0.5 * (x[2] + x[3]), 0.5 * x[4]])
    torch.testing.assert_close(out.embeds[0], proj.mlp(fired))


def test_weight_predictor_ignores_padding():
    torch.manual_seed(0)
    proj = build_projector("cif", D_IN, D_OUT, hidden_dim=HIDDEN).double()
    feats = torch.randn(1, 9, D_IN, dtype=F64)
    alone = proj.cif.predictor(feats[:, :6], torch.tensor([6]))
    feats[:, 6:] = 1e3
    batched = proj.cif.predictor(feats, torch.tensor([6]))
    torch.testing.assert_close(batched[:, :6], alone)
    assert bool((batched[:, 6:] == 0).all())


def test_cif_smear_identical_experts_equal_cif_plus_one_expert():
    torch.manual_seed(0)
    proj = build_projector("cif_smear", D_IN, D_OUT, hidden_dim=HIDDEN, num_experts=3).double().train()
    mlp = ExpertMLP(D_IN, HIDDEN, D_OUT).double()
    for e in range(3):
        proj.experts.load_expert_(e, mlp)
    feats = torch.randn(2, 12, D_IN, dtype=F64)
    lens = torch.tensor([12, 7])
    targets = torch.tensor([4, 2])
    out = proj(feats, lens, target_lengths=targets)
    fired, fired_lens, alphas, quantity = proj.cif(feats, lens, targets)
    assert out.lengths.tolist() == [4, 2] == fired_lens.tolist()
    for b, m in enumerate(fired_lens.tolist()):
        torch.testing.assert_close(out.embeds[b, :m], mlp(fired[b, :m]))
    # aux = quantity + load balance
    _, balance = proj.gate(feats, lens)
    torch.testing.assert_close(out.aux_loss, quantity + balance)
    assert float(balance.detach()) > 0 and float(quantity.detach()) > 0


def test_cif_smear_gates_from_real_encoder_frames():
    torch.manual_seed(0)
    proj = build_projector("cif_smear", D_IN, D_OUT, hidden_dim=HIDDEN, num_experts=3).double().eval()
    feats = torch.randn(2, 10, D_IN, dtype=F64)
    lens = torch.tensor([10, 4])
    out = proj(feats, lens)
    probs = torch.softmax(proj.gate.router(feats), -1)
    torch.testing.assert_close(out.gates[1], probs[1, :4].mean(0))
    torch.testing.assert_close(out.gates[0], probs[0].mean(0))
