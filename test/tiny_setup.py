"""Builders for the model tests: a tiny data dir, tiny HF models and a train config.

Everything is real: wav files on disk, a Whisper-shaped encoder and a Llama
LM saved with ``save_pretrained`` and loaded with ``from_pretrained``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import soundfile
import yaml

from conftest import synth_wave

ROOT = Path(__file__).resolve().parents[1]

# three utterances with distinct audio and short transcripts (two languages)
UTTS = [
    ("spk1-utt1", "hi", "नमस्ते भारत", 1.2, 1),
    ("spk1-utt2", "ta", "வணக்கம்", 1.0, 2),
    ("spk2-utt3", "hi", "भारत", 0.8, 3),
]


def make_data_dir(root: Path, utts=UTTS) -> Path:
    """Kaldi data dir with wav.scp, text, utt2lang, utt2spk, speech_shape and lang_list."""
    data = root / "data"
    wavs = root / "wav"
    data.mkdir(parents=True, exist_ok=True)
    wavs.mkdir(parents=True, exist_ok=True)
    scp, text, lang, spk, shape = [], [], [], [], []
    for uid, lg, txt, secs, seed in sorted(utts):
        wave = synth_wave(secs, seed=seed)
        path = wavs / f"{uid}.wav"
        soundfile.write(path, wave, 16000, subtype="PCM_16")
        scp.append(f"{uid} {path}")
        text.append(f"{uid} {txt}")
        lang.append(f"{uid} {lg}")
        spk.append(f"{uid} {uid.split('-')[0]}")
        shape.append(f"{uid} {len(wave)}")
    for name, lines in [("wav.scp", scp), ("text", text), ("utt2lang", lang),
                        ("utt2spk", spk), ("speech_shape", shape)]:
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "lang_list").write_text("hi\nta\n", encoding="utf-8")
    return data


def make_tiny_models(root: Path, texts: List[str]) -> Dict[str, Path]:
    """Tiny Whisper encoder + char tokenizer + Llama LM, saved as HF dirs."""
    from espnet_llm_asr import tiny_models

    whisper = root / "whisper"
    tiny_models.build_tiny_whisper(whisper, **TINY_WHISPER)
    tok = root / "tokenizer"
    tiny_models.train_tokenizer(texts + PROMPT_TEXT, tok, model_type="char")
    llm = root / "llm"
    tiny_models.build_tiny_llm(llm, tok, **TINY_LLM)
    return {"whisper": whisper, "llm": llm}


TINY_WHISPER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)
TINY_LLM = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
PROMPT_TEXT = ["USER: Transcribe speech to text.", "ASSISTANT:"]


def train_config(root: Path, models: Dict[str, Path], frontend: str = "smear_moe",
                 llm_conf: Optional[dict] = None, frontend_conf: Optional[dict] = None,
                 lr: float = 3e-3) -> Path:
    conf = {
        "llm": str(models["llm"]),
        "llm_conf": llm_conf or {"freeze": True},
        "frontend": frontend,
        "frontend_conf": {
            "encoder": str(models["whisper"]),
            "encoder_conf": {"pad_to_30s": False},
            "hidden_dim": 32,
            **({"num_experts": 2} if frontend in ("multi", "dense", "hard_moe", "smear_moe", "cif_smear") else {}),
            **(frontend_conf or {}),
        },
        "lang_list": str(root / "lang_list"),
        "optim": "adamw",
        "optim_conf": {"lr": lr, "weight_decay": 0.0},
        "batch_type": "unsorted",
        "batch_size": 3,
        "num_workers": 0,
        "seed": 0,
        "best_model_criterion": [["valid", "acc", "max"], ["train", "loss", "min"]],
        "keep_nbest_models": 2,
    }
    path = root / f"train_{frontend}.yaml"
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    return path


def train_in_process(assets, frontend: str, name: str, *model_conf: str) -> Path:
    """Train ``frontend`` 2 steps (one epoch) in this process with these ``model_conf`` items
    (``"ctc_weight=1.0"``); ``assets`` = (root, data dir, tiny models).  Returns the exp dir
    ``root / name``."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.task import LLMASRTask

    root, data, models = assets
    conf = train_config(root, models, frontend)
    out = root / name
    LLMASRTask.main(cmd=["--config", str(conf), "--output_dir", str(out), "--ngpu", "0", "--max_epoch", "1",
                         "--num_iters_per_epoch", "2", *[a for item in model_conf for a in ("--model_conf", item)],
                         *data_args(data)])
    return out


def data_args(data: Path, speech=("wav.scp", "speech", "sound")) -> List[str]:
    args = []
    for split in ("train", "valid"):
        args += [f"--{split}_data_path_and_name_and_type", f"{data / speech[0]},{speech[1]},{speech[2]}",
                 f"--{split}_data_path_and_name_and_type", f"{data / 'text'},text,text",
                 f"--{split}_data_path_and_name_and_type", f"{data / 'utt2lang'},lang,text",
                 f"--{split}_shape_file", str(data / "speech_shape")]
    return args


def run_module(module: str, args: List[str], cwd: Path, timeout: int = 600, extra_env=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    return proc


def epoch_losses(log: str, phase: str = "train") -> List[float]:
    """Per-epoch losses from ESPnet's '<n>epoch results: [train] ... loss=...' lines."""
    import re

    out = []
    for m in re.finditer(r"(\d+)epoch results: (.*)", log):
        part = re.search(rf"\[{phase}\][^\[]*?\bloss=([0-9.e+-]+)", m.group(2))
        if part:
            out.append(float(part.group(1)))
    return out
