"""GPU throughput at the papers' sizes: decoding RTFx and the training step (toy sizes on CPU).

The measured model is this package's own code path, :class:`~espnet_llm_asr.model.LLMASRModel`
(frozen :class:`~espnet_llm_asr.encoder.WhisperEncoder` with ``pad_to_30s``, a
projector in fp32, :class:`~espnet_llm_asr.llm.CausalLLM`), at Whisper-large-v3 +
Gemma-2-9B sizes with random weights.  Nothing is written at full size: small
skeleton checkpoints (a one-layer Whisper with large-v3's widths, a tiny LM with
its tokenizer) are saved, loaded as usual, and the full-size layers are then
created directly on the device in the target dtype (:func:`build_sized_model`).

* Decoding (:func:`bench_decoding_rtfx`): greedy and beam 4 at batch 1, 8
  and 64 with the fast path (static KV cache, the decoding step compiled by
  transformers on a GPU, lengths rounded to 16), one dynamic-cache baseline,
  and the largest greedy batch that fits (doubling from 128 until the card runs
  out of memory).  Each utterance is 10 s of audio; the clock runs from
  waveforms on the device to hypotheses (encoder, projector, prefill,
  generation of 40 tokens); RTFx = seconds of audio / wall seconds.  The first
  call of each configuration (compilation, CUDA graph capture) is timed apart.
* Training (:func:`bench_training_step`): one step at the paper's batch (7)
  with on-the-fly encoding and with dumped features (float32, as read back
  from an fp16 dump): encoder, projector forward, LLM forward + loss,
  backward, AdamW step; peak memory.
* Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on CPU the
  resident-set growth (:func:`~espnet_llm_asr.benchmark.common.peak_rss_increase`).

On CPU the part runs only with ``--quick`` (toy sizes, fp32, nothing compiled),
so that its code path is tested; otherwise it reports that it needs a GPU.
A time budget (:attr:`BenchSettings.throughput_budget_s`) skips what is left
once spent, most important measurements first.

Imports common and system.
"""
from __future__ import annotations

import gc
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from espnet_llm_asr.benchmark.common import BenchSettings, peak_rss_increase
from espnet_llm_asr.benchmark.system import (GEMMA2_9B, LARGE_V3, PROMPT_TOKENS, QUICK_ENCODER, QUICK_LLM,
                                             build_sized_whisper)

logger = logging.getLogger(__name__)

#: the fast decoding path measured (see LLMASRModel.generate)
FAST_DECODE = dict(cache_implementation="static", length_multiple=16)
TRAIN_BATCH = 7  # the SMEAR-MoE paper's per-GPU batch
PROJECTOR = "smear_moe"


def throughput_sizes(settings: BenchSettings) -> Dict[str, object]:
    """What the part measures: model sizes, audio, batches (papers' sizes, or toy ones with --quick)."""
    quick = settings.quick
    audio_s = 2.0 if quick else 10.0
    return {
        "encoder": QUICK_ENCODER if quick else LARGE_V3,
        "llm": QUICK_LLM if quick else GEMMA2_9B,
        "projector": PROJECTOR,
        "projector_conf": {"hidden_dim": settings.sizes.hidden_dim, "num_experts": settings.sizes.num_experts},
        "audio_s": audio_s,
        "new_tokens": max(1, math.ceil(audio_s * settings.tokens_per_second)),
        "batches": tuple(settings.throughput_batches) if not quick else (1, 2),
        "search_batches": (128, 256, 512, 1024, 2048) if not quick else (4,),
        "train_batch": TRAIN_BATCH,
        "pad_to_30s": not quick,  # Whisper's 30 s windows at the papers' sizes; real frames only for the toy
    }


# ---------------------------------------------------------------------- device helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn: Callable[[], object], device: torch.device) -> Tuple[object, float, Optional[int]]:
    """Run ``fn`` once: (its result, wall seconds, peak memory bytes: CUDA allocator peak, or
    the resident-set growth on CPU)."""
    box = {}

    def run():
        _sync(device)
        start = time.perf_counter()
        box["out"] = fn()
        _sync(device)
        box["t"] = time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = peak_rss_increase(run)
    return box["out"], box["t"], peak


def _free() -> None:
    """Collect garbage and return the allocator's cached blocks (after an out-of-memory too)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


@contextmanager
def _default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# ---------------------------------------------------------------------- model
def build_sized_model(root: Path, sizes: Dict[str, object], device: torch.device, dtype: torch.dtype,
                      attn_implementation: str, seed: int = 0):
    """An :class:`~espnet_llm_asr.model.LLMASRModel` at ``sizes`` with random weights on ``device``.

    Skeletons saved in ``root``: a Whisper checkpoint with the encoder's widths
    and one layer, a char tokenizer and a tiny LM.  The model is built from them
    as usual, then the encoder gets its other layers and the LLM is replaced by a
    Gemma-2-shaped causal LM, both created on ``device`` in ``dtype`` (the
    projector stays fp32, as in training).
    """
    from transformers import Gemma2Config, Gemma2ForCausalLM
    from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

    from espnet_llm_asr import tiny_models
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel

    enc_dims, llm_dims = sizes["encoder"], sizes["llm"]
    dtype_name = str(dtype).replace("torch.", "")
    whisper = build_sized_whisper(root, enc_dims, 1)
    tok, llm_dir = root / "skeleton_tokenizer", root / "skeleton_llm"
    if not (llm_dir / "config.json").exists():
        tiny_models.train_tokenizer(tiny_models.prompt_text_lines() + ["a b c"], tok, model_type="char")
        tiny_models.build_tiny_llm(llm_dir, tok, hidden_size=16, num_layers=1, num_heads=2)
    torch.manual_seed(seed)
    conf = dict(sizes["projector_conf"])
    frontend = FRONTEND_CLASSES[sizes["projector"]](
        output_dim=llm_dims["hidden_size"], encoder=str(whisper),
        encoder_conf={"pad_to_30s": sizes["pad_to_30s"], "dtype": dtype_name}, **conf)
    llm = CausalLLM(str(llm_dir), dtype=dtype_name, freeze=True)
    tokenizer = llm.tokenizer
    config = Gemma2Config(
        vocab_size=llm_dims["vocab_size"], hidden_size=llm_dims["hidden_size"],
        intermediate_size=llm_dims["intermediate_size"], num_hidden_layers=llm_dims["layers"],
        num_attention_heads=llm_dims["num_attention_heads"], num_key_value_heads=llm_dims["num_key_value_heads"],
        head_dim=llm_dims["head_dim"], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=llm.pad_token_id, attn_implementation=attn_implementation)
    with torch.device(device), _default_dtype(dtype):
        big = Gemma2ForCausalLM(config)
    big.eval().requires_grad_(False)
    llm.model = big
    model = LLMASRModel(frontend, llm, lang_list=["hi"]).to(device)
    encoder = frontend._get_encoder(device)  # the one-layer skeleton, then the other layers
    cfg = encoder.encoder.config
    with torch.device(device), _default_dtype(encoder.dtype):
        extra = [WhisperEncoderLayer(cfg) for _ in range(enc_dims["encoder_layers"] - 1)]
    encoder.encoder.layers.extend(extra)
    cfg.encoder_layers = enc_dims["encoder_layers"]
    encoder.encoder.requires_grad_(False).eval()
    return model.eval()


def pick_attn_implementation(device: torch.device) -> str:
    """Gemma-2's fastest attention that transformers offers here: FlashAttention 2 when the
    package is installed on a GPU, else eager (Gemma-2's logit soft-capping rules out SDPA)."""
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "eager"


# ---------------------------------------------------------------------- decoding
def _decode_once(model, batch: int, sizes: Dict[str, object], device: torch.device, conf: Dict) -> Dict:
    samples = int(sizes["audio_s"] * 16000)
    g = torch.Generator(device=device).manual_seed(batch)
    speech = torch.randn(batch, samples, device=device, generator=g) * 0.1
    lengths = torch.full((batch,), samples, device=device, dtype=torch.long)

    def run():
        with torch.no_grad():
            return model.generate(speech, lengths, None, max_new_tokens=sizes["new_tokens"], **conf)

    return run


def decode_config(model, label: str, batch: int, num_beams: int, sizes: Dict[str, object], device: torch.device,
                  repeats: int, fast: bool = True, compile_decoding: Optional[bool] = None) -> Dict[str, object]:
    """One decoding configuration: the first call timed apart, then the best of ``repeats``."""
    conf = dict(num_beams=num_beams)
    if fast:
        conf.update(FAST_DECODE, compile_decoding=compile_decoding)
    run = _decode_once(model, batch, sizes, device, conf)
    (hyps, _, _), first_s, _ = _measure(run, device)
    best, peak = math.inf, None
    for _ in range(max(1, repeats)):
        (hyps, _, _), secs, peak_i = _measure(run, device)
        best = min(best, secs)
        peak = peak_i if peak is None or (peak_i is not None and peak_i > peak) else peak
    audio = batch * sizes["audio_s"]
    tokens = sum(len(h) for h in hyps)
    return {"label": label, "batch": batch, "num_beams": num_beams,
            "cache": "static" if fast else "dynamic",
            "compiled": bool(fast and device.type == "cuda" and compile_decoding is not False),
            "seconds": best, "first_call_s": first_s, "rtfx": audio / best, "rtf": best / audio,
            "tokens": tokens, "tokens_per_s": tokens / best, "peak_bytes": peak, "error": None}


def decoding_plan(sizes: Dict[str, object]) -> Dict[str, List[Tuple[str, int, int, bool]]]:
    """(label, batch, beams, fast path) per decoding row: the greedy rows, then (after the
    training step) beam 4 and one dynamic-cache baseline."""
    batches = sizes["batches"]
    base = batches[min(1, len(batches) - 1)]  # batch 8 at the papers' sizes
    return {"greedy": [(f"greedy, batch {b}", b, 1, True) for b in batches],
            "later": [(f"beam 4, batch {b}", b, 4, True) for b in batches]
            + [(f"greedy, batch {base}, dynamic cache (baseline)", base, 1, False)]}


def decode_rows(model, plan: List[Tuple[str, int, int, bool]], sizes: Dict[str, object], device: torch.device,
                settings: BenchSettings, deadline: float, strict: bool) -> List[Dict[str, object]]:
    """:func:`decode_config` for every row of ``plan`` until the ``deadline`` (later rows: skipped)."""
    rows = []
    for label, batch, beams, fast in plan:
        row = {"label": label, "batch": batch, "num_beams": beams, "cache": "static" if fast else "dynamic"}
        if time.perf_counter() > deadline:
            rows.append(dict(row, error="skipped: time budget"))
            continue
        logger.info("throughput: decoding %s", label)
        rows.append(_guarded(lambda: decode_config(model, label, batch, beams, sizes, device, settings.repeats,
                                                   fast, settings.compile_decoding), row, strict))
    return rows


def largest_batch(model, rows: List[Dict[str, object]], sizes: Dict[str, object], device: torch.device,
                  settings: BenchSettings, deadline: float, strict: bool) -> Dict[str, object]:
    """The largest greedy batch (fast path) that fits: the measured rows, then doubling
    (``sizes["search_batches"]``) until an error (out of memory) or the deadline."""
    largest: Dict[str, object] = {"batch": None, "tried": []}
    fitted = [r for r in rows if r.get("error") is None and r["num_beams"] == 1 and r["cache"] == "static"]
    if fitted:
        top = max(fitted, key=lambda r: r["batch"])
        largest.update(batch=top["batch"], rtfx=top["rtfx"], peak_bytes=top["peak_bytes"], seconds=top["seconds"])
    for batch in sizes["search_batches"]:
        if time.perf_counter() > deadline:
            largest["stopped"] = "time budget"
            break
        logger.info("throughput: largest batch search, greedy batch %d", batch)
        row = {"label": f"greedy, batch {batch}", "batch": batch, "num_beams": 1, "cache": "static"}
        row = _guarded(lambda: decode_config(model, row["label"], batch, 1, sizes, device, 1, True,
                                             settings.compile_decoding), row, strict)
        largest["tried"].append({"batch": batch, "rtfx": row.get("rtfx"), "error": row.get("error")})
        if row.get("error"):
            largest["stopped"] = row["error"]
            break
        largest.update(batch=batch, rtfx=row["rtfx"], peak_bytes=row["peak_bytes"], seconds=row["seconds"])
    return largest


def _guarded(fn: Callable[[], Dict], row: Dict, strict: bool) -> Dict:
    """``fn()``; on a GPU an error (out of memory above all) is recorded in the row instead of
    ending the benchmark (``strict``: raised, as in the CPU test)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - one failed configuration must not lose the others
        if strict:
            raise
        logger.warning("throughput: %s failed: %s", row.get("label"), err)
        return dict(row, error="out of memory" if _is_oom(err) else f"{type(err).__name__}: {err}"[:300])
    finally:
        _free()


# ---------------------------------------------------------------------- training
def bench_training_step(model, sizes: Dict[str, object], device: torch.device, repeats: int
                        ) -> Dict[str, Dict[str, object]]:
    """One training step at ``sizes["train_batch"]``, on the fly (waveforms) and on dumped
    features: per phase seconds (best step), peak memory."""
    batch = sizes["train_batch"]
    samples = int(sizes["audio_s"] * 16000)
    g = torch.Generator(device=device).manual_seed(7)
    speech = torch.randn(batch, samples, device=device, generator=g) * 0.1
    lengths = torch.full((batch,), samples, device=device, dtype=torch.long)
    vocab = sizes["llm"]["vocab_size"]
    n_text = sizes["new_tokens"]
    text = torch.randint(4, vocab, (batch, n_text), device=device, generator=g)
    text_lengths = torch.full((batch,), n_text, device=device, dtype=torch.long)
    with torch.no_grad():
        feats, feat_lengths = model.frontend.encode(speech, lengths)
    dumped = feats.float().clone()  # what an fp16 or fp32 dump reads back: float32
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    marks: Dict[str, float] = {}

    def mark(name):
        def hook(*_):
            _sync(device)
            marks[name] = time.perf_counter()
        return hook

    handles = []
    encoder = model.frontend.encoder
    for module, name in ((encoder, "encoder"), (model.frontend.projector, "projector")):
        handles.append(module.register_forward_pre_hook(mark(name + "_start")))
        handles.append(module.register_forward_hook(mark(name + "_end")))

    def step(inputs, input_lengths):
        marks.clear()
        _sync(device)
        t0 = time.perf_counter()
        loss, _, _ = model(inputs, input_lengths, text, text_lengths)
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t3 = time.perf_counter()
        enc = marks["encoder_end"] - marks["encoder_start"] if "encoder_start" in marks else 0.0
        proj = marks["projector_end"] - marks["projector_start"]
        return {"encoder_s": enc, "projector_fwd_s": proj, "llm_fwd_loss_s": (t1 - t0) - enc - proj,
                "backward_s": t2 - t1, "optimizer_s": t3 - t2, "step_s": t3 - t0, "loss": float(loss.detach())}

    out = {}
    model.train()
    try:
        for name, (inputs, input_lengths) in (("on_the_fly", (speech, lengths)), ("dumped", (dumped, feat_lengths))):
            logger.info("throughput: training step at batch %d, %s", batch, name)
            step(inputs, input_lengths)  # warm-up
            best = None
            peak = None
            for _ in range(max(1, repeats)):
                phases, _, peak_i = _measure(lambda: step(inputs, input_lengths), device)
                if best is None or phases["step_s"] < best["step_s"]:
                    best = phases
                peak = peak_i if peak is None or (peak_i is not None and peak_i > peak) else peak
            out[name] = dict(best, batch=batch, peak_bytes=peak)
    finally:
        for h in handles:
            h.remove()
        model.eval()
        del opt
        _free()
    out["dumped"]["feature_shape"] = list(dumped.shape)
    return out


# ---------------------------------------------------------------------- part
def bench_throughput(settings: BenchSettings) -> Dict[str, object]:
    """The part: decoding RTFx and the training step at the papers' sizes on a GPU (see the
    module docstring); toy sizes on CPU with --quick; skipped on CPU otherwise."""
    import tempfile

    gpu = torch.cuda.is_available()
    if not gpu and not settings.quick:
        return {"skipped": "needs a GPU (the papers' sizes: a 9B LLM in bf16); run with --quick on CPU "
                           "to exercise the code path at toy sizes"}
    device = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float32
    sizes = throughput_sizes(settings)
    start = time.perf_counter()
    deadline = start + settings.throughput_budget_s
    if gpu:
        from torch import _dynamo

        for key in ("recompile_limit", "cache_size_limit"):  # one compiled step per batch shape
            if hasattr(_dynamo.config, key):
                setattr(_dynamo.config, key, max(64, getattr(_dynamo.config, key)))
    root = Path(settings.work_dir or tempfile.mkdtemp(prefix="bench_")) / "throughput"
    root.mkdir(parents=True, exist_ok=True)
    attn = pick_attn_implementation(device)
    logger.info("throughput: building the %s model on %s (%s, attention %s)",
                "papers' size" if not settings.quick else "toy", device, dtype, attn)
    model, build_s, build_peak = _measure(lambda: build_sized_model(root, sizes, device, dtype, attn), device)
    params = {"encoder": sum(p.numel() for p in model.frontend.encoder.parameters()),
              "projector": sum(p.numel() for p in model.frontend.projector.parameters()),
              "llm": sum(p.numel() for p in model.llm.parameters())}
    strict = not gpu  # on CPU (the test) every error surfaces
    result: Dict[str, object] = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu", "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": attn, "sizes": {k: v for k, v in sizes.items()}, "params": params,
        "build_s": build_s, "weights_bytes": build_peak,
        "compile_decoding": settings.compile_decoding, "fast_decode": dict(FAST_DECODE),
    }
    try:
        # most important first, in case the time budget runs out: greedy rows, training step, beam 4
        # and the dynamic-cache baseline, the largest batch
        plan = decoding_plan(sizes)
        rows = decode_rows(model, plan["greedy"], sizes, device, settings, deadline, strict)
        if time.perf_counter() <= deadline:
            result["training"] = _guarded(lambda: bench_training_step(model, sizes, device, settings.repeats),
                                          {"label": "training step"}, strict)
        else:
            result["training"] = {"error": "skipped: time budget"}
        rows += decode_rows(model, plan["later"], sizes, device, settings, deadline, strict)
        result["largest_batch"] = largest_batch(model, rows, sizes, device, settings, deadline, strict)
        result["decoding"] = rows
    finally:
        del model
        _free()
    result["wall_s"] = time.perf_counter() - start
    return result


def throughput_goal_values(result: Dict[str, object]) -> Dict[str, Optional[float]]:
    """The GPU goals from a :func:`bench_throughput` result: greedy RTFx at the largest
    standard batch and at batch 1 (fast path), training step seconds on the fly at batch 7."""
    rows = [r for r in result.get("decoding") or [] if r.get("error") is None and r.get("num_beams") == 1
            and r.get("cache") == "static"]
    by_batch = {r["batch"]: r for r in rows}
    batches = (result.get("sizes") or {}).get("batches") or ()
    top = max(batches) if batches else None
    training = result.get("training") or {}
    fly = training.get("on_the_fly") if isinstance(training, dict) else None
    return {"top_batch": top,
            "rtfx_top": by_batch[top]["rtfx"] if top in by_batch else None,
            "rtfx_1": by_batch[1]["rtfx"] if 1 in by_batch else None,
            "train_step_s": fly["step_s"] if fly else None}
