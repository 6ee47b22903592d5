"""Synthesize the multilingual corpus of the default recipe with espeak-ng.

    python -m espnet_llm_asr.bin.synthesize_corpus --config conf/corpus.yaml \\
        --out_dir data --wav_dir downloads/wav --nj 2 [--size fast|default|train=N,dev=N,...] [--seed 0]

Writes Kaldi data dirs out_dir/{train,dev,test,test_unseen_voice} and
out_dir/lang_list, then prints utterances and hours per set and language,
and the share of evaluation-set words (tokens / types) unseen in train.
Re-running with the same settings when the outputs exist does nothing.
"""
import argparse
import logging
import sys

from espnet_llm_asr.data.corpus_config import CorpusConfigError, load_corpus_config, parse_sizes
from espnet_llm_asr.data.synth_corpus import synthesize_corpus


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="corpus YAML (languages, voices, sizes)")
    p.add_argument("--out_dir", required=True, help="data dir root, e.g. data")
    p.add_argument("--wav_dir", required=True, help="where the wavs go, e.g. downloads/wav")
    p.add_argument("--size", default="default",
                   help="a size preset of the config (default, fast, ...) "
                        "or 'train=N,dev=N,test=N,test_unseen_voice=N'")
    p.add_argument("--languages", default="", help="comma-separated subset of the config's language codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=1, help="parallel espeak-ng processes")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        config = load_corpus_config(args.config)
        languages = config.select([c for c in args.languages.split(",") if c.strip()])
        sizes = parse_sizes(args.size, config.sizes)
        if config.sentences is not None:
            source = (f"sentences of {config.sentences.words[0]}..{config.sentences.words[1]} words "
                      f"from {list(config.sentences.catalogs)}")
        else:
            source = f"vocab_size {config.vocab_size}"
        logging.info(f"languages {[lang.code for lang in languages]}, utterances per language {sizes}, "
                     f"{source}, seed {args.seed}")
        summary = synthesize_corpus(
            args.out_dir, args.wav_dir, languages, sizes, vocab_size=config.vocab_size,
            words_per_sentence=config.words_per_sentence, word_length=config.word_length,
            seed=args.seed, nj=args.nj, progress=not args.no_progress, sentences=config.sentences)
    except CorpusConfigError as e:
        logging.error(f"{args.config}: {e}")
        return 1
    print(("skipped, already complete:\n" if summary.skipped else "") + summary.format(), flush=True)
    print(summary.format_unseen(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
