"""Markdown report of benchmark results: the stdout tables and the tables of espnet_llm_asr/benchmark/README.md.

:func:`render_markdown` turns the results dict of
:func:`~espnet_llm_asr.benchmark.run.run_benchmark` into markdown tables;
:func:`update_readme` writes them between :data:`README_BEGIN` and
:data:`README_END` of a README.  Measures nothing itself.

Imports no other benchmark module (it reads only the results dict).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

README_BEGIN = "<!-- benchmark:begin -->"
README_END = "<!-- benchmark:end -->"


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
        out += ["", "**Goals** (the speed targets the benchmark checks):", "",
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
    out += _render_throughput(results.get("throughput"))
    return "\n".join(out) + "\n"


def _gib(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 2**30:,.1f}"


def _render_throughput(thr: Optional[Dict[str, object]]) -> list:
    """Part 6: decoding RTFx rows, the largest batch, the training step breakdown."""
    if not thr:
        return []
    if "skipped" in thr:
        return ["", f"**6. GPU throughput**: not measured ({thr['skipped']})."]
    sz = thr["sizes"]
    enc, llm = sz["encoder"], sz["llm"]
    out = ["", f"**6. GPU throughput** on {thr['device']} ({thr['dtype']}, attention {thr['attn_implementation']}; "
           f"random weights: Whisper-shaped encoder d_model {enc['d_model']} × {enc['encoder_layers']} layers"
           f"{' (pad_to_30s)' if sz['pad_to_30s'] else ''}, {sz['projector']} projector in fp32, Gemma-2-shaped LLM hidden {llm['hidden_size']} × "
           f"{llm['layers']} layers, vocabulary {llm['vocab_size']:,}; each utterance {sz['audio_s']:g} s of audio, "
           f"{sz['new_tokens']} new tokens; timed from waveforms on the device to hypotheses; fast path = static "
           f"KV cache, decoding step compiled on a GPU, lengths rounded to "
           f"{thr['fast_decode'].get('length_multiple', 1)}; the first call (compilation) timed apart; peak = "
           f"{'CUDA allocator peak' if thr['device'] != 'cpu' else 'growth of the resident set'})", "",
           "| decoding | batch | beams | KV cache | compiled | s | RTFx | tokens/s | peak GiB | first call s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in thr.get("decoding") or []:
        if r.get("error"):
            out.append(f"| {r['label']} | {r['batch']} | {r['num_beams']} | {r.get('cache', '–')} | – | – | – | – | "
                       f"– | {r['error']} |")
            continue
        out.append(f"| {r['label']} | {r['batch']} | {r['num_beams']} | {r['cache']} | {r['compiled']} | "
                   f"{r['seconds']:.3f} | {r['rtfx']:,.1f} | {r['tokens_per_s']:,.0f} | {_gib(r['peak_bytes'])} | "
                   f"{r['first_call_s']:.1f} |")
    big = thr.get("largest_batch") or {}
    if big.get("batch"):
        tried = ", ".join(f"{t['batch']}: {t['error'] or format(t['rtfx'], ',.0f')}" for t in big.get("tried", []))
        out.append(f"\nLargest greedy batch that fit: {big['batch']} (RTFx {_fmt(big.get('rtfx'), ',.0f')}, peak "
                   f"{_gib(big.get('peak_bytes'))} GiB){'; tried ' + tried if tried else ''}"
                   f"{'; stopped: ' + big['stopped'] if big.get('stopped') else ''}.")
    train = thr.get("training") or {}
    if train.get("error"):
        out.append(f"\nTraining step: {train['error']}.")
    elif train:
        out += ["", f"Training step at batch {train['on_the_fly']['batch']} (forward, backward, AdamW on the "
                "projector; frozen encoder and LLM; dumped = float32 features as read back from a dump):", "",
                "| input | encoder s | projector fwd s | LLM fwd + loss s | backward s | optimizer s | **step s** | "
                "peak GiB |", "|---|---|---|---|---|---|---|---|"]
        for name, label in (("on_the_fly", "on-the-fly encoding"), ("dumped", "dumped features")):
            r = train[name]
            out.append(f"| {label} | {r['encoder_s']:.3f} | {r['projector_fwd_s']:.3f} | {r['llm_fwd_loss_s']:.3f} | "
                       f"{r['backward_s']:.3f} | {r['optimizer_s']:.3f} | **{r['step_s']:.3f}** | "
                       f"{_gib(r['peak_bytes'])} |")
    return out


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
