"""Models and utterances for the ASR benchmark parts (decoding, CIF, dumped features, memory).

Measures nothing itself.  The "default model" is the embedded recipe's: tiny
Whisper-shaped encoder (d_model 256, 4 layers), smear_moe projector (hidden
512, 4 experts) and a tiny Llama LM (hidden 256, 4 layers), randomly
initialised here unless ``--models_dir`` (pretrained tiny models) or
``--asr_exp`` (a trained experiment) is given.  Utterances come from
``--data_dir`` or are synthesised.

Imports only :mod:`espnet_llm_asr.benchmark.common`.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from espnet_llm_asr.benchmark.common import BenchSettings

logger = logging.getLogger(__name__)

DEFAULT_PROJECTOR_CONF = dict(hidden_dim=512, num_experts=4)
QUICK_WHISPER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)
QUICK_LLM = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
SYNTH_WORDS = ("namaste bharat pani ghar kitab school raasta din raat aaj kal mitra sundar nadi "
               "pahad shahar gaon khana chai doodh").split()


@dataclass
class Utt:
    uid: str
    wave: np.ndarray  # (L,) float32, 16 kHz
    text: str
    lang: Optional[str] = None

    @property
    def seconds(self) -> float:
        return len(self.wave) / 16000


def synth_utts(n: int, seed: int = 0, min_s: float = 1.5, max_s: float = 3.5) -> List[Utt]:
    """``n`` speech-like waveforms (moving-pitch harmonics) with random word transcripts."""
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        secs = min_s + (max_s - min_s) * i / max(1, n - 1)
        t = np.arange(int(secs * 16000)) / 16000
        f0 = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        wave = (0.8 * wave / np.abs(wave).max()).astype(np.float32)
        words = rng.choice(SYNTH_WORDS, size=max(1, int(secs * 1.5)))
        utts.append(Utt(f"synth{i:03d}", wave, " ".join(words), "hi"))
    return utts


def _read_map(path: Path) -> Dict[str, str]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def data_dir_utts(data_dir: str, n: int) -> Tuple[List[Utt], List[str]]:
    """``n`` utterances spread evenly over a Kaldi data dir (sorted ids), and all its transcripts."""
    from espnet_llm_asr.data_io import load_mono_16k

    d = Path(data_dir)
    wavs, texts, langs = _read_map(d / "wav.scp"), _read_map(d / "text"), _read_map(d / "utt2lang")
    ids = sorted(u for u in wavs if u in texts)
    if not ids:
        raise ValueError(f"{data_dir}: no utterance with both wav.scp and text")
    picks = [ids[round(i * (len(ids) - 1) / max(1, n - 1))] for i in range(min(n, len(ids)))]
    utts = [Utt(u, load_mono_16k(wavs[u], u), texts[u], langs.get(u)) for u in picks]
    return utts, [texts[u] for u in ids]


@dataclass
class Assets:
    """Where the models and utterances of the ASR parts are."""

    root: Path
    whisper: Path
    llm: Path
    lang_list: Path
    utts: List[Utt]
    random_models: bool


def make_assets(settings: BenchSettings) -> Assets:
    """Default-size (or quick) tiny models and the utterances to decode."""
    from espnet_llm_asr import tiny_models

    root = Path(settings.work_dir or tempfile.mkdtemp(prefix="bench_"))
    root.mkdir(parents=True, exist_ok=True)
    if settings.data_dir:
        utts, all_texts = data_dir_utts(settings.data_dir, settings.num_utts)
    else:
        utts = synth_utts(settings.num_utts)
        all_texts = [u.text for u in utts]
    langs = sorted({u.lang for u in utts if u.lang}) or ["hi"]
    lang_list = root / "lang_list"
    lang_list.write_text("\n".join(langs) + "\n", encoding="utf-8")
    if settings.models_dir:
        m = Path(settings.models_dir)
        return Assets(root, m / "whisper", m / "llm", lang_list, utts, False)
    whisper, llm, tok = root / "tiny_whisper", root / "tiny_llm", root / "tiny_tokenizer"
    if not (llm / "config.json").exists():
        logger.info("building random default-size tiny models in %s", root)
        tiny_models.build_tiny_whisper(whisper, **(QUICK_WHISPER if settings.quick else {}))
        prompt = ["USER: Transcribe speech to text.", "ASSISTANT:"]
        if settings.quick:
            tiny_models.train_tokenizer(all_texts + prompt, tok, model_type="char")
        else:  # the recipe's tokenizer kind: unigram word pieces, at most 500
            tiny_models.train_tokenizer(all_texts + prompt, tok, model_type="unigram", vocab_size=500)
        tiny_models.build_tiny_llm(llm, tok, **(QUICK_LLM if settings.quick else {}))
    return Assets(root, whisper, llm, lang_list, utts, True)


def build_model(assets: Assets, frontend: str = "smear_moe", frontend_conf: Optional[Dict] = None,
                freeze_llm: bool = True, with_encoder: bool = True, input_dim: Optional[int] = None,
                seed: int = 0):
    """An :class:`~espnet_llm_asr.model.LLMASRModel` from the assets, random projector weights."""
    import espnet_llm_asr  # noqa: F401  (registers the frontends)
    from espnet_llm_asr.task import LLMASRTask

    conf = dict(DEFAULT_PROJECTOR_CONF if frontend in ("smear_moe", "cif_smear", "dense", "hard_moe", "multi")
                else {"hidden_dim": DEFAULT_PROJECTOR_CONF["hidden_dim"]})
    conf.update(frontend_conf or {})
    if with_encoder:
        conf.update(encoder=str(assets.whisper), encoder_conf={"pad_to_30s": False})
    else:
        conf["input_dim"] = input_dim
    args = argparse.Namespace(llm=str(assets.llm), llm_conf={"freeze": freeze_llm}, frontend=frontend,
                              frontend_conf=conf, lang_list=str(assets.lang_list), model_conf={})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LLMASRTask.build_model(args)
    return model.eval()


def trained_model(settings: BenchSettings, frontend: Optional[str] = None):
    """The ``--asr_exp`` model (or, with ``frontend``, the same config with that projector, untrained)."""
    import yaml

    from espnet_llm_asr.inference import find_model_file, load_trained_model

    exp = Path(settings.asr_exp)
    if frontend is None:
        model, _ = load_trained_model(exp / "config.yaml", find_model_file(exp))
        return model
    conf = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
    fconf = {k: v for k, v in (conf.get("frontend_conf") or {}).items()
             if k in ("encoder", "encoder_conf", "input_dim", "hidden_dim", "output_dim")}
    conf.update(frontend=frontend, frontend_conf=fconf)
    tmp = Path(tempfile.mkdtemp(prefix="bench_conf_")) / "config.yaml"
    tmp.write_text(yaml.safe_dump(conf), encoding="utf-8")
    model, _ = load_trained_model(tmp, None)
    return model


# ---------------------------------------------------------------------- batching
def pad_waves(utts: List[Utt]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Waveforms -> (B, L_max) zero-padded float32, (B,) lengths."""
    lengths = torch.tensor([len(u.wave) for u in utts])
    batch = torch.zeros(len(utts), int(lengths.max()))
    for i, u in enumerate(utts):
        batch[i, : len(u.wave)] = torch.from_numpy(u.wave)
    return batch, lengths
