"""Python API for transcription, in the manner of ESPnet's ``Speech2Text``.

    from espnet_llm_asr.inference import Speech2Text
    s2t = Speech2Text("exp/asr_smear_moe")          # or config=..., model_file=...
    print(s2t("utt.wav").text)                       # .gates for MoEs, .cif_count/.alphas for CIF

``Speech2Text(exp_dir)`` decodes as the run did: its decoding options are the
run's recorded decoding config (the latest stage-12 decode's
``<exp_dir>/<inference_tag>/decode_config.yaml``, or the one ``decode_config=``
names), explicit arguments over them; a pack (:meth:`Speech2Text.from_pretrained`)
records its own (``decode.yaml``).  ``Speech2Text.batch`` decodes many
utterances at once (left-padded, KV-cached generation) and gives the same
hypotheses as one-by-one decoding.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from espnet_llm_asr.data_io import load_mono_16k
from espnet_llm_asr.decoding_options import DecodingOptions, read_decode_config, with_option_keywords

# checkpoint names tried in this order inside an experiment dir
MODEL_FILE_CANDIDATES = (
    "valid.acc.ave.pth", "valid.acc.best.pth", "valid.loss.best.pth", "latest.pth", "checkpoint.pth",
)
# a pack (stage 14, espnet_llm_asr.bin.pack_model): these files beside frozen_models.yaml
PACK_MODEL_FILE = "model.pth"
PACK_DECODE_CONFIG = "decode.yaml"
# stage 12's record of a decoding run's options: <exp_dir>/<inference_tag>/decode_config.yaml
RECORDED_DECODE_CONFIG = "decode_config.yaml"


@dataclass
class Hypothesis:
    """One utterance's result: ``text``, LLM ``tokens`` (ids), ``score``,
    ``gates`` ((E,) utterance expert weights, MoEs only), ``cif_count``
    (number of CIF-fired vectors, CIF projectors only) and ``alphas`` (CIF
    projectors only: the (T,) CIF weights, one per encoder frame of the
    utterance, without padding)."""

    text: str
    tokens: List[int]
    score: float
    gates: Optional[List[float]] = None
    cif_count: Optional[int] = None
    alphas: Optional[List[float]] = None


def find_model_file(exp_dir: Union[str, Path]) -> Path:
    exp_dir = Path(exp_dir)
    for name in MODEL_FILE_CANDIDATES:
        if (exp_dir / name).exists():
            return exp_dir / name
    raise FileNotFoundError(
        f"{exp_dir}: no checkpoint found (looked for {', '.join(MODEL_FILE_CANDIDATES)})"
    )


def latest_decode_config(exp_dir: Union[str, Path]) -> Optional[Path]:
    """The most recently modified ``<exp_dir>/*/decode_config.yaml`` (stage 12's records), or None."""
    found = [p for p in Path(exp_dir).glob(f"*/{RECORDED_DECODE_CONFIG}") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def resolve_decode_config(exp_dir: Optional[Union[str, Path]],
                          decode_config: Union[None, bool, str, Path]) -> Optional[Path]:
    """The recorded decoding config that ``decode_config`` means (see :class:`Speech2Text`), or None.

    None: the latest of ``exp_dir`` (:func:`latest_decode_config`; None
    without ``exp_dir``); False: none; a path: that YAML, or a decode dir
    holding ``decode_config.yaml``, as given or relative to ``exp_dir`` (so
    that a decode tag names one).
    """
    if decode_config is None:
        return latest_decode_config(exp_dir) if exp_dir is not None else None
    if decode_config is False:
        return None
    if isinstance(decode_config, bool) or not isinstance(decode_config, (str, Path)):
        raise TypeError(f"decode_config must be None (the latest recorded), False (none) or a path, "
                        f"got {decode_config!r}")
    tried = [Path(decode_config)]
    if exp_dir is not None and not Path(decode_config).is_absolute():
        tried.append(Path(exp_dir) / decode_config)
    for path in tried:
        if path.is_dir():
            path = path / RECORDED_DECODE_CONFIG
        if path.is_file():
            return path
    raise FileNotFoundError(f"decode_config={str(decode_config)!r}: no decoding YAML or decode dir holding "
                            f"{RECORDED_DECODE_CONFIG} (looked at {', '.join(map(str, tried))})")


def load_trained_model(config: Union[str, Path], model_file: Optional[Union[str, Path]], device: str = "cpu",
                       allow_frozen_mismatch: bool = False, frozen_paths: Optional[Dict[str, str]] = None):
    """Rebuild the model from ``config.yaml`` (frozen parts from their HF dirs) and
    load the trainable-only checkpoint with ``torch.load(weights_only=True)``.

    The frozen models and the lang_list are looked for as the config names them,
    then beside the config (a pack), then where the manifest
    (``frozen_models.yaml`` beside the config) saw them; ``frozen_paths``
    ({``llm``|``encoder``: dir}) overrides that.  The models found are checked
    against the manifest's fingerprints (:func:`~espnet_llm_asr.frozen_models.check_frozen_models`).
    """
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frozen_models import (MANIFEST, check_frozen_models, frozen_model_sources, locate,
                                              read_manifest, with_frozen_paths)
    from espnet_llm_asr.task import LLMASRTask

    config = Path(config)
    if not config.exists():
        raise FileNotFoundError(f"config file {config} does not exist")
    with config.open(encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    manifest_path = config.parent / MANIFEST
    manifest = read_manifest(manifest_path) if manifest_path.is_file() else {}
    found = {role: locate(source, config.parent, manifest.get(role))
             for role, source in frozen_model_sources(conf).items()}
    found.update(frozen_paths or {})
    conf = with_frozen_paths(conf, found)
    if conf.get("lang_list"):
        conf["lang_list"] = locate(conf["lang_list"], config.parent)
    check_frozen_models(manifest_path, found, allow_frozen_mismatch)
    args = argparse.Namespace(**conf)
    model = LLMASRTask.build_model(args)
    if model_file is not None:
        states = torch.load(model_file, map_location="cpu", weights_only=True)
        if "model" in states and isinstance(states["model"], dict):  # a resume checkpoint.pth
            states = states["model"]
        model.load_state_dict(states, strict=True)
    model.to(device).eval()
    return model, args


class Speech2Text:
    """Transcribe waveforms or audio files with a trained LLM-ASR model.

    Args:
        exp_dir: experiment dir holding ``config.yaml`` and checkpoints
            (:data:`MODEL_FILE_CANDIDATES`, the first found).
        config, model_file: explicit files instead of (or inside) ``exp_dir``.
        device: ``cpu`` / ``cuda``.
        decode_config: the recorded decoding config whose options are the
            defaults: None (default) the latest decoding of ``exp_dir``
            (the most recently modified ``<exp_dir>/*/decode_config.yaml``,
            written by the recipe's stage 12; none without ``exp_dir`` or
            when there is none); a path (a decoding YAML, a decode dir, or a
            decode tag under ``exp_dir``); False: none, only
            :class:`~espnet_llm_asr.decoding_options.DecodingOptions`'
            defaults.  Which one was used is logged (INFO) and kept as
            :attr:`decode_config`.
        allow_frozen_mismatch: load even when a frozen model's fingerprint
            differs from the one the model was trained with (a warning
            instead of :class:`~espnet_llm_asr.frozen_models.FrozenModelMismatch`).
        frozen_paths: ``{"llm"|"encoder": dir}``: load these frozen models
            from there (still checked against the fingerprints).
        **options: decoding options by name
            (:class:`~espnet_llm_asr.decoding_options.DecodingOptions`:
            ``num_beams``, ``max_new_tokens``, ``ctc_weight``, ``ctc_pre_beam``,
            ``cache_implementation``, ...; see :meth:`LLMASRModel.generate`):
            over the recorded config's, which are over the defaults.  The
            options in use: :attr:`options`.

    :meth:`from_pretrained` loads a pack (stage 14) or an experiment dir.
    """

    @with_option_keywords
    def __init__(
        self,
        exp_dir: Optional[Union[str, Path]] = None,
        config: Optional[Union[str, Path]] = None,
        model_file: Optional[Union[str, Path]] = None,
        device: str = "cpu",
        *,
        decode_config: Union[None, bool, str, Path] = None,
        allow_frozen_mismatch: bool = False,
        frozen_paths: Optional[Dict[str, str]] = None,
        **options,
    ):
        if exp_dir is None and config is None:
            raise ValueError("give exp_dir or config (+ model_file)")
        from espnet_llm_asr.decoding import generation_cache_kwargs

        DecodingOptions.check_names(options, "Speech2Text")
        self.decode_config = resolve_decode_config(exp_dir, decode_config)
        recorded = read_decode_config(self.decode_config) if self.decode_config is not None else {}
        # explicit arguments over the recorded config over the defaults; checked before loading
        self.options = DecodingOptions(**{**recorded, **options})
        if self.decode_config is not None:
            overridden = sorted(k for k in options if k in recorded and options[k] != recorded[k])
            logging.info(f"Speech2Text: decoding options of {self.decode_config}"
                         + (f", {', '.join(overridden)} as given" if overridden else ""))
        elif exp_dir is not None and decode_config is None:
            logging.info(f"Speech2Text: {exp_dir} records no decoding (*/{RECORDED_DECODE_CONFIG}): "
                         "the default decoding options")
        generation_cache_kwargs(self.options.cache_implementation, self.options.compile_decoding,
                                torch.device(device))  # fail before loading
        if config is None:
            config = Path(exp_dir) / "config.yaml"
        if model_file is None and exp_dir is not None:
            model_file = find_model_file(exp_dir)
        self.model, self.args = load_trained_model(config, model_file, device, allow_frozen_mismatch,
                                                   frozen_paths)
        self.model.check_decoding_ctc(self.options.ctc_weight)
        self.device = device
        self.lang_list = self.model.lang_list

    @property
    def decode_conf(self) -> Dict:
        """The decoding options in use, as keyword arguments of :meth:`LLMASRModel.generate`."""
        return self.options.to_dict()

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], **kwargs) -> "Speech2Text":
        """A pack dir (``model.pth``; its ``decode.yaml``, the decoding its
        results were measured with, is the recorded config) or an experiment
        dir (its best checkpoint, :data:`MODEL_FILE_CANDIDATES`, and its latest
        recorded decoding); ``kwargs`` override the decoding options and take
        the other arguments of :class:`Speech2Text` (``decode_config`` too)."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path}: no config.yaml; not a pack or an experiment dir")
        if not (path / PACK_MODEL_FILE).is_file():
            return cls(path, **kwargs)
        kwargs.setdefault("decode_config", path / PACK_DECODE_CONFIG if (path / PACK_DECODE_CONFIG).is_file()
                          else False)
        return cls(config=path / "config.yaml", model_file=path / PACK_MODEL_FILE, **kwargs)

    # ------------------------------------------------------------------ io
    @staticmethod
    def _load(speech: Union[np.ndarray, torch.Tensor, str, Path]) -> np.ndarray:
        if isinstance(speech, (str, Path)):
            return load_mono_16k(str(speech), Path(speech).stem)
        if isinstance(speech, torch.Tensor):
            speech = speech.detach().cpu().numpy()
        return np.asarray(speech, dtype=np.float32)

    def _lang_tensor(self, langs: Optional[Sequence[Optional[str]]], n: int) -> Optional[torch.Tensor]:
        if langs is None or all(lang is None for lang in langs):
            if self.model.projector.needs_lang_ids:
                raise ValueError("this projector needs the language of each utterance: pass lang=")
            return None
        ids = []
        for lang in langs:
            if lang not in self.lang_list:
                raise ValueError(f"language {lang!r} not in the model's lang_list {self.lang_list}")
            ids.append(self.lang_list.index(lang))
        return torch.tensor(ids, device=self.device).view(n, 1)

    # ------------------------------------------------------------- decoding
    @torch.no_grad()
    def batch(
        self,
        speeches: Sequence[Union[np.ndarray, torch.Tensor, str, Path]],
        langs: Optional[Sequence[Optional[str]]] = None,
    ) -> List[Hypothesis]:
        """Decode a list of waveforms (16 kHz), paths, or (T, D) dumped features."""
        arrays = [self._load(s) for s in speeches]
        lengths = torch.tensor([a.shape[0] for a in arrays], device=self.device)
        shape = (len(arrays), int(lengths.max())) + arrays[0].shape[1:]
        batch = torch.zeros(shape, dtype=torch.float32, device=self.device)
        for i, a in enumerate(arrays):
            batch[i, : a.shape[0]] = torch.from_numpy(a)
        lang = self._lang_tensor(langs, len(arrays))
        hyps, scores, proj = self.model.generate(batch, lengths, lang, self.options)
        alphas = None
        if proj.alphas is not None:  # CIF: the weights come with the projector output, unpadded here
            frames = self._encoder_frames(batch, lengths).tolist()
            alphas = [proj.alphas[i, : frames[i]].float().cpu().tolist() for i in range(len(arrays))]
        results = []
        for i, (ids, score) in enumerate(zip(hyps, scores)):
            results.append(Hypothesis(
                text=self.model.llm.decode(ids),
                tokens=ids,
                score=score,
                gates=proj.gates[i].tolist() if proj.gates is not None else None,
                cif_count=int(proj.lengths[i]) if proj.alphas is not None else None,
                alphas=alphas[i] if alphas is not None else None,
            ))
        return results

    def _encoder_frames(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B,) of each utterance: the projector's input lengths.

        Dumped features (B, T, D) are already encoder frames; waveforms give
        the encoder's ``ceil((L // hop) / 2)`` (the encoder was loaded by the
        forward pass that just ran).
        """
        if batch.dim() == 3:
            return lengths
        return self.model.frontend.encoder.output_lengths(lengths)

    def __call__(self, speech, lang: Optional[str] = None) -> Hypothesis:
        """Decode one waveform / path / feature matrix."""
        return self.batch([speech], [lang] if lang is not None else None)[0]
