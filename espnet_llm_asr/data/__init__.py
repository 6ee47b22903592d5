"""Synthetic multilingual corpus for the default recipe (espeak-ng + sox).

- :mod:`.corpus_config`  the YAML language/size configuration
- :mod:`.sentences`      real sentences from gettext message catalogs, cleaned
- :mod:`.word_list`      vocabulary from aspell or a plain word-list file
- :mod:`.espeak`         voice checks and one-utterance synthesis
- :mod:`.kaldi_dir`      writing Kaldi data dirs
- :mod:`.synth_corpus`   planning sentences/voices and generating everything
"""
from espnet_llm_asr.data.corpus_config import (  # noqa: F401
    SET_NAMES,
    CorpusConfig,
    CorpusConfigError,
    LanguageSpec,
    load_corpus_config,
    parse_sizes,
)
from espnet_llm_asr.data.synth_corpus import CorpusSummary, plan_corpus, synthesize_corpus  # noqa: F401
