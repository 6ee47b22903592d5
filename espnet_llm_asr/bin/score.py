"""Score a decode dir with sclite: WER and CER, overall and per language (stage 13).

    python -m espnet_llm_asr.bin.score --ref_dir dump/raw/test --hyp_dir exp/x/decode_y/test \\
        [--sclite /usr/lib/sctk/bin/sclite] [--nlsyms data/nlsyms.txt] [--unicode_norm NFC]

Writes hyp_dir/score_{wer,cer}/{ref.trn,hyp.trn,result.txt}, the same per
language under score_{wer,cer}/<lang>/, and hyp_dir/missing_hyp.  See
espnet_llm_asr.scoring for the conventions (CER counts code points).
Exit status 1 with a one-line error when scoring is impossible.
"""
import argparse
import logging
import sys

from espnet_llm_asr.scoring import read_nlsyms, score_dir


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref_dir", required=True, help="reference data dir (text, utt2spk, utt2lang)")
    p.add_argument("--hyp_dir", required=True, help="decode dir holding the hypotheses 'text'")
    p.add_argument("--sclite", default=None, help="sclite binary (default: PATH, then /usr/lib/sctk/bin)")
    p.add_argument("--nlsyms", "--nlsyms_txt", dest="nlsyms", default=None,
                   help="file of non-linguistic symbols, one a line, removed before scoring")
    p.add_argument("--unicode_norm", default="none", choices=["none", "NFC", "NFKC", "NFD", "NFKD"],
                   help="Unicode normalisation of reference and hypothesis (default none, as ESPnet)")
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(cmd=None) -> dict:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        nlsyms = read_nlsyms(args.nlsyms) if args.nlsyms else ()
        result = score_dir(args.ref_dir, args.hyp_dir, sclite=args.sclite, nlsyms=nlsyms,
                           unicode_norm=None if args.unicode_norm == "none" else args.unicode_norm)
    except (OSError, ValueError, RuntimeError) as e:
        if cmd is not None:  # called from Python: let the caller see the exception
            raise
        sys.exit(f"ERROR: {e}")
    for unit in ("wer", "cer"):
        r = result[unit]
        line = f"{args.hyp_dir}: {unit.upper()} {r['error_rate']:.2f} % ({r['err']}/{r['wrd']})"
        for lang, d in result["per_lang"].items():
            line += f", {lang} {d[unit]['error_rate']:.2f} %"
        print(line)
    if result["missing_hyp"]:
        print(f"{args.hyp_dir}: {len(result['missing_hyp'])} utterance(s) had no hypothesis "
              f"(scored as deletions; see {args.hyp_dir}/missing_hyp)")
    return result


if __name__ == "__main__":
    main()
