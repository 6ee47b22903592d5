"""Write an ESPnet-style RESULTS.md from scored decode dirs (end of stage 13).

    python -m espnet_llm_asr.bin.make_results --exp_dirs exp/asr_* --out RESULTS.md

For every experiment dir, every ``<decode_tag>/<test_set>/score_{wer,cer}/result.txt``
found (as written by espnet_llm_asr.bin.score) gives a row of
``|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|`` taken from sclite's own
``Sum/Avg`` line (nothing is recomputed), followed by one row per language
(``score_*/<lang>/result.txt``).  A summary table puts the experiments side
by side (rows: test set and language; columns: experiments).  Where the
decode dir has ``gates`` (MoE projectors) and the scoring recorded
``utt2lang``, the gates' leave-one-out language-ID accuracy is reported and
a language x expert heatmap is written to ``<decode dir>/routing_heatmap.png``
and linked.  CIF projectors' ``cif_count`` gives the mean number of fired
vectors, and their ``alphas`` (the CIF weight of each 20 ms encoder frame)
are drawn, with the fire positions, over the log-mel spectrogram of the
first ``--cif_plots`` utterances (audio from ``<ref_root>/<test_set>/wav.scp``;
a blank strip where it cannot be read) into ``<decode dir>/cif_firing/<uttid>.png``
and linked.  ``--plots false`` writes no plot.  With ``--train_text`` each
experiment gets a table of the reference words its training text never holds
and the share of them transcribed exactly (:mod:`espnet_llm_asr.unseen_words`).
RESULTS.md is written atomically.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_llm_asr.analysis import (cif_fire_positions, gate_language_id_accuracy, plot_cif_firing,
                                     plot_routing_heatmap, read_alphas, read_cif_count, read_gates)
from espnet_llm_asr.data_io import load_mono_16k, read_kaldi_map
from espnet_llm_asr.removed_options import migrate_removed_options
from espnet_llm_asr.scoring import PCT_KEYS, ScliteScore, read_sclite_result
from espnet_llm_asr.unseen_words import score_unseen_words_by_lang, training_words, unseen_word_lines
from espnet_llm_asr.utils import atomic_write_text

ALL = "all"  # language label of the whole test set
HEATMAP_NAME = "routing_heatmap.png"
CIF_PLOT_DIR = "cif_firing"  # <decode dir>/cif_firing/<uttid>.png
MEL_PER_ENCODER_FRAME = 2  # Whisper: log-mel at 100 Hz (10 ms hop), encoder frames at 50 Hz (conv stride 2)
CIF_ROUND_OFF = 1e-5  # the projector's float tolerance in its firing rule (projectors/cif.py ROUND_OFF)


@dataclass
class TestSetResult:
    """Scores of one ``<exp>/<decode_tag>/<test_set>`` dir: {lang or 'all': {'wer'|'cer': ScliteScore}}."""

    exp: str
    decode_tag: str
    test_set: str
    path: Path
    scores: Dict[str, Dict[str, ScliteScore]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # markdown lines: gate LID, CIF, problems

    @property
    def dataset(self) -> str:
        return f"{self.decode_tag}/{self.test_set}"


# ------------------------------------------------------------------ reading
def _read_unit(score_dir: Path) -> Dict[str, ScliteScore]:
    """{'all': score, lang: score, ...} from one score_wer / score_cer dir."""
    out = {ALL: read_sclite_result(score_dir / "result.txt")}
    for sub in sorted(p for p in score_dir.iterdir() if p.is_dir() and (p / "result.txt").is_file()):
        out[sub.name] = read_sclite_result(sub / "result.txt")
    return out


def collect_exp(exp_dir: Path) -> List[TestSetResult]:
    """All scored ``<decode_tag>/<test_set>`` dirs of one experiment, sorted."""
    results = []
    for wer_result in sorted(exp_dir.glob("*/*/score_wer/result.txt")):
        test_dir = wer_result.parent.parent
        r = TestSetResult(exp_dir.name, test_dir.parent.name, test_dir.name, test_dir)
        per_unit = {"wer": _read_unit(test_dir / "score_wer")}
        if (test_dir / "score_cer" / "result.txt").is_file():
            per_unit["cer"] = _read_unit(test_dir / "score_cer")
        for unit, by_lang in per_unit.items():
            for lang, score in by_lang.items():
                r.scores.setdefault(lang, {})[unit] = score
        results.append(r)
    return results


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def analyse_routing(r: TestSetResult, out_dir: Path, ref_root: Optional[Path], plots: bool = True,
                    cif_plots: int = 3) -> None:
    """Add gate language-ID and CIF notes (and the heatmap and CIF firing plots) to ``r.notes``."""
    if (r.path / "cif_count").is_file():
        counts = read_cif_count(r.path / "cif_count")
        if counts:
            mean = sum(counts.values()) / len(counts)
            r.notes.append(f"- CIF: {mean:.1f} fired vectors per utterance on average "
                           f"(min {min(counts.values())}, max {max(counts.values())}, {len(counts)} utterances)")
    if (r.path / "gates").is_file():
        _gate_notes(r, out_dir, ref_root, plots)
    if plots and cif_plots > 0 and (r.path / "alphas").is_file():
        _cif_firing_notes(r, out_dir, ref_root, cif_plots)


def utt2lang_candidates(r: TestSetResult, ref_root: Optional[Path]) -> List[Path]:
    """Where a decode dir's language ids are looked up, in order: the score dir, then ``ref_root/<set>``."""
    return [r.path / "score_wer" / "utt2lang"] + ([ref_root / r.test_set / "utt2lang"] if ref_root is not None else [])


def _gate_notes(r: TestSetResult, out_dir: Path, ref_root: Optional[Path], plots: bool) -> None:
    """Gate language-ID accuracy, mean gates per language and the heatmap of ``r.path/gates``."""
    candidates = utt2lang_candidates(r, ref_root)
    lang_file = next((p for p in candidates if p.is_file()), None)
    if lang_file is None:
        r.notes.append(f"- gate language-ID: not computed, no utt2lang in {' or '.join(map(str, candidates))}")
        return
    try:
        lid = gate_language_id_accuracy(read_gates(r.path / "gates"), read_kaldi_map(lang_file))
    except ValueError as e:
        logging.warning(f"{r.path}: gate analysis skipped: {e}")
        r.notes.append(f"- gate language-ID: not computed ({e})")
        return
    per_lang = ", ".join(f"{lang} {acc:.3f}" for lang, acc in lid.per_lang_accuracy.items())
    r.notes.append(f"- gate language-ID accuracy (leave-one-out nearest centroid of the utterance gates): "
                   f"**{lid.accuracy:.3f}** over {lid.n_utts} utterances (majority-class chance "
                   f"{lid.chance:.3f}); per language: {per_lang}")
    n_exp = lid.mean_gates.shape[1]
    r.notes.append("")
    r.notes.append("|lang|" + "|".join(f"expert {j}" for j in range(n_exp)) + "|")
    r.notes.append("|---|" + "---|" * n_exp)
    for lang, row in zip(lid.langs, lid.mean_gates):
        r.notes.append(f"|{lang}|" + "|".join(f"{v:.3f}" for v in row) + "|")
    if plots:
        png = plot_routing_heatmap(lid.mean_gates, lid.langs, r.path / HEATMAP_NAME,
                                   title=f"{r.exp} {r.dataset}: mean gate per language")
        r.notes.append("")
        r.notes.append(f"![routing heatmap {r.exp} {r.dataset}]({_rel(png, out_dir)})")


# ------------------------------------------------------------------ CIF firing
def _cif_conf(exp_dir: Path) -> Dict:
    """CIF threshold, tail threshold and encoder path from ``<exp>/config.yaml`` (projector defaults otherwise)."""
    conf = {"threshold": 1.0, "tail_threshold": 0.45, "encoder": None}
    frontend_conf = _exp_config(exp_dir).get("frontend_conf") or {}
    conf.update({k: frontend_conf[k] for k in conf if frontend_conf.get(k) is not None})
    return conf


@functools.lru_cache(maxsize=4)
def _logmel(encoder: Optional[str]):
    """The encoder's own log-mel (its saved feature extractor), else Whisper's default 80-bin one."""
    from transformers import WhisperFeatureExtractor

    from espnet_llm_asr.features import WhisperLogMel, load_feature_extractor

    if encoder and (Path(encoder) / "preprocessor_config.json").is_file():
        return WhisperLogMel(load_feature_extractor(encoder))
    return WhisperLogMel(WhisperFeatureExtractor())


def _spectrogram(wav_path: str, uttid: str, encoder: Optional[str], n_frames: int) -> Tuple[np.ndarray, str]:
    """(n_mels, 2 * n_frames) log-mel of one 16 kHz file, on the time axis of the CIF weights.

    Whisper's log-mel has ``F = L // hop`` frames (100 Hz) and the encoder
    ``ceil(F / 2)`` (50 Hz), so 2 log-mel frames make one encoder frame; F is
    padded by its floor (at most one frame) or cut to exactly twice the
    number of weights, so that :func:`plot_cif_firing`'s stretching maps each
    log-mel frame onto its own half of an encoder frame.  Returns the
    spectrogram and a warning ('' if none) when the audio's length does not
    match the weights (more than rounding).
    """
    import torch

    wav = load_mono_16k(wav_path, uttid)
    logmel = _logmel(encoder)
    with torch.no_grad():
        mel, mel_len = logmel(torch.from_numpy(wav)[None], torch.tensor([wav.size]))
    mel = mel[0, :, : int(mel_len[0])].numpy().astype(np.float64)
    want = MEL_PER_ENCODER_FRAME * n_frames
    warning = ""
    if abs(mel.shape[1] - want) >= MEL_PER_ENCODER_FRAME:
        warning = (f"{uttid}: the audio has {mel.shape[1]} log-mel frames but its {n_frames} CIF weights "
                   f"stand for {want}; the spectrogram is cut or padded to fit")
    if mel.shape[1] < want:
        fill = mel.min() if mel.size else 0.0
        mel = np.concatenate([mel, np.full((mel.shape[0], want - mel.shape[1]), fill)], axis=1)
    return mel[:, :want], warning


def _cif_firing_notes(r: TestSetResult, out_dir: Path, ref_root: Optional[Path], n_utts: int) -> None:
    """Plot CIF firing for the first ``n_utts`` utterances of ``r.path/alphas`` and link the plots."""
    try:
        alphas = read_alphas(r.path / "alphas", max_utts=n_utts)
    except ValueError as e:
        logging.warning(f"{r.path}: CIF firing plots skipped: {e}")
        r.notes.append(f"- CIF firing plots: not drawn ({e})")
        return
    if not alphas:
        return
    conf = _cif_conf(r.path.parent.parent)
    threshold = float(conf["threshold"])
    wav_scp = ref_root / r.test_set / "wav.scp" if ref_root is not None else None
    wavs = read_kaldi_map(wav_scp) if wav_scp is not None and wav_scp.is_file() else {}
    links, blank, warnings = [], [], []
    for uttid, a in alphas.items():
        feats, reason = None, ""
        wav = wavs.get(uttid)
        if wav is None:
            reason = f"no {wav_scp}" if not wavs else f"not in {wav_scp}"
        elif wav.endswith("|"):
            reason = "its wav.scp entry is a pipe command"
        else:
            try:
                feats, warning = _spectrogram(wav, uttid, conf["encoder"], a.size)
            except (OSError, ValueError) as e:
                reason = str(e)
            else:
                if warning:
                    logging.warning(warning)
                    warnings.append(warning)
        if feats is None:
            feats = np.zeros((1, a.size))
            blank.append(f"{uttid} ({reason})")
        # the projector's rule: a tail vector when the remainder reaches tail_threshold, at least one vector
        fires = cif_fire_positions(a, threshold, float(conf["tail_threshold"]) - CIF_ROUND_OFF * threshold)
        if fires.size == 0 and a.size:
            fires = np.array([float(a.size)])
        png = plot_cif_firing(feats, a, fires, r.path / CIF_PLOT_DIR / f"{uttid.replace(os.sep, '_')}.png",
                              threshold=threshold, title=f"{uttid} (frame = 20 ms)")
        links.append(f"![CIF firing {uttid}]({_rel(png, out_dir)})")
    where = "log-mel spectrogram" if len(blank) < len(alphas) else "a blank strip"
    r.notes.append(f"- CIF firing over the {where} (weight α of each 20 ms encoder frame, fires as vertical lines), "
                   f"first {len(alphas)} utterance(s):")
    if blank:
        r.notes.append(f"- audio not found or unreadable, drawn over a blank strip: {'; '.join(blank)}")
    r.notes += [f"- {w}" for w in warnings]
    r.notes.append("")
    r.notes += links


# ------------------------------------------------------------------ writing
def _fmt_pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def score_row(dataset: str, s: ScliteScore) -> str:
    """``|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|`` with sclite's percentages."""
    return f"|{dataset}|{s.snt}|{s.wrd}|" + "|".join(_fmt_pct(s.pct[k]) for k in PCT_KEYS) + "|"


def score_table_lines(results: Sequence[TestSetResult], name=lambda r: r.dataset) -> List[str]:
    """sclite's summary as tables, WER then CER: a row per test set (``name(r)``) and per language."""
    lines = []
    for unit in ("wer", "cer"):
        lines += [f"### {unit.upper()}", "", "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in results:
            for lang in sorted(r.scores, key=lambda k: (k != ALL, k)):
                if unit in r.scores[lang]:
                    label = name(r) if lang == ALL else f"{name(r)}/{lang}"
                    lines.append(score_row(label, r.scores[lang][unit]))
        lines.append("")
    return lines


def _git(args: Sequence[str], cwd: Path) -> Optional[str]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_names() -> str:
    """Visible CUDA devices by name, or ``none``."""
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - an environment line must never stop the results
        pass
    return "none"


def environment_lines() -> List[str]:
    """ESPnet-style environment block: date, versions, git commit of this code."""
    import espnet_llm_asr

    code_dir = Path(espnet_llm_asr.__file__).resolve().parent
    lines = [
        "## Environments",
        f"- date: `{datetime.datetime.now().astimezone().strftime('%a %b %d %H:%M:%S %Z %Y')}`",
        f"- python version: `{sys.version.split()[0]} ({platform.platform()})`",
        f"- espnet version: `espnet {_version('espnet')}`",
        f"- pytorch version: `pytorch {_version('torch')}` (torchaudio `{_version('torchaudio')}`)",
        f"- transformers version: `transformers {_version('transformers')}`",
        f"- espnet_llm_asr version: `{espnet_llm_asr.__version__}`",
        f"- CPU: `{_cpu_name()}`, {os.cpu_count()} cores",
        f"- GPU: `{_gpu_names()}`",
    ]
    commit = _git(["rev-parse", "HEAD"], code_dir)
    if commit:
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], code_dir)
        lines.append(f"- Git hash: `{commit}`" + (" (with uncommitted changes)" if dirty else ""))
        lines.append(f"  - Commit date: `{_git(['log', '-1', '--format=%cd'], code_dir)}`")
    else:
        lines.append("- Git hash: `unknown` (not a git checkout)")
    return lines


def _exp_config(exp_dir: Path) -> Dict:
    """The experiment's training ``config.yaml`` ({} when absent or unreadable)."""
    cfg = exp_dir / "config.yaml"
    if not cfg.is_file():
        return {}
    import yaml

    try:
        conf = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        logging.warning(f"{cfg}: not read ({e})")
        return {}
    return conf if isinstance(conf, dict) else {}


def _exp_label(exp_dir: Path) -> str:
    """``asr_x (frontend)`` when the experiment's config.yaml names its projector."""
    frontend = _exp_config(exp_dir).get("frontend")
    return f"{exp_dir.name} ({frontend})" if frontend else exp_dir.name


def _shown_path(path: Optional[str]) -> str:
    """A model path as RESULTS.md shows it: relative to the repository when it lies inside it (a
    checkout's absolute path means nothing on another machine), else as given."""
    if not path:
        return "?"
    repo = Path(__file__).resolve().parents[2]
    if Path(path).is_absolute() and repo in Path(path).resolve().parents:
        return str(Path(path).resolve().relative_to(repo))
    return str(path)


def model_lines(exp_dir: Path, decode_tags: Sequence[str]) -> List[str]:
    """The encoder and the LLM the experiment was trained with (as given to run.sh, a path inside the
    repository relative to it) and each decode tag's decoding config (``<exp>/<tag>/decode_config.yaml``,
    written by stage 12: first line the config's path)."""
    conf = _exp_config(exp_dir)
    frontend_conf = conf.get("frontend_conf") or {}
    scale = migrate_removed_options("llm_conf", conf.get("llm_conf"), warn=False).get("speech_scale")
    if scale:
        mode, _, number = str(scale).partition(":")
        scale = f"{mode} {float(number):g}" if number.replace(".", "", 1).isdigit() else scale
    lines = [f"- encoder: `{_shown_path(frontend_conf.get('encoder'))}`; LLM: `{_shown_path(conf.get('llm'))}`"
             + (f" (speech scale: {scale})" if scale else "")]
    for tag in decode_tags:
        path = exp_dir / tag / "decode_config.yaml"
        if not path.is_file():
            lines.append(f"- decoding `{tag}`: config not recorded")
            continue
        import yaml

        text = path.read_text(encoding="utf-8")
        source = text.splitlines()[0].lstrip("# ").strip() if text.startswith("#") else str(path)
        try:
            options = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            options = {}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) if isinstance(options, dict) else ""
        lines.append(f"- decoding `{tag}`: `{source}`" + (f" ({shown})" if shown else ""))
    return lines


CURVES = ("loss", "acc", "aux_loss", "gate_entropy", "cif_len_ratio")  # ESPnet's <exp>/images/<stat>.png


def training_curve_lines(exp_dir: Path, out_dir: Path) -> List[str]:
    """Links to the training curves ESPnet's trainer plots into ``<exp>/images/`` (those that exist)."""
    links = [f"[{name}]({_rel(exp_dir / 'images' / f'{name}.png', out_dir)})"
             for name in CURVES if (exp_dir / "images" / f"{name}.png").is_file()]
    return [f"- training curves: {', '.join(links)}"] if links else []


def summary_lines(all_results: Dict[Path, List[TestSetResult]], unit: str) -> List[str]:
    """Experiments side by side: rows (test set, language), columns experiment [decode tag]."""
    columns: List[Tuple[str, Dict[Tuple[str, str], ScliteScore]]] = []
    for exp_dir, results in all_results.items():
        tags = sorted({r.decode_tag for r in results})
        for tag in tags:
            name = _exp_label(exp_dir) + (f" {tag}" if len(tags) > 1 else "")
            cells = {(r.test_set, lang): s[unit]
                     for r in results if r.decode_tag == tag for lang, s in r.scores.items() if unit in s}
            columns.append((name, cells))
    rows = sorted({key for _, cells in columns for key in cells}, key=lambda k: (k[0], k[1] != ALL, k[1]))
    if not rows:
        return []
    lines = [f"### {unit.upper()} (%)", "", "|test set|lang|" + "|".join(n for n, _ in columns) + "|",
             "|---|---|" + "---|" * len(columns)]
    for test_set, lang in rows:
        vals = [cells.get((test_set, lang)) for _, cells in columns]
        row = ["-" if s is None else _fmt_pct(s.pct["Err"]) for s in vals]
        lines.append(f"|{test_set}|{lang}|" + "|".join(row) + "|")
    return lines + [""]


def unseen_words_section(results: Sequence[TestSetResult], ref_root: Optional[Path],
                         train_text: Optional[str]) -> List[str]:
    """The "words unseen in training" table of one experiment (:mod:`espnet_llm_asr.unseen_words`):
    per test set and language, the reference words the training text never holds and how many
    of them the hypotheses give exactly.  Empty without ``train_text`` or references."""
    if not train_text or ref_root is None:
        return []
    known = training_words(train_text)
    rows = []
    for r in results:
        ref_path, hyp_path = ref_root / r.test_set / "text", r.path / "text"
        if not (ref_path.is_file() and hyp_path.is_file()):
            logging.warning(f"{r.dataset}: no {ref_path} or {hyp_path}; no unseen-word count")
            continue
        utt2lang_path = next((p for p in utt2lang_candidates(r, ref_root) if p.is_file()), None)
        utt2lang = read_kaldi_map(utt2lang_path) if utt2lang_path else {}
        scores = score_unseen_words_by_lang(read_kaldi_map(ref_path), read_kaldi_map(hyp_path, allow_empty_value=True),
                                            known, utt2lang, ALL)
        rows += [(r.dataset, lang, score) for lang, score in scores.items()]
    if not rows:
        return []
    return ([f"### Words unseen in training ({train_text})", ""] + unseen_word_lines(rows) + [""])


def make_results(exp_dirs: Sequence, out, ref_root: Optional[str] = "dump/raw", plots: bool = True,
                 cif_plots: int = 3, train_text: Optional[str] = None) -> str:
    """Build RESULTS.md for ``exp_dirs``, write it atomically to ``out``, return its text.

    ``train_text``: the training transcripts (Kaldi ``text``); with it each experiment gets the
    table of words unseen in training (:func:`unseen_words_section`).
    """
    out = Path(out)
    exp_paths = [Path(d) for d in exp_dirs]
    if not exp_paths:
        raise ValueError("--exp_dirs: no experiment dir given")
    for d in exp_paths:
        if not d.is_dir():
            raise FileNotFoundError(f"--exp_dirs: {d} is not a directory")
    all_results = {d: collect_exp(d) for d in exp_paths}
    if not any(all_results.values()):
        raise FileNotFoundError(f"no */*/score_wer/result.txt under {', '.join(map(str, exp_paths))}: "
                                f"run stage 13 scoring (espnet_llm_asr.bin.score) first")
    out_dir = out.parent if str(out.parent) else Path(".")
    root = Path(ref_root) if ref_root else None

    lines = ["<!-- Generated by espnet_llm_asr.bin.make_results -->", "# RESULTS", ""]
    lines += environment_lines() + [""]
    lines += ["## Summary", "", "Error rates (sclite `Err`, %) per test set and language; "
              "`all` is the whole test set.", ""]
    lines += summary_lines(all_results, "wer") + summary_lines(all_results, "cer")
    for exp_dir, results in all_results.items():
        lines += [f"## {_exp_label(exp_dir)}", "", f"- exp dir: `{exp_dir}`"]
        lines += model_lines(exp_dir, sorted({r.decode_tag for r in results}))
        lines += training_curve_lines(exp_dir, out_dir)
        if not results:
            lines += ["- no scored decode dir found", ""]
            logging.warning(f"{exp_dir}: no */*/score_wer/result.txt; listed without results")
            continue
        for r in results:
            analyse_routing(r, out_dir, root, plots, cif_plots)
        lines.append("")
        lines += score_table_lines(results)
        lines += unseen_words_section(results, root, train_text)
        for r in results:
            if r.notes:
                lines += [f"### Routing: {r.dataset}", ""] + r.notes + [""]
    text = "\n".join(lines).rstrip("\n") + "\n"
    atomic_write_text(out, text)
    logging.info(f"wrote {out} ({sum(len(v) for v in all_results.values())} scored test set(s))")
    return text


def main(cmd=None) -> str:
    from espnet2.utils.types import str2bool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dirs", nargs="+", required=True, help="experiment dirs, e.g. exp/asr_*")
    p.add_argument("--out", default="RESULTS.md")
    p.add_argument("--ref_root", default="dump/raw",
                   help="fallback for <ref_root>/<test_set>/utt2lang when score_wer/utt2lang is absent; "
                        "<ref_root>/<test_set>/wav.scp gives the audio of the CIF firing plots")
    p.add_argument("--plots", type=str2bool, default=True, help="write routing heatmaps and CIF firing plots")
    p.add_argument("--cif_plots", type=int, default=3,
                   help="CIF firing plots for the first N utterances of each decode dir with alphas (0: none)")
    p.add_argument("--train_text", default=None,
                   help="the training transcripts (Kaldi text): adds the table of the test words unseen in "
                        "training and how many of them come out exactly")
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        return make_results(args.exp_dirs, args.out, args.ref_root, args.plots, args.cif_plots, args.train_text)
    except (OSError, ValueError) as e:
        if cmd is not None:
            raise
        sys.exit(f"ERROR: {e}")


if __name__ == "__main__":
    main()
