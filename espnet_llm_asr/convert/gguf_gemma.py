"""GGUF Gemma 3 -> a Hugging Face ``Gemma3ForCausalLM`` dir with its tokenizer and a chat template.

transformers reads the GGUF file itself (``from_pretrained(dir, gguf_file=...)``
with the ``gguf`` package): it dequantizes every tensor (Q4_K, Q5_0, Q6_K,
Q8_0 blocks -> float32) and builds the tokenizer from the GGUF vocabulary
(262,144 pieces for Gemma 3; ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2,
``<start_of_turn>`` 105, ``<end_of_turn>`` 106). A model loaded that way
carries a GGUF ``quantization_config`` and refuses ``save_pretrained``, so
the dequantized tensors are moved into a plain ``Gemma3ForCausalLM`` built
from the same config without it, which saves as ordinary safetensors.

No chat template ships in the GGUF file; :data:`GEMMA_CHAT_TEMPLATE` writes
Gemma's turn markup::

    <bos><start_of_turn>user\\n{system}\\n\\n{user}<end_of_turn>\\n<start_of_turn>model\\n

(``assistant`` turns are written as ``model``; a system message is put in
front of the first user turn, as Gemma has no system role.)

Dequantizing Gemma-3-270M takes ~30-50 s on 2 CPU cores, so this is done
once, at install (``tools/install_models.sh``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Union

# Gemma's turn format, as a Jinja chat template (rendered by transformers'
# ``apply_chat_template``).  Content may be a string or a list of
# ``{"type": "text", "text": ...}`` parts.
GEMMA_CHAT_TEMPLATE = (
    "{%- macro text_of(content) -%}"
    "{%- if content is string -%}{{ content | trim }}"
    "{%- else -%}{%- for part in content -%}{%- if part['type'] == 'text' -%}"
    "{{ part['text'] | trim }}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_prefix = text_of(messages[0]['content']) + '\n\n' -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_prefix = '' -%}"
    "{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{%- if role not in ['user', 'model'] -%}"
    "{{ raise_exception('Gemma chat template: role must be system (first only), user or assistant, "
    "got ' + message['role']) }}"
    "{%- endif -%}"
    "{%- if (role == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Gemma chat template: turns must alternate user/assistant, starting with user') }}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (system_prefix if loop.first else '') "
    "+ text_of(message['content']) + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")


def sha256_file(path: Union[str, Path]) -> str:
    """sha256 of a file, hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf_gemma(
    gguf_path: Union[str, Path],
    out_dir: Union[str, Path],
    dtype: str = "bfloat16",
    expected_sha256: Optional[str] = None,
) -> Path:
    """Write ``out_dir`` with ``Gemma3ForCausalLM`` weights, config, generation config and tokenizer.

    Args:
        gguf_path: the GGUF file (e.g. ``gemma-3-270m-q4_k_m.gguf``).
        out_dir: the directory to write (created; files in it are overwritten).
        dtype: ``"bfloat16"`` or ``"float32"``: the dtype of the saved weights
            (and of ``config.dtype``).  Loading code may ask for another one.
        expected_sha256: when given, the GGUF file must have this sha256.

    The saved model has tied input/output embeddings (262,144 x 640) and
    ~268 M parameters; the tokenizer gets :data:`GEMMA_CHAT_TEMPLATE`.

    Raises:
        FileNotFoundError: the GGUF file is missing.
        ValueError: its sha256 differs, ``dtype`` is unknown, the file is not a
            Gemma 3 text model, or the tokenizer lacks Gemma's turn tokens.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.models.gemma3 import Gemma3ForCausalLM, Gemma3TextConfig

    dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist")
    if expected_sha256 is not None:
        got = sha256_file(gguf_path)
        if got != expected_sha256:
            raise ValueError(f"sha256 of {gguf_path} is {got}, expected {expected_sha256}")

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    unknown = [t for t in TURN_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if unknown:
        raise ValueError(f"{gguf_path}: the tokenizer has no {unknown} token(s); is it a Gemma 3 model?")
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    for key in ("is_local", "local_files_only", "gguf_file"):  # loading options, not tokenizer settings
        tokenizer.init_kwargs.pop(key, None)

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                  dtype=torch.float32)
    if getattr(loaded.config, "model_type", None) != "gemma3_text":
        raise ValueError(f"{gguf_path}: model_type {loaded.config.model_type!r}, expected 'gemma3_text'")
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    for key in ("_name_or_path", "_model_name_or_path", "transformers_version", "model_type",
                "architectures", "dtype", "torch_dtype"):
        config_dict.pop(key, None)
    config = Gemma3TextConfig(**config_dict)
    config.architectures = ["Gemma3ForCausalLM"]
    config.dtype = dtype
    # A plain model of the same config (built on the CPU: its few seconds of
    # random initialisation are overwritten), filled with the dequantized tensors.
    model = Gemma3ForCausalLM(config)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    del loaded
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{gguf_path}: converted tensors do not fit Gemma3ForCausalLM: missing "
                         f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    model.to(dtypes[dtype])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        # a chat turn ends with <end_of_turn>, plain text with <eos>
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
