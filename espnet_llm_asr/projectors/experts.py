"""A bank of E expert MLPs stored as stacked weights, and SMEAR's utterance gate.

Stacking lets SMEAR merge the experts with one contraction over E per layer
(no per-expert module, no weight copy), or run them all in one matmul per layer
and mix their outputs (the exact alternative, cheaper only for very short
inputs; :func:`smear_multiply_adds`), and lets a hard MoE call single experts.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from espnet_llm_asr.projectors.blocks import ExpertMLP
from espnet_llm_asr.projectors.masking import masked_mean, valid_mask

#: SMEAR formulations of :meth:`ExpertBank.merged` (``merge_mode`` in the frontend_conf)
MERGE_MODES = ("auto", "merge", "mix")


def check_merge_mode(mode: str, key: str = "merge_mode") -> str:
    """``mode`` if it is one of :data:`MERGE_MODES`; a ValueError naming ``key`` otherwise."""
    if mode not in MERGE_MODES:
        raise ValueError(f"{key}: unknown SMEAR formulation {mode!r}; choose one of {list(MERGE_MODES)}")
    return mode


def smear_multiply_adds(batch: int, frames: int, in_dim: int, hidden_dim: int, out_dim: int,
                        num_experts: int) -> Dict[str, int]:
    """Forward multiply-adds of SMEAR's two exact formulations (an elementwise
    multiplication counts as one).

    With B = batch, T = frames (padded), D, H, O the expert sizes, E experts and
    P = D*H + H*O the multiply-adds of one expert on one frame:

    * ``merge`` (:meth:`ExpertBank.merged_weights`): the weight contractions
      ``(B, E) x (E, H, D)`` and ``(B, E) x (E, O, H)``, B*E*P; the biases,
      B*E*(H + O); the batched matmuls, B*T*P.
      Total ``B*E*P + B*E*(H + O) + B*T*P``.
    * ``mix`` (:meth:`ExpertBank.mixed_outputs`): scaling the (B, T, D) input
      and the (B, T, H) hidden by each gate, B*T*E*(D + H); the matmuls over
      the E stacked experts, B*T*E*P; the biases, B*E*(H + O).
      Total ``B*T*E*P + B*T*E*(D + H) + B*E*(H + O)``.

    The biases cost the same in both.  The backward pass costs twice the
    forward in both (a gradient for the input and one for the weights of every
    contraction), so the forward count also decides forward+backward.  Merging
    pays once per utterance and mixing once per frame per expert: mixing is
    cheaper only for about one frame per utterance (T < E / (E - 1)) or a
    single expert.

    Returns:
        ``{"merge": int, "mix": int}``.
    """
    b, t, d, h, o, e = batch, frames, in_dim, hidden_dim, out_dim, num_experts
    per_frame = d * h + h * o
    biases = b * e * (h + o)
    return {"merge": b * e * per_frame + biases + b * t * per_frame,
            "mix": b * t * e * per_frame + b * t * e * (d + h) + biases}


def _gate_scaled(a: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """(B, T, C) inputs, (B, E) gates -> (B, T, E*C): the input repeated E times, copy m times g_m."""
    b, t, c = a.shape
    return (a.unsqueeze(2) * gates[:, None, :, None]).reshape(b, t, gates.size(1) * c)


class ExpertBank(torch.nn.Module):
    """E experts of the form ReLU -> Linear(D, H) -> ReLU -> Linear(H, O).

    Parameters: w1_dh (E, D, H), b1 (E, H), w2_ho (E, H, O), b2 (E, O): the
    weights input-major (``x @ w``, the transpose of ``torch.nn.Linear``'s
    (out, in)), so that a merged (B, D, H) weight and its gradient are
    contiguous for the batched matmul and the merge never copies or permutes
    weights (faster than (out, in) weights merged by einsum: the projector
    benchmark's notes, espnet_llm_asr/benchmark/README.md).  Each expert is initialised like ``torch.nn.Linear``,
    drawing its values in Linear's (out, in) order; same count as E :class:`ExpertMLP`.
    """

    def __init__(self, num_experts: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.num_experts = num_experts
        self.w1_dh = torch.nn.Parameter(torch.empty(num_experts, in_dim, hidden_dim))
        self.b1 = torch.nn.Parameter(torch.empty(num_experts, hidden_dim))
        self.w2_ho = torch.nn.Parameter(torch.empty(num_experts, hidden_dim, out_dim))
        self.b2 = torch.nn.Parameter(torch.empty(num_experts, out_dim))
        self.reset_parameters()

    @property
    def dims(self) -> Tuple[int, int, int, int]:
        """(E, D, H, O)."""
        e, d, h = self.w1_dh.shape
        return e, d, h, self.w2_ho.size(2)

    def reset_parameters(self) -> None:
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, as ``torch.nn.Linear``."""
        with torch.no_grad():
            for w, b in ((self.w1_dh, self.b1), (self.w2_ho, self.b2)):
                bound = 1.0 / math.sqrt(w.size(1))
                out_in = torch.empty(w.size(0), w.size(2), w.size(1), dtype=w.dtype, device=w.device)
                w.copy_(out_in.uniform_(-bound, bound).transpose(1, 2))
                b.uniform_(-bound, bound)

    def expert(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Run expert ``e``: (..., D) -> (..., O)."""
        h = torch.relu(x) @ self.w1_dh[e] + self.b1[e]
        return torch.relu(h) @ self.w2_ho[e] + self.b2[e]

    def merged(self, x: torch.Tensor, gates: torch.Tensor, mode: str = "auto") -> torch.Tensor:
        """SMEAR: one pass of the per-utterance virtual expert sum_m g_m * expert_m's weights.

        Two exact formulations compute it (see :func:`smear_multiply_adds`):
        ``"merge"`` (:meth:`merged_weights`) and ``"mix"``
        (:meth:`mixed_outputs`); ``"auto"`` takes the one with fewer
        multiply-adds for these shapes (:meth:`pick_mode`).

        Args:
            x: (B, T, D) frames.
            gates: (B, E) merge weights.
            mode: ``"auto"`` | ``"merge"`` | ``"mix"``.
        Returns:
            (B, T, O).
        """
        mode = check_merge_mode(mode)
        if mode == "auto":
            mode = self.pick_mode(x.size(0), x.size(1))
        return self.mixed_outputs(x, gates) if mode == "mix" else self.merged_weights(x, gates)

    def pick_mode(self, batch: int, frames: int) -> str:
        """``"mix"`` when it needs fewer multiply-adds than ``"merge"`` for (batch, frames), else ``"merge"``."""
        e, d, h, o = self.dims
        cost = smear_multiply_adds(batch, frames, d, h, o, e)
        return "mix" if cost["mix"] < cost["merge"] else "merge"

    def merged_weights(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """SMEAR by merging the weights: each utterance's virtual expert is built
        (one (B, E) x (E, D*H) matmul per layer), then applied with a batched matmul.

        Args:
            x: (B, T, D) frames.
            gates: (B, E) merge weights.
        Returns:
            (B, T, O).
        """
        gates = gates.to(self.w1_dh.dtype)
        b = gates.size(0)
        e, d, h_dim, o = self.dims
        w1 = (gates @ self.w1_dh.reshape(e, d * h_dim)).view(b, d, h_dim)  # (B, D, H)
        w2 = (gates @ self.w2_ho.reshape(e, h_dim * o)).view(b, h_dim, o)  # (B, H, O)
        b1 = (gates @ self.b1).unsqueeze(1)  # (B, 1, H)
        b2 = (gates @ self.b2).unsqueeze(1)  # (B, 1, O)
        h = torch.baddbmm(b1, torch.relu(x), w1)
        return torch.baddbmm(b2, torch.relu(h), w2)

    def mixed_outputs(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """SMEAR by running every expert and mixing their outputs, one layer at a time.

        Each layer is linear in its weights, so for layer 1
        ``sum_m g_m (W1_m a + b1_m) = (sum_m g_m W1_m) a + sum_m g_m b1_m``: mixing
        the E experts' layer-1 outputs gives the merged layer's output exactly;
        the ReLU comes after the mixing, then layer 2 likewise.  (Mixing the
        outputs of whole expert MLPs would not be SMEAR: the ReLU is not linear.)
        The mixing is folded into one matmul per layer: the input is repeated
        E times, each copy scaled by its gate, (B, T, E*D), and multiplied by the
        E experts' weights stacked along the input, (E*D, H) (a view of the
        (E, D, H) parameter); the contraction over E*D sums the E scaled outputs.

        Args:
            x: (B, T, D) frames.
            gates: (B, E) mixing weights.
        Returns:
            (B, T, O).
        """
        gates = gates.to(self.w1_dh.dtype)
        e, d, h_dim, o = self.dims
        w1 = self.w1_dh.reshape(e * d, h_dim)  # (E*D, H): [W1_1; ...; W1_E]
        w2 = self.w2_ho.reshape(e * h_dim, o)  # (E*H, O)
        h = _gate_scaled(torch.relu(x), gates) @ w1 + (gates @ self.b1).unsqueeze(1)  # (B, T, H)
        return _gate_scaled(torch.relu(h), gates) @ w2 + (gates @ self.b2).unsqueeze(1)  # (B, T, O)

    @torch.no_grad()
    def load_expert_(self, e: int, mlp: ExpertMLP) -> None:
        """Copy an :class:`ExpertMLP`'s weights into expert ``e`` (tests, warm starts)."""
        self.w1_dh[e].copy_(mlp.linear1.weight.t())
        self.b1[e].copy_(mlp.linear1.bias)
        self.w2_ho[e].copy_(mlp.linear2.weight.t())
        self.b2[e].copy_(mlp.linear2.bias)


class SmearGate(torch.nn.Module):
    """Utterance-level SMEAR gate with its load-balance loss.

    Frame router Linear(D, E), softmax(logits / temperature) per frame; the gate
    of an utterance is the mean of its REAL frames' probabilities, so padding
    does not change it.  Load-balance loss: ``weight * MSE(P, 1/E)`` with P the
    mean router probability per expert over all real frames of the batch.

    Args:
        dim: frame size D.
        num_experts: E.
        temperature: softmax temperature (> 0).
        load_balance_weight: weight of the (returned, already weighted) loss.
    """

    def __init__(self, dim: int, num_experts: int, temperature: float = 1.0,
                 load_balance_weight: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.router = torch.nn.Linear(dim, num_experts)
        self.num_experts = num_experts
        self.temperature = temperature
        self.load_balance_weight = load_balance_weight

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B,) -> gates (B, E) (rows sum to 1; uniform for an empty utterance),
        weighted load-balance loss (scalar)."""
        probs = torch.softmax(self.router(x) / self.temperature, dim=-1)  # (B, T, E)
        gates = masked_mean(probs, lengths)
        uniform = 1.0 / self.num_experts
        gates = torch.where((lengths > 0).unsqueeze(1), gates, torch.full_like(gates, uniform))
        real = probs[valid_mask(lengths, x.size(1))]  # (N, E)
        if real.size(0) == 0:
            return gates, x.new_zeros(())
        usage = real.mean(dim=0)
        return gates, self.load_balance_weight * F.mse_loss(usage, torch.full_like(usage, uniform))
