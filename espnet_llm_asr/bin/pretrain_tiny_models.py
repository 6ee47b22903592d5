"""Pretrain the tiny models built by ``make_tiny_models``.

    # the Whisper encoder, with a character CTC head, on a Kaldi data dir
    python -m espnet_llm_asr.bin.pretrain_tiny_models encoder --config conf/tiny_models.yaml \\
        --model_dir exp/tiny_models/whisper --data_dir dump/raw/train

    # the causal LM, on the transcripts (Kaldi text or plain lines); with
    # pretrain_llm.then in the config, a second phase follows from its weights
    python -m espnet_llm_asr.bin.pretrain_tiny_models llm --config conf/tiny_models.yaml \\
        --model_dir exp/tiny_models/llm --text dump/raw/train/text

    # diagnostic: best-path CTC transcripts of the encoder alone (its saved CTC head)
    python -m espnet_llm_asr.bin.pretrain_tiny_models ctc_decode \
        --model_dir exp/tiny_models/whisper --data_dir dump/raw/dev --out exp/tiny_models/ctc_dev/text

The model dir is replaced atomically (or ``--out_dir`` written).  Options
come from the config's ``pretrain_encoder`` / ``pretrain_llm`` section;
command-line options override it.  The data dir needs ``wav.scp`` with plain
file paths (``uttid /path.wav``, 16 kHz; no pipes, no ``segments``) and
``text``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from espnet_llm_asr.bin.make_tiny_models import LOG_FORMAT, load_config, override, read_text_lines

SAMPLE_RATE = 16000


def read_kaldi_table(path: Path) -> Dict[str, str]:
    """``key value...`` lines -> {key: value} (value may be empty)."""
    table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        table[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return table


def read_wav(path: str) -> np.ndarray:
    """A 16 kHz audio file -> float32 (L,) mono (channels averaged)."""
    import soundfile

    wave, sr = soundfile.read(path, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {sr} Hz, expected {SAMPLE_RATE} (resample the data dir first)")
    return wave.mean(axis=1)


def load_data_dir(data_dir: str, max_utts: Optional[int] = None) -> List[Tuple[np.ndarray, str]]:
    """(waveform, transcript) of every utterance in a Kaldi data dir that has both (sorted by id)."""
    root = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"data dir {data_dir!r} has no {name}")
    if (root / "segments").is_file():
        raise ValueError(f"data dir {data_dir!r} has a segments file; dump it to whole wav files first")
    wavs = read_kaldi_table(root / "wav.scp")
    texts = read_kaldi_table(root / "text")
    keys = sorted(k for k in wavs if texts.get(k))
    if max_utts:
        keys = keys[:max_utts]
    data = []
    for k in keys:
        if wavs[k].endswith("|"):
            raise ValueError(f"{root / 'wav.scp'}: utterance {k} is a pipe command; only plain paths are supported")
        data.append((read_wav(wavs[k]), texts[k]))
    logging.info("read %d utterances (%.1f min of audio) from %s", len(data),
                 sum(len(w) for w, _ in data) / SAMPLE_RATE / 60, data_dir)
    return data


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see make_tiny_models --print_config)")
    p.add_argument("--model_dir", required=True, help="HF model dir to train (replaced unless --out_dir)")
    p.add_argument("--out_dir", help="write the trained model here instead of replacing --model_dir")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch_size", type=int, help="utterances / lines per step")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default min(100, steps // 10))")
    p.add_argument("--log_every", type=int, help="log the loss every N steps")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... or auto (cuda when available)")
    p.add_argument("--seed", type=int, help="random seed")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encoder", help="CTC pretraining of the tiny Whisper encoder on a Kaldi data dir")
    add_training_options(enc)
    enc.add_argument("--data_dir", required=True, help="Kaldi data dir with wav.scp and text")
    enc.add_argument("--max_utts", type=int, help="use at most this many utterances")
    llm = sub.add_parser("llm", help="next-token pretraining of the tiny causal LM on text")
    add_training_options(llm)
    llm.add_argument("--text", required=True, help="training text")
    llm.add_argument("--text_format", default="kaldi", choices=["kaldi", "plain"],
                     help="kaldi: 'uttid words...' lines; plain: one sentence a line")
    read = sub.add_parser("read_check", help="how well the LM reads oracle speech slots of a text "
                                            "(teacher-forced transcript accuracy after copy / aligned slots)")
    read.add_argument("--config", help="YAML config: its pretrain_llm.aligned_slot lays out the aligned slots")
    read.add_argument("--model_dir", required=True, help="HF causal LM dir")
    read.add_argument("--text", required=True, help="text to read (e.g. the dev set's Kaldi text)")
    read.add_argument("--text_format", default="kaldi", choices=["kaldi", "plain"])
    dec = sub.add_parser("ctc_decode", help="CTC-only transcripts of a data dir by the pretrained encoder")
    dec.add_argument("--model_dir", required=True, help="encoder dir with ctc_head.pt")
    dec.add_argument("--data_dir", required=True, help="Kaldi data dir with wav.scp (and text, for WER/CER)")
    dec.add_argument("--out", required=True, help="Kaldi text file of hypotheses to write")
    dec.add_argument("--batch_size", type=int, default=16)
    return p


def ctc_decode(args: argparse.Namespace) -> dict:
    """Write CTC hypotheses of every utterance; return WER/CER (jiwer) against the data dir's text."""
    import jiwer

    from espnet_llm_asr import tiny_models
    from espnet_llm_asr.utils import atomic_write_text

    root = Path(args.data_dir)
    wavs = read_kaldi_table(root / "wav.scp")
    keys = sorted(wavs)
    hyps = tiny_models.ctc_greedy_decode(args.model_dir, [read_wav(wavs[k]) for k in keys],
                                         batch_size=args.batch_size)
    atomic_write_text(args.out, "".join(f"{k} {h}\n" for k, h in zip(keys, hyps)))
    result = {"what": "ctc_decode", "utterances": len(keys), "out": args.out}
    if (root / "text").is_file():
        texts = read_kaldi_table(root / "text")
        pairs = [(texts[k], h) for k, h in zip(keys, hyps) if texts.get(k)]
        refs, hyp = [r for r, _ in pairs], [h for _, h in pairs]
        result["wer"] = round(100 * jiwer.wer(refs, hyp), 2)
        result["cer"] = round(100 * jiwer.cer(refs, hyp), 2)
    return result


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from espnet_llm_asr import tiny_models
    from espnet_llm_asr.torch_utils import flush_denormals

    flush_denormals()  # before the first parallel op: the worker threads copy the mode

    if args.what == "ctc_decode":
        print(json.dumps(ctc_decode(args)))
        return
    if args.what == "read_check":
        section = load_config(args.config)["pretrain_llm"]
        slot = (section["then"] or {}).get("aligned_slot", section["aligned_slot"])  # as the LM saw last
        result = tiny_models.slot_reading_accuracy(args.model_dir, read_text_lines(args.text, args.text_format),
                                                   aligned_slot=slot)
        print(json.dumps({"what": "read_check", "model_dir": args.model_dir,
                          **{k: {m: round(v, 4) for m, v in r.items()} for k, r in result.items()}}))
        return
    section = "pretrain_encoder" if args.what == "encoder" else "pretrain_llm"
    config = override(load_config(args.config), args, [section])
    conf = dict(config[section])
    logging.info("%s: %s", section, conf)
    if args.what == "encoder":
        data = load_data_dir(args.data_dir, conf.pop("max_utts"))
        if not data:
            raise SystemExit(f"pretrain_tiny_models: no utterance with audio and text in {args.data_dir}")
        result = tiny_models.pretrain_whisper_encoder_ctc(
            args.model_dir, data, out_dir=args.out_dir, seed=config["seed"], **conf)
    else:
        lines = read_text_lines(args.text, args.text_format)
        if not lines:
            raise SystemExit(f"pretrain_tiny_models: no text in {args.text} ({args.text_format} format)")
        then = conf.pop("then", None)
        result = tiny_models.pretrain_causal_lm(
            args.model_dir, lines, out_dir=args.out_dir, seed=config["seed"], **conf)
        if then:  # the second phase: from the first phase's weights, its own schedule and examples
            logging.info("pretrain_llm.then: %s", then)
            result["then"] = tiny_models.pretrain_causal_lm(
                args.out_dir or args.model_dir, lines, seed=config["seed"] + 1, **{**conf, **then})
    print(json.dumps({"what": args.what, "model_dir": args.out_dir or args.model_dir, **result}))


if __name__ == "__main__":
    main()
