"""Shared sizes and inputs of the projector tests (test_projectors*.py)."""
import torch

from espnet_llm_asr.projectors import PROJECTOR_CLASSES, build_projector


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
