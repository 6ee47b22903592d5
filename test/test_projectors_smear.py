"""SMEAR-MoE: merged expert against explicit averages and against the per-expert mix; cost model."""
import math

import pytest
import torch

from espnet_llm_asr.projectors import build_projector
from espnet_llm_asr.projectors.blocks import ExpertMLP
from projector_setup import D_IN, D_OUT, E, HIDDEN, LENGTHS, SMALL_CONF, T_MAX, extra_inputs, garbage_batch


# ---------------------------------------------------------------- SMEAR
def _smear(num_experts=E, seed=0):
    torch.manual_seed(seed)
    return build_projector("smear_moe", D_IN, D_OUT, hidden_dim=HIDDEN, num_experts=num_experts).double()


def _reference_expert(proj, seed=5):
    torch.manual_seed(seed)
    return ExpertMLP(D_IN, HIDDEN, D_OUT).double()


def test_smear_identical_experts_equal_one_expert():
    proj = _smear()
    mlp = _reference_expert(proj)
    for e in range(E):
        proj.experts.load_expert_(e, mlp)
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    x, x_lens = proj.downsampler(feats, lens)
    ref = mlp(x)
    for b, m in enumerate(x_lens.tolist()):
        torch.testing.assert_close(out.embeds[b, :m], ref[b, :m], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("chosen", [0, 2])
def test_smear_one_hot_gate_equals_chosen_expert(chosen):
    proj = _smear()
    with torch.no_grad():
        proj.gate.router.weight.zero_()
        proj.gate.router.bias.fill_(-200.0)
        proj.gate.router.bias[chosen] = 200.0
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    torch.testing.assert_close(out.gates, torch.nn.functional.one_hot(
        torch.full((len(LENGTHS),), chosen), E).double())
    x, x_lens = proj.downsampler(feats, lens)
    ref = proj.experts.expert(x, chosen)
    other = proj.experts.expert(x, (chosen + 1) % E)
    for b, m in enumerate(x_lens.tolist()):
        torch.testing.assert_close(out.embeds[b, :m], ref[b, :m], atol=1e-10, rtol=1e-10)
        assert not torch.allclose(out.embeds[b, :m], other[b, :m])


def test_smear_merge_matches_explicit_weight_average():
    proj = _smear()
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    x, x_lens = proj.downsampler(feats, lens)
    probs = torch.softmax(proj.gate.router(x), -1)
    ex = proj.experts
    for b, m in enumerate(x_lens.tolist()):
        g = probs[b, :m].mean(0)  # mean over real frames only
        torch.testing.assert_close(out.gates[b], g)
        w1 = sum(g[e] * ex.w1_dh[e] for e in range(E))
        b1 = sum(g[e] * ex.b1[e] for e in range(E))
        w2 = sum(g[e] * ex.w2_ho[e] for e in range(E))
        b2 = sum(g[e] * ex.b2[e] for e in range(E))
        h = torch.relu(torch.relu(x[b, :m]) @ w1 + b1)
        torch.testing.assert_close(out.embeds[b, :m], h @ w2 + b2)
    # load balance: 0.2 * MSE(mean prob over all real frames, 1/E)
    real = torch.cat([probs[b, :m] for b, m in enumerate(x_lens.tolist())])
    expected = 0.2 * ((real.mean(0) - 1 / E) ** 2).mean()
    torch.testing.assert_close(out.aux_loss, expected)


def test_expert_bank_init_draws_like_linear():
    """Input-major weights: same seeded values as (out, in) weights drawn like
    torch.nn.Linear; the earlier (E, H, D) layout's keys are refused."""
    from espnet_llm_asr.projectors.experts import ExpertBank

    torch.manual_seed(3)
    bank = ExpertBank(E, 6, 10, 7).double()
    torch.manual_seed(3)
    expected = []
    for fan_in, shape in ((6, (E, 10, 6)), (10, (E, 7, 10))):
        bound = 1.0 / math.sqrt(fan_in)
        expected.append(torch.empty(shape).uniform_(-bound, bound))
        expected.append(torch.empty(shape[:2]).uniform_(-bound, bound))
    torch.testing.assert_close(bank.w1_dh, expected[0].transpose(1, 2).double())
    torch.testing.assert_close(bank.b1, expected[1].double())
    torch.testing.assert_close(bank.w2_ho, expected[2].transpose(1, 2).double())
    old = {"w1": bank.w1_dh.detach().transpose(1, 2).clone(), "b1": bank.b1.detach().clone(),
           "w2": bank.w2_ho.detach().transpose(1, 2).clone(), "b2": bank.b2.detach().clone()}
    with pytest.raises(RuntimeError, match="w1_dh"):
        ExpertBank(E, 6, 10, 7).double().load_state_dict(old)


def test_smear_every_expert_gets_gradient_from_one_batch():
    proj = _smear()
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    out.embeds.square().sum().backward()
    for pname in ("w1_dh", "b1", "w2_ho", "b2"):
        grad = getattr(proj.experts, pname).grad
        assert bool((grad.flatten(1).abs().sum(1) > 0).all()), pname
    assert float(proj.gate.router.weight.grad.abs().sum()) > 0



# ---------------------------------------------------------------- SMEAR: merge vs mix
def _smear_pair(name, num_experts=E):
    """The same projector (same weights) twice: merge_mode "merge" and "mix", float64."""
    pair = {}
    for mode in ("merge", "mix"):
        torch.manual_seed(0)
        conf = dict(SMALL_CONF[name], num_experts=num_experts, merge_mode=mode)
        pair[mode] = build_projector(name, D_IN, D_OUT, **conf).double()
    return pair


def _run_with_grads(proj, name, feats, lens, training):
    """Output, aux loss and the gradient of every parameter for a fixed random loss."""
    proj.train(training)
    kw = extra_inputs(name, feats.size(0)) if training else {}
    out = proj(feats, lens, **kw)
    weight = torch.randn(out.embeds.shape, generator=torch.Generator().manual_seed(7), dtype=out.embeds.dtype)
    ((out.embeds * weight).sum() + 3 * out.aux_loss).backward()
    return out, {n: p.grad for n, p in proj.named_parameters()}


@pytest.mark.parametrize("name", ["smear_moe", "cif_smear"])
@pytest.mark.parametrize("lengths,t_max,experts", [
    (LENGTHS, T_MAX, E),        # padded batch, every utterance has padding
    ([26, 25, 20, 24], 26, E),
    ([3], 3, E),                # one short utterance: one position after the stride-5 downsampler
    ([1, 2], 2, 2),
    ([40, 13, 7], 41, 3),
    ([12, 5], 12, 1),           # a single expert
])
@pytest.mark.parametrize("training", [True, False])
def test_smear_merge_and_mix_give_the_same_outputs_and_gradients(name, lengths, t_max, experts, training):
    pair = _smear_pair(name, experts)
    feats, lens = garbage_batch(lengths=lengths, t_max=t_max)
    merge_out, merge_grads = _run_with_grads(pair["merge"], name, feats, lens, training)
    mix_out, mix_grads = _run_with_grads(pair["mix"], name, feats, lens, training)
    assert torch.equal(merge_out.lengths, mix_out.lengths)
    # padding positions included: both formulations compute the same function everywhere
    torch.testing.assert_close(mix_out.embeds, merge_out.embeds, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(mix_out.gates, merge_out.gates, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(mix_out.aux_loss, merge_out.aux_loss, atol=1e-12, rtol=1e-12)
    assert merge_grads.keys() == mix_grads.keys()
    for pname, g in merge_grads.items():
        assert g is not None and mix_grads[pname] is not None, pname
        torch.testing.assert_close(mix_grads[pname], g, atol=1e-10, rtol=1e-10, msg=pname)


@pytest.mark.parametrize("batch,frames,experts", [(4, 6, 4), (1, 1, 4), (3, 1, 2), (2, 5, 1), (5, 3, 3)])
def test_smear_bank_merge_mix_equal_with_input_and_gate_gradients(batch, frames, experts):
    """ExpertBank alone: same outputs and gradients for the input frames and the gates too."""
    from espnet_llm_asr.projectors.experts import ExpertBank

    torch.manual_seed(1)
    bank = ExpertBank(experts, D_IN, HIDDEN, D_OUT).double()
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(batch, frames, D_IN, generator=g, dtype=torch.float64)
    gates0 = torch.softmax(torch.randn(batch, experts, generator=g, dtype=torch.float64), -1)
    weight = torch.randn(batch, frames, D_OUT, generator=g, dtype=torch.float64)
    res = {}
    for mode in ("merge", "mix"):
        bank.zero_grad(set_to_none=True)
        x, gates = x0.clone().requires_grad_(), gates0.clone().requires_grad_()
        y = bank.merged(x, gates, mode)
        (y * weight).sum().backward()
        res[mode] = [y, x.grad, gates.grad] + [p.grad for p in bank.parameters()]
    for a, b in zip(res["merge"], res["mix"]):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


def test_smear_cost_model_is_the_counted_matmul_work():
    """smear_multiply_adds: its matmul terms are what torch's FLOP counter counts (2 per
    multiply-add); the mix path adds only the elementwise gate scaling, B*T*E*(D+H)."""
    from torch.utils.flop_counter import FlopCounterMode

    from espnet_llm_asr.projectors.experts import ExpertBank, smear_multiply_adds

    for b, t, e in [(4, 6, 4), (1, 1, 4), (2, 9, 3)]:
        bank = ExpertBank(e, D_IN, HIDDEN, D_OUT)
        x, gates = torch.randn(b, t, D_IN), torch.softmax(torch.randn(b, e), -1)
        cost = smear_multiply_adds(b, t, D_IN, HIDDEN, D_OUT, e)
        counted = {}
        for mode in ("merge", "mix"):
            with FlopCounterMode(display=False) as counter:
                bank.merged(x, gates, mode)
            counted[mode] = counter.get_total_flops()
        assert counted["merge"] == 2 * cost["merge"], (b, t, e)
        assert counted["mix"] == 2 * (cost["mix"] - b * t * e * (D_IN + HIDDEN)), (b, t, e)


def test_smear_cost_model_values():
    from espnet_llm_asr.projectors.experts import smear_multiply_adds

    b, t, d, h, o, e = 8, 100, 1280, 2048, 3584, 4  # the paper's projector, 10 s utterances
    p = d * h + h * o
    cost = smear_multiply_adds(b, t, d, h, o, e)
    assert cost["merge"] == b * e * p + b * e * (h + o) + b * t * p
    assert cost["mix"] == b * t * e * p + b * t * e * (d + h) + b * e * (h + o)
    assert cost["mix"] / cost["merge"] > 3.8  # merging once per utterance wins at 100 frames
    one = smear_multiply_adds(b, 1, d, h, o, e)
    assert one["mix"] < one["merge"]  # one frame per utterance: merging costs more than it saves
    single = smear_multiply_adds(b, t, d, h, o, 1)
    assert single["mix"] < single["merge"]  # one expert: merging is pure overhead


@pytest.mark.parametrize("name", ["smear_moe", "cif_smear"])
@pytest.mark.parametrize("lengths,t_max,experts", [
    (LENGTHS, T_MAX, E), ([3], 3, E), ([4, 2], 5, 2), ([12, 5], 12, 1), ([1], 1, 3)])
def test_smear_auto_picks_what_the_cost_model_says(name, lengths, t_max, experts, monkeypatch):
    from espnet_llm_asr.projectors.experts import ExpertBank, smear_multiply_adds

    calls = []
    for method in ("merged_weights", "mixed_outputs"):
        real = getattr(ExpertBank, method)

        def spy(self, x, gates, _real=real, _method=method):
            calls.append((_method, tuple(x.shape)))
            return _real(self, x, gates)

        monkeypatch.setattr(ExpertBank, method, spy)
    torch.manual_seed(0)
    proj = build_projector(name, D_IN, D_OUT, **dict(SMALL_CONF[name], num_experts=experts)).double().eval()
    assert proj.merge_mode == "auto"
    feats, lens = garbage_batch(lengths=lengths, t_max=t_max)
    out = proj(feats, lens)
    assert len(calls) == 1
    method, (b, t, d) = calls[0]
    cost = smear_multiply_adds(b, t, d, HIDDEN, D_OUT, experts)
    expected = "mixed_outputs" if cost["mix"] < cost["merge"] else "merged_weights"
    assert method == expected, (cost, method)
    assert proj.experts.pick_mode(b, t) == ("mix" if expected == "mixed_outputs" else "merge")
    assert t >= out.embeds.size(1)  # the padded positions the experts ran on
    # forcing a mode calls that one whatever the shapes
    for mode, method in (("merge", "merged_weights"), ("mix", "mixed_outputs")):
        calls.clear()
        proj.merge_mode = mode
        proj(feats, lens)
        assert [c[0] for c in calls] == [method]


def test_smear_auto_takes_both_paths_over_shapes():
    """At the paper's sizes auto merges for any real utterance and mixes only for one position."""
    from espnet_llm_asr.projectors.experts import ExpertBank

    bank = ExpertBank.__new__(ExpertBank)  # only the shapes matter: no 40 M parameters
    torch.nn.Module.__init__(bank)
    bank.w1_dh = torch.nn.Parameter(torch.empty(4, 1280, 2048, device="meta"))
    bank.w2_ho = torch.nn.Parameter(torch.empty(4, 2048, 3584, device="meta"))
    assert bank.pick_mode(8, 100) == "merge"
    assert bank.pick_mode(8, 2) == "merge"
    assert bank.pick_mode(8, 1) == "mix"
    assert bank.pick_mode(1, 1) == "mix"


@pytest.mark.parametrize("name", ["smear_moe", "cif_smear"])
def test_smear_bad_merge_mode_names_the_key(name):
    with pytest.raises(ValueError, match="frontend_conf.merge_mode") as err:
        build_projector(name, D_IN, D_OUT, merge_mode="fuse")
    assert "'fuse'" in str(err.value) and "mix" in str(err.value)
    from espnet_llm_asr.projectors.experts import ExpertBank

    bank = ExpertBank(2, D_IN, HIDDEN, D_OUT)
    with pytest.raises(ValueError, match="merge_mode"):
        bank.merged(torch.zeros(1, 2, D_IN), torch.full((1, 2), 0.5), "both")
