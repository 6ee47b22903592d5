"""The LLM-ASR model: frontend (frozen encoder + projector) -> frozen causal LLM.

Training input of one utterance (``P``: prompt text before the speech,
``S``: prompt text after it, ``y``: transcript tokens, ``c``: the LLM's
speech embedding scale)::

    [ emb(P) | c * projector(speech) | emb(S) | emb(y) | emb(EOS) ]
    labels:  -100 ... -100 ... -100 ...   y_1..y_N   EOS

How a batch is padded (transcripts aligned, so that the LLM's output head
runs only where the loss reads it) is :mod:`espnet_llm_asr.layout`'s.  The
loss is the cross-entropy over the transcript tokens and EOS plus the
projector's (already weighted) auxiliary
loss, plus optionally (``ctc_weight > 0``; not in the papers) a CTC loss of
the projected speech vectors read through the LLM's own output head, which
pulls them towards the embeddings of the tokens spoken (useful when a small
LLM must learn to read speech quickly).  For generation the same prefix ``[P | speech | S]`` is LEFT padded so
that every utterance's first generated token sits at the last position of
the batch; attention mask and position ids make a batched hypothesis equal to
the one decoded alone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_llm_asr.ctc_compress import ctc_compress
from espnet_llm_asr.ctc_draft import ctc_greedy_units, draft_token_ids
from espnet_llm_asr.ctc_vocab import CharSpeller, CTCVocabulary, word_boundary_id
from espnet_llm_asr.ctc_prefix_scoring import CTCPrefixScoring, check_ctc_weight
from espnet_llm_asr.decoding import GreedyScores, PerUtteranceCap, RepetitionPenalty, generation_cache_kwargs, round_up
from espnet_llm_asr.decoding_options import DecodingOptions, with_option_keywords
from espnet_llm_asr.frontend import ProjectorFrontend
from espnet_llm_asr.layout import IGNORE_ID, Prompted, generation_prefix, training_batch, utterance_pieces
from espnet_llm_asr.llm import CausalLLM
from espnet_llm_asr.projectors import ProjectorOutput


#: the CTC's blank offset with ``ctc_blank_bias: auto`` (the default) and the CTC on
DEFAULT_CTC_BLANK_BIAS = 5.0


def blank_bias_start(value: Union[str, float, bool, None], ctc_weight: float) -> Optional[float]:
    """``model_conf.ctc_blank_bias`` -> the offset's starting value, or None (off)."""
    if value == "auto":
        return DEFAULT_CTC_BLANK_BIAS if ctc_weight > 0 else None
    if value is True or isinstance(value, str):
        raise ValueError(f"model_conf.ctc_blank_bias must be auto, a number, or 0 / false / null (off), got {value!r}")
    if not value:
        return None
    if ctc_weight == 0:
        raise ValueError("model_conf.ctc_blank_bias needs model_conf.ctc_weight > 0 (it biases the CTC's blank)")
    return float(value)


def check_hold_steps(hold_steps: Optional[Dict[str, int]], ctc_weight: float, has_lora: bool) -> Dict[str, int]:
    """``model_conf.hold_steps`` checked: ``{llm: N, lora: M}`` with its zero entries left out."""
    hold = dict(hold_steps or {})
    unknown = sorted(set(hold) - {"llm", "lora"})
    if unknown:
        raise ValueError(f"model_conf.hold_steps: unknown parts {unknown}; the parts are llm and lora")
    for part, steps in hold.items():
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"model_conf.hold_steps.{part} must be an integer >= 0, got {steps!r}")
    hold = {part: steps for part, steps in hold.items() if steps}
    if "llm" in hold and ctc_weight == 0:
        raise ValueError(f"model_conf.hold_steps.llm={hold['llm']} needs model_conf.ctc_weight > 0: "
                         "while the LLM sits out, the CTC is what trains the projector")
    if "lora" in hold and not has_lora:
        raise ValueError(f"model_conf.hold_steps.lora={hold['lora']} but the LLM has no LoRA "
                         "adapters (set llm_conf.lora_conf)")
    return hold


class LLMASRModel(AbsESPnetModel):
    """Speech encoder + projector + LLM, trained with next-token cross-entropy.

    Args:
        frontend: a :class:`ProjectorFrontend` (frozen encoder or dumped features -> projector).
        llm: the :class:`CausalLLM` decoder.
        lang_list: language codes; ``lang`` ids in the batch index this list.
        aux_loss_weight: extra factor on the projector's auxiliary loss (already
            weighted inside the projector; 1.0 keeps the paper's weights).
        max_nonfinite_batches: a batch whose loss is NaN/inf is skipped (zero
            gradient, counted as ``nonfinite`` in the stats); this many in a
            row stop training with an error, the last saved checkpoint intact.
        ctc_weight: weight of an auxiliary CTC loss on the projector output
            (B, T', D) -> LLM output head -> (B, T', V), targets the
            transcript tokens, blank = the LLM's pad token (EOS if it has
            none); 0 (default, as in the papers) turns it off.
        ctc_unit: targets of that CTC: ``token`` (the transcript's tokens) or
            ``char`` (the transcript spelled in the LLM's single-character
            pieces, :class:`~espnet_llm_asr.ctc_vocab.CharSpeller`): a
            stride-5 projector over a character-level encoder has about
            one character per position, not one word.
        ctc_blank_bias: a trainable scalar added to the CTC's blank logit,
            starting at this value, so that CTC training starts, as it
            usually does, with the blank more likely than any token (without
            it the head's blank is about as likely as a single token, and a
            projector can fall into never emitting the blank; the recipe
            README's projector comparison).  ``auto`` (default): 5.0 with the
            CTC (``ctc_weight > 0``), none without.  ``0``, ``false`` or
            ``null``: off, the blank logit is the head's, unchanged.  A
            checkpoint saved without it (trained with the offset off) loads
            with the offset at 0, so it decodes as it was trained.
        ctc_vocab: the tokens that CTC may emit (:mod:`espnet_llm_asr.ctc_vocab`):
            ``None`` (default) the LLM's whole vocabulary, or a list of
            token ids (``train_text`` or ``train_scripts`` in the yaml,
            resolved by the task; with ``ctc_unit: char`` single-character
            pieces and the word boundary).
        ctc_compress: the LLM reads the speech CTC-compressed
            (:mod:`espnet_llm_asr.ctc_compress`): one vector per run of equal
            greedy CTC labels, blank runs dropped, so about one vector per
            character or token (needs ``ctc_weight > 0``; pair it with
            ``hold_steps: {llm: N}`` so that the CTC labels something before the LLM
            reads it).  ``vectors``: the run's projected vectors averaged;
            ``embeddings``: the LLM's own input embeddings of the CTC's
            units, weighted by the run's averaged CTC posteriors (blank left
            out), so that a confident run is exactly the embedding of the
            character or token it heard.  None (default): every projected vector.
        ctc_draft: the LLM also reads the CTC's greedy transcript as text,
            in its own tokens, right after the speech
            (:mod:`espnet_llm_asr.ctc_draft`; needs ``ctc_weight > 0``): a
            pretrained LLM reads its own tokens at once, so it learns to
            correct the CTC rather than to read spelled speech.  False (default).
        specaug: optional augmentation of the encoder features (B, T, D) in
            training only (``specaug: specaug`` in the yaml: ESPnet's SpecAug,
            its frequency masks acting on feature dimensions); decoding and
            validation never augment.
        hold_steps: a warm-up in which parts of the model sit out, as
            ``{llm: N, lora: M}`` (either may be left out; default none):
            first, for N training batches, the LLM sits out altogether (no
            LLM forward; the loss is the projector's auxiliary loss plus the
            CTC, so ``ctc_weight > 0`` is needed), so that the projector
            learns, at the cost of the projector and the output head alone,
            to put the spoken units where the CTC reads them; then, for M
            more batches, the LLM runs as its base model, its LoRA adapters
            out (needs ``llm_conf.lora_conf``; with DDP also
            ``--unused_parameters true``), so that the projector learns
            against the base LLM before the adapters join.  Batches are
            forward passes in train mode (optimizer steps when ``accum_grad``
            is 1), counted in a buffer saved in the checkpoints, so
            ``--resume`` continues the count.  Held batches report ``llm_held``
            / ``lora_held`` 1 (with the LLM out, ``loss_ce`` and ``acc`` NaN,
            left out of ESPnet's averages); validation always runs the whole model.
    """

    def __init__(
        self,
        frontend: ProjectorFrontend,
        llm: CausalLLM,
        lang_list: Optional[Sequence[str]] = None,
        aux_loss_weight: float = 1.0,
        max_nonfinite_batches: int = 20,
        ctc_weight: float = 0.0,
        ctc_unit: str = "token",
        ctc_blank_bias: Union[str, float, bool, None] = "auto",
        ctc_vocab: Optional[Sequence[int]] = None,
        ctc_compress: Optional[str] = None,
        ctc_draft: bool = False,
        specaug: Optional[torch.nn.Module] = None,
        hold_steps: Optional[Dict[str, int]] = None,
    ):
        super().__init__()
        if frontend.output_size() != llm.hidden_size:
            raise ValueError(
                f"projector output size {frontend.output_size()} != LLM hidden size "
                f"{llm.hidden_size} ({llm.model_name_or_path})"
            )
        self.frontend = frontend
        self.llm = llm
        self.lang_list = list(lang_list) if lang_list else []
        self.aux_loss_weight = aux_loss_weight
        self.max_nonfinite_batches = max_nonfinite_batches
        if ctc_weight < 0:
            raise ValueError(f"model_conf.ctc_weight must be >= 0, got {ctc_weight}")
        self.ctc_weight = ctc_weight
        if ctc_unit not in ("token", "char"):
            raise ValueError(f"model_conf.ctc_unit must be token or char, got {ctc_unit!r}")
        self.ctc_unit = ctc_unit
        blank_bias = blank_bias_start(ctc_blank_bias, ctc_weight)
        self.ctc_blank_bias = None if blank_bias is None else torch.nn.Parameter(torch.tensor(blank_bias))
        if ctc_vocab is not None and ctc_weight == 0:
            raise ValueError("model_conf.ctc_vocab needs model_conf.ctc_weight > 0")
        if ctc_compress not in (None, "vectors", "embeddings"):
            raise ValueError(f"model_conf.ctc_compress must be null, vectors or embeddings, got {ctc_compress!r}")
        if ctc_compress and ctc_weight == 0:
            raise ValueError("model_conf.ctc_compress needs model_conf.ctc_weight > 0: the CTC's labels "
                             "say which projected vectors the LLM reads")
        self.ctc_compress = ctc_compress
        if ctc_draft and ctc_weight == 0:
            raise ValueError("model_conf.ctc_draft needs model_conf.ctc_weight > 0: the draft is the CTC's transcript")
        self.ctc_draft = bool(ctc_draft)
        self.ctc_vocab = (None if ctc_vocab is None else
                          CTCVocabulary(ctc_vocab, llm.pad_token_id, llm.vocab_size))
        self._speller = None
        self.specaug = specaug
        self._nonfinite_in_a_row = 0
        self.hold_steps = check_hold_steps(hold_steps, ctc_weight, llm.has_lora)
        # persistent only when used: checkpoints of models without it keep loading strictly
        self.register_buffer("train_batches", torch.zeros((), dtype=torch.long), persistent=bool(self.hold_steps))

    # ------------------------------------------------------- checkpoints
    def _frozen_prefixes(self) -> List[str]:
        """Submodules whose non-trainable tensors are rebuilt from the config, not saved."""
        prefixes = ["frontend.encoder."]  # the speech encoder is always frozen
        if self.llm.freeze:
            prefixes.append("llm.")
        return prefixes

    def _is_saved(self, key: str, trainable: set, prefixes: List[str]) -> bool:
        return key in trainable or not key.startswith(tuple(prefixes))

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Trainable parameters (+ buffers of trainable parts) only.

        A frozen 9B LLM would make every ESPnet checkpoint 18-36 GB; the frozen
        encoder and LLM are rebuilt from ``config.yaml`` instead.
        """
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        prefixes = self._frozen_prefixes()
        for key in list(full):
            if key.startswith(prefix) and not self._is_saved(key[len(prefix):], trainable, prefixes):
                del full[key]
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a trainable-only checkpoint; with ``strict`` every trainable tensor must be there.

        A checkpoint without ``ctc_blank_bias`` (trained with the offset off) gets the offset 0.
        """
        if self.ctc_blank_bias is not None and "ctc_blank_bias" not in state_dict:
            logging.warning("the checkpoint has no ctc_blank_bias (trained without the CTC's blank offset): "
                            "the offset is set to 0, as it was trained")
            state_dict = {**state_dict, "ctc_blank_bias": torch.zeros(())}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            prefixes = self._frozen_prefixes()
            missing = [k for k in result.missing_keys if self._is_saved(k, trainable, prefixes)]
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"checkpoint does not match the model: missing {missing[:10]}, "
                    f"unexpected {result.unexpected_keys[:10]}"
                )
        return result

    # -------------------------------------------------------------- helpers
    @property
    def projector(self):
        return self.frontend.projector

    def _lang_codes(self, lang_ids: Optional[torch.Tensor], batch: int) -> List[Optional[str]]:
        if lang_ids is None:
            return [None] * batch
        codes = []
        for i in lang_ids.tolist():
            if not 0 <= i < len(self.lang_list):
                raise ValueError(f"language id {i} outside lang_list {self.lang_list}")
            codes.append(self.lang_list[i])
        return codes

    def _lang_ids(self, lang: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if lang is None else lang.view(-1).long()

    def _pieces(self, proj: ProjectorOutput, lang_ids: Optional[torch.Tensor],
                texts: Optional[List[List[int]]] = None,
                drafts: Optional[List[List[int]]] = None) -> List[Prompted]:
        """Per-utterance prompt / speech (/ draft) (/ transcript) embeddings,
        :func:`~espnet_llm_asr.layout.utterance_pieces`."""
        langs = self._lang_codes(lang_ids, proj.embeds.size(0))
        return utterance_pieces(self.llm, proj.embeds, proj.lengths, langs, texts, drafts)

    def _drafts(self, ctc_log_probs: Optional[torch.Tensor], lengths: torch.Tensor) -> Optional[List[List[int]]]:
        """With ``ctc_draft``: per utterance, the LLM's tokens of the CTC's greedy transcript
        (:mod:`espnet_llm_asr.ctc_draft`), from ``ctc_log_probs`` (B, T', K) over ``lengths`` (B,)."""
        if not self.ctc_draft:
            return None
        units = ctc_greedy_units(ctc_log_probs.argmax(-1), lengths, self._ctc_blank_index())
        unit_ids = (self.ctc_vocab.ids.tolist() if self.ctc_vocab is not None
                    else range(ctc_log_probs.size(-1)))
        return draft_token_ids(units, unit_ids, self.llm.tokenizer, max_tokens=int(ctc_log_probs.size(1)))

    # -------------------------------------------------------------- training
    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        lang: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Loss of a batch.

        Args:
            speech: (B, L) waveforms or (B, T, D) dumped encoder features.
            speech_lengths: (B,)
            text: (B, N) LLM token ids, padded with -1.
            text_lengths: (B,)
            lang: (B, 1) language ids (optional).
        Returns:
            loss (scalar), stats, weight (batch size)
        """
        batch = speech.size(0)
        lang_ids = self._lang_ids(lang)
        target_lengths = text_lengths if self.projector.uses_target_lengths else None
        augment = self.specaug if self.training else None
        proj = self.frontend.project(speech, speech_lengths, lang_ids, target_lengths, augment=augment)
        texts = [text[i, : int(text_lengths[i])].tolist() for i in range(batch)]
        batch_index = self._count_batch()
        held_llm, held_lora = self.hold_steps.get("llm", 0), self.hold_steps.get("lora", 0)
        llm_held = batch_index is not None and batch_index <= held_llm
        lora_held = batch_index is not None and held_llm < batch_index <= held_llm + held_lora
        ctc_log_probs = self.ctc_log_probs(proj.embeds, over_vocab=False) if self.ctc_weight > 0 else None
        extra = {}
        if llm_held:
            nan = torch.tensor(float("nan"), device=proj.embeds.device)
            loss_ce, acc = nan, nan
        else:
            llm_proj = self._llm_input(proj, ctc_log_probs)
            loss_ce, acc = self._llm_loss(llm_proj, lang_ids, texts, lora_held,
                                          self._drafts(ctc_log_probs, proj.lengths))
            if self.ctc_compress:
                extra["compress_ratio"] = (llm_proj.lengths.sum() / proj.lengths.sum()).float()
        aux = proj.aux_loss * self.aux_loss_weight
        loss = aux if llm_held else loss_ce + aux
        if self.ctc_weight > 0:
            extra["loss_ctc"] = self.ctc_loss(proj, texts, ctc_log_probs)
            loss = loss + self.ctc_weight * extra["loss_ctc"]
        reported = loss.detach()  # NaN/inf values are left out of ESPnet's epoch averages
        loss, nonfinite = self._guard_nonfinite(loss)

        stats = dict(loss=reported, loss_ce=loss_ce.detach(), aux_loss=aux.detach(), acc=acc.detach(),
                     nonfinite=torch.tensor(float(nonfinite), device=loss.device))
        stats.update({k: v.detach() for k, v in extra.items()})
        if "lora" in self.hold_steps:
            stats["lora_held"] = torch.tensor(float(lora_held), device=loss.device)
        if "llm" in self.hold_steps:
            stats["llm_held"] = torch.tensor(float(llm_held), device=loss.device)
        stats.update(self.routing_stats(proj, text_lengths))
        loss, stats, weight = force_gatherable((loss, stats, batch), loss.device)
        return loss, stats, weight

    def _llm_loss(self, proj: ProjectorOutput, lang_ids: Optional[torch.Tensor], texts: List[List[int]],
                  lora_held: bool, drafts: Optional[List[List[int]]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and token accuracy of the LLM over the transcripts (+ EOS) after the speech
        (and the CTC's ``drafts``)."""
        pieces = self._pieces(proj, lang_ids, texts, drafts)
        batch_in = training_batch(pieces, texts, self.llm.eos_token_id, self.llm.max_aligned_length)
        with self.llm.lora_disabled() if lora_held else contextlib.nullcontext():
            logits = self.llm(batch_in.inputs, batch_in.attention_mask, batch_in.position_ids,
                              logits_to_keep=batch_in.logits_to_keep)
        # the token at position t is predicted from position t-1
        logits, targets = logits[:, :-1].float(), batch_in.targets
        mask = targets != IGNORE_ID
        loss_ce = F.cross_entropy(logits[mask], targets[mask])
        acc = (logits[mask].argmax(-1) == targets[mask]).float().mean()
        return loss_ce, acc

    def _count_batch(self) -> Optional[int]:
        """Count a training batch (when ``hold_steps`` needs the count): its 1-based index, else None."""
        if not self.hold_steps or not self.training:
            return None
        self.train_batches += 1
        return int(self.train_batches)

    def _llm_input(self, proj: ProjectorOutput, ctc_log_probs: Optional[torch.Tensor]) -> ProjectorOutput:
        """The projector output the LLM reads: as it is, or CTC-compressed (``ctc_compress``).

        ``ctc_log_probs``: (B, T', K) the CTC's log-probabilities of ``proj.embeds``.
        """
        if not self.ctc_compress:
            return proj
        labels, blank = ctc_log_probs.argmax(-1), self._ctc_blank_index()
        if self.ctc_compress == "vectors":
            embeds, lengths = ctc_compress(proj.embeds, proj.lengths, labels, blank)
        else:
            log_probs, lengths = ctc_compress(ctc_log_probs, proj.lengths, labels, blank)  # (B, N, K)
            log_probs = log_probs.index_fill(-1, torch.tensor([blank], device=log_probs.device), float("-inf"))
            embeds = log_probs.softmax(-1) @ self._ctc_unit_embeddings().float()  # (B, N, D)
            embeds = embeds * (torch.arange(embeds.size(1), device=embeds.device) < lengths[:, None])[..., None]
        return dataclasses.replace(proj, embeds=embeds, lengths=lengths)

    def _ctc_unit_embeddings(self) -> torch.Tensor:
        """(K, D) the LLM's input embeddings of the CTC's outputs, in their order (the blank's included)."""
        ids = self.ctc_vocab.ids if self.ctc_vocab is not None else torch.arange(self.llm.vocab_size)
        return self.llm.embed(ids.to(self.llm.device))

    def ctc_loss(self, proj: ProjectorOutput, texts: List[List[int]],
                 log_probs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """CTC of the projected speech (B, T', D) read by the LLM's output head against the token ids
        (or, with ``ctc_unit: char``, their spelling).

        Per-token mean over the batch (ESPnet's convention); utterances with
        fewer vectors than the CTC path needs, or (with ``ctc_vocab``) a
        token outside the CTC's vocabulary, contribute zero.  A character
        CTC spells the words apart by the word-boundary piece.
        ``log_probs``: (B, T', K) :meth:`ctc_log_probs` of ``proj.embeds``
        (``over_vocab=False``) when already computed.
        """
        if self.ctc_unit == "char":
            texts = [self._char_speller().spell_ids(ids) for ids in texts]
        keep = [True] * len(texts)
        if self.ctc_vocab is not None:
            texts, keep = self.ctc_vocab.targets(texts)
        if log_probs is None:
            log_probs = self.ctc_log_probs(proj.embeds, over_vocab=False)
        log_probs = log_probs.transpose(0, 1)  # (T', B, K)
        device = log_probs.device
        targets = torch.tensor([t for ids in texts for t in ids], dtype=torch.long, device=device)
        target_lengths = torch.tensor([len(ids) for ids in texts], dtype=torch.long, device=device)
        losses = F.ctc_loss(log_probs, targets, proj.lengths.long(), target_lengths,
                            blank=self._ctc_blank_index(), reduction="none", zero_infinity=True)
        keep = torch.tensor(keep, dtype=losses.dtype, device=device)
        return (losses / target_lengths.clamp(min=1) * keep).sum() / len(texts)

    def _char_speller(self):
        """The character CTC's speller (``ctc_unit: char``): text in single-character pieces, words apart
        by the word boundary."""
        if self._speller is None:
            self._speller = CharSpeller(self.llm.tokenizer, boundary=word_boundary_id(self.llm.tokenizer))
        return self._speller

    def _ctc_blank_index(self) -> int:
        """The blank's place in the CTC's output: the pad id, or its place in ``ctc_vocab``."""
        return self.llm.pad_token_id if self.ctc_vocab is None else self.ctc_vocab.blank_index

    def ctc_log_probs(self, embeds: torch.Tensor, over_vocab: bool = True) -> torch.Tensor:
        """(B, T', D) projected vectors -> (B, T', V) float32 CTC log-probabilities (blank: the pad id).

        With ``ctc_vocab`` (K tokens) the softmax runs over those only;
        ``over_vocab=False`` then returns them as (B, T', K) in the vocabulary's
        order, True spreads them over the LLM's V ids (for joint decoding).
        """
        if self.ctc_vocab is None:
            logits = self.llm.token_logits(embeds).float()
        else:
            logits = self.ctc_vocab.logits(embeds, self.llm.output_head)
        if self.ctc_blank_bias is not None:
            blank = F.one_hot(torch.tensor(self._ctc_blank_index(), device=logits.device), logits.size(-1))
            logits = logits + blank.to(logits.dtype) * self.ctc_blank_bias
        log_probs = logits.log_softmax(-1)
        if self.ctc_vocab is not None and over_vocab:
            log_probs = self.ctc_vocab.expand(log_probs)
        return log_probs

    def _guard_nonfinite(self, loss: torch.Tensor) -> Tuple[torch.Tensor, bool]:
        """Replace a NaN/inf loss by a zero loss with zero gradients (the batch is skipped)."""
        if torch.isfinite(loss):
            self._nonfinite_in_a_row = 0
            return loss, False
        self._nonfinite_in_a_row += 1
        if self._nonfinite_in_a_row >= self.max_nonfinite_batches:
            raise RuntimeError(
                f"{self._nonfinite_in_a_row} batches in a row had a NaN/inf loss: stopping. "
                "The last saved checkpoint is intact; lower the learning rate or check the data "
                "(python -m espnet_llm_asr.bin.validate_data_dir)."
            )
        logging.warning(f"non-finite loss ({loss.item()}): batch skipped "
                        f"({self._nonfinite_in_a_row} in a row, limit {self.max_nonfinite_batches})")
        zero = sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad and p.isfinite().all())
        return zero, True

    @staticmethod
    def routing_stats(proj: ProjectorOutput, text_lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Gate entropy and per-expert usage for MoEs; output/label length ratio for CIF."""
        stats = {}
        if proj.gates is not None:
            g = proj.gates.detach().float()
            stats["gate_entropy"] = -(g * g.clamp_min(1e-12).log()).sum(-1).mean()
            for e, usage in enumerate(g.mean(0)):
                stats[f"expert{e}_usage"] = usage
        if proj.alphas is not None and text_lengths is not None:
            stats["cif_len_ratio"] = (proj.lengths.float() / text_lengths.clamp_min(1).float()).mean()
        return stats

    def collect_feats(self, speech, speech_lengths, text=None, text_lengths=None, **kwargs):
        return {"feats": speech, "feats_lengths": speech_lengths}

    # -------------------------------------------------------------- decoding
    @with_option_keywords
    @torch.no_grad()
    def generate(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        lang: Optional[torch.Tensor] = None,
        options: Optional[DecodingOptions] = None,
        *,
        sample_rate: int = 16000,
        frame_rate: float = 50.0,
        **overrides,
    ) -> Tuple[List[List[int]], List[float], ProjectorOutput]:
        """Batched KV-cached decoding.

        Each utterance gets its own cap on new tokens:
        ``min(max_new_tokens, max(min_new_tokens_cap, ceil(duration * max_tokens_per_second)))``
        (guards against runaway loops); EOS is forced once it is reached.

        Args:
            speech: (B, L) waveforms or (B, T, D) dumped encoder features.
            speech_lengths: (B,).
            lang: (B, 1) language ids or None.
            options: the decoding options (:class:`~espnet_llm_asr.decoding_options.DecodingOptions`;
                None: its defaults); ``overrides``, decoding options by name
                (``num_beams=4``, ``ctc_weight=0.3``, ...), replace some of them.
                Of note: ``cache_implementation`` ``"static"`` (transformers'
                ``StaticCache``) with ``compile_decoding`` and
                ``length_multiple`` give the same hypotheses as the default
                dynamic cache; the repetition penalty is applied to each row's
                generated tokens by our own processor, whatever the row's left
                padding (the same hypotheses batched as alone);
                ``ctc_weight`` > 0 decodes jointly with the CTC this model was
                trained with (:class:`~espnet_llm_asr.ctc_prefix_scoring.CTCPrefixScoring`;
                needs ``model_conf.ctc_weight > 0``),
                ``ctc_pre_beam`` choosing which tokens get its score.
            sample_rate, frame_rate: of waveforms and of dumped features, for
                the durations that ``max_tokens_per_second`` reads.

        Returns:
            token ids per utterance (without EOS), their scores (sum of token
            log-probabilities for greedy, the length-normalised beam score for
            beam search; with ``ctc_weight`` the joint scores,
            ``(1 - ctc_weight) log P_LLM + ctc_weight log psi_CTC``), and the
            projector output (gates, CIF lengths).
        """
        from transformers import LogitsProcessorList

        opts = (options or DecodingOptions()).replace(**overrides)
        cache_kwargs = generation_cache_kwargs(opts.cache_implementation, opts.compile_decoding, speech.device)
        self.check_decoding_ctc(opts.ctc_weight)
        batch = speech.size(0)
        lang_ids = self._lang_ids(lang)
        proj = self.frontend.project(speech, speech_lengths, lang_ids)
        # (B, T', K) over the CTC's own units (the ctc_vocab's, or the LLM's V tokens)
        ctc_log_probs = (self.ctc_log_probs(proj.embeds, over_vocab=False)
                         if self.ctc_compress or self.ctc_draft or opts.ctc_weight > 0 else None)
        llm_proj = self._llm_input(proj, ctc_log_probs)
        drafts = self._drafts(ctc_log_probs, proj.lengths)
        inputs, attention_mask = generation_prefix(self._pieces(llm_proj, lang_ids, drafts=drafts),
                                                   opts.length_multiple)
        max_len = inputs.size(1)

        caps = [opts.max_new_tokens] * batch
        if opts.max_tokens_per_second:
            secs = self._durations(speech, speech_lengths, sample_rate, frame_rate)
            caps = [min(opts.max_new_tokens,
                        max(opts.min_new_tokens_cap, math.ceil(round(s * opts.max_tokens_per_second, 6))))
                    for s in secs]
        num_beams = opts.num_beams
        # with the CTC, greedy's score is the joint score (as beam search's), not renormalised
        greedy_scores = GreedyScores(normalize=opts.ctc_weight == 0) if num_beams == 1 else None
        ctc_scoring = []
        if opts.ctc_weight > 0:
            log_probs = ctc_log_probs.float().cpu().numpy()
            ctc_scoring = [CTCPrefixScoring([log_probs[i, : int(n)] for i, n in enumerate(proj.lengths.tolist())],
                                            num_beams, opts.ctc_weight, self.llm.pad_token_id,
                                            self.llm.eos_token_id, opts.ctc_pre_beam,
                                            unit_ids=None if self.ctc_vocab is None else self.ctc_vocab.ids.tolist(),
                                            speller=self._char_speller() if self.ctc_unit == "char" else None)]
        # our own repetition penalty: transformers' skips, with inputs_embeds, as many generated
        # tokens as a row has left padding, so a batched hypothesis would differ from the one alone
        processors = LogitsProcessorList(
            ctc_scoring
            + ([RepetitionPenalty(opts.repetition_penalty)] if opts.repetition_penalty != 1.0 else [])
            + [PerUtteranceCap(caps, num_beams, self.llm.eos_token_id)]
            + ([greedy_scores] if greedy_scores is not None else []))
        out = self.llm.generate(
            inputs,
            attention_mask,
            # room for the EOS forced after a capped hypothesis, whatever length_multiple adds, so that
            # a capped beam is always scored over its tokens + EOS (the same in any batch and rounding)
            max_new_tokens=round_up(max_len + max(caps) + 1, opts.length_multiple) - max_len,
            num_beams=num_beams,
            do_sample=False,
            no_repeat_ngram_size=opts.no_repeat_ngram_size,
            length_penalty=opts.length_penalty,
            eos_token_id=self.llm.eos_token_id,
            pad_token_id=self.llm.pad_token_id,
            logits_processor=processors,
            return_dict_in_generate=True,
            # beam scores come with the output; greedy ones are gathered step by step by
            # GreedyScores instead of keeping every step's (B, V) scores
            output_scores=num_beams > 1,
            **cache_kwargs,
        )
        sequences = out.sequences
        if num_beams > 1:
            scores = out.sequences_scores.tolist()
        else:
            trans = greedy_scores.finish(sequences)  # (B, steps)
        hyps, hyp_scores = [], []
        for i, ids in enumerate(sequences.tolist()):
            n = len(ids)
            if self.llm.eos_token_id in ids:
                n = ids.index(self.llm.eos_token_id)
            hyps.append(ids[:n])
            if num_beams > 1:
                hyp_scores.append(float(scores[i]))
            else:
                hyp_scores.append(float(trans[i, : min(n + 1, trans.size(1))].sum()))
        return hyps, hyp_scores, proj

    def check_decoding_ctc(self, ctc_weight: float) -> None:
        """A ValueError unless decoding with this ``ctc_weight`` makes sense for this model."""
        check_ctc_weight(ctc_weight)
        if ctc_weight > 0 and self.ctc_weight == 0:
            raise ValueError("decoding ctc_weight > 0 needs a model trained with model_conf.ctc_weight > 0; "
                             "this one was not, so the LLM head does not read its projected vectors as a CTC")

    @staticmethod
    def _durations(speech, speech_lengths, sample_rate, frame_rate) -> List[float]:
        rate = frame_rate if speech.dim() == 3 else sample_rate  # dumped features or waveform
        return [int(n) / rate for n in speech_lengths.tolist()]
