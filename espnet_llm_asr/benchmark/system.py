"""System-level benchmark part: decoding time of smear_moe over mono at real sizes
(random weights, nothing downloaded).

CPU (this function measures the parts that fit and adds them up): decoding one
10 s utterance =

    Whisper-large-v3-sized encoder (``encoder_layers`` layers run, scaled to 32)
  + projector forward (batch 1, 500 frames -> 100 positions)
  + 42 x one Gemma-2-9B-sized decoder layer: prefill of prompt + speech positions
  + N generated tokens x (42 x one layer's KV-cached step + the LM head)

The LM head (3584 x 256000) is timed on 1/8 of the vocabulary and scaled by 8.

GPU (``torch.cuda.is_available()``): the whole pipeline in bf16 (32-layer
encoder, 42-layer Gemma-2-9B-sized LLM, projector), batched greedy decoding of
a fixed number of tokens; RTF and tokens/s for mono and smear_moe.

The encoder helpers (:func:`build_sized_whisper`, :func:`time_encoder_scaled`)
also serve the dumped-features part.  Imports common and projectors.
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Dict

import torch

from espnet_llm_asr.benchmark.common import BenchSettings, best_time
from espnet_llm_asr.benchmark.projectors import build_benchmark_projectors

logger = logging.getLogger(__name__)

#: Whisper-large-v3 encoder and Gemma-2-9B decoder shapes
LARGE_V3 = dict(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120)
GEMMA2_9B = dict(hidden_size=3584, intermediate_size=14336, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=256, layers=42, vocab_size=256000)
QUICK_ENCODER = dict(num_mel_bins=80, d_model=64, encoder_layers=4, encoder_attention_heads=2, encoder_ffn_dim=128)
QUICK_LLM = dict(hidden_size=48, intermediate_size=96, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=24, layers=4, vocab_size=512)
PROMPT_TOKENS = 20     # prompt text around the speech (tokens)
AUDIO_SECONDS = 10.0


def encoder_dims(settings: BenchSettings) -> Dict[str, int]:
    return QUICK_ENCODER if settings.quick else LARGE_V3


def build_sized_whisper(root: Path, dims: Dict[str, int], layers: int) -> Path:
    """A random Whisper checkpoint with ``dims`` but only ``layers`` encoder layers, saved in ``root``."""
    from espnet_llm_asr.tiny_models import build_tiny_whisper

    out = root / f"whisper_d{dims['d_model']}_l{layers}"
    if not (out / "config.json").exists():
        conf = dict(dims, encoder_layers=layers)
        build_tiny_whisper(out, max_source_positions=1500, **conf)
    return out


def time_encoder_scaled(encoder, speech: torch.Tensor, lengths: torch.Tensor, target_layers: int,
                        repeats: int) -> Dict[str, float]:
    """Time a :class:`~espnet_llm_asr.encoder.WhisperEncoder` on (B, L) waveforms with all its
    layers and with none (log-mel, convolutions, final norm); scale the per-layer time to
    ``target_layers``: ``t0 + target_layers * (t_all - t0) / layers``."""
    layers = encoder.encoder.layers
    n = len(layers)

    def run():
        with torch.no_grad():
            encoder(speech, lengths)

    run()  # warm-up
    t_all = best_time(run, repeats)
    encoder.encoder.layers = torch.nn.ModuleList()
    try:
        t0 = best_time(run, repeats)
    finally:
        encoder.encoder.layers = layers
    per_layer = max(0.0, t_all - t0) / max(1, n)
    return {"layers_run": n, "t_run_s": t_all, "t_without_layers_s": t0, "per_layer_s": per_layer,
            "scaled_s": t0 + target_layers * per_layer, "target_layers": target_layers}


def _gemma_config(dims: Dict[str, int], layers: int, vocab: int):
    from transformers import Gemma2Config

    return Gemma2Config(vocab_size=vocab, hidden_size=dims["hidden_size"], intermediate_size=dims["intermediate_size"],
                        num_hidden_layers=layers, num_attention_heads=dims["num_attention_heads"],
                        num_key_value_heads=dims["num_key_value_heads"], head_dim=dims["head_dim"],
                        attn_implementation="eager")


def time_llm_layer(dims: Dict[str, int], prefill_positions: int, new_tokens: int, repeats: int) -> Dict[str, float]:
    """One Gemma-2-sized decoder layer (Gemma2Model with 1 layer, 16-token vocabulary), batch 1:
    prefill of ``prefill_positions`` embeddings, and one KV-cached step (median over
    ``new_tokens`` steps after the prefill)."""
    from transformers import Gemma2Model

    torch.manual_seed(0)
    model = Gemma2Model(_gemma_config(dims, 1, 16)).eval()
    x = torch.randn(1, prefill_positions, dims["hidden_size"]) * 0.02
    step_in = torch.randn(1, 1, dims["hidden_size"]) * 0.02

    def prefill():
        with torch.no_grad():
            return model(inputs_embeds=x, use_cache=True).past_key_values

    prefill()
    t_prefill = best_time(prefill, repeats)
    steps = []
    with torch.no_grad():
        for _ in range(max(1, repeats)):
            cache = prefill()
            for i in range(new_tokens):
                pos = torch.tensor([[prefill_positions + i]])
                start = time.perf_counter()
                model(inputs_embeds=step_in, past_key_values=cache, use_cache=True, position_ids=pos,
                      cache_position=pos[0])
                steps.append(time.perf_counter() - start)
    steps.sort()
    params = sum(p.numel() for p in model.layers.parameters())
    return {"prefill_s": t_prefill, "step_s": steps[len(steps) // 2], "layer_params": params}


def time_lm_head(dims: Dict[str, int], repeats: int, fraction: int = 8) -> float:
    """Seconds of the LM head for one token: (1, H) x (H, V / fraction), scaled by ``fraction``."""
    w = torch.randn(dims["vocab_size"] // fraction, dims["hidden_size"])
    h = torch.randn(1, dims["hidden_size"])
    return fraction * best_time(lambda: h @ w.t(), max(3, repeats))


def bench_system(settings: BenchSettings) -> Dict[str, object]:
    """System-level decoding time of mono vs smear_moe (see the module docstring)."""
    if torch.cuda.is_available() and not settings.quick:
        return bench_system_gpu(settings)
    from espnet_llm_asr.encoder import WhisperEncoder

    enc_dims = encoder_dims(settings)
    llm_dims = QUICK_LLM if settings.quick else GEMMA2_9B
    sizes = settings.sizes
    root = Path(settings.work_dir or tempfile.mkdtemp(prefix="bench_"))
    layers_run = min(settings.encoder_layers, enc_dims["encoder_layers"])
    logger.info("system: Whisper-large-v3-sized encoder with %d of %d layers", layers_run, enc_dims["encoder_layers"])
    enc = WhisperEncoder(str(build_sized_whisper(root, enc_dims, layers_run)))
    samples = int(AUDIO_SECONDS * 16000)
    speech = torch.randn(1, samples) * 0.1
    encoder = time_encoder_scaled(enc, speech, torch.tensor([samples]), enc_dims["encoder_layers"], settings.repeats)
    frames = int(enc.output_lengths(torch.tensor([samples]))[0])
    del enc

    logger.info("system: projectors mono and smear_moe, batch 1 x %d frames", frames)
    torch.manual_seed(0)
    feats = torch.randn(1, frames, sizes.input_dim)
    lens = torch.tensor([frames])
    projs = {k: v for k, v in build_benchmark_projectors(sizes).items() if k in ("mono", "smear_moe")}
    proj_s = {}
    positions = None
    for name, proj in projs.items():
        proj.eval()
        def run(p=proj):
            with torch.no_grad():
                return p(feats, lens).lengths
        positions = int(run()[0])
        proj_s[name] = best_time(run, settings.repeats)
    del projs

    prefill = PROMPT_TOKENS + positions
    new_tokens = max(1, math.ceil(AUDIO_SECONDS * settings.tokens_per_second))
    logger.info("system: one Gemma-2-9B-sized layer, prefill %d positions, %d new tokens", prefill, new_tokens)
    layer = time_llm_layer(llm_dims, prefill, min(new_tokens, 8 if not settings.quick else 2), settings.repeats)
    head = time_lm_head(llm_dims, settings.repeats)
    n_layers = llm_dims["layers"]
    parts = {
        f"encoder ({encoder['layers_run']} of {encoder['target_layers']} layers run, scaled)":
            {"mono_ms": encoder["scaled_s"] * 1e3, "smear_ms": encoder["scaled_s"] * 1e3},
        "projector (batch 1, fp32)": {"mono_ms": proj_s["mono"] * 1e3, "smear_ms": proj_s["smear_moe"] * 1e3},
        f"LLM prefill: {n_layers} × 1 layer on {prefill} positions":
            {"mono_ms": n_layers * layer["prefill_s"] * 1e3, "smear_ms": n_layers * layer["prefill_s"] * 1e3},
        f"LLM generation: {new_tokens} tokens × ({n_layers} layers + LM head)":
            {"mono_ms": new_tokens * (n_layers * layer["step_s"] + head) * 1e3,
             "smear_ms": new_tokens * (n_layers * layer["step_s"] + head) * 1e3},
    }
    mono_total = sum(p["mono_ms"] for p in parts.values())
    smear_total = sum(p["smear_ms"] for p in parts.values())
    method = (f"CPU, fp32, batch 1, one {AUDIO_SECONDS:g} s utterance, random weights: encoder "
              f"d_model {enc_dims['d_model']} run with {encoder['layers_run']} layers and without layers, "
              f"time scaled to {encoder['target_layers']} layers; one Gemma-2-9B-sized decoder layer "
              f"(hidden {llm_dims['hidden_size']}, MLP {llm_dims['intermediate_size']}, "
              f"{llm_dims['num_attention_heads']}/{llm_dims['num_key_value_heads']} heads × {llm_dims['head_dim']}) "
              f"timed for the prefill of {PROMPT_TOKENS} prompt + {positions} speech positions and for a "
              f"KV-cached step, × {n_layers} layers; LM head ({llm_dims['vocab_size']} words) timed on 1/8 of the "
              f"vocabulary × 8; {new_tokens} generated tokens ({settings.tokens_per_second:g} per second of audio)")
    return {"device": "cpu", "method": method, "method_short": "CPU, parts measured and added up",
            "encoder": encoder, "llm_layer": layer, "lm_head_s": head, "prefill_positions": prefill,
            "new_tokens": new_tokens, "parts": parts, "mono_total_ms": mono_total,
            "smear_total_ms": smear_total, "smear_over_mono": smear_total / mono_total,
            "rtf_mono": mono_total / 1e3 / AUDIO_SECONDS}


def bench_system_gpu(settings: BenchSettings, batch: int = 8) -> Dict[str, object]:  # pragma: no cover (GPU)
    """The whole pipeline on the GPU in bf16 (random weights): batch of ``batch`` 10 s utterances,
    greedy decoding of a fixed number of tokens, mono vs smear_moe."""
    from transformers import Gemma2ForCausalLM, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    dev, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    with dev:
        encoder = HFWhisperEncoder(WhisperConfig(**{k: v for k, v in LARGE_V3.items()},
                                                 max_source_positions=1500)).to(dtype).eval()
        llm = Gemma2ForCausalLM(_gemma_config(GEMMA2_9B, GEMMA2_9B["layers"], GEMMA2_9B["vocab_size"])).to(dtype).eval()
    projs = {k: v.to(dev, dtype).eval() for k, v in build_benchmark_projectors(settings.sizes).items()
             if k in ("mono", "smear_moe")}
    mel = torch.randn(batch, LARGE_V3["num_mel_bins"], 3000, device=dev, dtype=dtype)
    frames = int(AUDIO_SECONDS * 50)
    new_tokens = max(1, math.ceil(AUDIO_SECONDS * settings.tokens_per_second))
    prompt = torch.randn(batch, PROMPT_TOKENS, GEMMA2_9B["hidden_size"], device=dev, dtype=dtype) * 0.02
    res = {}
    for name, proj in projs.items():
        def run(p=proj):
            with torch.inference_mode():
                h = encoder(input_features=mel).last_hidden_state[:, :frames]
                out = p(h, torch.full((batch,), frames, device=dev))
                emb = torch.cat([prompt, out.embeds], dim=1)
                llm.generate(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], device=dev, dtype=torch.long),
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            torch.cuda.synchronize()
        run()
        t = best_time(run, settings.repeats)
        res[name] = {"seconds": t, "rtf": t / (batch * AUDIO_SECONDS), "tokens_per_s": batch * new_tokens / t}
    ratio = res["smear_moe"]["seconds"] / res["mono"]["seconds"]
    parts = {"whole pipeline (bf16, GPU)": {"mono_ms": res["mono"]["seconds"] * 1e3,
                                            "smear_ms": res["smear_moe"]["seconds"] * 1e3}}
    return {"device": torch.cuda.get_device_name(0),
            "method": f"GPU bf16, whole pipeline, batch {batch} × {AUDIO_SECONDS:g} s (Whisper pads to 30 s), "
                      f"{new_tokens} tokens generated per utterance, random weights",
            "method_short": "GPU, whole pipeline", "gpu": res, "parts": parts,
            "mono_total_ms": res["mono"]["seconds"] * 1e3, "smear_total_ms": res["smear_moe"]["seconds"] * 1e3,
            "smear_over_mono": ratio, "rtf_mono": res["mono"]["rtf"]}
