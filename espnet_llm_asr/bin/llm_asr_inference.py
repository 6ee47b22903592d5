"""Decode a data dir with a trained LLM-ASR model (ESPnet's asr_inference interface).

    python -m espnet_llm_asr.bin.llm_asr_inference \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc.ave.pth \\
        --data_path_and_name_and_type dump/raw/test/wav.scp,speech,sound \\
        --data_path_and_name_and_type dump/raw/test/utt2lang,lang,text \\
        --key_file dump/raw/test/wav.scp --output_dir exp/asr/decode_test/output.1 \\
        --batch_size 8 --num_beams 4

Writes Kaldi-style files under ``<output_dir>/1best_recog/``: ``text``,
``token`` (LLM token ids), ``score``, and ``gates`` (MoEs: the utterance's
expert weights) or ``cif_count`` (CIF: number of fired vectors).  Files are
written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import espnet_llm_asr  # noqa: F401
from espnet_llm_asr.inference import Speech2Text
from espnet_llm_asr.utils import atomic_write_text


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML of decoding options (conf/decode.yaml)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--ngpu", type=int, default=0, help="0: CPU, 1: first GPU")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--log_level", default="INFO")
    p.add_argument("--data_path_and_name_and_type", action="append", required=True,
                   help="path,name,type (speech: sound or kaldi_ark; lang: text)")
    p.add_argument("--key_file", default=None)
    p.add_argument("--asr_train_config", default=None)
    p.add_argument("--asr_model_file", default=None)
    p.add_argument("--exp_dir", default=None, help="instead of --asr_train_config/--asr_model_file")
    g = p.add_argument_group("decoding")
    g.add_argument("--num_beams", type=int, default=1)
    g.add_argument("--max_new_tokens", type=int, default=200)
    g.add_argument("--max_tokens_per_second", type=float, default=None,
                   help="cap new tokens at ceil(duration * this) per utterance (runaway guard)")
    g.add_argument("--repetition_penalty", type=float, default=1.0)
    g.add_argument("--no_repeat_ngram_size", type=int, default=0)
    g.add_argument("--length_penalty", type=float, default=1.0)
    return p


def _parse_triplets(triplets: Sequence[str]) -> List[Tuple[str, str, str]]:
    out = []
    for t in triplets:
        parts = t.split(",")
        if len(parts) != 3:
            raise ValueError(f"--data_path_and_name_and_type {t!r}: expected path,name,type")
        out.append(tuple(parts))
    return out


def build_iterator(triplets, key_file, batch_size, num_workers, lang_list):
    """ESPnet's streaming iterator over the data dir (speech as is, lang as str)."""
    from espnet_llm_asr.task import LLMASRTask

    return LLMASRTask.build_streaming_iterator(
        data_path_and_name_and_type=triplets,
        dtype="float32",
        batch_size=batch_size,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=functools.partial(_lang_to_id, list(lang_list)),
        collate_fn=_collate,
        allow_variable_data_keys=False,
        inference=True,
    )


def _lang_to_id(lang_list: List[str], uid: str, data: Dict) -> Dict:
    """ESPnet's dataset wants numeric arrays: a language code becomes its id."""
    if "lang" in data:
        code = data["lang"].strip()
        if code not in lang_list:
            raise ValueError(f"utterance {uid}: language {code!r} not in the model's lang_list {lang_list}")
        data["lang"] = np.asarray([lang_list.index(code)])
    return data


def _collate(data):
    """Keep items as lists: speech arrays and language strings."""
    keys = [k for k, _ in data]
    batch: Dict[str, list] = {}
    for _, d in data:
        for name, value in d.items():
            batch.setdefault(name, []).append(value)
    return keys, batch


def inference(args: argparse.Namespace) -> None:
    device = "cuda" if args.ngpu > 0 else "cpu"
    s2t = Speech2Text(
        exp_dir=args.exp_dir, config=args.asr_train_config, model_file=args.asr_model_file,
        device=device, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
        max_tokens_per_second=args.max_tokens_per_second, repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size, length_penalty=args.length_penalty,
    )
    triplets = _parse_triplets(args.data_path_and_name_and_type)
    lines: Dict[str, List[str]] = {"text": [], "token": [], "score": [], "gates": [], "cif_count": []}
    n_utts, audio_s, start = 0, 0.0, time.perf_counter()
    batches = build_iterator(triplets, args.key_file, args.batch_size, args.num_workers, s2t.lang_list)
    for keys, batch in batches:
        langs: Optional[List[str]] = None
        if "lang" in batch:
            langs = [s2t.lang_list[int(x[0])] for x in batch["lang"]]
        hyps = s2t.batch(batch["speech"], langs)
        for key, hyp, speech in zip(keys, hyps, batch["speech"]):
            lines["text"].append(f"{key} {hyp.text}".rstrip())
            lines["token"].append(f"{key} {' '.join(map(str, hyp.tokens))}".rstrip())
            lines["score"].append(f"{key} {hyp.score:.6f}")
            if hyp.gates is not None:
                lines["gates"].append(f"{key} {' '.join(f'{g:.6f}' for g in hyp.gates)}")
            if hyp.cif_count is not None:
                lines["cif_count"].append(f"{key} {hyp.cif_count}")
            audio_s += speech.shape[0] / (16000 if speech.ndim == 1 else 50)
            logging.info(f"{key}: {hyp.text}")
        n_utts += len(keys)
    elapsed = time.perf_counter() - start
    out_dir = Path(args.output_dir) / "1best_recog"
    for name, content in lines.items():
        if content:
            atomic_write_text(out_dir / name, "\n".join(content) + "\n")
    logging.info(
        f"decoded {n_utts} utterances ({audio_s:.1f} s of audio) in {elapsed:.1f} s: "
        f"RTF {elapsed / max(audio_s, 1e-9):.3f}"
    )


def parse_args(cmd=None) -> argparse.Namespace:
    """Command line over the defaults of ``--config`` (a YAML of option: value)."""
    parser = get_parser()
    pre, _ = parser.parse_known_args(cmd)
    if pre.config:
        import yaml

        with open(pre.config, encoding="utf-8") as f:
            conf = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise SystemExit(f"{pre.config}: unknown decoding option(s) {unknown}")
        parser.set_defaults(**conf)
    return parser.parse_args(cmd)


def main(cmd=None):
    args = parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    torch.set_grad_enabled(False)
    inference(args)


if __name__ == "__main__":
    main(sys.argv[1:])
