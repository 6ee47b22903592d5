"""A randomly initialised Whisper checkpoint at toy size."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from espnet_llm_asr.tiny_models.common import PathLike, atomic_dir

logger = logging.getLogger(__name__)


def build_tiny_whisper(
    out_dir: PathLike,
    num_mel_bins: int = 80,
    d_model: int = 256,
    encoder_layers: int = 4,
    encoder_attention_heads: int = 4,
    encoder_ffn_dim: int = 1024,
    max_source_positions: int = 1500,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised Whisper checkpoint + WhisperFeatureExtractor in ``out_dir``.

    The model is a WhisperForConditionalGeneration whose decoder is a
    placeholder (1 layer, 16-token vocabulary): only the encoder is used.
    One encoder window is ``2 * max_source_positions`` mel frames
    (``max_source_positions / 50`` seconds; 1500 -> 30 s as in Whisper).
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    if d_model % encoder_attention_heads:
        raise ValueError(f"build_tiny_whisper: d_model={d_model} is not divisible by "
                         f"encoder_attention_heads={encoder_attention_heads}")
    config = WhisperConfig(
        vocab_size=16, num_mel_bins=num_mel_bins, d_model=d_model,
        encoder_layers=encoder_layers, encoder_attention_heads=encoder_attention_heads,
        encoder_ffn_dim=encoder_ffn_dim, max_source_positions=max_source_positions,
        decoder_layers=1, decoder_attention_heads=encoder_attention_heads, decoder_ffn_dim=encoder_ffn_dim,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    window_s = 2 * max_source_positions * 160 / 16000
    fe_kwargs = {"chunk_length": int(window_s)} if window_s == int(window_s) and window_s >= 1 else {}
    fe = WhisperFeatureExtractor(feature_size=num_mel_bins, **fe_kwargs)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        fe.save_pretrained(tmp)
    n = sum(p.numel() for p in model.model.encoder.parameters())
    logger.info("tiny Whisper in %s: encoder %d params, d_model %d, %d layers, window %g s",
                out_dir, n, d_model, encoder_layers, window_s)
    return Path(out_dir)
