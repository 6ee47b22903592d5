"""Routing analysis of MoE projectors and CIF firing plots.

* :func:`gate_language_id_accuracy`: do the utterance gates (the expert
  weights ḡ a SMEAR / MoE projector computes for each utterance) identify
  the language?  Leave-one-out nearest-centroid classification.
* :func:`plot_routing_heatmap`: language x expert mean gate heatmap.
* :func:`plot_cif_firing`: CIF weights and fire positions over a
  spectrogram or waveform of one utterance.

Plots are drawn with matplotlib's object API on an Agg canvas (no pyplot,
no global backend switch) and written atomically.
"""
from __future__ import annotations

import logging
import os
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from espnet_llm_asr.data_io import read_kaldi_map


# ------------------------------------------------------------------ reading
def read_gates(path) -> Dict[str, np.ndarray]:
    """``uttid g1 ... gE`` lines -> {uttid: (E,) float64}; all rows must have the same E."""
    path = Path(path)
    out: Dict[str, np.ndarray] = {}
    for key, value in read_kaldi_map(path).items():
        try:
            g = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{path}: '{key}' has a non-number gate: {e}") from None
        if not np.all(np.isfinite(g)):
            raise ValueError(f"{path}: '{key}' has a non-finite gate: {value}")
        if out and g.shape != next(iter(out.values())).shape:
            raise ValueError(f"{path}: '{key}' has {g.size} gates, earlier lines have "
                             f"{next(iter(out.values())).size}")
        out[key] = g
    bad = [k for k, g in out.items() if abs(g.sum() - 1.0) > 1e-2]
    if bad:
        logging.warning(f"{path}: gates of {len(bad)} utterance(s) do not sum to 1, e.g. '{bad[0]}' "
                        f"(sum {out[bad[0]].sum():.4f})")
    return out


def read_cif_count(path) -> Dict[str, int]:
    """``uttid N`` lines (number of vectors CIF fired) -> {uttid: N}."""
    path = Path(path)
    out = {}
    for key, value in read_kaldi_map(path).items():
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"{path}: '{key}' has cif_count {value!r}, expected an integer") from None
    return out


def read_alphas(path, max_utts: Optional[int] = None) -> Dict[str, np.ndarray]:
    """``uttid a1 ... aT`` lines (CIF weights per encoder frame) -> {uttid: (T,) float64}.

    With ``max_utts``, only the first ``max_utts`` utterances of the file are
    read (the file holds T numbers per utterance; plots need only a few).
    """
    path = Path(path)
    out: Dict[str, np.ndarray] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if max_utts is not None and len(out) >= max_utts:
                break
            parts = line.split()
            if not parts:
                continue
            key, values = parts[0], parts[1:]
            if not values:
                raise ValueError(f"{path}:{lineno}: '{key}' has no CIF weights")
            try:
                a = np.array([float(v) for v in values], dtype=np.float64)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: '{key}' has a non-number weight: {e}") from None
            if not np.all(np.isfinite(a)) or (a < 0).any():
                raise ValueError(f"{path}:{lineno}: '{key}' has a negative or non-finite weight")
            if key in out:
                raise ValueError(f"{path}:{lineno}: duplicate id '{key}'")
            out[key] = a
    return out


# ---------------------------------------------------------- gate -> language
@dataclass
class GateLidResult:
    """Result of :func:`gate_language_id_accuracy`.

    accuracy: leave-one-out nearest-centroid accuracy over ``n_utts`` utterances
    chance: share of the most frequent language (accuracy of always guessing it)
    langs: the L languages, sorted; row order of the matrices
    mean_gates: (L, E) mean gate vector of each language
    confusion: (L, L) counts, row = true language, column = predicted
    per_lang_accuracy: {lang: accuracy}
    """

    accuracy: float
    chance: float
    n_utts: int
    langs: List[str]
    mean_gates: np.ndarray
    confusion: np.ndarray
    per_lang_accuracy: Dict[str, float]


# Squared gate distances closer than this are ties (gates lie in [0, 1]).
_TIE_TOLERANCE = 1e-12


def gate_language_id_accuracy(gates: Mapping[str, np.ndarray], utt2lang: Mapping[str, str]) -> GateLidResult:
    """How well the gates alone identify an utterance's language.

    Each utterance with both a gate vector (E,) and a language is classified
    as the language whose centroid (mean gate vector) is nearest in
    Euclidean distance, where the centroid of its own language is computed
    without the utterance itself (leave-one-out; so a language with a single
    utterance has no centroid to be recognised by, and that utterance counts
    as misclassified).  Ties go to the first language in sorted order.
    1.0 means the router separates the languages completely; about
    ``chance`` (or below: leaving one out pulls its own centroid away) means
    the gates carry no language information.

    Utterances present in only one of the two maps are left out (logged).
    Needs at least two languages.
    """
    keys = sorted(k for k in gates if k in utt2lang)
    skipped = len(gates) - len(keys)
    if skipped:
        logging.warning(f"gate LID: {skipped} utterance(s) with gates have no language; left out")
    if not keys:
        raise ValueError("gate LID: no utterance has both gates and a language")
    langs = sorted({utt2lang[k] for k in keys})
    if len(langs) < 2:
        raise ValueError(f"gate LID: needs at least 2 languages, got {langs}")
    x = np.stack([np.asarray(gates[k], dtype=np.float64) for k in keys])  # (N, E)
    index = {lang: i for i, lang in enumerate(langs)}
    y = np.array([index[utt2lang[k]] for k in keys])  # (N,)
    n_lang = len(langs)
    counts = np.bincount(y, minlength=n_lang).astype(np.float64)  # (L,)
    sums = np.zeros((n_lang, x.shape[1]))
    np.add.at(sums, y, x)
    centroids = sums / counts[:, None]  # (L, E)

    dist = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)  # (N, L)
    own_n = counts[y] - 1  # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):
        own_centroid = (sums[y] - x) / own_n[:, None]  # (N, E); nan where the language has 1 utterance
    own_dist = ((x - own_centroid) ** 2).sum(-1)
    dist[np.arange(len(y)), y] = np.where(own_n > 0, own_dist, np.inf)
    # Distances equal up to rounding are ties: identical gates (the dense
    # ensemble's static weights, a collapsed router) give centroids that
    # differ only in the last bits, and a plain argmin would read that
    # rounding noise as perfect language identification.
    nearest = dist.min(1, keepdims=True)  # (N, 1)
    pred = (dist <= nearest + _TIE_TOLERANCE).argmax(1)  # first tied language

    confusion = np.zeros((n_lang, n_lang), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    per_lang = {lang: float(confusion[i, i] / counts[i]) for i, lang in enumerate(langs)}
    return GateLidResult(
        accuracy=float((pred == y).mean()),
        chance=float(counts.max() / counts.sum()),
        n_utts=len(keys),
        langs=langs,
        mean_gates=centroids,
        confusion=confusion,
        per_lang_accuracy=per_lang,
    )


# ------------------------------------------------------------------ CIF
def cif_fire_positions(alphas: Sequence[float], threshold: float = 1.0,
                       tail_threshold: Optional[float] = None) -> np.ndarray:
    """Where CIF fires, in frame units: (K,) float.

    The weights are integrated frame by frame; when the sum reaches
    ``threshold`` inside frame ``t`` after a fraction ``f`` of that frame's
    weight, a vector fires at position ``t + f`` and the rest of the weight
    starts the next sum.  With ``tail_threshold``, a final partial sum above
    it fires one more vector at the end (position T).
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    fires, acc = [], 0.0
    for t, a in enumerate(alphas):
        used = 0.0  # weight of this frame already integrated
        while acc + (a - used) >= threshold and a > 0:
            need = threshold - acc
            used += need
            fires.append(t + used / a)
            acc = 0.0
        acc += a - used
    if tail_threshold is not None and acc > tail_threshold:
        fires.append(float(len(alphas)))
    return np.array(fires, dtype=np.float64)


# ------------------------------------------------------------------ plots
def _new_figure(width: float, height: float, rows: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False, **kw)[:, 0]
    return fig, axes


def _save_png(fig, out_png: Union[str, Path]) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_png.parent, prefix=f".{out_png.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp made it private
        os.replace(tmp, out_png)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out_png


def plot_routing_heatmap(matrix, langs: Sequence[str], out_png, expert_names: Optional[Sequence[str]] = None,
                         title: str = "mean utterance gate per language") -> Path:
    """Heatmap of ``matrix`` (L languages, E experts) with each value written in its cell."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != len(langs):
        raise ValueError(f"routing heatmap: matrix of shape {m.shape} does not match "
                         f"{len(langs)} languages {list(langs)}")
    experts = list(expert_names) if expert_names is not None else [f"expert {j}" for j in range(m.shape[1])]
    if len(experts) != m.shape[1]:
        raise ValueError(f"routing heatmap: {len(experts)} expert names for {m.shape[1]} columns")
    fig, (ax,) = _new_figure(1.2 + 1.1 * m.shape[1], 1.2 + 0.6 * m.shape[0])
    vmax = max(float(m.max()), 1e-12)
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]), labels=experts)
    ax.set_yticks(range(m.shape[0]), labels=list(langs))
    ax.set_xlabel("expert")
    ax.set_ylabel("language")
    ax.set_title(textwrap.fill(title, width=max(30, int(12 * (1.2 + 1.1 * m.shape[1])))), fontsize="medium")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center",
                    color="black" if m[i, j] > 0.6 * vmax else "white")
    fig.colorbar(im, ax=ax)
    return _save_png(fig, out_png)


def plot_cif_firing(features, alphas, fire_positions, out_png, threshold: float = 1.0,
                    title: str = "CIF firing") -> Path:
    """CIF weights and fire positions for one utterance.

    features: (F, T') spectrogram (e.g. log-mel) or (L,) waveform; it is
        stretched over the T frames of ``alphas`` whatever its own rate.
    alphas: (T,) CIF weights, one per projector input frame.
    fire_positions: (K,) positions in frame units, 0 <= p <= T (e.g. from
        :func:`cif_fire_positions`); drawn as vertical lines on both panels.
    The lower panel shows the weights as bars and the integrator's running
    sum, which resets at each fire.
    """
    feats = np.asarray(features, dtype=np.float64)
    a = np.asarray(alphas, dtype=np.float64)
    fires = np.asarray(fire_positions, dtype=np.float64).reshape(-1)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"CIF plot: alphas must be a non-empty (T,) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise ValueError("CIF plot: alphas must be finite and non-negative")
    n_frames = a.size
    if fires.size and (fires.min() < 0 or fires.max() > n_frames):
        raise ValueError(f"CIF plot: fire positions must lie in [0, {n_frames}] (frame units), "
                         f"got {fires.min():.2f}..{fires.max():.2f}")
    if feats.ndim not in (1, 2) or feats.size == 0:
        raise ValueError(f"CIF plot: features must be a (F, T') spectrogram or (L,) waveform, got shape {feats.shape}")

    fig, (top, bottom) = _new_figure(10, 5, rows=2, sharex=True)
    if feats.ndim == 2:
        top.imshow(feats, origin="lower", aspect="auto", cmap="magma",
                   extent=(0, n_frames, 0, feats.shape[0]))
        top.set_ylabel("feature bin")
    else:
        top.plot(np.linspace(0, n_frames, feats.size), feats, lw=0.5, color="tab:blue")
        top.set_ylabel("amplitude")
    top.set_title(f"{title}: {fires.size} fires over {n_frames} frames (sum of weights {a.sum():.2f})")

    centers = np.arange(n_frames) + 0.5
    bottom.bar(centers, a, width=0.9, color="tab:gray", label="weight α")
    running, acc = [], 0.0
    for t, v in enumerate(a):  # integrator state at the end of each frame
        acc += v
        while acc >= threshold:
            acc -= threshold
        running.append(acc)
    bottom.step(np.arange(1, n_frames + 1), running, where="pre", color="tab:orange", label="integrated sum")
    bottom.axhline(threshold, color="tab:red", ls=":", lw=1, label=f"threshold {threshold:g}")
    for p in fires:
        for ax in (top, bottom):
            ax.axvline(p, color="tab:green", lw=1, alpha=0.8)
    bottom.set_xlim(0, n_frames)
    bottom.set_xlabel("projector input frame")
    bottom.set_ylabel("α")
    bottom.legend(loc="upper right", fontsize="small")
    return _save_png(fig, out_png)
