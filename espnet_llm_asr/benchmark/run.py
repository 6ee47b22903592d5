"""The benchmark driver: runs the requested parts and checks the performance goals.

:func:`run_benchmark` runs the parts named in :data:`PARTS` (projectors,
decoding, CIF, dumped features, memory, system level, GPU throughput), adds the machine's
description and load, and :func:`evaluate_goals` compares the measured ratios
with the benchmark's speed goals (the targets below).

Top of the benchmark package: imports common, projectors, system, throughput and asr.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from typing import Dict, List, Optional

from espnet_llm_asr.benchmark.asr import run_asr_parts
from espnet_llm_asr.benchmark.common import BenchSettings, load_average, machine_info
from espnet_llm_asr.benchmark.projectors import bench_projectors
from espnet_llm_asr.benchmark.system import bench_system
from espnet_llm_asr.benchmark.throughput import TRAIN_BATCH, bench_throughput, throughput_goal_values

PARTS = ("projectors", "decoding", "cif", "dumped", "memory", "system", "throughput")


# ---------------------------------------------------------------------- goals
def _goal(name: str, measured: Optional[float], target: float, higher_is_better: bool, note: str = "") -> Dict:
    met = None
    if measured is not None and math.isfinite(measured):
        met = measured >= target if higher_is_better else measured <= target
    return {"goal": name, "target": ("≥ " if higher_is_better else "≤ ") + f"{target:g}",
            "measured": measured, "met": met, "note": note}


def evaluate_goals(results: Dict[str, object]) -> List[Dict[str, object]]:
    """The speed goals, each with its measured ratio and met/missed (None: not measured)."""
    goals = []
    proj = results.get("projectors")
    if proj:
        rows = proj["rows"]
        smear = rows["smear_moe"]["fwd_bwd_s"]
        goals.append(_goal("merging overhead: smear_moe(4) / smear_moe(1 expert), fwd+bwd",
                           smear / rows["smear_moe (1 expert)"]["fwd_bwd_s"], 1.10, False))
        goals.append(_goal("smear_moe / dense, fwd+bwd", smear / rows["dense"]["fwd_bwd_s"], 0.75, False,
                           "multiply-adds alone give 0.59"))
        goals.append(_goal("smear_moe / hard_moe (top-2), fwd+bwd", smear / rows["hard_moe (top-2)"]["fwd_bwd_s"],
                           1.0, False, "multiply-adds alone give 0.82"))
    system = results.get("system")
    if system:
        goals.append(_goal("system level: decoding time smear_moe / mono", system["smear_over_mono"], 1.03, False,
                           system.get("method_short", "")))
    dec = results.get("decoding")
    if dec:
        goals.append(_goal("batch 16 utt/s / batch 1 utt/s (same hypotheses)", dec.get("speedup_16_over_1"), 4.0,
                           True, "hypotheses equal: " + str(dec.get("hypotheses_equal"))))
    cif = results.get("cif")
    if cif:
        goals.append(_goal("stride-5 positions / CIF positions (CIF fitted to the transcripts)",
                           cif.get("reduction_fitted"), 2.0, True,
                           f"untrained CIF: {cif.get('reduction_untrained', float('nan')):.2f}"))
    dumped = results.get("dumped")
    if dumped:
        goals.append(_goal("on-the-fly / dumped step time (default tiny model)",
                           dumped["tiny"]["speedup"], 2.0, True,
                           f"Whisper-large-v3-sized encoder: {dumped['large_v3'].get('speedup', float('nan')):.1f}x"
                           if dumped.get("large_v3") else ""))
    mem = results.get("memory")
    if mem:
        goals.append(_goal("checkpoint size / trainable parameter bytes", mem.get("checkpoint_ratio"), 1.1, False))
    thr = results.get("throughput")
    if thr:
        values = throughput_goal_values(thr)
        where = f"{thr.get('device', '?')}, fast decoding path" if "skipped" not in thr else thr["skipped"]
        goals.append(_goal(f"greedy RTFx at batch {values['top_batch'] or 64} (10 s utterances, papers' sizes)",
                           values["rtfx_top"], 1000.0, True, where))
        goals.append(_goal("greedy RTFx at batch 1", values["rtfx_1"], 30.0, True, where))
        goals.append(_goal(f"training step at batch {TRAIN_BATCH}, on-the-fly encoding (s)", values["train_step_s"],
                           0.2, False, where))
    for g in goals:
        if g["met"] is False and g["measured"] is not None:
            g["missed_by"] = g["measured"] / float(g["target"].split()[-1])
    return goals


# ---------------------------------------------------------------------- driver
def run_benchmark(parts: List[str], settings: BenchSettings) -> Dict[str, object]:
    """Run ``parts`` (names from :data:`PARTS`) and return the results dict (goals included)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown benchmark part(s) {unknown}; valid: {list(PARTS)}")
    if settings.work_dir is None:  # scratch models and features, removed afterwards
        import tempfile

        with tempfile.TemporaryDirectory(prefix="benchmark_") as tmp:
            return run_benchmark(parts, replace(settings, work_dir=tmp))
    start = time.perf_counter()
    meta = machine_info()
    meta["settings"] = asdict(settings)
    meta["date"] = time.strftime("%Y-%m-%d")
    results: Dict[str, object] = {"meta": meta}
    if "projectors" in parts:
        results["projectors"] = bench_projectors(settings)
    if "system" in parts:
        results["system"] = bench_system(settings)
    if "throughput" in parts:
        results["throughput"] = bench_throughput(settings)
    asr_parts = [p for p in ("decoding", "cif", "dumped", "memory") if p in parts]
    if asr_parts:
        results.update(run_asr_parts(asr_parts, settings))
    meta["loadavg_end"] = load_average()
    meta["wall_s"] = time.perf_counter() - start
    loads = [x[0] for x in (meta["loadavg_start"], meta["loadavg_end"]) if x]
    # busy: other jobs were running when the run started, or used more than ~half a core beside its threads
    meta["busy"] = bool(loads) and (loads[0] > 0.5 or max(loads) > meta["torch_threads"] + 0.5)
    results["goals"] = evaluate_goals(results)
    return results
