"""Whisper log-mel features in torch, batched on the model's device.

Numerically the same as ``transformers.WhisperFeatureExtractor`` (it reuses
the extractor's mel filter bank, ``n_fft`` and ``hop_length``), with two
differences that make a padded batch give the same features as each
utterance alone:

* the log-mel range clamp (``max - 8``) uses the maximum over the
  utterance's REAL frames only;
* with ``edge="reflect"`` (default) each utterance's right edge is
  reflect-padded at its own end, as the STFT does for the utterance alone
  (``WhisperFeatureExtractor(..., padding="longest")`` on one utterance).
  With ``edge="zeros"`` the signal continues with zeros after its end, as in
  real Whisper, which pads the audio to 30 s before the STFT.

Frames: ``F = L // hop_length`` (the STFT gives ``L // hop + 1`` centred
frames and Whisper drops the last one).
"""
from __future__ import annotations

import logging
from typing import Tuple

import torch
from torch import nn

LOG_FLOOR = -10.0  # log10 of the 1e-10 power clamp: the smallest possible log-mel


def load_feature_extractor(path_or_extractor):
    """A ``WhisperFeatureExtractor`` from itself or from its saved dir / hub name."""
    from transformers import WhisperFeatureExtractor

    if isinstance(path_or_extractor, WhisperFeatureExtractor):
        return path_or_extractor
    return WhisperFeatureExtractor.from_pretrained(str(path_or_extractor))


class WhisperLogMel(nn.Module):
    """Waveforms (B, L) at 16 kHz -> Whisper log-mel spectrograms (B, n_mels, F).

    Args:
        feature_extractor: a ``transformers.WhisperFeatureExtractor`` or the
            dir / hub name it was saved to.  Its ``mel_filters``, ``n_fft``,
            ``hop_length`` and ``sampling_rate`` are used.

    The window and filter bank are non-persistent float32 buffers: they move
    with ``.to(device)`` but never enter a checkpoint.  Features are always
    computed in float32.
    """

    def __init__(self, feature_extractor):
        super().__init__()
        fe = load_feature_extractor(feature_extractor)
        self.n_fft = int(fe.n_fft)
        self.hop_length = int(fe.hop_length)
        self.sampling_rate = int(fe.sampling_rate)
        mel_filters = torch.as_tensor(fe.mel_filters, dtype=torch.float32)  # (n_freq, n_mels)
        if mel_filters.shape[0] != self.n_fft // 2 + 1:
            raise ValueError(
                f"feature extractor: mel_filters has {mel_filters.shape[0]} frequency bins, "
                f"expected n_fft // 2 + 1 = {self.n_fft // 2 + 1}"
            )
        self.n_mels = int(mel_filters.shape[1])
        if float(getattr(fe, "dither", 0.0) or 0.0) != 0.0:
            logging.getLogger(__name__).warning(
                "feature extractor has dither=%s; WhisperLogMel computes deterministic features without dither",
                fe.dither,
            )
        self.register_buffer("mel_filters", mel_filters.T.contiguous(), persistent=False)  # (n_mels, n_freq)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def num_frames(self, speech_lengths: torch.Tensor) -> torch.Tensor:
        """Samples (B,) -> log-mel frames (B,): ``L // hop_length``."""
        return torch.div(speech_lengths, self.hop_length, rounding_mode="floor")

    def _padded_signal(self, speech: torch.Tensor, speech_lengths: torch.Tensor, edge: str) -> torch.Tensor:
        """(B, L) -> (B, L + n_fft): each row centre-padded by ``n_fft // 2`` on both sides.

        The left edge is reflected (as ``torch.stft(center=True)``).  On the
        right, ``edge="reflect"`` reflects at each utterance's own end;
        ``edge="zeros"`` zeroes everything after the end and reflects at the
        end of the (B, L) buffer, exactly like a zero-padded input.
        """
        batch, length = speech.shape
        pad = self.n_fft // 2
        if edge == "zeros":
            keep = torch.arange(length, device=speech.device)[None, :] < speech_lengths[:, None]
            speech = speech * keep
            ends = torch.full_like(speech_lengths, length)
        elif edge == "reflect":
            ends = speech_lengths
        else:
            raise ValueError(f"WhisperLogMel: edge must be 'reflect' or 'zeros', got {edge!r}")
        ends = ends.clamp(min=1)[:, None]  # (B, 1)
        j = torch.arange(-pad, length + pad, device=speech.device)[None, :].expand(batch, -1)
        j = torch.where(j < 0, -j, j)  # reflect at the start
        j = torch.where(j >= ends, 2 * (ends - 1) - j, j)  # reflect at the end
        j = torch.minimum(j.clamp(min=0), ends - 1)  # frames far past the end: any valid index
        return torch.gather(speech, 1, j)

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        edge: str = "reflect",
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Compute log-mel features.

        Args:
            speech: (B, L) float waveforms at ``sampling_rate``.
            speech_lengths: (B,) number of real samples per row.
            edge: ``"reflect"`` (each utterance as if alone) or ``"zeros"``
                (the audio continues with silence, as Whisper's 30 s padding).

        Returns:
            mel: (B, n_mels, L // hop_length) float32.  Frames past an
                utterance's length hold, with ``edge="zeros"``, the features
                of the zero-padded signal; with ``edge="reflect"``, the value
                of silence (the utterance's floor).
            mel_lengths: (B,) long, ``speech_lengths // hop_length``.
        """
        if speech.dim() != 2:
            raise ValueError(f"WhisperLogMel: speech must be (B, L), got shape {tuple(speech.shape)}")
        speech = speech.float()
        speech_lengths = speech_lengths.to(speech.device).long()
        num_frames = speech.shape[1] // self.hop_length
        signal = self._padded_signal(speech, speech_lengths, edge)
        stft = torch.stft(
            signal, self.n_fft, self.hop_length, window=self.window, center=False, return_complex=True
        )  # (B, n_freq, num_frames + 1)
        power = stft[..., :num_frames].abs() ** 2
        log_spec = torch.clamp(self.mel_filters @ power, min=1e-10).log10()  # (B, n_mels, F)

        mel_lengths = self.num_frames(speech_lengths)
        real = torch.arange(num_frames, device=speech.device)[None, None, :] < mel_lengths[:, None, None]
        peak = torch.where(real, log_spec, torch.full_like(log_spec, LOG_FLOOR)).amax(dim=(1, 2), keepdim=True)
        floor = peak - 8.0
        log_spec = torch.maximum(log_spec, floor)
        if edge == "reflect":
            log_spec = torch.where(real, log_spec, floor.clamp(min=LOG_FLOOR).expand_as(log_spec))
        return (log_spec + 4.0) / 4.0, mel_lengths

    def extra_repr(self) -> str:
        return (f"n_mels={self.n_mels}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"sampling_rate={self.sampling_rate}")
