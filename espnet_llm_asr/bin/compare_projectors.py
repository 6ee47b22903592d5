"""One table comparing trained projectors (end of local/compare_projectors.sh).

    python -m espnet_llm_asr.bin.compare_projectors --exp_dirs exp/asr_train_mono exp/asr_train_smear_moe \\
        --out exp/compare_projectors.md

For each experiment: the projector (``frontend`` of its config.yaml), the
trainable and total parameter counts and the training wall time, read from
its ``train.log`` (the task's "LLM-ASR model: N trainable of M parameters"
line and the job runner's "# Accounting: time=S" line; a resumed run counts
its last part only), then WER and CER per test set and language side by side.
The error rates are sclite's own, read by :mod:`espnet_llm_asr.bin.make_results`
from ``<exp>/<decode tag>/<test set>/score_{wer,cer}/result.txt``; nothing is
recomputed.  For MoE projectors, a routing table per test set: each
expert's usage (mean utterance gate), the mean entropy of the utterance gates
(nats; log E = uniform, 0 = one expert), and the gate language-ID accuracy
(:func:`espnet_llm_asr.analysis.gate_language_id_accuracy`), from the decoded
``gates`` files.  The table is written atomically.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_llm_asr.analysis import gate_language_id_accuracy, read_gates
from espnet_llm_asr.bin.make_results import (TestSetResult, _exp_label, collect_exp, summary_lines,
                                             utt2lang_candidates)
from espnet_llm_asr.data_io import read_kaldi_map
from espnet_llm_asr.utils import atomic_write_text

_PARAMS = re.compile(r"LLM-ASR model: ([\d,]+) trainable of ([\d,]+) parameters")
_TIME = re.compile(r"^# Accounting: time=(\d+)", re.M)


def train_log_facts(exp_dir: Path) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    """(trainable params, all params, training seconds) from ``exp_dir/train.log``; None where absent."""
    log = exp_dir / "train.log"
    if not log.is_file():
        return None, None, None
    text = log.read_text(encoding="utf-8", errors="replace")
    m = _PARAMS.search(text)
    t = _TIME.findall(text)
    trainable, total = (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))) if m else (None, None)
    return trainable, total, (int(t[-1]) if t else None)


def _fmt_int(n: Optional[int]) -> str:
    return "-" if n is None else f"{n:,}"


def _fmt_time(s: Optional[int]) -> str:
    if s is None:
        return "-"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _utt2lang(r: TestSetResult, ref_root: Optional[Path]) -> Optional[Dict[str, str]]:
    for cand in utt2lang_candidates(r, ref_root):
        if cand.is_file():
            return read_kaldi_map(cand)
    return None


def routing_lines(results: Dict[Path, List[TestSetResult]], ref_root: Optional[Path]) -> List[str]:
    """Markdown rows ``|experiment|test set|usage per expert|gate entropy|gate LID|`` for decodes with gates.

    The test set reads ``<decode tag>/<test set>`` for an experiment decoded with more than one tag.
    """
    rows = []
    for exp_dir, res in results.items():
        several_tags = len({r.decode_tag for r in res}) > 1
        for r in res:
            if not (r.path / "gates").is_file():
                continue
            gates = read_gates(r.path / "gates")
            if not gates:
                continue
            g = np.stack(list(gates.values()))  # (N, E)
            usage = " / ".join(f"{u:.2f}" for u in g.mean(0))
            entropy = max(0.0, float(-(g * np.log(np.clip(g, 1e-12, None))).sum(1).mean()))  # no "-0.000"
            lid = "-"
            utt2lang = _utt2lang(r, ref_root)
            if utt2lang is not None:
                try:
                    res_lid = gate_language_id_accuracy(gates, utt2lang)
                    lid = f"{res_lid.accuracy:.3f} (chance {res_lid.chance:.2f})"
                except ValueError as e:
                    lid = f"- ({e})"
            test_set = r.dataset if several_tags else r.test_set  # decode_tag/test_set where tags differ
            rows.append(f"|{_exp_label(exp_dir)}|{test_set}|{g.shape[1]}|{usage}|{entropy:.3f} "
                        f"(max {np.log(g.shape[1]):.3f})|{lid}|")
    if not rows:
        return []
    return ["", "### Routing (MoE projectors, from the decoded utterance gates)", "",
            "Usage = mean gate of each expert over the test set's utterances (1/E each when balanced); "
            "entropy = mean entropy of an utterance's gates (log E: uniform, 0: one expert); gate LID = "
            "leave-one-out nearest-centroid language identification from the gates alone.", "",
            "|experiment|test set|experts|usage per expert|gate entropy (nats)|gate LID accuracy|",
            "|---|---|---|---|---|---|"] + rows


def compare_projectors(exp_dirs: Sequence, out, ref_root: Optional[str] = "dump/raw") -> str:
    """Write the comparison of ``exp_dirs`` to ``out`` (markdown); returns its text.

    ``ref_root``: where ``<test set>/utt2lang`` is looked up when the score dir has none.
    """
    ref_root = Path(ref_root) if ref_root else None
    exp_paths = [Path(d) for d in exp_dirs]
    missing = [str(d) for d in exp_paths if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"--exp_dirs: not a directory: {', '.join(missing)}")
    results = {d: collect_exp(d) for d in exp_paths}
    unscored = [str(d) for d, r in results.items() if not r]
    if unscored:
        raise FileNotFoundError(f"no */*/score_wer/result.txt under {', '.join(unscored)}: run stage 13 first")
    lines: List[str] = ["<!-- Generated by espnet_llm_asr.bin.compare_projectors -->", "# Projector comparison", "",
                        "|experiment|trainable params|all params|training time|decode tags|",
                        "|---|---|---|---|---|"]
    for d, res in results.items():
        trainable, total, seconds = train_log_facts(d)
        tags = ", ".join(sorted({r.decode_tag for r in res}))
        lines.append(f"|{_exp_label(d)}|{_fmt_int(trainable)}|{_fmt_int(total)}|{_fmt_time(seconds)}|{tags}|")
    lines += ["", "Error rates (sclite `Err`, %) per test set and language; `all` is the whole test set.", ""]
    lines += summary_lines(results, "wer") + summary_lines(results, "cer")
    lines += routing_lines(results, ref_root)
    text = "\n".join(lines).rstrip("\n") + "\n"
    atomic_write_text(Path(out), text)
    logging.info(f"wrote {out} ({len(exp_paths)} experiment(s))")
    return text


def main(cmd=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dirs", nargs="+", required=True)
    p.add_argument("--out", default="exp/compare_projectors.md")
    p.add_argument("--ref_root", default="dump/raw", help="dir of <test set>/utt2lang for the gate LID")
    args = p.parse_args(cmd)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        print(compare_projectors(args.exp_dirs, args.out, args.ref_root), end="")
    except (OSError, ValueError) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
