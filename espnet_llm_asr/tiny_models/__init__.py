"""Real Hugging Face models at toy size, for the embedded default recipe and the tests.

* :func:`build_tiny_whisper`: a randomly initialised Whisper checkpoint
  (WhisperForConditionalGeneration with a 1-layer decoder) + its
  WhisperFeatureExtractor, loadable by :class:`espnet_llm_asr.encoder.WhisperEncoder`.
* :func:`train_tokenizer`: a sentencepiece model (char / unigram / bpe)
  wrapped as a ``tokenizers`` fast tokenizer, so ``AutoTokenizer`` loads it
  offline and ``decode(encode(text)) == text``.
* :func:`build_tiny_llm`: a Llama or Qwen2 causal LM whose vocabulary is the
  tokenizer, saved together with it.
* :func:`pretrain_causal_lm`: next-token training of that LM on text lines
  and on ASR-shaped copy examples (:mod:`.copy_examples`);
  :func:`slot_reading_accuracy`: how well it reads oracle speech slots.
* :func:`pretrain_whisper_encoder_ctc`: CTC training of the tiny encoder over
  characters (a CTC head on top, dropped after), through the same log-mel
  and masked encoder path the ASR model uses.

Every directory is written atomically: into a temporary sibling first, then
renamed into place, so an interrupted run never leaves a half-written model.

Modules: :mod:`.common`, :mod:`.whisper`, :mod:`.tokenizer`,
:mod:`.causal_lm`, :mod:`.copy_examples`, :mod:`.encoder_ctc`.
"""
from espnet_llm_asr.tiny_models.causal_lm import build_tiny_llm, pretrain_causal_lm, slot_reading_accuracy
from espnet_llm_asr.tiny_models.common import PathLike, atomic_dir, read_lines, resolve_device
from espnet_llm_asr.tiny_models.encoder_ctc import (CTC_HEAD_FILE, build_charset, ctc_greedy_decode,
                                                    pretrain_whisper_encoder_ctc, save_whisper_encoder)
from espnet_llm_asr.tiny_models.tokenizer import (REQUIRED_CHARS, SPECIAL_TOKENS, prompt_after_speech,
                                                  prompt_text_lines, train_tokenizer)
from espnet_llm_asr.tiny_models.whisper import build_tiny_whisper

__all__ = ["CTC_HEAD_FILE", "PathLike", "REQUIRED_CHARS", "SPECIAL_TOKENS", "atomic_dir", "build_charset",
           "build_tiny_llm", "build_tiny_whisper", "ctc_greedy_decode", "prompt_after_speech", "prompt_text_lines",
           "pretrain_causal_lm", "pretrain_whisper_encoder_ctc", "read_lines", "resolve_device",
           "save_whisper_encoder", "slot_reading_accuracy", "train_tokenizer"]
