"""Performance benchmark of the projectors and the LLM-ASR pipeline.

    python -m espnet_llm_asr.bin.benchmark --out_json bench.json --readme espnet_llm_asr/benchmark/README.md
    python -m espnet_llm_asr.bin.benchmark --parts projectors,system
    python -m espnet_llm_asr.bin.benchmark --quick          # toy sizes, seconds

Prints the markdown tables, writes the results (JSON) to ``--out_json`` and,
with ``--readme``, regenerates the tables of espnet_llm_asr/benchmark/README.md (between
``<!-- benchmark:begin -->`` and ``<!-- benchmark:end -->``).  See
:mod:`espnet_llm_asr.benchmark` for what is measured and how.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from typing import List, Optional, Tuple

from espnet_llm_asr.benchmark.common import BenchSettings
from espnet_llm_asr.benchmark.report import render_markdown, update_readme
from espnet_llm_asr.benchmark.run import PARTS, run_benchmark


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated parts to run (default all): {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="toy sizes everywhere (a few seconds; for tests)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the minimum is reported")
    p.add_argument("--num_utts", type=int, default=16, help="utterances decoded (decoding, CIF, dumped, memory)")
    p.add_argument("--data_dir", default=None,
                   help="Kaldi data dir (wav.scp, text, utt2lang) to take utterances from; default: synthetic")
    p.add_argument("--asr_exp", default=None,
                   help="trained experiment dir (config.yaml + checkpoint) to decode instead of the random default")
    p.add_argument("--models_dir", default=None,
                   help="dir with whisper/ and llm/ (e.g. egs2/indic/asr1/exp/tiny_models) instead of random models")
    p.add_argument("--encoder_layers", type=int, default=2,
                   help="layers of the Whisper-large-v3-sized encoder actually run (time scaled to 32)")
    p.add_argument("--tokens_per_second", type=float, default=4.0,
                   help="transcript tokens per second of audio assumed for CIF targets and the system estimate")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, one per core)")
    p.add_argument("--throughput_batches", type=_batch_list, default=BenchSettings.throughput_batches,
                   help="GPU throughput part: decoding batch sizes, comma-separated (greedy and beam 4 at each; "
                        "the largest batch that fits is searched beyond them); default %(default)s")
    p.add_argument("--throughput_budget_s", type=float, default=BenchSettings.throughput_budget_s,
                   help="GPU throughput part: seconds it may take; what is left then is reported as skipped")
    p.add_argument("--compile_decoding", choices=("auto", "true", "false"), default="auto",
                   help="GPU throughput part: torch.compile the decoding step (auto: on a GPU with the static "
                        "cache, transformers' rule)")
    p.add_argument("--work_dir", default=None, help="scratch dir (default: a temporary dir, removed)")
    p.add_argument("--out_json", default=None, help="write the results here")
    p.add_argument("--readme", default=None, help="README to update between the benchmark markers")
    return p


def _batch_list(text: str) -> Tuple[int, ...]:
    """``"1,8,64"`` -> (1, 8, 64); an argparse error for anything but positive integers."""
    try:
        batches = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive batch sizes, got {text!r}")
    return batches


def main(argv: Optional[List[str]] = None) -> dict:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = BenchSettings(quick=args.quick, repeats=args.repeats, tokens_per_second=args.tokens_per_second,
                             num_utts=args.num_utts, data_dir=args.data_dir, asr_exp=args.asr_exp,
                             models_dir=args.models_dir, encoder_layers=args.encoder_layers, work_dir=args.work_dir,
                             throughput_batches=args.throughput_batches, throughput_budget_s=args.throughput_budget_s,
                             compile_decoding={"auto": None, "true": True, "false": False}[args.compile_decoding])
    results = run_benchmark(parts, settings)
    cmd = ["python -m espnet_llm_asr.bin.benchmark"] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)]
    results["meta"]["command"] = " ".join(cmd)
    report = render_markdown(results)
    print(report)
    if args.out_json:
        from espnet_llm_asr.utils import atomic_write_text

        atomic_write_text(args.out_json, json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    if args.readme:
        update_readme(args.readme, report)
    return results


if __name__ == "__main__":
    main()
