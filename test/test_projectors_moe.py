"""Hard top-k MoE routing and capacity, the oracle multi-projector, the dense ensemble, linear."""
import math

import pytest
import torch

from espnet_llm_asr.projectors import build_projector
from espnet_llm_asr.projectors.mono import MonoProjector
from projector_setup import D_IN, D_OUT, E, HIDDEN, LENGTHS, garbage_batch, small


# ---------------------------------------------------------------- hard MoE
def _hard_moe(**conf):
    torch.manual_seed(0)
    return build_projector("hard_moe", D_IN, D_OUT, hidden_dim=HIDDEN, num_experts=E, **conf).double()


def test_hard_moe_top_k_and_capacity():
    proj = _hard_moe().train()
    frames = torch.randn(37, D_IN, dtype=torch.float64)
    with torch.no_grad():
        proj.router.bias.copy_(torch.tensor([3.0, 1.0, 0.0, 0.0]))  # unbalanced on purpose
    r = proj.route(frames)
    assert r.capacity == math.ceil(1.0 * 2 * 37 / E)
    assert r.experts.shape == (37, 2)
    assert bool((r.experts[:, 0] != r.experts[:, 1]).all())  # k distinct experts
    assert bool(((r.combine > 0).sum(-1) <= 2).all())
    for e in range(E):
        assert int(((r.experts == e) & r.kept).sum()) <= r.capacity
    assert int(((r.experts == 0) & r.kept).sum()) == r.capacity  # expert 0 is full
    # frames that kept every choice: weights sum to 1; a dropped choice takes its weight with it
    both = r.kept.all(-1)
    torch.testing.assert_close(r.combine.sum(-1)[both], torch.ones(int(both.sum()), dtype=torch.float64))
    assert bool((~r.kept.all(-1)).any()) and bool((r.combine.sum(-1)[~both] < 1).all())
    # eval: no capacity by default
    r_eval = proj.eval().route(frames)
    assert r_eval.capacity is None and bool(r_eval.kept.all())


def test_hard_moe_over_capacity_keeps_other_choice_renormalised():
    proj = _hard_moe(renormalize_kept=True).train()
    with torch.no_grad():
        proj.router.weight.zero_()
        proj.router.weight[1, 0] = 5.0
        proj.router.weight[2, 0] = -5.0
        proj.router.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))
    frames = torch.zeros(8, D_IN, dtype=torch.float64)
    frames[:, 0] = torch.tensor([1.0, -1.0] * 4)  # choices (0, 1) and (0, 2) alternately
    r = proj.route(frames)
    assert r.capacity == 4
    assert r.experts[:, 0].tolist() == [0] * 8
    assert r.experts[:, 1].tolist() == [1, 2] * 4
    # first choices fill expert 0 in frame order: frames 4..7 overflow it
    assert r.kept[:, 0].tolist() == [True] * 4 + [False] * 4
    assert bool(r.kept[:, 1].all())
    torch.testing.assert_close(r.combine[4:], torch.tensor([[0.0, 1.0]] * 4, dtype=torch.float64))
    p = r.probs
    top = p[:4].gather(1, r.experts[:4])
    torch.testing.assert_close(r.combine[:4], top / top.sum(-1, keepdim=True))


def test_hard_moe_gshard_combine_keeps_top_k_weights():
    """renormalize_kept=False (the default): a frame whose 1st choice overflowed keeps its 2nd expert at the
    top-2 weight g2 / (g1 + g2) (GShard), not 1; frames that kept both choices get the same
    weights as with renormalize_kept=True."""
    frames = torch.zeros(8, D_IN, dtype=torch.float64)
    frames[:, 0] = torch.tensor([1.0, -1.0] * 4)
    routes = {}
    for renorm in (True, False):
        proj = _hard_moe(renormalize_kept=renorm).train()
        with torch.no_grad():
            proj.router.weight.zero_()
            proj.router.weight[1, 0] = 1.0
            proj.router.weight[2, 0] = -1.0
            proj.router.bias.copy_(torch.tensor([2.0, 0.0, 0.0, -5.0]))
        routes[renorm] = proj.route(frames)
    r, renorm = routes[False], routes[True]
    assert r.kept.tolist() == renorm.kept.tolist() and r.kept[:, 0].tolist() == [True] * 4 + [False] * 4
    top = r.probs.gather(1, r.experts)
    top = top / top.sum(-1, keepdim=True)  # g_i / (g1 + g2), about (0.73, 0.27) here
    torch.testing.assert_close(r.combine[:4], top[:4])
    torch.testing.assert_close(renorm.combine[:4], top[:4])
    torch.testing.assert_close(r.combine[4:, 0], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(r.combine[4:, 1], top[4:, 1])
    assert float(r.combine[4:, 1].max()) < 0.5  # and not renormalize_kept's 1
    torch.testing.assert_close(renorm.combine[4:, 1], torch.ones(4, dtype=torch.float64))


def test_hard_moe_saturated_router_keeps_gradients_finite():
    """A frame whose first choice overflowed keeps a second choice of tiny probability: its weight
    is 1, and the gradient through the renormalisation stays finite (measured: a saturated router
    gave NaN gradients and stopped a training run at epoch 6).  float32, as in training."""
    proj = _hard_moe(renormalize_kept=True).float().train()
    with torch.no_grad():
        proj.router.weight.zero_()
        proj.router.weight[:3, :3] = torch.eye(3)
        proj.router.bias.zero_()
    logits = torch.zeros(8, D_IN)
    logits[:4, :3] = torch.tensor([100.0, 0.0, -100.0])  # choices (0, 1), p(1) ~ 4e-44
    logits[4:, :3] = torch.tensor([100.0, -100.0, 0.0])  # choices (0, 2)
    logits[:, 3] = -200.0
    frames = logits.clone().requires_grad_(True)
    r = proj.route(frames)
    assert r.capacity == 4 and r.kept[:, 0].tolist() == [True] * 4 + [False] * 4 and bool(r.kept[:, 1].all())
    torch.testing.assert_close(r.combine[4:], torch.tensor([[0.0, 1.0]] * 4))
    (r.combine * torch.randn(8, 2)).sum().backward()
    assert bool(torch.isfinite(frames.grad).all())
    assert bool(torch.isfinite(proj.router.weight.grad).all())


def test_hard_moe_frames_with_all_choices_over_capacity_get_zero():
    proj = _hard_moe().train()
    with torch.no_grad():
        proj.router.weight.zero_()
        proj.router.bias.copy_(torch.tensor([10.0, 9.0, 0.0, 0.0]))  # every frame picks (0, 1)
    feats, lens = garbage_batch(lengths=[20, 20], t_max=20)  # 4 + 4 downsampled frames
    out = proj(feats, lens)
    # capacity ceil(2 * 8 / 4) = 4: frames 0..3 (utterance 0) kept, utterance 1 dropped
    x, _ = proj.downsampler(feats, lens)
    p = torch.softmax(proj.router.bias, -1)
    w0, w1 = p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])
    expected = w0 * proj.experts.expert(x[0], 0) + w1 * proj.experts.expert(x[0], 1)
    torch.testing.assert_close(out.embeds[0], expected)
    assert bool((out.embeds[1] == 0).all())
    assert out.lengths.tolist() == [4, 4]
    # routing shares: utterance 0 split between experts 0 and 1 by the combine weights,
    # utterance 1 lost every frame (shares 0: it reached no expert)
    torch.testing.assert_close(out.gates[0], torch.stack([w0, w1, p[2] * 0, p[3] * 0]))
    assert bool((out.gates[1] == 0).all())


def test_hard_moe_load_balance_loss():
    proj = _hard_moe(load_balance_weight=0.01).train()
    with torch.no_grad():
        proj.router.weight.zero_()
        proj.router.bias.zero_()  # uniform probabilities: loss = weight * E * sum(f / E) = weight
    out = proj(*garbage_batch())
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.01, dtype=torch.float64))
    with torch.no_grad():
        proj.router.bias.copy_(torch.tensor([30.0, 30.0, 0.0, 0.0]))  # collapsed on two experts
    out = proj(*garbage_batch())
    # f = (.5, .5, 0, 0), P = (.5, .5, 0, 0): 0.01 * 4 * 0.5 = 0.02
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.02, dtype=torch.float64))


# ---------------------------------------------------------------- multi / dense
def test_multi_picks_projector_by_lang_id():
    proj = small("multi")
    feats, lens = garbage_batch()
    lang_ids = torch.tensor([2, 0, 2, 3])
    out = proj(feats, lens, lang_ids=lang_ids)
    for b, lang in enumerate(lang_ids.tolist()):
        mono = MonoProjector(D_IN, D_OUT, hidden_dim=HIDDEN).double()
        mono.block.load_state_dict(proj.projectors[lang].state_dict())
        alone = mono(feats[b:b + 1, :LENGTHS[b]], lens[b:b + 1])
        m = int(alone.lengths[0])
        torch.testing.assert_close(out.embeds[b, :m], alone.embeds[0])
        wrong = proj.projectors[(lang + 1) % E](feats[b:b + 1, :LENGTHS[b]], lens[b:b + 1])[0]
        assert not torch.allclose(out.embeds[b, :m], wrong[0, :m])


def test_multi_runs_only_the_picked_projectors():
    proj = small("multi")
    calls = []
    for lang, block in enumerate(proj.projectors):
        block.register_forward_hook(lambda mod, inp, outp, lang=lang: calls.append((lang, inp[0].size(0))))
    proj(*garbage_batch(), lang_ids=torch.tensor([1, 1, 3, 1]))
    assert sorted(calls) == [(1, 3), (3, 1)]


def test_multi_lang_id_errors():
    proj = small("multi")
    feats, lens = garbage_batch()
    with pytest.raises(ValueError, match="lang_ids"):
        proj(feats, lens)
    with pytest.raises(ValueError, match="out of range"):
        proj(feats, lens, lang_ids=torch.tensor([0, 1, 4, 0]))
    with pytest.raises(ValueError, match="lang_ids"):
        proj(feats, lens, lang_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="lang_ids"):
        proj(feats, lens, lang_ids=torch.tensor([0, -1, 0, 0]))


def test_dense_mixes_all_projectors_with_static_weights():
    proj = small("dense")
    with torch.no_grad():
        proj.mix_logits.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    w = torch.softmax(proj.mix_logits, 0)
    torch.testing.assert_close(out.gates, w.expand(len(LENGTHS), -1))
    ref = sum(w[e] * proj.projectors[e](feats, lens)[0] for e in range(E))
    for b, m in enumerate(out.lengths.tolist()):
        torch.testing.assert_close(out.embeds[b, :m], ref[b, :m])


# ---------------------------------------------------------------- linear
def test_linear_stacks_frames_with_zero_completion():
    proj = small("linear")
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    b, n = 1, LENGTHS[1]  # 9 frames -> groups [0..4], [5..8 + one zero frame]
    last = torch.cat([feats[b, 5:9].reshape(-1), torch.zeros(D_IN, dtype=torch.float64)])
    expected = proj.linear2(torch.relu(proj.linear1(last)))
    torch.testing.assert_close(out.embeds[b, 1], expected)
    assert int(out.lengths[b]) == 2 and n == 9
