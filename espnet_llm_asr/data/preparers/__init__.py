"""Kaldi data dirs from real corpora: FLEURS, Common Voice, Kathbath, IndicVoices,
and any existing Kaldi data dir (``local/data.sh --corpus ...``).

Each corpus layout has one small reader (``read_<corpus>``, a module each) that turns the
corpus's manifests into :class:`Row` records, naming the manifest file and
line of every row.  :func:`prepare_corpus` then

1. reads every requested split of every requested language (nothing is
   written yet), collecting bad rows (no transcript, missing audio,
   malformed line, duplicate id) as :class:`Problem` s;
2. stops with an error listing them (file:line and reason), or with
   ``skip_bad`` drops them, logs the count and lists them in
   ``<set>/dropped_prepare``;
3. decodes audio that stage 3 (sox/soundfile) cannot read (mp3, m4a, ...)
   or that is a pipe / a segment of a recording into wav files under
   ``wav_dir``, each written atomically;
4. writes every output set to a temporary dir next to it and renames it into
   place, so a failure never leaves a half-written data dir, and merges the
   languages into ``lang_list`` (existing codes keep their line, i.e. their id).

Output sets (``--suffix`` is appended to each name, e.g. ``test_fleurs``):

=============  ==============================================================
corpus         native split -> data dir
=============  ==============================================================
fleurs         train -> train, dev -> dev, test -> test
commonvoice    train -> train, dev -> dev, test -> test
kathbath       train -> train, valid -> dev, test_known, test_unknown
indicvoices    train -> train, valid -> dev, test -> test
kaldi          the source dir -> ``set_name`` (default: its basename)
=============  ==============================================================

Utterance ids are ``<lang>_<corpus>_<speaker or file id>...`` so that sets of
several languages and corpora never collide and each id starts with its
speaker id (Kaldi's sort order).  Transcripts are whitespace-normalised
(tabs, newlines and no-break spaces become single spaces); nothing else is
changed.

Modules: :mod:`.rows` (Row, Problem, helpers), one reader per corpus
(:mod:`.fleurs`, :mod:`.commonvoice`, :mod:`.kathbath`, :mod:`.indicvoices`,
:mod:`.kaldi`), :mod:`.audio` (decoding and cutting) and :mod:`.prepare`
(:func:`prepare_corpus`).
"""
from espnet_llm_asr.data.preparers import audio  # noqa: F401  (tests patch its decoders)
from espnet_llm_asr.data.preparers.audio import DECODE_EXTENSIONS, find_decoder, materialize_audio
from espnet_llm_asr.data.preparers.commonvoice import read_commonvoice
from espnet_llm_asr.data.preparers.fleurs import read_fleurs
from espnet_llm_asr.data.preparers.indicvoices import read_indicvoices
from espnet_llm_asr.data.preparers.kaldi import read_kaldi
from espnet_llm_asr.data.preparers.kathbath import read_kathbath
from espnet_llm_asr.data.preparers.prepare import CORPORA, READERS, PrepareSummary, merge_lang_list, prepare_corpus
from espnet_llm_asr.data.preparers.rows import (DEFAULT_LANGS, LANGUAGE_DIR_NAMES, PrepareError, Problem, Row,
                                                SplitResult, clean_text, safe_id)

__all__ = ["CORPORA", "DECODE_EXTENSIONS", "DEFAULT_LANGS", "LANGUAGE_DIR_NAMES", "READERS", "PrepareError",
           "PrepareSummary", "Problem", "Row", "SplitResult", "clean_text", "find_decoder", "materialize_audio",
           "merge_lang_list", "prepare_corpus", "read_commonvoice", "read_fleurs", "read_indicvoices", "read_kaldi",
           "read_kathbath", "safe_id"]
