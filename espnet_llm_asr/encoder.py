"""The frozen speech encoder: the encoder half of a Hugging Face Whisper checkpoint.

    waveform (B, L) 16 kHz -> log-mel (B, n_mels, L // 160) -> Whisper encoder -> (B, T, D)
    T = ceil((L // 160) / 2): 50 frames per second (conv2 has stride 2)

Two ways to run it:

* ``pad_to_30s=True``: real Whisper.  The audio continues with silence up
  to the 30 s window, the Hugging Face encoder runs on all 3000 mel frames
  as it was trained, and the outputs are trimmed to each utterance's real
  frames.  Costs a full 30 s window per utterance.
* ``pad_to_30s=False`` (default): the encoder runs on the real frames only.
  conv1/conv2/positions/layers/layer_norm are applied here (the HF forward
  insists on 3000 frames), the convolutions see zeros after each
  utterance's end (as for the utterance alone), and an attention mask hides
  padded frames, so an utterance in a padded batch gives the same features
  as alone.

Audio longer than one window (``2 * max_source_positions`` mel frames:
30 s for Whisper) is cut into windows that are encoded separately, and the
window outputs are concatenated: nothing is truncated.

Only the encoder weights are read from the checkpoint (WhisperModel and
WhisperForConditionalGeneration layouts both work; the decoder is never
built).  The module is frozen by default: no parameter requires grad, it
stays in eval mode whatever the parent does, runs under ``torch.no_grad()``
(not ``inference_mode``: its outputs feed a trainable projector) and keeps
the dtype it was loaded with when the parent is cast.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from espnet_llm_asr.features import WhisperLogMel
from espnet_llm_asr.torch_utils import apply_keeping_dtype, resolve_dtype

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------- loading
def resolve_model_dir(name_or_path: str, key: str = "encoder") -> Path:
    """A local checkpoint dir for ``name_or_path`` (a dir, or a hub name already in the HF cache).

    A value that starts with ``/``, ``.`` or ``~``, or has more than one
    ``/``, is a local path and must exist.  A hub name is looked up with
    ``huggingface_hub`` (downloads only when the hub is online; with
    ``HF_HUB_OFFLINE=1`` only the local cache is used).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"{key}: checkpoint directory {name_or_path!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors"]))
        if not any(snapshot.glob("*.safetensors")):
            snapshot = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.bin"]))
    except Exception as e:  # offline and not cached, unknown repo, no network ...
        raise FileNotFoundError(
            f"{key}: {name_or_path!r} is neither a local directory nor a Hugging Face model "
            f"that could be found (offline runs need it in the local cache): {e}"
        ) from e
    return snapshot


def _checkpoint_tensors(model_dir: Path) -> Dict[str, Tuple[Path, str]]:
    """Tensor name -> (file, format) for the checkpoint files in ``model_dir``."""
    for index_name, fmt in [("model.safetensors.index.json", "safetensors"),
                            ("pytorch_model.bin.index.json", "bin")]:
        index = model_dir / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return {name: (model_dir / shard, fmt) for name, shard in weight_map.items()}
    single = model_dir / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), "pt") as f:
            return {name: (single, "safetensors") for name in f.keys()}
    single = model_dir / "pytorch_model.bin"
    if single.is_file():
        state = torch.load(single, map_location="cpu", weights_only=True, mmap=True)
        return {name: (single, "bin") for name in state}
    raise FileNotFoundError(
        f"encoder: no model.safetensors / pytorch_model.bin (or their .index.json) in {str(model_dir)!r}"
    )


def _encoder_prefix(names) -> str:
    """The key prefix of the encoder weights: ``model.encoder.``, ``encoder.`` or ``""``."""
    candidates = sorted(
        n[: -len("conv1.weight")] for n in names
        if n.endswith("conv1.weight") and (n == "conv1.weight" or n.endswith("encoder.conv1.weight"))
    )
    if not candidates:
        raise KeyError("encoder: the checkpoint has no Whisper encoder weights (no '*encoder.conv1.weight' key)")
    return candidates[0]


def load_encoder_state_dict(model_dir: Path, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """Read only the Whisper encoder's tensors from a checkpoint dir, keys without prefix."""
    tensors = _checkpoint_tensors(model_dir)
    prefix = _encoder_prefix(tensors)
    wanted: Dict[Path, Dict[str, str]] = {}
    for name, (file, fmt) in tensors.items():
        if name.startswith(prefix):
            wanted.setdefault(file, {})[name] = fmt
    state = {}
    for file, names in wanted.items():
        if next(iter(names.values())) == "safetensors":
            from safetensors import safe_open

            with safe_open(str(file), "pt") as f:
                for name in names:
                    state[name[len(prefix):]] = f.get_tensor(name).to(dtype)
        else:
            full = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for name in names:
                state[name[len(prefix):]] = full[name].to(dtype)
    return state


def load_whisper_encoder(model_dir: Path, config, dtype: torch.dtype) -> nn.Module:
    """Build ``transformers``' WhisperEncoder from ``config`` and load its weights from ``model_dir``.

    The module is created on the meta device and the checkpoint tensors are
    assigned to it, so no time or memory goes into a random initialisation.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    config._attn_implementation = "sdpa"  # the masked path passes an additive float mask
    with torch.device("meta"):
        encoder = HFWhisperEncoder(config)
    state = load_encoder_state_dict(model_dir, dtype)
    missing = sorted(set(encoder.state_dict()) - set(state))
    if missing:
        raise KeyError(f"encoder: checkpoint {str(model_dir)!r} lacks encoder weights {missing[:5]}")
    encoder.load_state_dict(state, strict=False, assign=True)
    leftover = [n for n, t in list(encoder.named_parameters()) + list(encoder.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"encoder: tensors {leftover[:5]} were not loaded from {str(model_dir)!r}")
    return encoder


def load_feature_extractor_for(model_dir: Path, num_mel_bins: int):
    """The checkpoint's WhisperFeatureExtractor (a default one when it has none)."""
    from transformers import WhisperFeatureExtractor

    if (model_dir / "preprocessor_config.json").is_file():
        fe = WhisperFeatureExtractor.from_pretrained(str(model_dir))
    else:
        logger.warning("encoder: no preprocessor_config.json in %s; using WhisperFeatureExtractor(feature_size=%d)",
                       model_dir, num_mel_bins)
        fe = WhisperFeatureExtractor(feature_size=num_mel_bins)
    if fe.feature_size != num_mel_bins:
        raise ValueError(
            f"encoder: feature extractor of {str(model_dir)!r} has feature_size={fe.feature_size} "
            f"but the model expects num_mel_bins={num_mel_bins}"
        )
    return fe


# ---------------------------------------------------------------------- module
class WhisperEncoder(nn.Module):
    """Frozen Whisper encoder: waveforms (B, L) -> features (B, T, d_model).

    Args:
        model_name_or_path: local Whisper checkpoint dir or hub name (cached).
        pad_to_30s: run each window at the full 30 s as real Whisper does
            (see the module docstring); default runs on the real frames only.
        dtype: ``float32`` | ``bfloat16`` | ``float16`` | ``auto`` for the
            encoder weights (``auto`` as ``llm_conf.dtype``); log-mel features
            are always computed in float32.
        trust_remote_code: passed to ``AutoConfig.from_pretrained``.
        freeze: frozen (default).  ``freeze=False`` makes it trainable (used
            by the CTC pretraining of the tiny encoder).
        output_layer: run only the first N transformer layers (1 <= N <=
            the checkpoint's ``encoder_layers``), then the final layer norm;
            None (default): all.  A frozen Whisper's last layer serves its
            own decoder; an earlier one may keep more of the sounds (the
            recipe README compares them).
    """

    def __init__(
        self,
        model_name_or_path: str,
        pad_to_30s: bool = False,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        freeze: bool = True,
        output_layer: Optional[int] = None,
    ):
        super().__init__()
        from transformers import AutoConfig

        torch_dtype = resolve_dtype(dtype, "encoder_conf.dtype")
        from espnet_llm_asr.llm import check_remote_code

        model_dir = resolve_model_dir(str(model_name_or_path))
        check_remote_code(str(model_dir), trust_remote_code, "frontend_conf.encoder_conf.trust_remote_code")
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
        if config.model_type != "whisper":
            raise ValueError(
                f"encoder: {model_name_or_path!r} is a {config.model_type!r} model, not a Whisper checkpoint"
            )
        self.model_name_or_path = str(model_name_or_path)
        self.pad_to_30s = pad_to_30s
        self.dtype = torch_dtype
        self.freeze = freeze
        self.logmel = WhisperLogMel(load_feature_extractor_for(model_dir, config.num_mel_bins))
        self.encoder = load_whisper_encoder(model_dir, config, self.dtype)
        layers = len(self.encoder.layers)
        if output_layer is not None:
            if isinstance(output_layer, bool) or not isinstance(output_layer, int) or not 1 <= output_layer <= layers:
                raise ValueError(f"encoder_conf.output_layer must be an integer in 1..{layers} (the layers of "
                                 f"{model_name_or_path!r}) or null (all), got {output_layer!r}")
            self.encoder.layers = self.encoder.layers[:output_layer]  # the later layers are never run
        self.output_layer = output_layer
        self.max_source_positions = int(config.max_source_positions)
        self.window_frames = 2 * self.max_source_positions  # log-mel frames per window (3000)
        self.frame_rate = self.logmel.sampling_rate / self.logmel.hop_length / 2  # 50.0 for Whisper
        self._set_trainable(not freeze)
        self.train(False)

    # ------------------------------------------------------------------ info
    def output_size(self) -> int:
        """Feature dimension D (Whisper's d_model)."""
        return int(self.encoder.config.d_model)

    @property
    def window_seconds(self) -> float:
        """Audio per encoder window: ``max_source_positions * 2 * hop / sr`` (30 s for Whisper)."""
        return self.window_frames * self.logmel.hop_length / self.logmel.sampling_rate

    def output_lengths(self, speech_lengths: torch.Tensor) -> torch.Tensor:
        """Samples (B,) -> output frames (B,): ``ceil((L // hop) / 2)``."""
        mel_lengths = self.logmel.num_frames(speech_lengths.long())
        return torch.div(mel_lengths + 1, 2, rounding_mode="floor")

    # ------------------------------------------------------------------ frozen behaviour
    def _set_trainable(self, trainable: bool) -> None:
        for name, p in self.encoder.named_parameters():
            # Whisper's sinusoidal positions are never trained
            p.requires_grad_(trainable and not name.startswith("embed_positions"))

    def train(self, mode: bool = True) -> "WhisperEncoder":
        """A frozen encoder stays in eval mode (no dropout) whatever the parent asks."""
        return super().train(mode and not self.freeze)

    def _apply(self, fn, recurse: bool = True):
        # .to(device) moves it; .float()/.half()/.to(dtype) by the parent never recast it
        return apply_keeping_dtype(self, fn, recurse)

    # ------------------------------------------------------------------ forward
    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode waveforms.

        Args:
            speech: (B, L) float waveforms at 16 kHz (zero-padded).
            speech_lengths: (B,) long, real samples per row.

        Returns:
            feats: (B, T, D) in the encoder dtype, zero after each length;
                T = max(feats_lengths).
            feats_lengths: (B,) long, ``ceil((speech_lengths // hop) / 2)``.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            speech_lengths = speech_lengths.to(speech.device).long()
            if self.pad_to_30s:
                # the audio continues with silence to a whole number of windows, as in Whisper
                mel_frames = int(self.logmel.num_frames(speech_lengths).max()) if len(speech_lengths) else 0
                num_windows = max(1, math.ceil(mel_frames / self.window_frames))
                samples = num_windows * self.window_frames * self.logmel.hop_length
                if speech.shape[1] >= samples:
                    speech = speech[:, :samples]
                else:
                    speech = nn.functional.pad(speech, (0, samples - speech.shape[1]))
                speech_lengths = speech_lengths.clamp(max=samples)
                mel, mel_lengths = self.logmel(speech, speech_lengths, edge="zeros")
            else:
                mel, mel_lengths = self.logmel(speech, speech_lengths, edge="reflect")
            return self.forward_mel(mel, mel_lengths)

    def forward_mel(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode log-mel features (B, n_mels, F) -> ((B, T, D), (B,)), T = max ceil(mel_lengths / 2).

        Long inputs are cut into windows of ``window_frames`` mel frames,
        each encoded alone; the outputs are concatenated.  With
        ``pad_to_30s`` every window is filled up to ``window_frames`` with the
        frames ``mel`` holds past the utterance's end, extended where needed
        with the utterance's smallest value (the log-mel of silence).
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self._forward_mel(mel, mel_lengths)

    def _forward_mel(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch, n_mels, frames = mel.shape
        if n_mels != self.logmel.n_mels:
            raise ValueError(f"encoder: got {n_mels} mel bins, the model expects {self.logmel.n_mels}")
        mel_lengths = mel_lengths.to(mel.device).long()
        out_lengths = torch.div(mel_lengths + 1, 2, rounding_mode="floor")
        W = self.window_frames
        num_windows = max(1, math.ceil(frames / W))
        if num_windows * W > frames:
            if self.pad_to_30s:
                real = torch.arange(frames, device=mel.device)[None, None, :] < mel_lengths[:, None, None]
                silence = torch.where(real, mel, torch.full_like(mel, float("inf"))).amin(dim=(1, 2), keepdim=True)
                silence = torch.where(torch.isinf(silence), torch.full_like(silence, -1.5), silence)
                pad = silence.expand(batch, n_mels, num_windows * W - frames)
                mel = torch.cat([mel, pad], dim=2)
            else:
                mel = nn.functional.pad(mel, (0, num_windows * W - frames))
        # (B, n_mels, n_win * W) -> (B * n_win, n_mels, W), window k of utterance b at row b * n_win + k
        windows = mel.reshape(batch, n_mels, num_windows, W).permute(0, 2, 1, 3).reshape(-1, n_mels, W)
        starts = torch.arange(num_windows, device=mel.device) * W
        win_lengths = (mel_lengths[:, None] - starts[None, :]).clamp(0, W).reshape(-1)  # (B * n_win,)
        keep = torch.nonzero(win_lengths > 0).squeeze(1)

        half = W // 2
        out = None
        if len(keep) > 0:
            x = windows[keep].to(self.dtype)
            if self.pad_to_30s:
                h = self.encoder(input_features=x).last_hidden_state  # (N, W / 2, D)
            else:
                longest = int(win_lengths[keep].max())
                h = self.encode_masked(x[:, :, :longest], win_lengths[keep])  # (N, ceil(longest / 2), D)
            out = h.new_zeros(batch * num_windows, half, h.shape[-1])
            out[keep, : h.shape[1]] = h
        if out is None:
            out = mel.new_zeros(batch * num_windows, half, self.output_size(), dtype=self.dtype)
        out = out.reshape(batch, num_windows * half, -1)
        longest_out = int(out_lengths.max()) if batch else 0
        out = out[:, :longest_out]
        valid = torch.arange(longest_out, device=out.device)[None, :] < out_lengths[:, None]
        return out * valid[:, :, None].to(out.dtype), out_lengths

    def encode_masked(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """The HF encoder's computation on up to one window, padded frames masked.

        Args:
            mel: (N, n_mels, T) log-mel in the encoder dtype, T <= window_frames.
            mel_lengths: (N,) real frames per row (>= 1).

        Returns:
            (N, ceil(T / 2), D); rows past ``ceil(mel_lengths / 2)`` are not meaningful.
        """
        enc = self.encoder
        T = mel.shape[-1]
        valid = (torch.arange(T, device=mel.device)[None, :] < mel_lengths[:, None]).to(mel.dtype)[:, None, :]
        # zeros after the end, as the convolutions' own zero padding sees for the utterance alone
        h = nn.functional.gelu(enc.conv1(mel * valid)) * valid
        h = nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1)  # (N, T2, D)
        T2 = h.shape[1]
        if T2 > enc.embed_positions.num_embeddings:
            raise ValueError(f"encoder: {T} mel frames exceed one window of {self.window_frames}")
        h = h + enc.embed_positions.weight[:T2].to(h.dtype)
        h = nn.functional.dropout(h, p=enc.config.dropout, training=self.training)
        out_lengths = torch.div(mel_lengths + 1, 2, rounding_mode="floor")
        pad = torch.arange(T2, device=mel.device)[None, :] >= out_lengths[:, None]  # (N, T2)
        mask = torch.zeros(pad.shape, dtype=h.dtype, device=h.device)
        mask = mask.masked_fill(pad, torch.finfo(h.dtype).min)[:, None, None, :]  # (N, 1, 1, T2) additive
        for layer in enc.layers:
            h = layer(h, mask)
            if isinstance(h, tuple):  # older transformers return (hidden_states, ...)
                h = h[0]
        return enc.layer_norm(h)

    def extra_repr(self) -> str:
        return (f"model={self.model_name_or_path!r}, pad_to_30s={self.pad_to_30s}, dtype={self.dtype}, "
                f"output_layer={self.output_layer}, "
                f"freeze={self.freeze}, window_seconds={self.window_seconds:g}")
