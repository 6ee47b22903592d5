"""Check a Kaldi data dir and report every problem with its utterance id and file.

    python -m espnet_llm_asr.bin.validate_data_dir data/train [--max_duration 60] [--need_lang true]

Exit status 0 when the dir is clean, 1 otherwise.
"""
import argparse
import sys

from espnet2.utils.types import str2bool

from espnet_llm_asr.validate import validate_data_dir


def main(cmd=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--max_duration", type=float, default=None)
    p.add_argument("--require_16k_mono", type=str2bool, default=True)
    p.add_argument("--need_lang", type=str2bool, default=False)
    args = p.parse_args(cmd)
    report = validate_data_dir(args.data_dir, max_duration=args.max_duration,
                               need_lang=args.need_lang, require_16k_mono=args.require_16k_mono)
    for w in report.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if report.ok:
        print(f"{args.data_dir}: OK ({len(report.info)} utterances)")
        sys.exit(0)
    print(report.message(args.data_dir, limit=10**9), file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
