"""The tiny causal LM (Llama or Qwen2 at toy size) and its next-token pretraining
on the corpus text with ASR-shaped copy examples."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import numpy as np
import torch

from espnet_llm_asr.tiny_models.common import (PathLike, Schedule, atomic_dir, batch_indices, loss_summary,
                                               progress_bar, read_lines, resolve_device)
from espnet_llm_asr.tiny_models.tokenizer import prompt_after_speech

logger = logging.getLogger(__name__)


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
    sliding_window: int = 512,
    **extra,
) -> Path:
    """Save a randomly initialised causal LM (``llama`` | ``qwen2`` | ``gemma2`` | ``gemma3``) with the
    tokenizer in ``out_dir``.

    Vocabulary size = ``len(tokenizer)``; BOS/EOS/PAD ids from the tokenizer.
    ``intermediate_size`` defaults to ``4 * hidden_size``.  The Gemma ones (for
    tests of what real Gemma checkpoints do: an embedding layer that scales
    by sqrt(hidden), logit soft-capping, sliding-window layers) get
    ``head_dim = hidden_size // num_heads`` and ``sliding_window`` (``extra``
    overrides any config field).
    """
    from transformers import (AutoTokenizer, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM,
                              Gemma3TextConfig, GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    archs = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
             "gemma2": (Gemma2Config, Gemma2ForCausalLM), "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}
    if arch not in archs:
        raise ValueError(f"build_tiny_llm: arch must be one of {sorted(archs)}, got {arch!r}")
    if hidden_size % num_heads:
        raise ValueError(f"build_tiny_llm: hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config_cls, model_cls = archs[arch]
    fields = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch.startswith("gemma"):
        fields.update(head_dim=hidden_size // num_heads, sliding_window=sliding_window)
    config = config_cls(**{**fields, **extra})
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


def _filler(tokenizer) -> int:
    """The speech slot's filler: the pad token (EOS when there is none), also the CTC blank."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _example_maker(tokenizer, aligned_slot: Optional[Dict], max_tokens: int = 256, copy_slot_loss: bool = True):
    """The :class:`~espnet_llm_asr.tiny_models.copy_examples.CopyExampleMaker` for ``tokenizer`` and the prompt."""
    from espnet_llm_asr.ctc_vocab import CharSpeller
    from espnet_llm_asr.tiny_models.copy_examples import AlignedSlotConfig, CopyExampleMaker, token_char_counts

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    suffix = tokenizer(prompt_after_speech(), add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    filler = _filler(tokenizer)
    return CopyExampleMaker(
        bos, tokenizer.eos_token_id, suffix, filler=filler, chars=token_char_counts(tokenizer),
        vocab=[i for i in range(len(tokenizer)) if i not in special],
        aligned=AlignedSlotConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in (aligned_slot or {}).items()}),
        max_tokens=max_tokens, speller=CharSpeller(tokenizer, boundary=filler),  # words apart by a pause
        copy_slot_loss=copy_slot_loss)


@torch.no_grad()
def slot_reading_accuracy(llm_dir: PathLike, lines: Union[PathLike, Iterable[str]], aligned_slot: Optional[Dict] = None,
                          kinds: Iterable[str] = ("copy", "aligned"), seed: int = 0) -> Dict[str, Dict[str, float]]:
    """How well the LM reads an oracle speech slot: per example kind, teacher-forced accuracy of the
    transcript tokens + EOS after ``copy`` / ``aligned`` slots of ``lines`` (e.g. the dev transcripts).

    The ceiling a projector can reach through this LM if it produced the
    slot exactly (token accuracy in training reads the same positions).
    Returns ``{kind: {"token_acc", "exact", "lines"}}`` (``exact``: the
    fraction of lines with every token right).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = read_lines(lines)
    if not texts:
        raise ValueError("slot_reading_accuracy: no lines")
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).eval()
    maker = _example_maker(tokenizer, aligned_slot, max_tokens=1 << 20)
    result = {}
    for kind in kinds:
        gen = torch.Generator().manual_seed(seed)
        right = total = exact = 0
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            seq, _ = maker.make(ids, kind, gen, text)
            n = len(ids) + 1  # the transcript and EOS end the sequence
            pred = model(input_ids=torch.tensor([seq])).logits[0, -n - 1:-1].argmax(-1).tolist()
            hits = sum(p == g for p, g in zip(pred, seq[-n:]))
            right, total, exact = right + hits, total + n, exact + (hits == n)
        result[kind] = {"token_acc": right / total, "exact": exact / len(texts), "lines": len(texts)}
    return result


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
    copy_text: str = "transcripts",
    copy_slot_loss: bool = True,
    length_pool: Optional[int] = None,
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
    noise; ``aligned_slot``: :class:`~espnet_llm_asr.tiny_models.copy_examples.AlignedSlotConfig`
    keys), with no loss on the slot, so that the LM learns to read what
    stride-5 projectors (mono, smear_moe, ...) give it; with
    ``aligned_slot.unit: char`` the slot holds the transcript spelled.
    ``copy_text``: what the copy and aligned examples hold, ``transcripts``
    (the training lines) or ``random_words`` (random words of the training
    text in the shape of a training line,
    :class:`~espnet_llm_asr.tiny_models.copy_examples.RandomSentences`: nothing to
    memorise, so the LM learns to read the slot).  ``copy_slot_loss``:
    ``False`` puts no loss on a copy example's slot (its targets are then
    all reads, as in aligned examples).  ``length_pool``: ``None`` for random
    batches, ``P`` for batches of lines of similar token count from sorted
    pools of ``P`` batches (:func:`~espnet_llm_asr.tiny_models.common.batch_indices`;
    less padding, so faster steps, but the LM learns to read more slowly, so
    the recipe keeps random batches: espnet_llm_asr/benchmark/README.md,
    "Choices in the code").
    """
    from espnet_llm_asr.tiny_models.copy_examples import RandomSentences
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = read_lines(lines)
    if not texts:
        raise ValueError("pretrain_causal_lm: no training lines")
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).to(device)
    token_lists = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    for name, value in (("copy_fraction", copy_fraction), ("aligned_fraction", aligned_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"pretrain_causal_lm: {name} must be in [0, 1], got {value}")
    if copy_text not in ("transcripts", "random_words"):
        raise ValueError(f"pretrain_causal_lm: copy_text must be transcripts or random_words, got {copy_text!r}")
    pad_id = _filler(tokenizer)
    maker = _example_maker(tokenizer, aligned_slot, max_tokens, copy_slot_loss=copy_slot_loss)
    random_sentences = RandomSentences(texts) if copy_text == "random_words" else None
    gen = torch.Generator().manual_seed(seed)

    def example(i: int, kind: str):
        text, ids = texts[i], token_lists[i]
        if kind != "text" and random_sentences is not None:
            text = random_sentences.draw(gen)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return maker.make(ids, kind, gen, text)

    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    schedule = Schedule(lr, steps, min(100, steps // 10) if warmup is None else warmup)
    model.train()
    losses: List[float] = []
    batches = batch_indices([len(ids) for ids in token_lists], batch_size, gen, length_pool)
    with progress_bar(steps, "LM pretraining") as bar:
        for step in range(steps):
            idx = next(batches)
            as_copy = (torch.rand(len(idx), generator=gen) < copy_fraction).tolist()
            # drawn only when used, so that aligned_fraction 0 keeps the random stream of earlier releases
            as_aligned = ((torch.rand(len(idx), generator=gen) < aligned_fraction).tolist() if aligned_fraction > 0
                          else [False] * len(idx))
            kinds = ["text" if not c else "aligned" if a else "copy" for c, a in zip(as_copy, as_aligned)]
            batch = [example(i, kind) for i, kind in zip(idx, kinds)]
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
    result = loss_summary(losses)
    logger.info("LM pretraining done: loss %.4f -> %.4f, saved to %s",
                result["first_loss"], result["last_loss"], target)
    return result
