"""Projectors as ESPnet frontends: (frozen speech encoder or dumped features) -> projector.

Every projector of :mod:`espnet_llm_asr.projectors` is registered (in
:mod:`espnet_llm_asr.registry`) in ``espnet2.tasks.asr.frontend_choices``
under its own name, so a training yaml picks one with::

    frontend: smear_moe
    frontend_conf:
        encoder: exp/tiny_models/whisper     # or null when reading dumped features
        encoder_conf: {pad_to_30s: false}
        input_dim: 256                       # only needed without an encoder
        hidden_dim: 2048
        num_experts: 4

``output_dim`` (the LLM hidden size) is filled in by the LLM-ASR task from the
LLM; when the frontend is used elsewhere it must be given.

Input ``speech`` is either a waveform batch (B, L) at 16 kHz, which the
frozen encoder turns into (B, T, D) features, or already-dumped encoder
features (B, T, D) read from a kaldiio ark (see
``espnet_llm_asr.bin.dump_encoder_feats``): the same model trains and decodes
on both with no code change besides the config.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend

from espnet_llm_asr.projectors import PROJECTOR_CLASSES, ProjectorOutput, build_projector


class ProjectorFrontend(AbsFrontend):
    """Frozen speech encoder (optional) followed by a trainable projector.

    Subclasses only set ``projector_name``.

    Args:
        output_dim: LLM hidden size (projector output size).
        encoder: HF Whisper dir/name, loaded on the first waveform batch (so a
            model trained on dumped features can still transcribe wav files);
            ``None`` when only dumped features will ever be given.
        encoder_conf: kwargs of :class:`espnet_llm_asr.encoder.WhisperEncoder`.
        input_dim: encoder feature size; required without ``encoder``.
        **projector_conf: passed to :func:`build_projector`.
    """

    projector_name: str = ""

    def __init__(
        self,
        output_dim: int,
        encoder: Optional[str] = None,
        encoder_conf: Optional[Dict] = None,
        input_dim: Optional[int] = None,
        **projector_conf,
    ):
        super().__init__()
        self.encoder_path = encoder
        self.encoder_conf = dict(encoder_conf or {})
        self.encoder = None  # built on the first waveform batch (see _get_encoder)
        if encoder is not None:
            enc_dim = encoder_output_size(encoder, self.encoder_conf.get("trust_remote_code", False))
            if input_dim is not None and input_dim != enc_dim:
                raise ValueError(
                    f"frontend_conf.input_dim={input_dim} but encoder {encoder!r} outputs {enc_dim}"
                )
            input_dim = enc_dim
        elif input_dim is None:
            raise ValueError(
                "frontend_conf: give either 'encoder' (a Whisper checkpoint) or "
                "'input_dim' (the size of dumped encoder features)"
            )
        self.input_dim = int(input_dim)
        self.projector = build_projector(self.projector_name, self.input_dim, output_dim, **projector_conf)

    def _get_encoder(self, device: torch.device):
        """The frozen encoder, loaded on first use: training on dumped features never loads it."""
        if self.encoder is None:
            from espnet_llm_asr.encoder import WhisperEncoder

            self.encoder = WhisperEncoder(self.encoder_path, **self.encoder_conf).to(device)
        return self.encoder

    def output_size(self) -> int:
        return self.projector.output_size()

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Waveform (B, L) -> encoder features (B, T, D); dumped (B, T, D) passes through."""
        if speech.dim() == 3:
            if speech.size(-1) != self.input_dim:
                raise ValueError(
                    f"dumped features have dimension {speech.size(-1)}, "
                    f"but the projector expects input_dim={self.input_dim}"
                )
            return speech, speech_lengths
        if self.encoder_path is None:
            raise ValueError(
                "got waveforms but frontend_conf has no 'encoder': either set "
                "frontend_conf.encoder or feed dumped features (feats.scp)"
            )
        return self._get_encoder(speech.device)(speech, speech_lengths)

    def project(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        lang_ids: Optional[torch.Tensor] = None,
        target_lengths: Optional[torch.Tensor] = None,
        augment: Optional[Callable] = None,
    ) -> ProjectorOutput:
        """(B, L) waveforms or (B, T, D) features -> :class:`ProjectorOutput` in LLM space.

        ``augment`` (training only, e.g. ESPnet's ``SpecAug``) maps the encoder
        features ``(B, T, D), (B,)`` to augmented ones before the projector.
        """
        feats, feats_lengths = self.encode(speech, speech_lengths)
        if augment is not None:
            feats, feats_lengths = augment(feats, feats_lengths)
        feats = feats.to(next(self.projector.parameters()).dtype)
        return self.projector(feats, feats_lengths, lang_ids=lang_ids, target_lengths=target_lengths)

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """ESPnet's frontend interface: (B, L) or (B, T, D) -> ((B, T', output_dim), (B,))."""
        out = self.project(input, input_lengths)
        return out.embeds, out.lengths


def encoder_output_size(name_or_path: str, trust_remote_code: bool = False) -> int:
    """Feature size of a Whisper encoder, read from its config (no weights loaded)."""
    from transformers import AutoConfig

    from espnet_llm_asr.llm import check_model_path, check_remote_code

    check_model_path(name_or_path, "frontend_conf.encoder")
    check_remote_code(name_or_path, trust_remote_code, "frontend_conf.encoder_conf.trust_remote_code")
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return int(getattr(config, "d_model", None) or config.hidden_size)


def _frontend_class(name: str) -> type:
    camel = "".join(part.capitalize() for part in name.split("_"))
    return type(f"{camel}Frontend", (ProjectorFrontend,), {
        "projector_name": name,
        "__module__": __name__,
        "__doc__": f"ESPnet frontend: (encoder ->) the '{name}' projector.",
    })


#: frontend name -> class, one per projector (registered by espnet_llm_asr.registry)
FRONTEND_CLASSES: Dict[str, type] = {}
for _name in PROJECTOR_CLASSES:
    _cls = _frontend_class(_name)
    globals()[_cls.__name__] = FRONTEND_CLASSES[_name] = _cls  # module-level: picklable
del _name, _cls
