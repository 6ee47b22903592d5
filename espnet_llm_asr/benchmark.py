"""Performance benchmark: projector cost, decoding, CIF, dumped features, memory, system level.

Driven by ``python -m espnet_llm_asr.bin.benchmark``; every part can run alone
(``--parts``) and ``--quick`` shrinks every size so the whole run takes seconds
(the test uses it).  Results are one JSON-able dict::

    {"meta": {...machine, load, threads, settings...},
     "projectors": {...}, "decoding": {...}, "cif": {...}, "dumped": {...},
     "memory": {...}, "system": {...}, "goals": [...]}

Methods (also written into the README section):

* Time: best (minimum) of ``repeats`` wall-clock runs (projectors: the first
  run, which also counts FLOPs and memory, included; elsewhere after a
  warm-up); on a machine shared with other jobs the minimum is the least
  disturbed estimate.  The projectors are measured round-robin (every projector once per
  round), so a load change hits all of them alike.
* Peak memory (CPU): the kernel's resident-set high-water mark (``VmHWM``) is
  reset through ``/proc/self/clear_refs`` before the measured call and read
  after it; the figure is the peak minus the resident size before the call
  (parameters and inputs already resident are not counted; gradients created
  by the backward pass are).  glibc is told to serve every allocation above
  128 KiB with ``mmap`` (``mallopt(M_MMAP_THRESHOLD)``, its initial default,
  without the dynamic raise), so a freed tensor leaves the resident set at
  once and the next one cannot hide in recycled heap.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the first call
  (matmuls and convolutions, 2 per multiply-add).

The ASR parts (decoding, CIF, dumped features, training memory) live in
:mod:`espnet_llm_asr.benchmark_asr`; the real-size system estimate in
:mod:`espnet_llm_asr.benchmark_system`.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_llm_asr.projectors import AbsProjector, ProjectorOutput, build_projector
from espnet_llm_asr.projectors.smear_moe import SmearMoEProjector

logger = logging.getLogger(__name__)

PARTS = ("projectors", "decoding", "cif", "dumped", "memory", "system")
README_BEGIN = "<!-- benchmark:begin -->"
README_END = "<!-- benchmark:end -->"


# ---------------------------------------------------------------------- settings
@dataclass
class ProjectorSizes:
    """Projector benchmark sizes: input (B, T, input_dim) -> output (B, T', output_dim)."""

    input_dim: int = 1280      # Whisper-large-v3 d_model
    output_dim: int = 3584     # Gemma-2-9B hidden size
    hidden_dim: int = 2048
    num_experts: int = 4
    batch: int = 8
    frames: int = 500          # 10 s at 50 frames/s


REAL_SIZES = ProjectorSizes()
QUICK_SIZES = ProjectorSizes(input_dim=32, output_dim=48, hidden_dim=64, num_experts=4, batch=4, frames=50)


@dataclass
class BenchSettings:
    """What one benchmark run measures and how.

    Attributes:
        quick: tiny sizes everywhere (seconds; for tests).
        repeats: timed runs per measurement (the minimum is reported).
        tokens_per_second: transcript tokens per second of audio assumed where
            no transcript exists (CIF training targets of the projector part,
            generated tokens of the system estimate).
        num_utts: utterances decoded in the decoding part.
        data_dir: Kaldi data dir (wav.scp, text, optional utt2lang) to take
            utterances from; None synthesises audio and transcripts.
        asr_exp: trained experiment dir (config.yaml + checkpoint) decoded
            instead of the randomly initialised default model.
        models_dir: dir with ``whisper/`` and ``llm/`` (e.g. the recipe's
            ``exp/tiny_models``) used instead of random default-size models.
        encoder_layers: layers of the Whisper-large-v3-sized encoder actually
            run; its time is scaled to 32 layers.
        work_dir: scratch dir (tiny models, dumped features, training run).
    """

    quick: bool = False
    repeats: int = 3
    tokens_per_second: float = 4.0
    num_utts: int = 16
    data_dir: Optional[str] = None
    asr_exp: Optional[str] = None
    models_dir: Optional[str] = None
    encoder_layers: int = 2
    work_dir: Optional[str] = None

    @property
    def sizes(self) -> ProjectorSizes:
        return QUICK_SIZES if self.quick else REAL_SIZES


# ---------------------------------------------------------------------- measuring
def best_time(fn: Callable[[], object], repeats: int, before: Optional[Callable[[], object]] = None) -> float:
    """Minimum wall-clock seconds of ``fn()`` over ``repeats`` runs (``before()`` untimed)."""
    best = math.inf
    for _ in range(max(1, repeats)):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


_MMAP_SET = False


def mmap_large_allocations(threshold: int = 128 * 1024) -> bool:
    """Have glibc serve allocations >= ``threshold`` bytes by mmap (freed memory leaves RSS at once).

    Returns False where it cannot be set (not glibc).
    """
    global _MMAP_SET
    if _MMAP_SET:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        _MMAP_SET = bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except OSError:
        _MMAP_SET = False
    return _MMAP_SET


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_increase(fn: Callable[[], object]) -> Optional[int]:
    """Bytes the resident set grew at its peak while ``fn()`` ran, or None where
    the high-water mark cannot be reset (not Linux)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        fn()
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def machine_info() -> Dict[str, object]:
    """CPU, cores, torch threads, load averages: what the timings depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


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
                w1 = torch.einsum("e,ehd->hd", g, bank.w1)
                w2 = torch.einsum("e,eoh->oh", g, bank.w2)
                h = F.linear(torch.relu(x[b]), w1, g @ bank.b1)
                rows.append(F.linear(torch.relu(h), w2, g @ bank.b2))
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


# ---------------------------------------------------------------------- goals
def _goal(name: str, measured: Optional[float], target: float, higher_is_better: bool, note: str = "") -> Dict:
    met = None
    if measured is not None and math.isfinite(measured):
        met = measured >= target if higher_is_better else measured <= target
    return {"goal": name, "target": ("≥ " if higher_is_better else "≤ ") + f"{target:g}",
            "measured": measured, "met": met, "note": note}


def evaluate_goals(results: Dict[str, object]) -> List[Dict[str, object]]:
    """The issue's goals, each with its measured ratio and met/missed (None: not measured)."""
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
    for g in goals:
        if g["met"] is False and g["measured"] is not None:
            g["missed_by"] = g["measured"] / float(g["target"].split()[-1])
    return goals


# ---------------------------------------------------------------------- report
def _fmt(value, spec: str = ".2f", none: str = "–") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return none
    return format(value, spec)


def _mib(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f}"


def render_markdown(results: Dict[str, object]) -> str:
    """The README section / stdout report as markdown tables."""
    meta = results["meta"]
    out = []
    load = meta.get("loadavg_start"), meta.get("loadavg_end")
    out.append(
        f"Measured by `{meta.get('command', 'python -m espnet_llm_asr.bin.benchmark')}` on "
        f"{meta['cpu']} ({meta['cores']} cores, torch {meta['torch']} with {meta['torch_threads']} threads"
        f"{', GPU ' + meta['gpu'] if meta.get('gpu') else ', no GPU'}), {meta.get('date', '')}; "
        f"load average at start {_fmt((load[0] or [None])[0])}, at end {_fmt((load[1] or [None])[0])} "
        f"(1 min){'; the machine was shared with other jobs, so absolute times are noisy and the ratios matter' if meta.get('busy') else ''}. "
        f"Wall time of the whole run: {_fmt(meta.get('wall_s'), '.0f')} s. Times are the best of "
        f"{meta['settings']['repeats']} runs (projectors: round-robin, the first run included; "
        "elsewhere after a warm-up)."
        + (" **Quick mode: toy sizes, not representative.**" if meta["settings"]["quick"] else ""))
    goals = results.get("goals") or []
    if goals:
        out += ["", "**Goals** (from the performance issue):", "",
                "| goal | target | measured | met |", "|---|---|---|---|"]
        for g in goals:
            met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
            note = f" ({g['note']})" if g.get("note") else ""
            out.append(f"| {g['goal']}{note} | {g['target']} | {_fmt(g['measured'])} | {met} |")
    proj = results.get("projectors")
    if proj:
        s = proj["sizes"]
        out += ["", f"**1. Projectors** at {s['input_dim']} → {s['output_dim']}, hidden {s['hidden_dim']}, "
                f"{s['num_experts']} experts, batch {s['batch']} × {s['frames']} encoder frames, fp32, CPU. "
                "Forward = eval mode under `no_grad`; forward+backward = train mode, backward of the "
                "sum of the outputs plus the auxiliary loss (CIF with "
                f"{proj['cif_train_targets_per_utt']} target tokens per utterance). Peak memory = "
                "growth of the resident set at its peak during one call (parameter gradients included), "
                "ratios are to mono.", "",
                "| projector | params (M) | positions / utt | GFLOP fwd | fwd ms | fwd × mono | fwd+bwd ms | "
                "fwd+bwd × mono | peak MiB fwd | peak MiB fwd+bwd | peak fwd+bwd × mono |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in proj["rows"].items():
            out.append(
                f"| {name} | {r['params'] / 1e6:.1f} | {_fmt(r['positions_per_utt'], '.0f')} | "
                f"{r['fwd_flops'] / 1e9:.1f} | {r['fwd_s'] * 1e3:,.0f} | {_fmt(r['fwd_ratio'])} | "
                f"{r['fwd_bwd_s'] * 1e3:,.0f} | {_fmt(r['fwd_bwd_ratio'])} | {_mib(r['fwd_peak_bytes'])} | "
                f"{_mib(r['fwd_bwd_peak_bytes'])} | {_fmt(r['fwd_bwd_peak_bytes_ratio'])} |")
    system = results.get("system")
    if system:
        out += ["", f"**System level** ({system['method']})", "",
                "| part | mono ms | smear_moe ms |", "|---|---|---|"]
        for name, r in system["parts"].items():
            out.append(f"| {name} | {_fmt(r['mono_ms'], ',.0f')} | {_fmt(r['smear_ms'], ',.0f')} |")
        out.append(f"| **total decoding time** | {system['mono_total_ms']:,.0f} | {system['smear_total_ms']:,.0f} |")
        out.append(f"\nsmear_moe / mono = {system['smear_over_mono']:.4f}.")
    dec = results.get("decoding")
    if dec:
        out += ["", f"**2. Decoding** ({dec['model']}; {dec['num_utts']} utterances, "
                f"{dec['audio_s']:.1f} s of audio; {dec['decode_conf_text']})", "",
                "| batch | seconds | utt/s | × batch 1 | RTF | generated tokens | hypotheses = batch 1 |",
                "|---|---|---|---|---|---|---|"]
        for bs, r in dec["batches"].items():
            out.append(f"| {bs} | {r['seconds']:.2f} | {r['utt_per_s']:.2f} | {r['speedup']:.2f} | "
                       f"{r['rtf']:.3f} | {r['tokens']} | {r['same_as_batch1']} |")
        m = dec.get("mono_vs_smear")
        if m:
            out.append(f"\nsmear_moe vs mono decoding at batch {m['batch']}: {m['smear_s']:.2f} s vs "
                       f"{m['mono_s']:.2f} s (× {m['ratio']:.2f}); generated tokens {m['smear_tokens']} vs "
                       f"{m['mono_tokens']} (per token × {m['ratio_per_token']:.2f}).")
    cif = results.get("cif")
    if cif:
        out += ["", f"**3. CIF** ({cif['note']})", "",
                "| downsampler | LLM input positions / s of audio | × stride 5 |", "|---|---|---|"]
        for name, r in cif["rows"].items():
            out.append(f"| {name} | {r['positions_per_s']:.2f} | {_fmt(r['ratio_to_stride5'])} |")
        out.append(f"\nTranscript tokens per second: {cif['tokens_per_s']:.2f}. Decoding at batch "
                   f"{cif['decode_batch']}: cif (fitted) {cif['cif_decode_s']:.2f} s vs mono "
                   f"{cif['mono_decode_s']:.2f} s (× {cif['decode_ratio']:.2f}); generated tokens "
                   f"{cif['cif_tokens']} vs {cif['mono_tokens']}.")
    dumped = results.get("dumped")
    if dumped:
        out += ["", f"**4. Dumped features** (one training step: forward, backward, AdamW; {dumped['note']})", "",
                "| encoder | batch | on-the-fly step s | dumped step s | speed-up | encoder share of a step |",
                "|---|---|---|---|---|---|"]
        for name in ("tiny", "large_v3"):
            r = dumped.get(name)
            if r:
                out.append(f"| {r['label']} | {r['batch']} | {r['on_the_fly_s']:.3f} | {r['dumped_s']:.3f} | "
                           f"{r['speedup']:.1f} | {r['encoder_share']:.0%} |")
    mem = results.get("memory")
    if mem:
        out += ["", f"**5. Memory** ({mem['note']})", "",
                "| measure | value |", "|---|---|",
                f"| peak RSS of the training run | {_mib(mem['peak_rss_bytes'])} MiB |",
                f"| trainable parameters | {mem['trainable_params']:,} ({_mib(mem['trainable_bytes'])} MiB) |",
                f"| model checkpoint `{mem['checkpoint']}` | {mem['checkpoint_bytes'] / 2**20:,.2f} MiB "
                f"(× {mem['checkpoint_ratio']:.3f} of the trainable bytes; only trainable tensors: "
                f"{mem['only_trainable']}) |",
                f"| resume checkpoint `checkpoint.pth` (+ optimizer state) | "
                f"{_mib(mem.get('resume_checkpoint_bytes'))} MiB |"]
    return "\n".join(out) + "\n"


def update_readme(path: str, section: str) -> None:
    """Replace the text between the benchmark markers of ``path`` by ``section``
    (atomically); without markers, add a "## Performance" section after "## Results"."""
    from espnet_llm_asr.utils import atomic_write_text

    text = Path(path).read_text(encoding="utf-8")
    block = f"{README_BEGIN}\n{section.rstrip()}\n{README_END}"
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        _, tail = rest.split(README_END, 1)
        text = head + block + tail
    else:
        new = f"## Performance\n\n{block}\n\n"
        pos = text.find("\n## Results")
        nxt = text.find("\n## ", pos + 1) if pos >= 0 else -1
        text = text.rstrip("\n") + "\n\n" + new if nxt < 0 else text[: nxt + 1] + new + text[nxt + 1:]
    atomic_write_text(path, text)


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
        from espnet_llm_asr.benchmark_system import bench_system

        results["system"] = bench_system(settings)
    asr_parts = [p for p in ("decoding", "cif", "dumped", "memory") if p in parts]
    if asr_parts:
        from espnet_llm_asr.benchmark_asr import run_asr_parts

        results.update(run_asr_parts(asr_parts, settings))
    meta["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta["wall_s"] = time.perf_counter() - start
    loads = [x[0] for x in (meta["loadavg_start"], meta["loadavg_end"]) if x]
    # busy: other jobs were running when the run started, or used more than ~half a core beside its threads
    meta["busy"] = bool(loads) and (loads[0] > 0.5 or max(loads) > meta["torch_threads"] + 0.5)
    results["goals"] = evaluate_goals(results)
    return results
