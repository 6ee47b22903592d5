"""The LLM decoder: a Hugging Face causal LM with its own tokenizer.

The LLM is loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from a
local directory or a hub name (never downloaded: run with
``HF_HUB_OFFLINE=1``), frozen by default, optionally with LoRA adapters
(peft).  Its own tokenizer is used as is: no embedding resize, no ESPnet
token list.

The prompt is a template with a ``{speech}`` placeholder where the projected
audio embeddings go; the default follows the SMEAR-MoE authors::

    {speech}USER: Transcribe speech to text.{lang_instruction}\\n ASSISTANT:

``{lang_instruction}`` is filled per utterance from ``lang_instruction``
(e.g. ``" The speech is in {lang_name}."``) when language ids are known, and
is empty otherwise.  With ``use_chat_template: true`` the user turn
``"{speech}" + instruction`` is rendered through the tokenizer's chat
template instead (with the generation prompt, so the transcript is the
model's turn); e.g. Gemma 3::

    <bos><start_of_turn>user\n{speech}Transcribe speech to text.<end_of_turn>\n<start_of_turn>model\n

Either way the prompt starts with the tokenizer's BOS token exactly once
when the tokenizer adds one (Gemma, Llama; not Qwen), and the transcript is
followed by the tokenizer's EOS token, the one decoding stops at (for Gemma
``<eos>``, not the chat template's ``<end_of_turn>``).  Special tokens such as
the turn markers are single tokens of the prompt and are dropped from
decoded hypotheses; characters outside the vocabulary reach the LLM as
byte-fallback pieces when the tokenizer has them (Gemma: ``<0xEA>``...).
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from espnet_llm_asr.torch_utils import apply_keeping_dtype, contiguous_input, resolve_dtype

DEFAULT_PROMPT = "{speech}USER: Transcribe speech to text.{lang_instruction}\n ASSISTANT:"
DEFAULT_INSTRUCTION = "Transcribe speech to text.{lang_instruction}"
SPEECH_PLACEHOLDER = "{speech}"

# Human-readable names for the per-language instruction.
LANGUAGE_NAMES = {
    "hi": "Hindi", "mr": "Marathi", "ta": "Tamil", "te": "Telugu", "bn": "Bengali",
    "gu": "Gujarati", "kn": "Kannada", "ml": "Malayalam", "pa": "Punjabi",
    "ur": "Urdu", "or": "Odia", "as": "Assamese", "ne": "Nepali", "en": "English",
}



def check_model_path(name_or_path: str, key: str) -> None:
    """Fail early, naming ``key``, when a local-looking path does not exist.

    A value that starts with ``/``, ``.`` or ``~`` or has more than one ``/``
    is a local directory; ``org/name`` may be a hub name (usable offline only
    when it is in the local Hugging Face cache).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"{key}: checkpoint directory {name_or_path!r} does not exist")


def _local_json(name_or_path: str, filename: str) -> Optional[dict]:
    """``filename`` of a local dir, or of a hub name already in the HF cache (None if absent)."""
    path = Path(name_or_path).expanduser() / filename
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, filename)
        except Exception:  # not a valid repo id
            cached = None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # transformers reports unreadable configs itself


def custom_code_reason(name_or_path: str) -> Optional[str]:
    """Why loading ``name_or_path`` would run Python code shipped with the checkpoint, or None.

    Only the JSON files are read (nothing is imported): custom code is needed
    when ``config.json`` has an ``auto_map`` for a ``model_type`` this
    ``transformers`` does not know, or ``tokenizer_config.json`` maps
    ``AutoTokenizer`` to a tokenizer class it does not know.  An ``auto_map``
    next to a built-in model type is ignored by ``transformers`` when
    ``trust_remote_code`` is false (the built-in class is used).
    """
    import transformers
    from transformers import CONFIG_MAPPING

    config = _local_json(name_or_path, "config.json") or {}
    model_type = config.get("model_type")
    if config.get("auto_map") and model_type not in CONFIG_MAPPING:
        return (f"config.json auto_map {sorted(config['auto_map'])} for model_type {model_type!r}, "
                f"unknown to transformers {transformers.__version__}")
    tok_config = _local_json(name_or_path, "tokenizer_config.json") or {}
    auto_map = tok_config.get("auto_map")
    if isinstance(auto_map, dict):
        auto_map = auto_map.get("AutoTokenizer")
    if auto_map:
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

        name = tok_config.get("tokenizer_class") or ""
        known = name and any(tokenizer_class_from_name(n) is not None
                             for n in {name, name + "Fast", name.removesuffix("Fast")})
        if not known:
            return f"tokenizer_config.json auto_map AutoTokenizer -> {auto_map} (tokenizer_class {name!r})"
    return None


def check_remote_code(name_or_path: str, trust_remote_code: bool, key: str) -> None:
    """One-line error naming ``key`` when the checkpoint needs custom code that is not allowed."""
    if trust_remote_code:
        return
    reason = custom_code_reason(name_or_path)
    if reason:
        raise ValueError(
            f"{key} is false but {name_or_path!r} needs custom code ({reason}): "
            f"set {key}: true if you trust it"
        )


@contextlib.contextmanager
def _remote_code_hint(name_or_path: str, trust_remote_code: bool):
    """Turn transformers' ``trust_remote_code`` ValueError into one naming ``llm_conf.trust_remote_code``."""
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" in str(e) and not trust_remote_code:  # a case check_remote_code missed
            raise ValueError(
                f"llm_conf.trust_remote_code is false but {name_or_path!r} needs custom code: "
                "set llm_conf.trust_remote_code: true if you trust it"
            ) from e
        raise


def input_embed_scale(model) -> float:
    """The factor ``model``'s input-embedding layer multiplies token embeddings by (its ``embed_scale``), else 1."""
    scale = getattr(model.get_input_embeddings(), "embed_scale", None)
    return 1.0 if scale is None else float(scale)


def token_embedding_rms(model) -> float:
    """Root-mean-square of the LLM's token embeddings as its layers receive them (its ``embed_scale`` applied)."""
    weight = model.get_input_embeddings().weight
    return float(weight.detach().float().pow(2).mean().sqrt()) * input_embed_scale(model)


@dataclass(frozen=True)
class SpeechScale:
    """How the projected speech vectors are scaled before they join the prompt's token embeddings.

    ``mode``: ``factor`` (every vector times ``value``) or ``rms`` (every
    vector rescaled to root-mean-square ``value`` over its D components).
    ``str()`` gives the resolved ``llm_conf.speech_scale`` (``rms:1.03``).
    """

    mode: str
    value: float

    def __str__(self) -> str:
        return f"{self.mode}:{self.value!r}"


SPEECH_SCALE_MODES = {"factor": input_embed_scale, "rms": token_embedding_rms}


def resolve_speech_scale(value: str, model) -> SpeechScale:
    """``llm_conf.speech_scale`` -> :class:`SpeechScale`: ``<mode>`` or ``<mode>:auto`` (the mode's
    measure of ``model``: :func:`input_embed_scale` for ``factor``, :func:`token_embedding_rms` for
    ``rms``), or ``<mode>:<positive number>``."""
    mode, _, number = str(value).partition(":")
    try:
        scale = SPEECH_SCALE_MODES[mode](model) if number in ("", "auto") else float(number)
    except (KeyError, ValueError):
        scale = float("nan")
    if mode not in SPEECH_SCALE_MODES or not 0 < scale < float("inf"):
        raise ValueError("llm_conf.speech_scale must be factor or rms, alone, with :auto, or with :<a positive "
                         f"number> (e.g. rms:1.0), got {value!r}")
    return SpeechScale(mode, scale)


def is_lora_name(name: str) -> bool:
    """Whether a module or parameter name is part of peft's LoRA adapters (``lora_A``, ``lora_B``, ...)."""
    return "lora_" in name


class CausalLLM(torch.nn.Module):
    """A (frozen) Hugging Face causal LM used as the ASR decoder.

    Args:
        model_name_or_path: local dir or hub name of the causal LM.
        dtype: ``float32`` | ``bfloat16`` | ``float16`` | ``auto`` for the LLM
            weights; ``auto``: bfloat16 on a device or CPU with fast bf16
            products (AMX, AVX512-BF16), else float32
            (:func:`espnet_llm_asr.torch_utils.resolve_dtype`).
        freeze: keep the LLM weights frozen (LoRA weights, if any, still train).
        lora_conf: dict for ``peft.LoraConfig`` (e.g. ``{r: 16, lora_alpha: 32,
            target_modules: [q_proj, v_proj]}``); needs the ``lora`` extra.
        trust_remote_code: passed to ``from_pretrained``; off unless asked.
        prompt_template: prompt with ``{speech}`` and optional ``{lang_instruction}``.
        use_chat_template: render the prompt with the tokenizer's chat template.
        lang_instruction: per-language sentence, ``{lang_name}``/``{lang}`` filled in.
        speech_scale: how the projected speech vectors are scaled before
            they join the prompt (:class:`SpeechScale`): ``factor``
            (default): times the factor the LLM's input-embedding layer applies
            to its token embeddings (its ``embed_scale``: sqrt(hidden) for the
            Gemmas, 1 for Llama and Qwen), as the SMEAR-MoE authors'
            transformers 4.x did for every input vector; ``rms``: every vector
            rescaled to the root-mean-square of the LLM's token embeddings as
            its layers receive them, whatever length the projector (or an
            auxiliary CTC through the output head) gives it; ``factor:<x>`` /
            ``rms:<x>``: that number.  The training task writes the resolved
            form (``rms:1.03``) into config.yaml, so decoding scales as training did.
    """

    def __init__(
        self,
        model_name_or_path: str,
        dtype: str = "float32",
        freeze: bool = True,
        lora_conf: Optional[Dict] = None,
        trust_remote_code: bool = False,
        prompt_template: str = DEFAULT_PROMPT,
        use_chat_template: bool = False,
        lang_instruction: Optional[str] = None,
        attn_implementation: Optional[str] = None,
        speech_scale: str = "factor",
    ):
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_model_path(model_name_or_path, "llm")
        check_remote_code(model_name_or_path, trust_remote_code, "llm_conf.trust_remote_code")
        self.model_name_or_path = model_name_or_path
        torch_dtype = resolve_dtype(dtype, "llm_conf.dtype")
        kwargs = dict(trust_remote_code=trust_remote_code, dtype=torch_dtype)
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        with _remote_code_hint(model_name_or_path, trust_remote_code):
            self.tokenizer = AutoTokenizer.from_pretrained(
                model_name_or_path, trust_remote_code=trust_remote_code
            )
        self.set_prompt(prompt_template, use_chat_template, lang_instruction)  # fails before the slow load
        with _remote_code_hint(model_name_or_path, trust_remote_code):
            model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
        if torch_dtype == torch.float16 and str(getattr(model.config, "model_type", "")).startswith("gemma"):
            logging.warning("llm_conf.dtype float16: Gemma activations overflow float16 (inf/NaN losses); "
                            "use bfloat16 or float32")
        vocab = model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > vocab:
            raise ValueError(
                f"llm: tokenizer of {model_name_or_path!r} has {len(self.tokenizer)} tokens "
                f"but the model's embedding table has {vocab}: tokenizer and LLM do not match"
            )
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"llm: tokenizer of {model_name_or_path!r} defines no EOS token")
        self.freeze = freeze
        if freeze:
            for p in model.parameters():
                p.requires_grad_(False)
        if lora_conf:
            model = self._add_lora(model, lora_conf)
        self.has_lora = bool(lora_conf)  # LoRA adapters were added
        self.model = model
        self.pinned_dtype = torch_dtype != torch.float32
        head = model.get_output_embeddings()
        if head is not None:  # logits_to_keep hands it a strided slice
            head.register_forward_pre_hook(contiguous_input)
        self.speech_scale = resolve_speech_scale(speech_scale, model)
        logging.info("LLM %s: speech vectors scaled by %s (llm_conf.speech_scale: %s)",
                     model_name_or_path, self.speech_scale, speech_scale)

    @staticmethod
    def _add_lora(model, lora_conf: Dict):
        try:
            import peft
        except ImportError as e:
            raise ImportError("llm_conf.lora_conf needs peft: pip install -e .[lora]") from e
        conf = dict(lora_conf)
        targets = conf.get("target_modules")
        if isinstance(targets, (list, tuple)):  # a str is peft's regex or "all-linear"
            names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
            missing = [t for t in targets if t not in names]
            if missing:
                linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                                 if isinstance(m, torch.nn.Linear)})
                raise ValueError(
                    f"llm_conf.lora_conf.target_modules {missing} name no module of "
                    f"{type(model).__name__}; its linear layers are {linear}"
                )
        conf.setdefault("task_type", "CAUSAL_LM")
        model = peft.get_peft_model(model, peft.LoraConfig(**conf))
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logging.info("LoRA on the LLM: %d trainable parameters", n)
        return model

    # ------------------------------------------------------------------ info
    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def max_aligned_length(self) -> Optional[int]:
        """The longest batch the transcript-aligned training layout may have (:mod:`espnet_llm_asr.layout`):
        the sliding window of a sliding-window attention (padding inside a row
        moves keys out of it), None (no limit) without one."""
        config = self.model.config
        config = getattr(config, "text_config", None) or config
        window = getattr(config, "sliding_window", None)
        layer_types = getattr(config, "layer_types", None)
        if window and (layer_types is None or "sliding_attention" in layer_types):
            return int(window)
        return None

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.eos_token_id if pad is None else pad

    def train(self, mode: bool = True):
        """A frozen LLM stays in eval mode (no dropout), whatever the parent does."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
            if mode:  # LoRA layers still follow the requested mode
                for name, module in self.model.named_modules():
                    if is_lora_name(name):
                        module.train(mode)
        return self

    def _apply(self, fn, recurse=True):
        """bf16/fp16 LLM weights keep their dtype when the trainer casts the model."""
        if self.pinned_dtype:
            return apply_keeping_dtype(self, fn, recurse)
        return super()._apply(fn, recurse)

    # ---------------------------------------------------------------- prompt
    def set_prompt(
        self,
        prompt_template: str = DEFAULT_PROMPT,
        use_chat_template: bool = False,
        lang_instruction: Optional[str] = None,
    ) -> None:
        """Set (or change) the prompt: the ``llm_conf`` keys of the same names.

        Raises:
            ValueError: naming the key, when the template has no ``{speech}``
                or the tokenizer has no chat template to use.
        """
        if SPEECH_PLACEHOLDER not in prompt_template and not use_chat_template:
            raise ValueError(f"llm_conf.prompt_template must contain {SPEECH_PLACEHOLDER}: {prompt_template!r}")
        if use_chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"llm_conf.use_chat_template is true but the tokenizer of {self.model_name_or_path!r} has no chat "
                "template (no chat_template.jinja, no chat_template in tokenizer_config.json): "
                "set use_chat_template: false and write the prompt in llm_conf.prompt_template"
            )
        self.prompt_template = prompt_template
        self.use_chat_template = use_chat_template
        self.lang_instruction = lang_instruction
        self._prompt_cache: Dict[Optional[str], Tuple[List[int], List[int]]] = {}

    def prompt_ids(self, lang: Optional[str] = None) -> Tuple[List[int], List[int]]:
        """Token ids of the prompt text before and after the speech embeddings.

        Returns ``(prefix_ids, suffix_ids)``.  The prefix starts with the
        tokenizer's BOS token, once, when the tokenizer adds one (a chat
        template that writes BOS itself does not get a second one); neither
        part ever holds EOS unless the prompt text names it.
        """
        if lang in self._prompt_cache:
            return self._prompt_cache[lang]
        instruction = ""
        if self.lang_instruction and lang is not None:
            instruction = self.lang_instruction.format(
                lang=lang, lang_name=LANGUAGE_NAMES.get(lang, lang)
            )
        if self.use_chat_template:
            user = SPEECH_PLACEHOLDER + DEFAULT_INSTRUCTION.format(lang_instruction=instruction)
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
            )
            if SPEECH_PLACEHOLDER not in text:
                raise ValueError(f"llm_conf.use_chat_template: the chat template of {self.model_name_or_path!r} "
                                 f"does not keep the {SPEECH_PLACEHOLDER} placeholder: {text!r}")
        else:
            text = self.prompt_template.replace("{lang_instruction}", instruction)
        prefix, suffix = text.split(SPEECH_PLACEHOLDER, 1)
        prefix_ids = self.tokenize(prefix)
        bos = self._added_bos()
        if bos is not None and prefix_ids[:1] != [bos]:
            prefix_ids = [bos] + prefix_ids
        self._prompt_cache[lang] = (list(prefix_ids), self.tokenize(suffix))
        return self._prompt_cache[lang]

    def _added_bos(self) -> Optional[int]:
        """The BOS id when the tokenizer puts it before text with ``add_special_tokens=True``, else None."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return None
        # probed on a letter: some tokenizers add nothing at all to an empty string
        return bos if self.tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos] else None

    def tokenize(self, text: str) -> List[int]:
        """Transcript -> token ids (no special tokens)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> one line of text: special tokens dropped, every run of
        whitespace (newlines included, which would break a Kaldi ``text``
        file) collapsed to one space."""
        return " ".join(self.tokenizer.decode(list(ids), skip_special_tokens=True).split())

    @contextlib.contextmanager
    def lora_disabled(self):
        """Within the block the LLM runs as its base model: the LoRA adapters
        take no part in the forward pass and so get no gradient.  Without
        adapters, a no-op."""
        if not self.has_lora:
            yield
            return
        with self.model.disable_adapter():
            yield

    # ---------------------------------------------------------------- compute
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., L) long -> (..., L, hidden_size) in the LLM's dtype."""
        return self.model.get_input_embeddings()(ids)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the LLM's input embeddings are (the device its inputs go to)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def output_head(self) -> torch.nn.Module:
        """The LLM's output head: a linear map from (..., D) hidden vectors to (..., V) logits."""
        return self.model.get_output_embeddings()

    @property
    def vocab_size(self) -> int:
        """V: the rows of the output head (the token ids the LLM can emit)."""
        return self.output_head.weight.size(0)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, D) vectors -> (B, T, V) logits through the LLM's own output head (no transformer layers)."""
        return self.output_head(hidden.to(self.dtype))

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        """Hugging Face ``generate`` from (B, L, D) input embeddings (cast to the LLM's dtype) and
        their (B, L) attention mask; ``kwargs`` are ``generate``'s (``max_new_tokens``, ``num_beams``, ...)."""
        return self.model.generate(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                                   **kwargs)

    def forward(self, inputs_embeds, attention_mask, position_ids=None, logits_to_keep=0):
        """(B, L, D) embeddings, (B, L) mask, (B, L) positions -> (B, L', V) logits.

        ``logits_to_keep`` (Hugging Face's argument): 0 keeps all L positions;
        an int k the last k; a 1-D long tensor those positions (the same for
        every row).  With a 262k-word vocabulary the output head is large
        (Gemma 3 270M: 168M of its 268M parameters) and the (B, L, V) logits
        are the largest tensor of a training step; keeping only the
        positions a loss reads saves that memory and the head's compute.
        """
        # passed only when used: a custom-code model may not know the argument
        keep = {} if isinstance(logits_to_keep, int) and logits_to_keep == 0 else {"logits_to_keep": logits_to_keep}
        return self.model(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **keep,
        ).logits
