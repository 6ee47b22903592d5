#!/usr/bin/env python3
"""The LLM's ceiling on a data set: its transcripts' own token embeddings put in the speech slot.

A projector can at best hand the frozen LLM what the transcript's embeddings
would: this decodes, with the recipe's prompt, ``[P | emb(y) | S]`` (``emb``:
the LLM's own input embedding of token ids, Gemma's sqrt(hidden) scale
included; the slot gets ``emb(y) / c``, ``c`` the speech embedding scale that
the layout multiplies the slot by, so it holds exactly the embeddings of the
transcript's tokens) and scores the LLM's greedy output against the transcript
(jiwer WER).  No training.

    python local/llm_oracle_read.py --llm ../../../tools/models/gemma-3-270m --data data/dev
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", required=True)
    parser.add_argument("--data", required=True, help="Kaldi data dir with text (and utt2lang)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lang_instruction", default=None)
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import jiwer

    from espnet_llm_asr.layout import generation_prefix, utterance_pieces
    from espnet_llm_asr.llm import CausalLLM

    llm = CausalLLM(args.llm, dtype=args.dtype, lang_instruction=args.lang_instruction)
    data = Path(args.data)
    texts = dict(line.rstrip("\n").split(" ", 1) for line in (data / "text").open(encoding="utf-8"))
    langs = {}
    if (data / "utt2lang").is_file():
        langs = dict(line.split() for line in (data / "utt2lang").open(encoding="utf-8"))
    utts = sorted(texts)[: args.limit or None]
    refs, hyps = [], []
    start = time.time()
    for b in range(0, len(utts), args.batch_size):
        batch = utts[b: b + args.batch_size]
        ids = [llm.tokenize(texts[u]) for u in batch]
        width = max(map(len, ids))
        slot = torch.zeros(len(batch), width, llm.hidden_size)
        for i, row in enumerate(ids):
            with torch.no_grad():
                slot[i, : len(row)] = llm.embed(torch.tensor(row)).float() / llm.speech_scale.value
        pieces = utterance_pieces(llm, slot, torch.tensor(list(map(len, ids))), [langs.get(u) for u in batch])
        inputs, mask = generation_prefix(pieces)
        with torch.no_grad():
            out = llm.generate(inputs, mask, max_new_tokens=width + 8,
                               do_sample=False, eos_token_id=llm.eos_token_id, pad_token_id=llm.pad_token_id)
        for u, seq in zip(batch, out.tolist()):
            n = seq.index(llm.eos_token_id) if llm.eos_token_id in seq else len(seq)
            refs.append(texts[u])
            hyps.append(llm.decode(seq[:n]))
    for r, h in list(zip(refs, hyps))[:5]:
        print(f"REF: {r}\nHYP: {h}")
    print(f"oracle read of {len(refs)} utterances of {data} by {args.llm}: WER {100 * jiwer.wer(refs, hyps):.1f} %, "
          f"exact {sum(r == h for r, h in zip(refs, hyps)) / len(refs):.3f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
