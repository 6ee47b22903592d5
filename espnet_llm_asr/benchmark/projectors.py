"""Part 1 of the benchmark: the cost of every projector at real sizes (fp32, CPU).

Per projector row (:data:`PROJECTOR_ROWS`, built by
:func:`build_benchmark_projectors`): parameters, output positions per
utterance, forward-only and forward+backward wall time, peak memory growth and
FLOPs, and ratios to mono.  The naive SMEAR variants (:class:`NaiveSmear`)
measure what the merged implementation saves; the two ``merge_mode`` rows
time SMEAR's two exact formulations (``smear_moe`` itself runs ``auto``: the
one with fewer multiply-adds for the shapes, merging at these).

* Time: best of ``repeats`` runs, the first run (which also counts FLOPs and
  memory) included; the projectors are measured round-robin (every projector
  once per round), so a load change hits all of them alike.
* Peak memory: :func:`~espnet_llm_asr.benchmark.common.peak_rss_increase`.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the first call
  (matmuls and convolutions, 2 per multiply-add).

Imports only :mod:`espnet_llm_asr.benchmark.common`.
"""
from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Tuple

import torch

from espnet_llm_asr.benchmark.common import (BenchSettings, ProjectorSizes, best_time, mmap_large_allocations,
                                             peak_rss_increase)
from espnet_llm_asr.projectors import AbsProjector, ProjectorOutput, build_projector
from espnet_llm_asr.projectors.smear_moe import SmearMoEProjector

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- naive SMEAR
class NaiveSmear(AbsProjector):
    """SMEAR computed the naive way, sharing the weights of a :class:`SmearMoEProjector`.

    ``mode="loop"``: one merged MLP per utterance in a Python loop (each
    utterance builds its own (H, D) and (O, H) virtual weights); same output as
    the merged batch implementation.
    ``mode="mix"``: every expert runs on every frame and the E outputs are mixed
    with the utterance gates: E times the MLP compute (the output-mixing soft
    MoE, which is NOT SMEAR's function; included for its cost).
    (B, T, D) -> (B, ceil(T/5), O).
    """

    def __init__(self, base: SmearMoEProjector, mode: str = "loop"):
        super().__init__(base.input_dim, base.output_dim)
        if mode not in ("loop", "mix"):
            raise ValueError(f"mode must be 'loop' or 'mix', got {mode!r}")
        self.base = base
        self.mode = mode

    def project(self, feats, feats_lengths, lang_ids=None, target_lengths=None) -> ProjectorOutput:
        base = self.base
        x, lengths = base.downsampler(feats, feats_lengths)
        gates, aux = base.gate(x, lengths)
        bank = base.experts
        if self.mode == "mix":
            y = sum(gates[:, e, None, None] * bank.expert(x, e) for e in range(bank.num_experts))
        else:
            rows = []
            for b in range(x.size(0)):
                g = gates[b]
                w1 = torch.einsum("e,edh->dh", g, bank.w1_dh)
                w2 = torch.einsum("e,eho->ho", g, bank.w2_ho)
                h = torch.relu(x[b]) @ w1 + g @ bank.b1
                rows.append(torch.relu(h) @ w2 + g @ bank.b2)
            y = torch.stack(rows)
        return ProjectorOutput(y, lengths, aux, gates=gates)


# ---------------------------------------------------------------------- part 1: projectors
#: benchmark row -> (projector name, extra conf); rows with None are NaiveSmear variants
PROJECTOR_ROWS: List[Tuple[str, Optional[str], Dict]] = [
    ("mono", "mono", {}),
    ("linear", "linear", {}),
    ("conv", "conv", {}),
    ("multi", "multi", {"num_experts": None}),
    ("dense", "dense", {"num_experts": None}),
    ("hard_moe (top-2)", "hard_moe", {"num_experts": None, "top_k": 2}),
    ("smear_moe", "smear_moe", {"num_experts": None}),
    ("smear_moe (1 expert)", "smear_moe", {"num_experts": 1}),
    ("smear_moe, weights merged (merge_mode: merge)", "smear_moe", {"num_experts": None, "merge_mode": "merge"}),
    ("smear_moe, layer outputs mixed (merge_mode: mix)", "smear_moe", {"num_experts": None, "merge_mode": "mix"}),
    ("smear naive: loop over utterances", None, {"mode": "loop"}),
    ("smear naive: all experts, then mix", None, {"mode": "mix"}),
    ("cif", "cif", {}),
    ("cif_smear", "cif_smear", {"num_experts": None}),
]


def build_benchmark_projectors(sizes: ProjectorSizes, seed: int = 0) -> Dict[str, AbsProjector]:
    """Every row of :data:`PROJECTOR_ROWS` at ``sizes`` (the naive SMEARs share smear_moe's weights)."""
    torch.manual_seed(seed)
    out: Dict[str, AbsProjector] = {}
    for row, name, conf in PROJECTOR_ROWS:
        if name is None:
            out[row] = NaiveSmear(out["smear_moe"], **conf)
            continue
        conf = {k: (sizes.num_experts if v is None else v) for k, v in conf.items()}
        if name != "conv":
            conf["hidden_dim"] = sizes.hidden_dim
        out[row] = build_projector(name, sizes.input_dim, sizes.output_dim, **conf)
    return out


def projector_inputs(sizes: ProjectorSizes, tokens_per_second: float, seed: int = 0) -> Dict[str, torch.Tensor]:
    """feats (B, T, D) fp32, lengths (B,) all T, lang_ids (B,) cycling over the experts,
    target_lengths (B,) = ceil(T / 50 * tokens_per_second) (CIF training targets)."""
    g = torch.Generator().manual_seed(seed)
    b, t = sizes.batch, sizes.frames
    return {
        "feats": torch.randn(b, t, sizes.input_dim, generator=g),
        "lengths": torch.full((b,), t, dtype=torch.long),
        "lang_ids": torch.arange(b) % sizes.num_experts,
        "target_lengths": torch.full((b,), max(1, math.ceil(t / 50 * tokens_per_second)), dtype=torch.long),
    }


def _projector_calls(proj: AbsProjector, inputs: Dict[str, torch.Tensor]):
    """(forward-only, forward+backward, zero-grads) closures for one projector."""
    kwargs = {}
    if proj.needs_lang_ids:
        kwargs["lang_ids"] = inputs["lang_ids"]
    params = [p for p in proj.parameters() if p.requires_grad]

    def forward():
        proj.eval()
        with torch.no_grad():
            return proj(inputs["feats"], inputs["lengths"], **kwargs).lengths

    def forward_backward():
        proj.train()
        targets = inputs["target_lengths"] if proj.uses_target_lengths else None
        out = proj(inputs["feats"], inputs["lengths"], target_lengths=targets, **kwargs)
        (out.embeds.sum() + out.aux_loss).backward()

    def zero_grads():
        for p in params:
            p.grad = None

    return forward, forward_backward, zero_grads


def _measured_call(fn: Callable[[], object]) -> Tuple[int, Optional[int], float]:
    """One call of ``fn``: (FLOPs, peak RSS growth in bytes, wall seconds)."""
    from torch.utils.flop_counter import FlopCounterMode

    box = {}

    def run():
        with FlopCounterMode(display=False) as counter:
            start = time.perf_counter()
            fn()
            box["t"] = time.perf_counter() - start
        box["flops"] = int(counter.get_total_flops())

    peak = peak_rss_increase(run)
    return box["flops"], peak, box["t"]


def bench_projectors(settings: BenchSettings) -> Dict[str, object]:
    """Part 1: every projector at ``settings.sizes``, fp32 on CPU.

    Per row: parameters, output positions per utterance, forward-only (eval,
    no_grad) and forward+backward (train mode, CIF with target lengths) time,
    peak memory and FLOPs, and ratios to mono.
    """
    sizes = settings.sizes
    logger.info("projectors: sizes %s", asdict(sizes))
    mem_ok = mmap_large_allocations()
    projs = build_benchmark_projectors(sizes)
    inputs = projector_inputs(sizes, settings.tokens_per_second)
    rows: Dict[str, Dict[str, object]] = {}
    calls = {}
    for row, proj in projs.items():
        fwd, fwd_bwd, zero = calls[row] = _projector_calls(proj, inputs)
        own = proj.parameters() if not isinstance(proj, NaiveSmear) else proj.base.parameters()
        rows[row] = {"params": sum(p.numel() for p in own), "fwd_s": math.inf, "fwd_bwd_s": math.inf}
    for rep in range(max(1, settings.repeats)):  # round-robin: a load change hits every row alike
        logger.info("projectors: round %d/%d%s", rep + 1, settings.repeats,
                    " (also FLOPs and peak memory)" if rep == 0 else "")
        for row in projs:
            fwd, fwd_bwd, zero = calls[row]
            r = rows[row]
            if rep == 0:  # first call of each: FLOPs and memory too (timed as well; the minimum is kept)
                r["positions_per_utt"] = float(fwd().float().mean())
                r["fwd_flops"], r["fwd_peak_bytes"], t = _measured_call(fwd)
                r["fwd_s"] = min(r["fwd_s"], t)
                zero()
                r["fwd_bwd_flops"], r["fwd_bwd_peak_bytes"], t = _measured_call(fwd_bwd)
                r["fwd_bwd_s"] = min(r["fwd_bwd_s"], t)
            else:
                r["fwd_s"] = min(r["fwd_s"], best_time(fwd, 1))
                r["fwd_bwd_s"] = min(r["fwd_bwd_s"], best_time(fwd_bwd, 1, before=zero))
            zero()
    mono = rows["mono"]
    for r in rows.values():
        for key in ("fwd_s", "fwd_bwd_s", "fwd_peak_bytes", "fwd_bwd_peak_bytes", "fwd_flops", "fwd_bwd_flops"):
            r[key.replace("_s", "_ratio") if key.endswith("_s") else key + "_ratio"] = (
                r[key] / mono[key] if r[key] is not None and mono[key] else None)
    del projs, calls
    gc.collect()
    return {"sizes": asdict(sizes), "dtype": "float32", "memory_method_available": mem_ok,
            "cif_train_targets_per_utt": int(inputs["target_lengths"][0]), "rows": rows}
