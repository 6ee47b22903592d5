"""Kaldi data-dir operations used by the recipe stages 2-4, 10 and 12.

A data dir holds ``wav.scp``, ``text``, ``utt2spk`` (+ ``spk2utt``) and
optionally ``utt2lang``; every file is sorted by utterance id (C locale).
Each operation writes its outputs atomically and reports what it dropped and
why, naming the utterance and the file.
"""
from __future__ import annotations

import logging
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from espnet_llm_asr.data_io import SAMPLE_RATE, read_kaldi_map
from espnet_llm_asr.utils import atomic_write_text

OPTIONAL_FILES = ("utt2lang",)


def c_sorted(keys) -> List[str]:
    """Keys in C-locale order (``LC_ALL=C sort``): by UTF-8 bytes."""
    return sorted(keys, key=lambda k: k.encode("utf-8"))


@dataclass
class DataDir:
    """In-memory data dir: maps from utterance id."""

    wav: Dict[str, str]
    text: Dict[str, str]
    utt2spk: Dict[str, str]
    extra: Dict[str, Dict[str, str]] = field(default_factory=dict)  # e.g. utt2lang, utt2dur

    @classmethod
    def load(cls, path) -> "DataDir":
        path = Path(path)
        wav = read_kaldi_map(path / "wav.scp")
        text = read_kaldi_map(path / "text", allow_empty_value=True)
        utt2spk = read_kaldi_map(path / "utt2spk") if (path / "utt2spk").exists() else {u: u for u in wav}
        extra = {}
        for name in OPTIONAL_FILES + ("utt2dur",):
            if (path / name).exists():
                extra[name] = read_kaldi_map(path / name)
        return cls(wav, text, utt2spk, extra)

    def keys(self) -> List[str]:
        """Utterance ids in C-locale (byte) order, as Kaldi sorts them."""
        return c_sorted(self.wav)

    def subset(self, keep: Sequence[str]) -> "DataDir":
        keep = set(keep)
        pick = lambda d: {k: v for k, v in d.items() if k in keep}  # noqa: E731
        return DataDir(pick(self.wav), pick(self.text), pick(self.utt2spk),
                       {n: pick(d) for n, d in self.extra.items()})

    def save(self, path) -> None:
        path = Path(path)
        keys = self.keys()
        write = lambda name, d: atomic_write_text(  # noqa: E731
            path / name, "".join(f"{k} {d[k]}".rstrip() + "\n" for k in keys if k in d))
        write("wav.scp", self.wav)
        write("text", self.text)
        write("utt2spk", self.utt2spk)
        for name, d in self.extra.items():
            write(name, d)
        spk2utt: Dict[str, List[str]] = {}
        for k in keys:
            spk2utt.setdefault(self.utt2spk[k], []).append(k)
        atomic_write_text(path / "spk2utt", "".join(
            f"{s} {' '.join(spk2utt[s])}\n" for s in c_sorted(spk2utt)))


def write_report(path: Path, dropped: Dict[str, str], what: str) -> None:
    """``uttid reason`` lines; logs a summary."""
    atomic_write_text(path, "".join(f"{k} {v}\n" for k, v in sorted(dropped.items())))
    if dropped:
        logging.warning(f"{what}: dropped {len(dropped)} utterance(s), listed in {path}")
        for k, v in list(sorted(dropped.items()))[:10]:
            logging.warning(f"  {k}: {v}")


# ----------------------------------------------------------------- format
def _convert(src: str, dst: Path) -> None:
    """Any audio sox reads -> 16 kHz mono 16-bit PCM wav."""
    tmp = dst.with_name(dst.name + ".tmp.wav")
    proc = subprocess.run(["sox", src, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"sox failed on {src}")
    tmp.replace(dst)


def format_data_dir(src, dst, nj: int = 1, fix_data: bool = False) -> Dict[str, str]:
    """Validate ``src`` and write ``dst`` with 16 kHz mono PCM audio and ``utt2dur``.

    Audio already 16 kHz mono is referenced in place; anything else is
    converted with sox into ``dst/data/``.  Problems (see
    :func:`espnet_llm_asr.validate.validate_data_dir`) stop with an error
    naming each utterance, or with ``fix_data`` are dropped and listed in
    ``dst/dropped_format``.  Returns the dropped utterances.
    """
    from espnet_llm_asr.validate import validate_data_dir

    src, dst = Path(src), Path(dst)
    report = validate_data_dir(src)  # wrong rate / channels are converted below, not errors
    data = DataDir.load(src)
    dropped = dict(report.problems)
    if dropped and not fix_data:
        raise ValueError(report.message(src) + "\n(re-run with --fix_data true to drop them)")
    keep = [k for k in data.keys() if k not in dropped]
    data = data.subset(keep)
    (dst / "data").mkdir(parents=True, exist_ok=True)
    todo = [(k, data.wav[k]) for k in keep if report.info[k][0] != SAMPLE_RATE or report.info[k][2] != 1]

    def convert(item):
        key, path = item
        out = dst / "data" / f"{key}.wav"
        try:
            if not out.exists():
                _convert(path, out)
            return key, str(out.resolve()), None
        except Exception as e:  # keep going: every failure is reported
            return key, None, str(e)

    with ThreadPoolExecutor(max(1, nj)) as pool:
        for key, path, err in pool.map(convert, todo):
            if err:
                dropped[key] = f"conversion to 16 kHz mono failed: {err}"
            else:
                data.wav[key] = path
    if any(k in dropped for k in keep):
        if not fix_data:
            raise ValueError("\n".join(f"utterance {k}: {v}" for k, v in dropped.items()))
        data = data.subset([k for k in keep if k not in dropped])
    for k in data.keys():
        data.wav[k] = str(Path(data.wav[k]).resolve())
    data.extra["utt2dur"] = {k: f"{report.info[k][1]:.3f}" for k in data.keys()}
    data.save(dst)
    write_report(dst / "dropped_format", dropped, f"format {src}")
    logging.info(f"format {src} -> {dst}: {len(data.wav)} utterances, {len(todo)} converted to 16 kHz mono")
    return dropped


# ----------------------------------------------------------------- filter
def filter_data_dir(path, min_duration: float, max_duration: float) -> Dict[str, str]:
    """Drop utterances too short/long or with empty text; ``path/dropped_filter`` lists them."""
    path = Path(path)
    data = DataDir.load(path)
    if "utt2dur" not in data.extra:
        raise FileNotFoundError(f"{path}/utt2dur missing: run stage 3 (format) first")
    dropped = {}
    for k in data.keys():
        dur = float(data.extra["utt2dur"][k])
        if dur < min_duration:
            dropped[k] = f"too short ({dur:.2f} s < {min_duration} s)"
        elif dur > max_duration:
            dropped[k] = f"too long ({dur:.2f} s > {max_duration} s)"
        elif not data.text.get(k, "").strip():
            dropped[k] = "empty transcript"
    data.subset([k for k in data.keys() if k not in dropped]).save(path)
    write_report(path / "dropped_filter", dropped, f"filter {path}")
    logging.info(f"filter {path}: kept {len(data.wav) - len(dropped)}, dropped {len(dropped)}")
    return dropped


# ----------------------------------------------------------- speed perturb
def speed_perturb(src, dst, factors: Sequence[float], nj: int = 1) -> None:
    """Copies of the data at each speed factor (sox ``speed``), ids prefixed ``sp<f>-``."""
    src, dst = Path(src), Path(dst)
    data = DataDir.load(src)
    out = DataDir({}, {}, {}, {n: {} for n in data.extra if n != "utt2dur"})
    jobs = []
    (dst / "data").mkdir(parents=True, exist_ok=True)
    for f in factors:
        for k in data.keys():
            nk = k if f == 1.0 else f"sp{f}-{k}"
            out.text[nk] = data.text[k]
            out.utt2spk[nk] = data.utt2spk[k] if f == 1.0 else f"sp{f}-{data.utt2spk[k]}"
            for n in out.extra:
                out.extra[n][nk] = data.extra[n][k]
            if f == 1.0:
                out.wav[nk] = data.wav[k]
            else:
                target = dst / "data" / f"{nk}.wav"
                out.wav[nk] = str(target.resolve())
                jobs.append((data.wav[k], target, f))

    def run(job):
        s, t, f = job
        if t.exists():
            return
        tmp = t.with_name(t.name + ".tmp.wav")
        proc = subprocess.run(["sox", s, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp), "speed", str(f)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sox speed {f} failed on {s}: {proc.stderr.strip()}")
        tmp.replace(t)

    with ThreadPoolExecutor(max(1, nj)) as pool:
        list(pool.map(run, jobs))
    out.save(dst)
    logging.info(f"speed perturbation {list(factors)}: {src} -> {dst} ({len(out.wav)} utterances)")


# ----------------------------------------------------------------- shapes
def write_shapes(path, out_dir, llm: str, feats_shape: Optional[str] = None) -> Dict[str, str]:
    """``speech_shape`` (samples, or frames,dim of dumped features) and ``text_shape``
    (LLM tokens); utterances whose text the LLM tokenizer cannot represent
    (unknown token) are left out and listed in ``dropped_untokenizable``."""
    from transformers import AutoTokenizer

    path, out_dir = Path(path), Path(out_dir)
    data = DataDir.load(path)
    tok = AutoTokenizer.from_pretrained(llm)
    feats = read_kaldi_map(feats_shape) if feats_shape else None
    dropped, speech, text = {}, [], []
    for k in data.keys():
        ids = tok(data.text[k], add_special_tokens=False)["input_ids"]
        if not ids:
            dropped[k] = "no LLM tokens"
            continue
        if tok.unk_token_id is not None and tok.unk_token_id in ids:
            pieces = [t for t, i in zip(tok.convert_ids_to_tokens(ids), ids) if i == tok.unk_token_id]
            dropped[k] = f"untokenizable text ({len(pieces)} unknown token(s)) in {data.text[k]!r}"
            continue
        if feats is not None:
            if k not in feats:
                dropped[k] = f"no dumped features in {feats_shape}"
                continue
            speech.append(f"{k} {feats[k]}")
        else:
            speech.append(f"{k} {int(round(float(data.extra['utt2dur'][k]) * SAMPLE_RATE))}")
        text.append(f"{k} {len(ids)}")
    atomic_write_text(out_dir / "speech_shape", "".join(ln + "\n" for ln in speech))
    atomic_write_text(out_dir / "text_shape", "".join(ln + "\n" for ln in text))
    write_report(out_dir / "dropped_untokenizable", dropped, f"shapes {path}")
    logging.info(f"shapes {path} -> {out_dir}: {len(speech)} utterances, {len(dropped)} left out")
    return dropped


def signature(paths: Sequence[str], small: int = 1 << 20) -> str:
    """Short hash of what the given files/dirs hold, used to skip finished recipe stages.

    Files up to ``small`` bytes are hashed by content (a stage that rewrites
    an identical file does not invalidate its consumers); larger ones by size
    and modification time.  ``.done*`` markers are ignored; a missing path
    counts as "none".
    """
    import hashlib

    h = hashlib.md5()
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.name.startswith(".done"):
                continue
            h.update(str(f).encode())
            if not f.exists():
                h.update(b"none")
                continue
            st = f.stat()
            h.update(f.read_bytes() if st.st_size <= small else f"{st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def split_keys(key_file, nj: int, out_dir) -> None:
    """``out_dir/keys.{1..nj}``: contiguous, near-equal shares of the key file's ids."""
    keys = [ln.split(maxsplit=1)[0] for ln in Path(key_file).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if nj > len(keys):
        raise ValueError(f"{key_file}: {len(keys)} utterances cannot be split into {nj} jobs")
    bounds = np.linspace(0, len(keys), nj + 1).round().astype(int)
    for j in range(nj):
        atomic_write_text(Path(out_dir) / f"keys.{j + 1}",
                          "".join(k + "\n" for k in keys[bounds[j]: bounds[j + 1]]))
