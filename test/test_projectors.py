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
        w1 = sum(g[e] * ex.w1[e] for e in range(E))
        b1 = sum(g[e] * ex.b1[e] for e in range(E))
        w2 = sum(g[e] * ex.w2[e] for e in range(E))
        b2 = sum(g[e] * ex.b2[e] for e in range(E))
        h = torch.relu(torch.relu(x[b, :m]) @ w1.T + b1)
        torch.testing.assert_close(out.embeds[b, :m], h @ w2.T + b2)
    # load balance: 0.2 * MSE(mean prob over all real frames, 1/E)
    real = torch.cat([probs[b, :m] for b, m in enumerate(x_lens.tolist())])
    expected = 0.2 * ((real.mean(0) - 1 / E) ** 2).mean()
    torch.testing.assert_close(out.aux_loss, expected)


def test_smear_every_expert_gets_gradient_from_one_batch():
    proj = _smear()
    feats, lens = garbage_batch()
    out = proj(feats, lens)
    out.embeds.square().sum().backward()
    for pname in ("w1", "b1", "w2", "b2"):
        grad = getattr(proj.experts, pname).grad
        assert bool((grad.flatten(1).abs().sum(1) > 0).all()), pname
    assert float(proj.gate.router.weight.grad.abs().sum()) > 0


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
