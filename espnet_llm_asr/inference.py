"""Python API for transcription, in the manner of ESPnet's ``Speech2Text``.

    from espnet_llm_asr.inference import Speech2Text
    s2t = Speech2Text("exp/asr_smear_moe")          # or config=..., model_file=...
    print(s2t("utt.wav").text)                       # .gates for MoEs, .cif_count/.alphas for CIF

``Speech2Text.batch`` decodes many utterances at once (left-padded, KV-cached
generation) and gives the same hypotheses as one-by-one decoding.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from espnet_llm_asr.data_io import load_mono_16k
# checkpoint names tried in this order inside an experiment dir
MODEL_FILE_CANDIDATES = (
    "valid.acc.ave.pth", "valid.acc.best.pth", "valid.loss.best.pth", "latest.pth", "checkpoint.pth",
)
# a pack (stage 14, espnet_llm_asr.bin.pack_model): these files beside frozen_models.yaml
PACK_MODEL_FILE = "model.pth"
PACK_DECODE_CONFIG = "decode.yaml"


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
        exp_dir: experiment dir holding ``config.yaml`` and checkpoints.
        config, model_file: explicit files instead of (or inside) ``exp_dir``.
        device: ``cpu`` / ``cuda``.
        num_beams, max_new_tokens, max_tokens_per_second, repetition_penalty,
        no_repeat_ngram_size, length_penalty: decoding options (see
            :meth:`LLMASRModel.generate`).
        cache_implementation, compile_decoding, length_multiple: the fast
            decoding path (``"static"`` KV cache, compiled decoding step,
            shape rounding; see :meth:`LLMASRModel.generate`); the same
            hypotheses as the default dynamic cache.
        ctc_weight, ctc_pre_beam: joint CTC / LLM decoding (see
            :meth:`LLMASRModel.generate`).
        allow_frozen_mismatch: load even when a frozen model's fingerprint
            differs from the one the model was trained with (a warning
            instead of :class:`~espnet_llm_asr.frozen_models.FrozenModelMismatch`).
        frozen_paths: ``{"llm"|"encoder": dir}``: load these frozen models
            from there (still checked against the fingerprints).

    :meth:`from_pretrained` loads a pack (stage 14) or an experiment dir.
    """

    def __init__(
        self,
        exp_dir: Optional[Union[str, Path]] = None,
        config: Optional[Union[str, Path]] = None,
        model_file: Optional[Union[str, Path]] = None,
        device: str = "cpu",
        num_beams: int = 1,
        max_new_tokens: int = 200,
        max_tokens_per_second: Optional[float] = None,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        length_penalty: float = 1.0,
        num_beam_groups: int = 1,
        diversity_penalty: float = 0.0,
        cache_implementation: str = "dynamic",
        compile_decoding: Optional[bool] = None,
        length_multiple: int = 1,
        ctc_weight: float = 0.0,
        ctc_pre_beam: Optional[int] = None,
        allow_frozen_mismatch: bool = False,
        frozen_paths: Optional[Dict[str, str]] = None,
    ):
        if num_beam_groups > 1 or diversity_penalty:
            raise ValueError(
                "diverse (group) beam search is not available offline: transformers moved it "
                "to a hub download; use num_beams with repetition/length penalties instead"
            )
        if exp_dir is None and config is None:
            raise ValueError("give exp_dir or config (+ model_file)")
        from espnet_llm_asr.decoding import check_ctc_weight, generation_cache_kwargs

        generation_cache_kwargs(cache_implementation, compile_decoding, torch.device(device))  # fail before loading
        if length_multiple < 1:
            raise ValueError(f"length_multiple must be >= 1, got {length_multiple}")
        if config is None:
            config = Path(exp_dir) / "config.yaml"
        if model_file is None and exp_dir is not None:
            model_file = find_model_file(exp_dir)
        check_ctc_weight(ctc_weight)  # fail before loading; what needs the model is checked after
        self.model, self.args = load_trained_model(config, model_file, device, allow_frozen_mismatch,
                                                   frozen_paths)
        self.model.check_decoding_ctc(ctc_weight)
        self.device = device
        self.lang_list = self.model.lang_list
        self.decode_conf = dict(
            num_beams=num_beams, max_new_tokens=max_new_tokens,
            max_tokens_per_second=max_tokens_per_second, repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, length_penalty=length_penalty,
            cache_implementation=cache_implementation, compile_decoding=compile_decoding,
            length_multiple=length_multiple, ctc_weight=ctc_weight, ctc_pre_beam=ctc_pre_beam,
        )

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], **kwargs) -> "Speech2Text":
        """A pack dir (``model.pth``; its ``decode.yaml``, the decoding its
        results were measured with, gives the defaults) or an experiment dir
        (its best checkpoint, :data:`MODEL_FILE_CANDIDATES`); ``kwargs``
        override the decoding options and take the other arguments of
        :class:`Speech2Text`."""
        import inspect

        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path}: no config.yaml; not a pack or an experiment dir")
        if not (path / PACK_MODEL_FILE).is_file():
            return cls(path, **kwargs)
        options = {}
        if (path / PACK_DECODE_CONFIG).is_file():
            known = set(inspect.signature(cls.__init__).parameters) - {"self", "exp_dir", "config", "model_file"}
            decode = yaml.safe_load((path / PACK_DECODE_CONFIG).read_text(encoding="utf-8")) or {}
            options = {k: v for k, v in decode.items() if k in known}  # batch_size etc. are the CLI's
        options.update(kwargs)
        return cls(config=path / "config.yaml", model_file=path / PACK_MODEL_FILE, **options)

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
        hyps, scores, proj = self.model.generate(batch, lengths, lang, **self.decode_conf)
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
