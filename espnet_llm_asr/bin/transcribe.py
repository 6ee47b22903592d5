"""Transcribe audio files with a packed model (stage 14) or an experiment dir.

    python -m espnet_llm_asr.bin.transcribe --model exp/asr_train_cif_smear/pack --lang hi a.wav b.flac
    python -m espnet_llm_asr.bin.transcribe --model pack --json --lang ta *.wav

Prints ``file<TAB>text`` a line, in the order given (``--json``: one JSON
object a line with the text, the LLM token ids, the score, and the gates
(MoEs) or the CIF count (CIF projectors)).  Any sample rate and channel
count is read (mixed to mono, resampled to 16 kHz), any length (the encoder
works in 30 s windows).  A file that cannot be read is reported on stderr
with its name and skipped; the others are still transcribed, and the exit
status is then 1.  The decoding options default to the pack's
``decode.yaml`` (the decoding its results were measured with).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Dict, List, Optional

import espnet_llm_asr  # noqa: F401
from espnet_llm_asr.data_io import load_audio_16k
from espnet_llm_asr.frozen_models import OVERRIDE


def _frozen_paths(values: Optional[List[str]]) -> Dict[str, str]:
    out = {}
    for value in values or []:
        role, sep, path = value.partition("=")
        if not sep or role not in ("llm", "encoder") or not path:
            raise SystemExit(f"--frozen_model {value!r}: expected llm=DIR or encoder=DIR")
        out[role] = path
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="audio files (wav, flac, ...: what soundfile reads)")
    p.add_argument("--model", required=True, help="a pack dir (stage 14) or an experiment dir")
    p.add_argument("--lang", default=None, help="language code of every file (projectors that need one)")
    p.add_argument("--json", action="store_true", help="one JSON object a line, with tokens, score, gates")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_beams", type=int, default=None)
    p.add_argument("--ctc_weight", type=float, default=None, help="joint CTC decoding weight (0: the LLM alone)")
    p.add_argument("--max_new_tokens", type=int, default=None)
    p.add_argument(OVERRIDE, dest="allow_frozen_mismatch", action="store_true",
                   help="load even when a frozen model differs from the one the model was trained with")
    p.add_argument("--frozen_model", action="append", default=None, metavar="ROLE=DIR",
                   help="load the frozen llm or encoder from DIR (still checked against the manifest)")
    p.add_argument("--log_level", default="WARNING")
    return p


def _line(path: str, hyp, as_json: bool) -> str:
    if not as_json:
        return f"{path}\t{hyp.text}"
    record = {"file": path, "text": hyp.text, "tokens": hyp.tokens, "score": hyp.score}
    if hyp.gates is not None:
        record["gates"] = hyp.gates
    if hyp.cif_count is not None:
        record["cif_count"] = hyp.cif_count
    return json.dumps(record, ensure_ascii=False)


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    from espnet_llm_asr.inference import Speech2Text

    options = {k: getattr(args, k) for k in ("num_beams", "ctc_weight", "max_new_tokens")
               if getattr(args, k) is not None}
    s2t = Speech2Text.from_pretrained(args.model, device=args.device,
                                      allow_frozen_mismatch=args.allow_frozen_mismatch,
                                      frozen_paths=_frozen_paths(args.frozen_model), **options)
    failed = 0
    for start in range(0, len(args.files), args.batch_size):
        chunk, audio = [], []
        for path in args.files[start: start + args.batch_size]:
            try:
                audio.append(load_audio_16k(path))
                chunk.append(path)
            except ValueError as e:
                print(f"transcribe: {e}; skipped", file=sys.stderr)
                failed += 1
        if not chunk:
            continue
        hyps = s2t.batch(audio, [args.lang] * len(audio) if args.lang else None)
        for path, hyp in zip(chunk, hyps):
            print(_line(path, hyp, args.json), flush=True)
    if failed:
        print(f"transcribe: {failed} of {len(args.files)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
