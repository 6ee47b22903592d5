"""Projector library: real sizes, factory, output contract, padding invariance, gradients."""
import math

import pytest
import torch

from espnet_llm_asr.projectors import PROJECTOR_CLASSES, AbsProjector, ProjectorOutput, build_projector
from espnet_llm_asr.projectors.blocks import ExpertMLP, SharedDownsampler
from projector_setup import D_IN, D_OUT, E, HIDDEN, LENGTHS, T_MAX, extra_inputs, garbage_batch, n_params, small


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
