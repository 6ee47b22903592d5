"""Run the frozen speech encoder once over a Kaldi data dir and dump its outputs.

    python -m espnet_llm_asr.bin.dump_encoder_feats --encoder exp/tiny_models/whisper \\
        --data_dir dump/raw/train --out_dir dump/feats/train --nj 4 [--job_id 2]

Writes ``out_dir/feats.scp`` (kaldiio ark/scp of (T, D) features, trimmed
to each utterance's real frame count) and ``out_dir/feats_shape``
(``uttid T,D``).  ``--dtype float32`` (default) stores Kaldi float matrices;
``--dtype float16`` stores half-precision arrays (kaldiio's numpy entries in
the same ark/scp layout), half the disk, each value within its fp16 rounding
(relative 2^-11); ESPnet's ``kaldi_ark`` reader loads them and its dataset
casts them to float32, so training and decoding read them with no change.  Work is split into ``--nj`` shards under
``out_dir/split<nj>/``; with ``--job_id J`` only shard J is encoded (the
recipe runs shards in parallel, then ``--merge_only``), without it all
shards run in turn and are merged.  A finished shard is never redone (its
``.done`` marker is written last), and every file is written under a
temporary name and renamed, so an interrupted dump resumes where it stopped.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import yaml

from espnet_llm_asr.data_io import read_wav_scp, load_mono_16k
from espnet_llm_asr.torch_utils import flush_denormals
from espnet_llm_asr.utils import atomic_path, atomic_write_text


#: --dtype -> numpy dtype of the stored features
DUMP_DTYPES = {"float32": np.float32, "float16": np.float16}
FP16_MAX = float(np.finfo(np.float16).max)


def to_stored(mat: np.ndarray, dtype: str, key: str) -> np.ndarray:
    """(T, D) float32 features -> the stored array; fp16 refuses values it cannot hold."""
    if dtype == "float32":
        return mat
    peak = float(np.abs(mat).max()) if mat.size else 0.0
    if not peak <= FP16_MAX:
        raise ValueError(f"utterance {key}: feature magnitude {peak:g} does not fit --dtype float16 "
                         f"(max {FP16_MAX:g}); dump it with --dtype float32")
    return mat.astype(DUMP_DTYPES[dtype])


def write_feats(f, key: str, mat: np.ndarray) -> None:
    """Append one (T, D) array to an open ark: a Kaldi matrix for float32, a numpy entry otherwise."""
    import kaldiio

    if mat.dtype == np.float32:
        kaldiio.save_ark(f, {key: mat})
    else:
        kaldiio.save_ark(f, {key: mat}, write_function="numpy")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=False, help="HF Whisper dir or name")
    p.add_argument("--encoder_conf", type=yaml.safe_load, default={},
                   help="YAML dict of WhisperEncoder kwargs, e.g. '{pad_to_30s: false}'")
    p.add_argument("--data_dir", required=True, help="Kaldi data dir with wav.scp")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--job_id", type=int, default=None, help="1-based shard to encode (default: all)")
    p.add_argument("--merge_only", action="store_true", help="only merge finished shards")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--dtype", choices=sorted(DUMP_DTYPES), default="float32",
                   help="stored precision: float32 (Kaldi matrices) or float16 (half the disk)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log_level", default="INFO")
    return p


def shard(keys: List[str], nj: int, job_id: int) -> List[str]:
    """Shard ``job_id`` (1-based) of ``nj``: every ``nj``-th of the sorted keys from the ``job_id``-th.

    Sorted ids group languages and speakers, whose utterances differ in
    length; taking every ``nj``-th gives each job a like mix, so that the
    jobs end together.
    """
    if not 1 <= job_id <= nj:
        raise ValueError(f"--job_id {job_id} outside 1..{nj}")
    return keys[job_id - 1:: nj]


def _done_dtype(done: Path) -> str:
    """The dtype a finished shard was dumped in (markers without one predate --dtype: float32)."""
    fields = done.read_text(encoding="utf-8").split()
    return fields[1] if len(fields) > 1 else "float32"


def check_done_dtype(done: Path, dtype: str) -> None:
    """A finished shard dumped in another dtype is an error naming it (never silently mixed)."""
    found = _done_dtype(done)
    if found != dtype:
        raise SystemExit(f"{done}: this shard was dumped with --dtype {found}, not {dtype}; "
                         f"remove {done.parent} or dump with --dtype {found}")


def encode_shard(encoder, wavs: Dict[str, str], keys: List[str], split_dir: Path, job_id: int,
                 batch_size: int, device: str, dtype: str = "float32") -> None:
    """Encode shard ``job_id``: (B, L) waveforms -> (B, T, D) features, each utterance
    trimmed to its (T, D) frames and stored in ``dtype``."""
    done = split_dir / f"feats.{job_id}.done"
    if done.exists():
        check_done_dtype(done, dtype)
        logging.info(f"shard {job_id}: already done, skipped")
        return
    ark = split_dir / f"feats.{job_id}.ark"
    scp_lines, shape_lines = [], []
    start = time.perf_counter()
    with atomic_path(ark) as tmp_ark, open(tmp_ark, "wb") as f:
        for b in range(0, len(keys), batch_size):
            batch_keys = keys[b: b + batch_size]
            waves = [load_mono_16k(wavs[k], k) for k in batch_keys]
            lengths = torch.tensor([len(w) for w in waves])
            speech = torch.zeros(len(waves), int(lengths.max()))
            for i, w in enumerate(waves):
                speech[i, : len(w)] = torch.from_numpy(w)
            with torch.no_grad():
                feats, feats_lengths = encoder(speech.to(device), lengths.to(device))
            for i, key in enumerate(batch_keys):
                mat = to_stored(feats[i, : int(feats_lengths[i])].float().cpu().numpy(), dtype, key)
                # an ark entry is "<key> <binary matrix>"; the scp points at the matrix
                offset = f.tell() + len(key.encode("utf-8")) + 1
                write_feats(f, key, mat)
                scp_lines.append(f"{key} {ark.resolve()}:{offset}")
                shape_lines.append(f"{key} {mat.shape[0]},{mat.shape[1]}")
            logging.info(f"shard {job_id}: {min(b + batch_size, len(keys))}/{len(keys)} utterances")
    atomic_write_text(split_dir / f"feats.{job_id}.scp", "".join(ln + "\n" for ln in scp_lines))
    atomic_write_text(split_dir / f"feats_shape.{job_id}", "".join(ln + "\n" for ln in shape_lines))
    atomic_write_text(done, f"{len(keys)} {dtype}\n")
    logging.info(f"shard {job_id}: {len(keys)} utterances in {time.perf_counter() - start:.1f} s")


def merge(out_dir: Path, nj: int) -> None:
    split_dir = out_dir / f"split{nj}"
    missing = [j for j in range(1, nj + 1) if not (split_dir / f"feats.{j}.done").exists()]
    if missing:
        raise RuntimeError(f"{split_dir}: shards {missing} are not finished; re-run them")
    dtypes = {j: _done_dtype(split_dir / f"feats.{j}.done") for j in range(1, nj + 1)}
    if len(set(dtypes.values())) > 1:
        raise RuntimeError(f"{split_dir}: shards were dumped with different --dtype: {dtypes}")
    for name in ("feats.scp", "feats_shape"):
        stem, _, ext = name.partition(".")
        parts = [split_dir / (f"{stem}.{j}.{ext}" if ext else f"{stem}.{j}") for j in range(1, nj + 1)]
        lines = sorted(ln for p in parts for ln in p.read_text(encoding="utf-8").splitlines() if ln)
        atomic_write_text(out_dir / name, "".join(ln + "\n" for ln in lines))
    logging.info(f"merged {nj} shards into {out_dir}/feats.scp")


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    flush_denormals()
    out_dir = Path(args.out_dir)
    split_dir = out_dir / f"split{args.nj}"
    split_dir.mkdir(parents=True, exist_ok=True)
    if not args.merge_only:
        if args.encoder is None:
            raise SystemExit("--encoder is required unless --merge_only")
        from espnet_llm_asr.encoder import WhisperEncoder

        wavs = read_wav_scp(Path(args.data_dir) / "wav.scp")
        keys = sorted(wavs)
        jobs = [args.job_id] if args.job_id is not None else list(range(1, args.nj + 1))
        for j in jobs:
            if (split_dir / f"feats.{j}.done").exists():
                check_done_dtype(split_dir / f"feats.{j}.done", args.dtype)
        todo = [j for j in jobs if not (split_dir / f"feats.{j}.done").exists()]
        if todo:
            encoder = WhisperEncoder(args.encoder, **args.encoder_conf).to(args.device)
            for j in todo:
                encode_shard(encoder, wavs, shard(keys, args.nj, j), split_dir, j, args.batch_size, args.device,
                             args.dtype)
        else:
            logging.info(f"{out_dir}: shards {jobs} already done")
        if args.job_id is not None:
            return
    merge(out_dir, args.nj)


if __name__ == "__main__":
    main(sys.argv[1:])
