"""Prepare Kaldi data dirs from a real corpus (stage 1 of the recipe, ``local/data.sh --corpus``).

    python -m espnet_llm_asr.bin.prepare_corpus --corpus fleurs --root /data/fleurs \\
        --out_dir data [--langs hi,mr,ta,te] [--splits train,dev,test] [--suffix _fleurs] \\
        [--wav_dir downloads/fleurs] [--skip_bad false] [--nj 2]
    python -m espnet_llm_asr.bin.prepare_corpus --corpus kaldi --src_dir /other/recipe/data/test \\
        --out_dir data [--lang hi | --utt2lang FILE] [--set_name test_other]

Corpora and their layouts: see espnet_llm_asr/data/preparers/.  Writes
out_dir/<set>/{wav.scp,text,utt2spk,spk2utt,utt2lang} (each set written to a
temporary dir and renamed into place) and merges the languages into
out_dir/lang_list.  Bad rows (no transcript, missing audio, malformed line)
stop it with their file and line, or with --skip_bad true are dropped,
counted and listed in <set>/dropped_prepare.  Re-running with the same
options and unchanged manifests does nothing.  Exit status 1 on errors.
"""
import argparse
import logging
import sys

from espnet2.utils.types import str2bool

from espnet_llm_asr.data.preparers import CORPORA, PrepareError, prepare_corpus


def _list(s: str):
    return [x.strip() for x in s.split(",") if x.strip()]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=CORPORA)
    p.add_argument("--out_dir", required=True, help="data dir root, e.g. data")
    p.add_argument("--root", default=None, help="corpus root (fleurs, commonvoice, kathbath, indicvoices)")
    p.add_argument("--langs", type=_list, default=None,
                   help="comma-separated language codes (default hi,mr,ta,te; kaldi: all found)")
    p.add_argument("--splits", type=_list, default=None, help="native split names (default: all of the layout)")
    p.add_argument("--suffix", default="", help="appended to every output set name, e.g. _fleurs")
    p.add_argument("--wav_dir", default=None, help="where decoded mp3/m4a, pipes and segments go")
    p.add_argument("--skip_bad", type=str2bool, default=False, help="drop bad rows (listed) instead of stopping")
    p.add_argument("--nj", type=int, default=1, help="parallel audio decoders")
    g = p.add_argument_group("--corpus kaldi")
    g.add_argument("--src_dir", default=None, help="existing Kaldi data dir")
    g.add_argument("--lang", default=None, help="language code of every utterance (without utt2lang)")
    g.add_argument("--utt2lang", default=None, help="utt2lang file (default: <src_dir>/utt2lang)")
    g.add_argument("--set_name", default=None, help="output set name (default: basename of --src_dir)")
    return p


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        summary = prepare_corpus(
            args.corpus, args.out_dir, root=args.root, langs=args.langs, splits=args.splits,
            suffix=args.suffix, wav_dir=args.wav_dir, skip_bad=args.skip_bad, nj=args.nj,
            src_dir=args.src_dir, lang=args.lang, utt2lang=args.utt2lang, set_name=args.set_name)
    except (PrepareError, OSError) as e:
        logging.error(str(e))
        return 1
    print(("skipped, already prepared with these options:\n" if summary.skipped else "") + summary.format(),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
