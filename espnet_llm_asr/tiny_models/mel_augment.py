"""SpecAugment-style augmentation of log-mel features for the tiny encoder's CTC pretraining.

The default corpus has nine training voices and tests two held-out ones
(``test_unseen_voice``); what differs between espeak-ng voice variants is
mostly pitch and formant positions.  Besides speed perturbation (which moves
tempo, pitch and formants together), the encoder can be shown:

- a *frequency warp* (vocal tract length perturbation): each utterance's mel
  axis stretched by a factor drawn from ``[1 - freq_warp, 1 + freq_warp]``,
  so formants move without the tempo changing;
- *frequency masks* and *time masks* (SpecAugment): bands of mel bins and
  runs of frames replaced by the utterance's mean, so that no single band
  or moment carries a character alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MelAugment:
    """Random warp and masks of a batch of log-mels, drawn from a ``torch.Generator``.

    ``freq_warp``: maximum relative stretch of the mel axis (0: off);
    ``freq_masks`` bands of 1..``freq_width`` bins; ``time_masks`` runs of
    1..``time_width`` frames (each at most a fifth of the utterance).
    """

    freq_warp: float = 0.0
    freq_masks: int = 0
    freq_width: int = 8
    time_masks: int = 0
    time_width: int = 10

    def __post_init__(self):
        if not 0.0 <= self.freq_warp < 0.5:
            raise ValueError(f"spec_augment.freq_warp must be in [0, 0.5), got {self.freq_warp}")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"spec_augment.{name} must be >= 0, got {getattr(self, name)}")

    def __call__(self, mel: torch.Tensor, mel_lengths: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, n_mels, F) log-mel, (B,) valid frames -> augmented (B, n_mels, F); frames past a length untouched."""
        out = mel.clone()
        n_mels = mel.shape[1]
        for b, length in enumerate(mel_lengths.tolist()):
            x = out[b, :, :length]
            if self.freq_warp > 0:
                alpha = 1.0 + self.freq_warp * (2 * float(torch.rand(1, generator=gen)) - 1)
                x = warp_mel_axis(x, alpha)
            fill = x.mean()
            for _ in range(self.freq_masks):
                width = int(torch.randint(1, self.freq_width + 1, (1,), generator=gen)) if self.freq_width else 0
                start = int(torch.randint(0, max(1, n_mels - width + 1), (1,), generator=gen))
                x[start:start + width, :] = fill
            max_t = min(self.time_width, length // 5)
            for _ in range(self.time_masks if max_t > 0 else 0):
                width = int(torch.randint(1, max_t + 1, (1,), generator=gen))
                start = int(torch.randint(0, length - width + 1, (1,), generator=gen))
                x[:, start:start + width] = fill
            out[b, :, :length] = x
        return out


def warp_mel_axis(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """(n_mels, T) -> (n_mels, T) with bin k taking the (interpolated) value of bin k / alpha.

    ``alpha > 1`` moves spectral content up (a shorter vocal tract), ``< 1``
    down; bins beyond the edge repeat the edge bin.
    """
    n = x.shape[0]
    src = (torch.arange(n, dtype=torch.float32, device=x.device) / alpha).clamp(0, n - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (src - lo.to(src.dtype)).unsqueeze(1).to(x.dtype)
    return x[lo] * (1 - w) + x[hi] * w
