"""Decode a data dir with a trained LLM-ASR model (ESPnet's asr_inference interface).

    python -m espnet_llm_asr.bin.llm_asr_inference \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc.ave.pth \\
        --data_path_and_name_and_type dump/raw/test/wav.scp,speech,sound \\
        --data_path_and_name_and_type dump/raw/test/utt2lang,lang,text \\
        --key_file dump/raw/test/wav.scp --output_dir exp/asr/decode_test/output.1 \\
        --batch_size 8 --num_beams 4

Writes Kaldi-style files under ``<output_dir>/1best_recog/``: ``text``,
``token`` (LLM token ids), ``score``, and ``gates`` (MoEs: the utterance's
expert weights) or ``cif_count`` (CIF: number of fired vectors) and
``alphas`` (CIF: the weight of each encoder frame, ``uttid a1 ... aT``,
unpadded, 4 decimals; what make_results plots the firing from), plus
``failed`` (utterances whose decoding raised: they get an empty hypothesis,
so scoring counts them as deletions).  Files are written under a temporary
name and renamed when complete; a re-run after a crash decodes only the
utterances missing from ``.partial.jsonl``.

Fast paths (same hypotheses as the plain one, tested): ``--sort_window N``
reads N utterances ahead and decodes them longest first in batches of
``--batch_size`` (less padding, the longest batch first so an out-of-memory
shows at once; the output files are in key order whatever the decoding
order); ``--cache_implementation static`` (a static KV cache) with
``--compile_decoding`` (a compiled decoding step; by default on a GPU with a
static cache, off on CPU) and ``--length_multiple`` (fewer distinct shapes).

The decoding options (:class:`~espnet_llm_asr.decoding_options.DecodingOptions`,
their help under ``--help``) come from ``--config`` (a YAML of ``option:
value``; this program's own options such as ``--batch_size`` may be set there
too), the command line over it, never from an experiment's recorded
decodings.  ``--print_config`` prints the decoding options that would be used,
checked, as such a YAML and exits (no model loaded; the data and output
arguments not needed): what the recipe's stage 12 records as
``<exp_dir>/<inference_tag>/decode_config.yaml``, the config that
``Speech2Text(exp_dir)`` decodes with.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import logging
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

import espnet_llm_asr  # noqa: F401
from espnet_llm_asr.decoding_options import SPEED_GROUP, DecodingOptionError, DecodingOptions
from espnet_llm_asr.inference import Speech2Text
from espnet_llm_asr.torch_utils import flush_denormals
from espnet_llm_asr.utils import atomic_write_text

ALPHA_DECIMALS = 4  # CIF weights in 1best_recog/alphas (T values per line; 4 decimals keep it small)


def get_parser(data_required: bool = True) -> argparse.ArgumentParser:
    """The command line; ``data_required=False`` (``--print_config``) leaves out nothing but the
    requirement of ``--output_dir`` and ``--data_path_and_name_and_type``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML of decoding options (conf/decode.yaml)")
    p.add_argument("--print_config", action="store_true",
                   help="print the decoding options (--config, then the command line) as YAML and exit")
    p.add_argument("--output_dir", required=data_required)
    p.add_argument("--ngpu", type=int, default=0, help="0: CPU, 1: first GPU")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--log_level", default="INFO")
    p.add_argument("--data_path_and_name_and_type", action="append", required=data_required,
                   help="path,name,type (speech: sound or kaldi_ark; lang: text)")
    p.add_argument("--key_file", default=None)
    p.add_argument("--asr_train_config", default=None)
    p.add_argument("--asr_model_file", default=None)
    p.add_argument("--exp_dir", default=None, help="instead of --asr_train_config/--asr_model_file")
    groups = DecodingOptions.add_arguments(p)
    groups[SPEED_GROUP].add_argument(
        "--sort_window", type=int, default=256,
        help="read this many utterances ahead and decode them longest first in batches of "
             "--batch_size (memory: the window's audio or features); 0 or 1: data-dir order")
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


def length_sorted_batches(utterances: Iterable[Tuple[str, Dict]], batch_size: int, window: int
                          ) -> Iterator[Tuple[List[str], Dict[str, list]]]:
    """Regroup a stream of single utterances into batches, longest first within windows.

    Args:
        utterances: ``(key, {name: value})`` in data-dir order; ``speech`` is a
            (L,) waveform or (T, D) feature array whose first dimension is
            the length.
        batch_size: utterances per batch.
        window: utterances read ahead and sorted (longest first, ties in
            data-dir order) before they are cut into batches; 0 or 1 keeps
            the data-dir order.
    Yields:
        ``(keys, {name: [value per utterance]})``, the batches in decoding order.
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if window < 0:
        raise ValueError(f"--sort_window must be >= 0, got {window}")
    sort = window > 1
    window = max(window, batch_size)
    buffer: List[Tuple[str, Dict]] = []

    def flush():
        order = sorted(buffer, key=lambda kv: -len(kv[1]["speech"])) if sort else list(buffer)
        for i in range(0, len(order), batch_size):
            yield _collate(order[i: i + batch_size])
        buffer.clear()

    for item in utterances:
        buffer.append(item)
        if len(buffer) >= window:
            yield from flush()
    yield from flush()


def _single_utterances(batches) -> Iterator[Tuple[str, Dict]]:
    """``(keys, {name: [values]})`` batches -> ``(key, {name: value})`` one at a time."""
    for keys, batch in batches:
        for i, key in enumerate(keys):
            yield key, {name: values[i] for name, values in batch.items()}


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


def _decode_batch(s2t: Speech2Text, keys, speeches, langs) -> List[Dict]:
    """Decode a batch; if it fails, decode its utterances one by one so that only
    the bad one is lost (it gets an empty hypothesis and an ``error``)."""
    try:
        hyps = s2t.batch(speeches, langs)
        return [dict(key=k, hyp=h, error=None) for k, h in zip(keys, hyps)]
    except Exception as e:  # noqa: BLE001 - any failure of one utterance must not kill the job
        if len(keys) > 1:
            logging.warning(f"batch {keys[0]}..{keys[-1]} failed ({e}); decoding its utterances one by one")
        out = []
        for i, key in enumerate(keys):
            try:
                out.append(dict(key=key, hyp=s2t.batch([speeches[i]], None if langs is None else [langs[i]])[0],
                                error=None))
            except Exception as e1:  # noqa: BLE001
                logging.error(f"utterance {key}: decoding failed: {type(e1).__name__}: {e1}")
                out.append(dict(key=key, hyp=None, error=f"{type(e1).__name__}: {e1}"))
        return out


def _record(key: str, hyp, error: Optional[str]) -> Dict:
    if hyp is None:
        return dict(key=key, text="", tokens=[], score=float("-inf"), gates=None, cif_count=None, alphas=None,
                    error=error)
    alphas = None if hyp.alphas is None else [round(a, ALPHA_DECIMALS) for a in hyp.alphas]
    return dict(key=key, text=hyp.text, tokens=hyp.tokens, score=hyp.score, gates=hyp.gates,
                cif_count=hyp.cif_count, alphas=alphas, error=None)


def _write_outputs(out_dir: Path, records: List[Dict]) -> None:
    """Kaldi-style files from the per-utterance records, each written atomically."""
    records = sorted(records, key=lambda r: r["key"].encode())
    files = {
        "text": [f"{r['key']} {r['text']}".rstrip() for r in records],
        "token": [f"{r['key']} {' '.join(map(str, r['tokens']))}".rstrip() for r in records],
        "score": [f"{r['key']} {r['score']:.6f}" for r in records],
        "gates": [f"{r['key']} {' '.join(f'{g:.6f}' for g in r['gates'])}" for r in records if r["gates"]],
        "cif_count": [f"{r['key']} {r['cif_count']}" for r in records if r["cif_count"] is not None],
        # .get: records resumed from a .partial.jsonl written before alphas were recorded have none
        "alphas": [f"{r['key']} {' '.join(f'{a:.{ALPHA_DECIMALS}f}' for a in r['alphas'])}".rstrip()
                   for r in records if r.get("alphas") is not None],
        "failed": [f"{r['key']} {r['error']}" for r in records if r["error"]],
    }
    for name, lines in files.items():
        if lines or name == "failed":
            atomic_write_text(out_dir / name, "".join(ln + "\n" for ln in lines))


def inference(args: argparse.Namespace) -> None:
    """Decode, appending each utterance's result to ``1best_recog/.partial.jsonl``
    as it is done; a re-run after a crash decodes only the missing utterances."""
    device = "cuda" if args.ngpu > 0 else "cpu"
    options = DecodingOptions.from_namespace(args)
    s2t = Speech2Text(exp_dir=args.exp_dir, config=args.asr_train_config, model_file=args.asr_model_file,
                      device=device, decode_config=False, **options.to_dict())
    out_dir = Path(args.output_dir) / "1best_recog"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ".partial.jsonl"
    records: Dict[str, Dict] = {}
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the crash: decode that utterance again
            records[rec["key"]] = rec
        logging.info(f"resuming: {len(records)} utterances already decoded in {partial}")
    triplets = _parse_triplets(args.data_path_and_name_and_type)
    n_utts, audio_s, start = 0, 0.0, time.perf_counter()
    batches = build_iterator(triplets, args.key_file, args.batch_size, args.num_workers, s2t.lang_list)
    if args.sort_window < 0:
        raise SystemExit(f"--sort_window must be >= 0, got {args.sort_window}")
    if args.sort_window > 1 and args.batch_size > 1:  # decode longest first; the files are in key order anyway
        todo_utts = ((k, d) for k, d in _single_utterances(batches) if k not in records)
        batches = length_sorted_batches(todo_utts, args.batch_size, args.sort_window)
    with partial.open("a", encoding="utf-8") as log_f:
        for keys, batch in batches:
            todo = [i for i, k in enumerate(keys) if k not in records]
            if not todo:
                continue
            speeches = [batch["speech"][i] for i in todo]
            langs: Optional[List[str]] = None
            if "lang" in batch:
                langs = [s2t.lang_list[int(batch["lang"][i][0])] for i in todo]
            for result, speech in zip(_decode_batch(s2t, [keys[i] for i in todo], speeches, langs), speeches):
                rec = _record(result["key"], result["hyp"], result["error"])
                records[rec["key"]] = rec
                log_f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                audio_s += speech.shape[0] / (16000 if speech.ndim == 1 else 50)
                logging.info(f"{rec['key']}: {rec['text']}" + (f" [FAILED: {rec['error']}]" if rec["error"] else ""))
            log_f.flush()
            os.fsync(log_f.fileno())
            n_utts += len(todo)
    elapsed = time.perf_counter() - start
    _write_outputs(out_dir, list(records.values()))
    partial.unlink()
    failed = sum(1 for r in records.values() if r["error"])
    if failed:
        logging.warning(f"{failed} utterance(s) failed and were written as empty hypotheses; see {out_dir}/failed")
    logging.info(
        f"decoded {n_utts} utterances ({audio_s:.1f} s of audio) in {elapsed:.1f} s: "
        f"RTF {elapsed / max(audio_s, 1e-9):.3f}"
    )


def parse_args(cmd=None) -> argparse.Namespace:
    """Command line over the defaults of ``--config`` (a YAML of option: value).

    A decoding option of the YAML with a bad value, or a key that is no
    option, stops the program (SystemExit) naming the file and the option.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--print_config", action="store_true")
    pre, _ = pre.parse_known_args(cmd)
    parser = get_parser(data_required=not pre.print_config)
    if pre.config:
        import yaml

        with open(pre.config, encoding="utf-8") as f:
            conf = yaml.safe_load(f) or {}
        if not isinstance(conf, dict):
            raise SystemExit(f"{pre.config}: expected 'option: value' lines")
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise SystemExit(f"{pre.config}: unknown decoding option(s) {unknown}")
        try:
            DecodingOptions(**{k: v for k, v in conf.items() if k in DecodingOptions.names()})
        except DecodingOptionError as e:
            raise SystemExit(f"{pre.config}: --{e}") from None
        parser.set_defaults(**conf)
    return parser.parse_args(cmd)


def main(cmd=None):
    args = parse_args(cmd)
    if args.print_config:
        try:
            options = DecodingOptions.from_namespace(args)
        except DecodingOptionError as e:
            raise SystemExit(f"--{e}") from None
        sys.stdout.write(options.to_yaml())
        return
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    flush_denormals()
    with torch.no_grad():  # not torch.set_grad_enabled(False): main() may run inside another program
        inference(args)


if __name__ == "__main__":
    main(sys.argv[1:])
