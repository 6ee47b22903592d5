"""CTC pretraining of the tiny Whisper encoder over characters (the head is kept
beside the encoder for :func:`ctc_greedy_decode`, not used by the ASR model)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_llm_asr.tiny_models.common import (PathLike, Schedule, atomic_dir, batch_indices, loss_summary,
                                               progress_bar, resolve_device)

logger = logging.getLogger(__name__)

CTC_HEAD_FILE = "ctc_head.pt"  # CTC head of the pretrained tiny encoder, in its model dir
def build_charset(texts: Iterable[str]) -> List[str]:
    """Sorted distinct characters (code points) of ``texts``; the space is one of them."""
    return sorted(set("".join(texts)))


def _whisper_model_class(config):
    from transformers import WhisperForConditionalGeneration, WhisperModel

    arch = (config.architectures or ["WhisperForConditionalGeneration"])[0]
    return WhisperModel if arch == "WhisperModel" else WhisperForConditionalGeneration


def save_whisper_encoder(whisper_dir: PathLike, encoder_state: Dict[str, torch.Tensor], out_dir: PathLike,
                         extra: Optional[Dict[str, object]] = None) -> Path:
    """Write ``whisper_dir`` with its encoder weights replaced by ``encoder_state`` to ``out_dir`` (atomically).

    The checkpoint's other files (feature extractor, tokenizer, ...) are copied
    along, except a stale ``ctc_head.pt``; ``extra`` maps file names to objects
    written with ``torch.save`` into the same directory.
    """
    from transformers import AutoConfig

    whisper_dir = Path(whisper_dir)
    config = AutoConfig.from_pretrained(str(whisper_dir))
    model = _whisper_model_class(config).from_pretrained(str(whisper_dir), dtype=torch.float32)
    encoder = model.get_encoder()
    missing, unexpected = encoder.load_state_dict({k: v.float() for k, v in encoder_state.items()}, strict=False)
    if missing or unexpected:
        raise KeyError(f"save_whisper_encoder: encoder state does not match: missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
    weights = (".safetensors", ".bin", ".index.json")
    with atomic_dir(out_dir) as tmp:
        for f in whisper_dir.iterdir():
            if f.is_file() and not f.name.endswith(weights) and f.name != CTC_HEAD_FILE:
                shutil.copy2(f, tmp / f.name)
        model.save_pretrained(tmp)
        for name, obj in (extra or {}).items():
            torch.save(obj, tmp / name)
    return Path(out_dir)


def _pad_waves(waves: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of (L_i,) float arrays -> ((B, max L) float32 zero-padded, (B,) long lengths)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.as_tensor(w, dtype=torch.float32)
    return batch, lengths


def speed_perturbed(wave: np.ndarray, factor: float) -> np.ndarray:
    """``wave`` (L,) played ``factor`` times faster: (about L / factor,) samples, same sample rate."""
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1.0:
        return wave
    from fractions import Fraction

    import torchaudio.functional

    ratio = Fraction(factor).limit_denominator(100)  # resample from rate * factor to rate
    out = torchaudio.functional.resample(torch.as_tensor(wave, dtype=torch.float32),
                                         orig_freq=ratio.numerator, new_freq=ratio.denominator)
    return out.numpy()


def pretrain_whisper_encoder_ctc(
    whisper_dir: PathLike,
    utterances: Iterable[Tuple[np.ndarray, str]],
    charset: Optional[Sequence[str]] = None,
    out_dir: Optional[PathLike] = None,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: Optional[int] = None,
    log_every: int = 50,
    device: str = "cpu",
    seed: int = 0,
    speed_perturb: Optional[Sequence[float]] = None,
    spec_augment: Optional[Dict] = None,
    length_pool: Optional[int] = None,
) -> Dict[str, float]:
    """Train the Whisper encoder in ``whisper_dir`` with a character CTC head; save it back as a Whisper dir.

    Args:
        whisper_dir: HF Whisper checkpoint (e.g. from :func:`build_tiny_whisper`).
        utterances: (waveform float32 (L,) at 16 kHz, transcript) pairs.
        charset: CTC output symbols (characters; blank is added as id 0);
            default: every character of the transcripts.  Characters outside
            it are dropped from the targets.
        out_dir: where to save (default: ``whisper_dir``, replaced atomically).
        steps, batch_size, lr, warmup, log_every, device, seed: training.
            AdamW, warm-up (default ``min(100, steps // 10)``) + cosine decay,
            gradient clipping at 5.0.
        speed_perturb: speed factors (Kaldi's speed perturbation, e.g.
            ``[0.9, 1.0, 1.1]``): each utterance of a batch is resampled by a
            factor drawn from these, which shifts tempo, pitch and formants
            together, as another speaker would; ``None``: off.
        spec_augment: :class:`~espnet_llm_asr.tiny_models.mel_augment.MelAugment`
            keys (frequency warp, frequency and time masks of the log-mel);
            ``None``: off.
        length_pool: ``None``: random batches (with replacement); ``P``:
            batches of similar-length utterances, sorted within pools of
            ``P`` batches (:func:`~espnet_llm_asr.tiny_models.common.batch_indices`),
            which spends far less of each step on padding.

    Features come from :class:`~espnet_llm_asr.encoder.WhisperEncoder` with
    ``pad_to_30s=False, freeze=False``: the log-mel and masked encoder path
    the ASR model runs.  The CTC head is saved next to the weights as
    ``ctc_head.pt`` (``{"weight", "bias", "symbols"}``; ignored by
    Whisper loaders), for the CTC-only diagnostic :func:`ctc_greedy_decode`.

    Returns:
        ``first_loss`` / ``last_loss`` (per-character CTC, means over the
        first / last few steps) and ``num_symbols``.
    """
    from espnet_llm_asr.encoder import WhisperEncoder
    from espnet_llm_asr.tiny_models.mel_augment import MelAugment

    augment = MelAugment(**spec_augment) if spec_augment else None  # checked before any work
    if speed_perturb is not None and (not list(speed_perturb) or any(f <= 0 for f in speed_perturb)):
        raise ValueError(f"pretrain_encoder.speed_perturb must be positive speed factors, got {speed_perturb!r}")
    data = [(np.asarray(w, dtype=np.float32), t) for w, t in utterances]
    if not data:
        raise ValueError("pretrain_whisper_encoder_ctc: no utterances")
    symbols = list(charset) if charset is not None else build_charset(t for _, t in data)
    index = {c: i + 1 for i, c in enumerate(symbols)}  # 0 = blank
    targets = [[index[c] for c in t if c in index] for _, t in data]

    device = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = WhisperEncoder(str(whisper_dir), pad_to_30s=False, freeze=False).to(device)
    frames = encoder.output_lengths(torch.tensor([len(w) for w, _ in data]))
    too_long = sum(int(len(y) > f) for y, f in zip(targets, frames.tolist()))
    if too_long:
        logger.warning("%d of %d transcripts have more characters than encoder frames (CTC ignores them)",
                       too_long, len(data))
    head = torch.nn.Linear(encoder.output_size(), len(symbols) + 1).to(device)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = Schedule(lr, steps, min(100, steps // 10) if warmup is None else warmup)
    ctc = torch.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    encoder.train()
    losses: List[float] = []
    batches = batch_indices([len(w) for w, _ in data], batch_size, gen, length_pool)
    with progress_bar(steps, "encoder CTC pretraining") as bar:
        for step in range(steps):
            idx = next(batches)
            waves = [data[i][0] for i in idx]
            if speed_perturb:
                picks = torch.randint(len(speed_perturb), (len(idx),), generator=gen).tolist()
                waves = [speed_perturbed(w, speed_perturb[k]) for w, k in zip(waves, picks)]
            speech, speech_lengths = _pad_waves(waves)
            ys = [targets[i] for i in idx]
            if augment is None:
                feats, feats_lengths = encoder(speech.to(device), speech_lengths.to(device))
            else:  # the encoder's own log-mel path (pad_to_30s=False), augmented before the layers
                mel, mel_lengths = encoder.logmel(speech.to(device), speech_lengths.to(device), edge="reflect")
                feats, feats_lengths = encoder.forward_mel(augment(mel, mel_lengths, gen), mel_lengths)
            log_probs = head(feats).log_softmax(dim=-1).transpose(0, 1)  # (T, B, C)
            flat = torch.tensor([c for y in ys for c in y], dtype=torch.long)
            loss = ctc(log_probs, flat, feats_lengths.cpu(), torch.tensor([len(y) for y in ys]))
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if (step + 1) % log_every == 0 or step + 1 == steps:
                logger.info("CTC step %d/%d: loss %.4f (mean of last %d: %.4f), lr %.2e", step + 1, steps,
                            losses[-1], min(log_every, len(losses)), np.mean(losses[-log_every:]), schedule(step))
    state = {k: v.detach().cpu() for k, v in encoder.encoder.state_dict().items()}
    target = Path(out_dir) if out_dir is not None else Path(whisper_dir)
    head_state = {"weight": head.weight.detach().cpu(), "bias": head.bias.detach().cpu(), "symbols": symbols}
    save_whisper_encoder(whisper_dir, state, target, extra={CTC_HEAD_FILE: head_state})
    result = loss_summary(losses)
    result["num_symbols"] = len(symbols)
    logger.info("CTC pretraining done: loss %.4f -> %.4f, encoder saved to %s",
                result["first_loss"], result["last_loss"], target)
    return result


@torch.no_grad()
def ctc_greedy_decode(whisper_dir: PathLike, waves: Sequence[np.ndarray], batch_size: int = 16,
                      device: str = "cpu") -> List[str]:
    """Best-path CTC transcripts of ``waves`` (16 kHz float arrays) by the encoder and its saved CTC head.

    A diagnostic of the pretrained encoder alone (no projector, no LLM): what
    the frozen speech features carry.  Needs ``whisper_dir/ctc_head.pt``
    (written by :func:`pretrain_whisper_encoder_ctc`).
    """
    from espnet_llm_asr.encoder import WhisperEncoder

    head_file = Path(whisper_dir) / CTC_HEAD_FILE
    if not head_file.is_file():
        raise FileNotFoundError(f"{head_file} not found: only encoders pretrained by "
                                "pretrain_whisper_encoder_ctc have a CTC head")
    state = torch.load(head_file, map_location="cpu", weights_only=True)
    symbols = state["symbols"]
    encoder = WhisperEncoder(str(whisper_dir), pad_to_30s=False).to(device).eval()
    head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0]).to(device)
    head.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
    hyps: List[str] = []
    for start in range(0, len(waves), batch_size):
        speech, lengths = _pad_waves(waves[start:start + batch_size])
        feats, feats_lengths = encoder(speech.to(device), lengths.to(device))
        best = head(feats).argmax(dim=-1).cpu()  # (B, T)
        for row, n in zip(best.tolist(), feats_lengths.tolist()):
            out, prev = [], 0
            for k in row[:n]:
                if k != prev and k != 0:
                    out.append(symbols[k - 1])
                prev = k
            hyps.append(" ".join("".join(out).split()))
    return hyps
