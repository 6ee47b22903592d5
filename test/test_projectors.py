"""Projector library: sizes, padding invariance, gradients, MoE routing, multi/dense."""
import math

import pytest
import torch

from espnet_llm_asr.projectors import PROJECTOR_CLASSES, AbsProjector, ProjectorOutput, build_projector
from espnet_llm_asr.projectors.blocks import ExpertMLP, SharedDownsampler
from espnet_llm_asr.projectors.mono import MonoProjector

D_IN, D_OUT, HIDDEN, E = 16, 24, 32, 4
SMALL = dict(hidden_dim=HIDDEN)
SMALL_CONF = {
    "linear": SMALL,
    "conv": SMALL,
    "mono": SMALL,
    "multi": dict(SMALL, num_experts=E),
    "dense": dict(SMALL, num_experts=E),
    "hard_moe": dict(SMALL, num_experts=E),
    "smear_moe": dict(SMALL, num_experts=E),
    "cif": SMALL,
    "cif_smear": dict(SMALL, num_experts=E),
}
LENGTHS = [23, 9, 17, 1]
T_MAX = 26  # > max(LENGTHS): every utterance has padding in the batch


def n_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def small(name, seed=0):
    torch.manual_seed(seed)
    return build_projector(name, D_IN, D_OUT, **SMALL_CONF[name]).double()


def garbage_batch(lengths=LENGTHS, t_max=T_MAX, seed=1):
    """(B, T, D_IN) float64 features with randn*100 garbage beyond the lengths."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(lengths), t_max, D_IN, generator=g, dtype=torch.float64)
    lens = torch.tensor(lengths)
    pad = torch.arange(t_max)[None, :] >= lens[:, None]
    feats[pad] = 100 * torch.randn(int(pad.sum()), D_IN, generator=g, dtype=torch.float64)
    return feats, lens


def extra_inputs(name, batch):
    kw = {}
    if PROJECTOR_CLASSES[name].needs_lang_ids:
        kw["lang_ids"] = torch.arange(batch) % E
    if PROJECTOR_CLASSES[name].uses_target_lengths:
        kw["target_lengths"] = torch.tensor([5, 3, 8, 2, 4, 6][:batch])
    return kw


# ---------------------------------------------------------------- real sizes
REAL_COUNTS = {
    "linear": 20_452_864,
    "conv": 35_735_552,
    "mono": 18_160_384,
    "multi": 72_641_536,
    "dense": 72_641_536 + 4,
    "hard_moe": 52_983_300,
    "smear_moe": 52_983_300,
}


@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_real_size_parameter_counts(name):
    proj = build_projector(name, 1280, 3584)
    assert n_params(proj) == REAL_COUNTS[name]
    assert proj.output_size() == 3584


def test_real_size_building_blocks():
    assert n_params(ExpertMLP(1280, 2048, 3584)) == 9_967_104
    assert n_params(SharedDownsampler(1280)) == 13_109_760
    smear = build_projector("smear_moe", 1280, 3584)
    assert n_params(smear.gate.router) == 5_124
    assert n_params(smear.experts) == 4 * 9_967_104


def test_cif_real_size_counts():
    # depthwise k3 conv (1280*3 + 1280) + Linear(1280, 1) + expert MLP
    pred = 1280 * 3 + 1280 + 1281
    assert n_params(build_projector("cif", 1280, 3584)) == pred + 9_967_104
    assert n_params(build_projector("cif_smear", 1280, 3584)) == pred + 5_124 + 4 * 9_967_104


# ---------------------------------------------------------------- factory
def test_registry_and_flags():
    assert set(PROJECTOR_CLASSES) == {
        "linear", "conv", "mono", "multi", "dense", "hard_moe", "smear_moe", "cif", "cif_smear"}
    needs = {n for n, c in PROJECTOR_CLASSES.items() if c.needs_lang_ids}
    cif = {n for n, c in PROJECTOR_CLASSES.items() if c.uses_target_lengths}
    assert needs == {"multi"}
    assert cif == {"cif", "cif_smear"}
    for name in PROJECTOR_CLASSES:
        proj = small(name)
        assert isinstance(proj, AbsProjector) and proj.output_size() == D_OUT


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="smear_moe") as err:
        build_projector("smear", D_IN, D_OUT)
    assert "'smear'" in str(err.value) and "cif_smear" in str(err.value)


def test_unknown_conf_key_is_named():
    with pytest.raises(TypeError, match="top_kk"):
        build_projector("hard_moe", D_IN, D_OUT, top_kk=2)
    with pytest.raises(TypeError, match="num_experts"):
        build_projector("mono", D_IN, D_OUT, num_experts=4)
    with pytest.raises(TypeError, match="top_k"):
        build_projector("smear_moe", D_IN, D_OUT, top_k=1)


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="top_k"):
        build_projector("hard_moe", D_IN, D_OUT, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="temperature"):
        build_projector("smear_moe", D_IN, D_OUT, temperature=0.0)
    proj = small("mono")
    with pytest.raises(ValueError, match="feats"):
        proj(torch.zeros(2, 10, D_IN + 1, dtype=torch.float64), torch.tensor([10, 5]))
    with pytest.raises(ValueError, match="feats_lengths"):
        proj(torch.zeros(2, 10, D_IN, dtype=torch.float64), torch.tensor([11, 5]))
    with pytest.raises(ValueError, match="feats_lengths"):
        proj(torch.zeros(2, 10, D_IN, dtype=torch.float64), torch.tensor([10]))


# ---------------------------------------------------------------- output contract
@pytest.mark.parametrize("name", sorted(PROJECTOR_CLASSES))
@pytest.mark.parametrize("training", [True, False])
def test_output_contract_and_zero_padding(name, training):
    proj = small(name).train(training)
    feats, lens = garbage_batch()
    out = proj(feats, lens, **extra_inputs(name, len(LENGTHS)))
    assert isinstance(out, ProjectorOutput)
    b, t_out, d = out.embeds.shape
    assert (b, d) == (len(LENGTHS), D_OUT)
    assert out.lengths.dtype == torch.long and out.lengths.shape == (b,)
    assert int(out.lengths.max()) == t_out and bool((out.lengths >= 1).all())
    beyond = torch.arange(t_out)[None, :] >= out.lengths[:, None]
    assert bool((out.embeds[beyond] == 0).all())
    assert torch.isfinite(out.embeds).all()
    # the last real vector is not the zero padding (hard_moe in training may drop
    # frames over capacity to zero, by design: tested separately)
    if not (name == "hard_moe" and training):
        last = out.embeds[torch.arange(b), out.lengths - 1]
        assert bool((last.abs().sum(-1) > 0).all())
    assert out.aux_loss.dim() == 0 and out.aux_loss.dtype == out.embeds.dtype
    if name in ("smear_moe", "cif_smear", "dense", "hard_moe"):
        assert out.gates.shape == (b, E)
        if not (name == "hard_moe" and training):  # capacity may drop a frame's every choice
            torch.testing.assert_close(out.gates.sum(-1), torch.ones(b, dtype=out.gates.dtype))
    else:
        assert out.gates is None
    if PROJECTOR_CLASSES[name].uses_target_lengths:
        assert out.alphas.shape == feats.shape[:2]
        pad = torch.arange(T_MAX)[None, :] >= lens[:, None]
        assert bool((out.alphas[pad] == 0).all())
    else:
        assert out.alphas is None
    if name not in ("hard_moe", "smear_moe", "cif", "cif_smear"):
        assert float(out.aux_loss.detach()) == 0.0


@pytest.mark.parametrize("name", ["linear", "mono", "multi", "dense", "hard_moe", "smear_moe"])
def test_fixed_rate_length_rule(name):
    out = small(name)(*garbage_batch(), **extra_inputs(name, len(LENGTHS)))
    assert out.lengths.tolist() == [math.ceil(n / 5) for n in LENGTHS]
    assert out.embeds.size(1) == math.ceil(max(LENGTHS) / 5)  # trimmed to max(lengths)


def test_conv_hidden_dim_default_is_input_dim():
    assert build_projector("conv", D_IN, D_OUT).linear1.out_features == D_IN
    assert build_projector("conv", D_IN, D_OUT, hidden_dim=HIDDEN).linear1.out_features == HIDDEN


def test_conv_length_rule():
    out = small("conv")(*garbage_batch())
    assert out.lengths.tolist() == [math.ceil(n / 4) for n in LENGTHS]


# ---------------------------------------------------------------- padding invariance
INVARIANT = [n for n in PROJECTOR_CLASSES if n != "hard_moe"]


def _check_padding_invariance(proj, name, with_targets):
    feats, lens = garbage_batch()
    kw = extra_inputs(name, len(LENGTHS))
    if not with_targets:
        kw.pop("target_lengths", None)
    batched = proj(feats, lens, **kw)
    for b, n in enumerate(LENGTHS):
        kw_b = {k: v[b:b + 1] for k, v in kw.items()}
        alone = proj(feats[b:b + 1, :n], lens[b:b + 1], **kw_b)
        m = int(alone.lengths[0])
        assert int(batched.lengths[b]) == m, (name, b)
        torch.testing.assert_close(batched.embeds[b, :m], alone.embeds[0], atol=1e-5, rtol=1e-5)
        if alone.gates is not None:
            torch.testing.assert_close(batched.gates[b], alone.gates[0], atol=1e-8, rtol=1e-8)
        if alone.alphas is not None:
            torch.testing.assert_close(batched.alphas[b, :n], alone.alphas[0], atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", INVARIANT)
def test_padding_invariance_inference(name):
    _check_padding_invariance(small(name).eval(), name, with_targets=False)


@pytest.mark.parametrize("name", ["cif", "cif_smear", "smear_moe", "mono"])
def test_padding_invariance_training(name):
    # CIF names fire exactly target_lengths in training mode
    _check_padding_invariance(small(name).train(), name, with_targets=True)


def test_hard_moe_without_capacity_is_padding_invariant_at_eval():
    # documented: capacity is a training-time limit unless eval_capacity_factor is set
    _check_padding_invariance(small("hard_moe").eval(), "hard_moe", with_targets=False)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", sorted(PROJECTOR_CLASSES))
def test_gradients_reach_every_parameter_not_the_frozen_input(name):
    proj = small(name).train()
    feats, lens = garbage_batch(lengths=[26, 25, 20, 24], t_max=26)
    assert not feats.requires_grad
    out = proj(feats, lens, **extra_inputs(name, 4))
    weight = torch.randn(out.embeds.shape, generator=torch.Generator().manual_seed(3), dtype=out.embeds.dtype)
    ((out.embeds * weight).sum() + 10 * out.aux_loss).backward()
    assert feats.grad is None
    for pname, p in proj.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        if name == "hard_moe" and pname.startswith("experts."):
            # every expert was picked by some frame: each expert slice gets gradient
            per_expert = p.grad.flatten(1).abs().sum(1)
            assert bool((per_expert > 0).all()), f"{name}: an expert got no gradient in {pname}"
        assert float(p.grad.abs().sum()) > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", sorted(PROJECTOR_CLASSES))
def test_nan_padding_never_reaches_outputs_or_gradients(name):
    proj = small(name).train()
    feats, lens = garbage_batch()
    pad = torch.arange(T_MAX)[None, :] >= lens[:, None]
    feats[pad] = float("nan")
    feats[0, -1] = float("inf")
    out = proj(feats, lens, **extra_inputs(name, len(LENGTHS)))
    assert bool(torch.isfinite(out.embeds).all()) and bool(torch.isfinite(out.aux_loss))
    (out.embeds.sum() + out.aux_loss).backward()
    for pname, p in proj.named_parameters():
        assert p.grad is None or bool(torch.isfinite(p.grad).all()), f"{name}: non-finite grad in {pname}"


@pytest.mark.parametrize("name", sorted(PROJECTOR_CLASSES))
def test_empty_utterance_and_empty_batch(name):
    proj = small(name).train()
    feats, _ = garbage_batch(lengths=[11, 0], t_max=11)
    kw = extra_inputs(name, 2)
    out = proj(feats, torch.tensor([11, 0]), **kw)
    assert int(out.lengths[1]) == 0 and int(out.lengths[0]) > 0
    assert bool((out.embeds[1] == 0).all()) and bool(torch.isfinite(out.embeds).all())
    out = proj(feats[:, :0], torch.tensor([0, 0]), **kw)
    assert out.embeds.shape == (2, 0, D_OUT) and out.lengths.tolist() == [0, 0]


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


def test_expert_bank_init_draws_like_linear_and_loads_the_old_layout():
    """Input-major weights: same seeded values as (out, in) weights drawn like
    torch.nn.Linear, and a state dict of the earlier (E, H, D) layout loads."""
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
    fresh = ExpertBank(E, 6, 10, 7).double()
    fresh.load_state_dict(old)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    gates = torch.softmax(torch.randn(2, E, dtype=torch.float64), -1)
    torch.testing.assert_close(fresh.merged(x, gates, "merge"), bank.merged(x, gates, "merge"))
    torch.testing.assert_close(fresh.expert(x, 1), bank.expert(x, 1))


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
    torch.testing.assert_close(r.combine.sum(-1)[r.kept.any(-1)], torch.ones(int(r.kept.any(-1).sum()),
                                                                              dtype=torch.float64))
    # eval: no capacity by default
    r_eval = proj.eval().route(frames)
    assert r_eval.capacity is None and bool(r_eval.kept.all())


def test_hard_moe_over_capacity_keeps_other_choice_renormalised():
    proj = _hard_moe().train()
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


def test_hard_moe_saturated_router_keeps_gradients_finite():
    """A frame whose first choice overflowed keeps a second choice of tiny probability: its weight
    is 1, and the gradient through the renormalisation stays finite (measured: a saturated router
    gave NaN gradients and stopped a training run at epoch 6).  float32, as in training."""
    proj = _hard_moe().float().train()
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
