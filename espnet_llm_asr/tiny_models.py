"""Real Hugging Face models at toy size, for the embedded default recipe and the tests.

* :func:`build_tiny_whisper`: a randomly initialised Whisper checkpoint
  (WhisperForConditionalGeneration with a 1-layer decoder) + its
  WhisperFeatureExtractor, loadable by :class:`espnet_llm_asr.encoder.WhisperEncoder`.
* :func:`train_tokenizer`: a sentencepiece model (char / unigram / bpe)
  wrapped as a ``tokenizers`` fast tokenizer, so ``AutoTokenizer`` loads it
  offline and ``decode(encode(text)) == text``.
* :func:`build_tiny_llm`: a Llama or Qwen2 causal LM whose vocabulary is the
  tokenizer, saved together with it.
* :func:`pretrain_causal_lm`: next-token training of that LM on text lines.
* :func:`pretrain_whisper_encoder_ctc`: CTC training of the tiny encoder over
  characters (a CTC head on top, dropped after), through the same log-mel
  and masked encoder path the ASR model uses.

Every directory is written atomically: into a temporary sibling first, then
renamed into place, so an interrupted run never leaves a half-written model.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import string
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3 in every tokenizer built here
# Characters every tiny tokenizer can encode, whatever the training text: the
# LLM prompt ("USER: Transcribe speech to text.\n ASSISTANT:") and language
# names are ASCII.
REQUIRED_CHARS = string.ascii_letters + string.digits + string.punctuation + "\n"


# ---------------------------------------------------------------------- helpers
@contextlib.contextmanager
def atomic_dir(out_dir: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary dir; on success it replaces ``out_dir`` (rename), on error it is removed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model dir is as readable as any other
    for f in tmp.rglob("*"):
        if f.is_file():
            os.chmod(f, 0o644)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_lines(text_file_or_lines: Union[PathLike, Iterable[str]]) -> List[str]:
    """A path (one sentence a line) or an iterable of lines -> non-empty lines, newline stripped."""
    if isinstance(text_file_or_lines, (str, Path)):
        path = Path(text_file_or_lines)
        if not path.is_file():
            raise FileNotFoundError(f"text file {str(path)!r} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = list(text_file_or_lines)
    return [ln.rstrip("\r\n") for ln in lines if ln.strip()]


class _Schedule:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * final_ratio``."""

    def __init__(self, lr: float, steps: int, warmup: int, final_ratio: float = 0.1):
        self.lr, self.steps, self.warmup, self.final_ratio = lr, steps, max(0, warmup), final_ratio

    def __call__(self, step: int) -> float:  # step: 0-based
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _loss_summary(losses: List[float]) -> Dict[str, float]:
    """First/last loss, each the mean over ``k = clamp(steps // 5, 1, 10)`` steps (single steps are noisy)."""
    k = max(1, min(10, len(losses) // 5))
    return {"first_loss": float(np.mean(losses[:k])), "last_loss": float(np.mean(losses[-k:]))}


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _progress(steps: int, desc: str):
    """A tqdm progress bar, shown on terminals only (log files get the logger's lines)."""
    from tqdm import tqdm

    return tqdm(total=steps, desc=desc, disable=None, dynamic_ncols=True)


# ---------------------------------------------------------------------- whisper
def build_tiny_whisper(
    out_dir: PathLike,
    num_mel_bins: int = 80,
    d_model: int = 256,
    encoder_layers: int = 4,
    encoder_attention_heads: int = 4,
    encoder_ffn_dim: int = 1024,
    max_source_positions: int = 1500,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised Whisper checkpoint + WhisperFeatureExtractor in ``out_dir``.

    The model is a WhisperForConditionalGeneration whose decoder is a
    placeholder (1 layer, 16-token vocabulary): only the encoder is used.
    One encoder window is ``2 * max_source_positions`` mel frames
    (``max_source_positions / 50`` seconds; 1500 -> 30 s as in Whisper).
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    if d_model % encoder_attention_heads:
        raise ValueError(f"build_tiny_whisper: d_model={d_model} is not divisible by "
                         f"encoder_attention_heads={encoder_attention_heads}")
    config = WhisperConfig(
        vocab_size=16, num_mel_bins=num_mel_bins, d_model=d_model,
        encoder_layers=encoder_layers, encoder_attention_heads=encoder_attention_heads,
        encoder_ffn_dim=encoder_ffn_dim, max_source_positions=max_source_positions,
        decoder_layers=1, decoder_attention_heads=encoder_attention_heads, decoder_ffn_dim=encoder_ffn_dim,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    window_s = 2 * max_source_positions * 160 / 16000
    fe_kwargs = {"chunk_length": int(window_s)} if window_s == int(window_s) and window_s >= 1 else {}
    fe = WhisperFeatureExtractor(feature_size=num_mel_bins, **fe_kwargs)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        fe.save_pretrained(tmp)
    n = sum(p.numel() for p in model.model.encoder.parameters())
    logger.info("tiny Whisper in %s: encoder %d params, d_model %d, %d layers, window %g s",
                out_dir, n, d_model, encoder_layers, window_s)
    return Path(out_dir)


# ---------------------------------------------------------------------- tokenizer
def prompt_after_speech() -> str:
    """The default prompt's text after the speech slot (no language instruction)."""
    from espnet_llm_asr.llm import DEFAULT_PROMPT, SPEECH_PLACEHOLDER

    return DEFAULT_PROMPT.split(SPEECH_PLACEHOLDER, 1)[1].replace("{lang_instruction}", "")


def prompt_text_lines() -> List[str]:
    """The text of the default LLM prompt without its placeholders, one line per prompt line.

    ``["USER: Transcribe speech to text.", " ASSISTANT:"]``: added to a tiny
    tokenizer's training text so the prompt becomes a few whole-word tokens.
    """
    from espnet_llm_asr.llm import DEFAULT_PROMPT

    text = DEFAULT_PROMPT.replace("{speech}", "").replace("{lang_instruction}", "")
    return [line for line in text.split("\n") if line.strip()]


def _spm_train(lines: List[str], model_type: str, vocab_size: Optional[int]):
    """Train sentencepiece in memory (deterministic: one thread); returns a SentencePieceProcessor."""
    import sentencepiece as spm

    if model_type not in ("char", "unigram", "bpe"):
        raise ValueError(f"train_tokenizer: model_type must be char, unigram or bpe, got {model_type!r}")
    if vocab_size is None:
        if model_type == "char":  # every character + the word boundary + specials
            vocab_size = len(set("".join(lines)) - {" "}) + 1 + len(SPECIAL_TOKENS)
        else:
            vocab_size = 500
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type=model_type, vocab_size=vocab_size,
        hard_vocab_limit=False,  # "at most vocab_size": tiny corpora have fewer pieces
        character_coverage=1.0, normalization_rule_name="identity",  # no NFKC: decode gives back the input
        remove_extra_whitespaces=False, split_digits=True, byte_fallback=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        unk_piece=SPECIAL_TOKENS[0], bos_piece=SPECIAL_TOKENS[1], eos_piece=SPECIAL_TOKENS[2],
        pad_piece=SPECIAL_TOKENS[3], minloglevel=2, num_threads=1,
        max_sentence_length=1 << 16,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def _bpe_merges(vocab: Dict[str, int]) -> List[Tuple[str, str]]:
    """Merges for a sentencepiece BPE vocab: every split of a piece into two pieces, by piece rank."""
    merges = []
    for piece, rank in vocab.items():
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab:
                merges.append((rank, vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]


def train_tokenizer(
    text_file_or_lines: Union[PathLike, Iterable[str]],
    out_dir: PathLike,
    vocab_size: Optional[int] = None,
    model_type: str = "char",
    required_chars: str = REQUIRED_CHARS,
) -> Path:
    """Train sentencepiece and save it as a Hugging Face fast tokenizer in ``out_dir``.

    Args:
        text_file_or_lines: plain text file (one sentence a line) or lines.
        out_dir: output dir (tokenizer.json + tokenizer_config.json).
        vocab_size: at most this many pieces; ``None``: every character for
            ``char``, 500 for ``unigram`` / ``bpe``.
        model_type: ``char`` | ``unigram`` | ``bpe``.
        required_chars: characters added as pieces when the text lacks them
            (default: printable ASCII and newline, for the LLM prompt).

    Specials: ``<unk>``=0, ``<s>``=1 (BOS, added by ``add_special_tokens``),
    ``</s>``=2 (EOS), ``<pad>``=3.  Text is not normalised and spaces are
    sentencepiece's ``▁``, so ``decode(encode(s)) == s`` for any string of
    known characters without leading whitespace.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    lines = read_lines(text_file_or_lines)
    if not lines:
        raise ValueError("train_tokenizer: no non-empty training lines")
    sp = _spm_train(lines, model_type, vocab_size)
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    if [p for p, _ in pieces[: len(SPECIAL_TOKENS)]] != list(SPECIAL_TOKENS):
        raise RuntimeError(f"train_tokenizer: unexpected sentencepiece specials {pieces[:4]}")
    known = {p for p, _ in pieces}
    low = min(s for _, s in pieces) - 10.0
    pieces += [(c, low) for c in required_chars if c not in known and c != " "]

    if model_type == "bpe":
        vocab = {p: i for i, (p, _) in enumerate(pieces)}
        model = models.BPE(vocab=vocab, merges=_bpe_merges(vocab), unk_token=SPECIAL_TOKENS[0], fuse_unk=True)
    else:  # char and unigram: Viterbi over the sentencepiece scores
        model = models.Unigram(pieces, unk_id=0, byte_fallback=False)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    with atomic_dir(out_dir) as tmp:
        hf.save_pretrained(tmp)
    logger.info("%s tokenizer in %s: %d tokens (%d added required characters)",
                model_type, out_dir, len(hf), len(pieces) - sp.get_piece_size())
    return Path(out_dir)


# ---------------------------------------------------------------------- LLM
def build_tiny_llm(
    out_dir: PathLike,
    tokenizer_dir: PathLike,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: Optional[int] = None,
    arch: str = "llama",
    seed: int = 0,
    max_position_embeddings: int = 2048,
    tie_word_embeddings: bool = True,
) -> Path:
    """Save a randomly initialised causal LM (``llama`` | ``qwen2``) with the tokenizer in ``out_dir``.

    Vocabulary size = ``len(tokenizer)``; BOS/EOS/PAD ids from the tokenizer.
    ``intermediate_size`` defaults to ``4 * hidden_size``.
    """
    from transformers import (AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    archs = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if arch not in archs:
        raise ValueError(f"build_tiny_llm: arch must be one of {sorted(archs)}, got {arch!r}")
    if hidden_size % num_heads:
        raise ValueError(f"build_tiny_llm: hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config_cls, model_cls = archs[arch]
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    logger.info("tiny %s LM in %s: %d params, vocab %d", arch, out_dir,
                sum(p.numel() for p in model.parameters()), len(tokenizer))
    return Path(out_dir)


def pretrain_causal_lm(
    llm_dir: PathLike,
    lines: Union[PathLike, Iterable[str]],
    out_dir: Optional[PathLike] = None,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    warmup: Optional[int] = None,
    log_every: int = 50,
    device: str = "cpu",
    seed: int = 0,
    max_tokens: int = 256,
    copy_fraction: float = 0.0,
    aligned_fraction: float = 0.0,
    aligned_slot: Optional[Dict] = None,
) -> Dict[str, float]:
    """Train the LM in ``llm_dir`` on ``BOS + text + EOS`` of each line; save to ``out_dir`` (default: in place).

    AdamW, linear warm-up (default ``min(100, steps // 10)`` steps) then
    cosine decay, gradient clipping at 1.0, random batches of ``batch_size``
    lines (truncated to ``max_tokens``).  Returns ``first_loss`` /
    ``last_loss`` (means over the first / last few steps).

    ``copy_fraction`` of the examples are instead laid out as the ASR model
    lays out an utterance, with the transcript's own tokens in the speech
    slot: ``BOS + text + prompt after the speech + text + EOS``.  A real LLM
    can repeat what its prompt holds; a toy LM trained on random word
    sequences cannot, and this teaches it (the projector then only has to
    make speech look like the words).  ``aligned_fraction`` of those copy
    examples instead hold the transcript as a fixed-stride projector lays it
    out (tokens spread over duration-like spans among filler positions, with
    noise; ``aligned_slot``: :class:`~espnet_llm_asr.copy_examples.AlignedSlotConfig`
    keys), with no loss on the slot, so that the LM learns to read what
    stride-5 projectors (mono, smear_moe, ...) give it.
    """
    from espnet_llm_asr.copy_examples import AlignedSlotConfig, CopyExampleMaker, token_char_counts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = read_lines(lines)
    if not texts:
        raise ValueError("pretrain_causal_lm: no training lines")
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).to(device)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    token_lists = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    for name, value in (("copy_fraction", copy_fraction), ("aligned_fraction", aligned_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"pretrain_causal_lm: {name} must be in [0, 1], got {value}")
    suffix = tokenizer(prompt_after_speech(), add_special_tokens=False)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    special = set(tokenizer.all_special_ids)
    maker = CopyExampleMaker(
        bos, tokenizer.eos_token_id, suffix, filler=pad_id, chars=token_char_counts(tokenizer),
        vocab=[i for i in range(len(tokenizer)) if i not in special],
        aligned=AlignedSlotConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in (aligned_slot or {}).items()}),
        max_tokens=max_tokens)

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    schedule = _Schedule(lr, steps, min(100, steps // 10) if warmup is None else warmup)
    model.train()
    losses: List[float] = []
    with _progress(steps, "LM pretraining") as bar:
        for step in range(steps):
            idx = torch.randint(len(token_lists), (min(batch_size, len(token_lists)),), generator=gen).tolist()
            as_copy = (torch.rand(len(idx), generator=gen) < copy_fraction).tolist()
            # drawn only when used, so that aligned_fraction 0 keeps the random stream of earlier releases
            as_aligned = ((torch.rand(len(idx), generator=gen) < aligned_fraction).tolist() if aligned_fraction > 0
                          else [False] * len(idx))
            kinds = ["text" if not c else "aligned" if a else "copy" for c, a in zip(as_copy, as_aligned)]
            batch = [maker.make(token_lists[i], kind, gen) for i, kind in zip(idx, kinds)]
            width = max(len(seq) for seq, _ in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, (seq, lab) in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                labels[row, : len(lab)] = torch.tensor(lab)
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if (step + 1) % log_every == 0 or step + 1 == steps:
                logger.info("LM step %d/%d: loss %.4f (mean of last %d: %.4f), lr %.2e", step + 1, steps,
                            losses[-1], min(log_every, len(losses)), np.mean(losses[-log_every:]), schedule(step))
    model.eval()
    target = Path(out_dir) if out_dir is not None else Path(llm_dir)
    with atomic_dir(target) as tmp:
        model.to("cpu").save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    result = _loss_summary(losses)
    logger.info("LM pretraining done: loss %.4f -> %.4f, saved to %s",
                result["first_loss"], result["last_loss"], target)
    return result


# ---------------------------------------------------------------------- encoder (CTC)
CTC_HEAD_FILE = "ctc_head.pt"  # CTC head of the pretrained tiny encoder, in its model dir
def build_charset(texts: Iterable[str]) -> List[str]:
    """Sorted distinct characters (code points) of ``texts``; the space is one of them."""
    return sorted(set("".join(texts)))


def _whisper_model_class(config):
    from transformers import WhisperForConditionalGeneration, WhisperModel

    arch = (config.architectures or ["WhisperForConditionalGeneration"])[0]
    return WhisperModel if arch == "WhisperModel" else WhisperForConditionalGeneration


def save_whisper_encoder(whisper_dir: PathLike, encoder_state: Dict[str, torch.Tensor], out_dir: PathLike,
                         extra: Optional[Dict[str, object]] = None) -> Path:
    """Write ``whisper_dir`` with its encoder weights replaced by ``encoder_state`` to ``out_dir`` (atomically).

    The checkpoint's other files (feature extractor, tokenizer, ...) are copied
    along, except a stale ``ctc_head.pt``; ``extra`` maps file names to objects
    written with ``torch.save`` into the same directory.
    """
    from transformers import AutoConfig

    whisper_dir = Path(whisper_dir)
    config = AutoConfig.from_pretrained(str(whisper_dir))
    model = _whisper_model_class(config).from_pretrained(str(whisper_dir), dtype=torch.float32)
    encoder = model.get_encoder()
    missing, unexpected = encoder.load_state_dict({k: v.float() for k, v in encoder_state.items()}, strict=False)
    if missing or unexpected:
        raise KeyError(f"save_whisper_encoder: encoder state does not match: missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
    weights = (".safetensors", ".bin", ".index.json")
    with atomic_dir(out_dir) as tmp:
        for f in whisper_dir.iterdir():
            if f.is_file() and not f.name.endswith(weights) and f.name != CTC_HEAD_FILE:
                shutil.copy2(f, tmp / f.name)
        model.save_pretrained(tmp)
        for name, obj in (extra or {}).items():
            torch.save(obj, tmp / name)
    return Path(out_dir)


def _pad_waves(waves: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of (L_i,) float arrays -> ((B, max L) float32 zero-padded, (B,) long lengths)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.as_tensor(w, dtype=torch.float32)
    return batch, lengths


def pretrain_whisper_encoder_ctc(
    whisper_dir: PathLike,
    utterances: Iterable[Tuple[np.ndarray, str]],
    charset: Optional[Sequence[str]] = None,
    out_dir: Optional[PathLike] = None,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: Optional[int] = None,
    log_every: int = 50,
    device: str = "cpu",
    seed: int = 0,
) -> Dict[str, float]:
    """Train the Whisper encoder in ``whisper_dir`` with a character CTC head; save it back as a Whisper dir.

    Args:
        whisper_dir: HF Whisper checkpoint (e.g. from :func:`build_tiny_whisper`).
        utterances: (waveform float32 (L,) at 16 kHz, transcript) pairs.
        charset: CTC output symbols (characters; blank is added as id 0);
            default: every character of the transcripts.  Characters outside
            it are dropped from the targets.
        out_dir: where to save (default: ``whisper_dir``, replaced atomically).
        steps, batch_size, lr, warmup, log_every, device, seed: training.
            AdamW, warm-up (default ``min(100, steps // 10)``) + cosine decay,
            gradient clipping at 5.0.

    Features come from :class:`~espnet_llm_asr.encoder.WhisperEncoder` with
    ``pad_to_30s=False, freeze=False``: the log-mel and masked encoder path
    the ASR model runs.  The CTC head is saved next to the weights as
    ``ctc_head.pt`` (``{"weight", "bias", "symbols"}``; ignored by
    Whisper loaders), for the CTC-only diagnostic :func:`ctc_greedy_decode`.

    Returns:
        ``first_loss`` / ``last_loss`` (per-character CTC, means over the
        first / last few steps) and ``num_symbols``.
    """
    from espnet_llm_asr.encoder import WhisperEncoder

    data = [(np.asarray(w, dtype=np.float32), t) for w, t in utterances]
    if not data:
        raise ValueError("pretrain_whisper_encoder_ctc: no utterances")
    symbols = list(charset) if charset is not None else build_charset(t for _, t in data)
    index = {c: i + 1 for i, c in enumerate(symbols)}  # 0 = blank
    targets = [[index[c] for c in t if c in index] for _, t in data]

    device = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = WhisperEncoder(str(whisper_dir), pad_to_30s=False, freeze=False).to(device)
    frames = encoder.output_lengths(torch.tensor([len(w) for w, _ in data]))
    too_long = sum(int(len(y) > f) for y, f in zip(targets, frames.tolist()))
    if too_long:
        logger.warning("%d of %d transcripts have more characters than encoder frames (CTC ignores them)",
                       too_long, len(data))
    head = torch.nn.Linear(encoder.output_size(), len(symbols) + 1).to(device)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = _Schedule(lr, steps, min(100, steps // 10) if warmup is None else warmup)
    ctc = torch.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    encoder.train()
    losses: List[float] = []
    with _progress(steps, "encoder CTC pretraining") as bar:
        for step in range(steps):
            idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=gen).tolist()
            speech, speech_lengths = _pad_waves([data[i][0] for i in idx])
            ys = [targets[i] for i in idx]
            feats, feats_lengths = encoder(speech.to(device), speech_lengths.to(device))
            log_probs = head(feats).log_softmax(dim=-1).transpose(0, 1)  # (T, B, C)
            flat = torch.tensor([c for y in ys for c in y], dtype=torch.long)
            loss = ctc(log_probs, flat, feats_lengths.cpu(), torch.tensor([len(y) for y in ys]))
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if (step + 1) % log_every == 0 or step + 1 == steps:
                logger.info("CTC step %d/%d: loss %.4f (mean of last %d: %.4f), lr %.2e", step + 1, steps,
                            losses[-1], min(log_every, len(losses)), np.mean(losses[-log_every:]), schedule(step))
    state = {k: v.detach().cpu() for k, v in encoder.encoder.state_dict().items()}
    target = Path(out_dir) if out_dir is not None else Path(whisper_dir)
    head_state = {"weight": head.weight.detach().cpu(), "bias": head.bias.detach().cpu(), "symbols": symbols}
    save_whisper_encoder(whisper_dir, state, target, extra={CTC_HEAD_FILE: head_state})
    result = _loss_summary(losses)
    result["num_symbols"] = len(symbols)
    logger.info("CTC pretraining done: loss %.4f -> %.4f, encoder saved to %s",
                result["first_loss"], result["last_loss"], target)
    return result


@torch.no_grad()
def ctc_greedy_decode(whisper_dir: PathLike, waves: Sequence[np.ndarray], batch_size: int = 16,
                      device: str = "cpu") -> List[str]:
    """Best-path CTC transcripts of ``waves`` (16 kHz float arrays) by the encoder and its saved CTC head.

    A diagnostic of the pretrained encoder alone (no projector, no LLM): what
    the frozen speech features carry.  Needs ``whisper_dir/ctc_head.pt``
    (written by :func:`pretrain_whisper_encoder_ctc`).
    """
    from espnet_llm_asr.encoder import WhisperEncoder

    head_file = Path(whisper_dir) / CTC_HEAD_FILE
    if not head_file.is_file():
        raise FileNotFoundError(f"{head_file} not found: only encoders pretrained by "
                                "pretrain_whisper_encoder_ctc have a CTC head")
    state = torch.load(head_file, map_location="cpu", weights_only=True)
    symbols = state["symbols"]
    encoder = WhisperEncoder(str(whisper_dir), pad_to_30s=False).to(device).eval()
    head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0]).to(device)
    head.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
    hyps: List[str] = []
    for start in range(0, len(waves), batch_size):
        speech, lengths = _pad_waves(waves[start:start + batch_size])
        feats, feats_lengths = encoder(speech.to(device), lengths.to(device))
        best = head(feats).argmax(dim=-1).cpu()  # (B, T)
        for row, n in zip(best.tolist(), feats_lengths.tolist()):
            out, prev = [], 0
            for k in row[:n]:
                if k != prev and k != 0:
                    out.append(symbols[k - 1])
                prev = k
            hyps.append(" ".join("".join(out).split()))
    return hyps
