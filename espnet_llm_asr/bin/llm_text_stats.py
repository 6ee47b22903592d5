"""LLM text statistics (recipe stage 6) and perplexity (stage 8), per language.

    python -m espnet_llm_asr.bin.llm_text_stats stats --llm DIR --text dump/raw/train/text \\
        --utt2lang dump/raw/train/utt2lang --out exp/llm_stats/stats.txt
    python -m espnet_llm_asr.bin.llm_text_stats perplexity --llm DIR --text dump/raw/dev/text \\
        --utt2lang dump/raw/dev/utt2lang --out exp/llm_stats/perplexity_dev.txt

``stats``: utterances, words, LLM tokens, tokens per word and unknown-token
rate per language (how well the LLM's own tokenizer covers the language).
``perplexity``: per-token perplexity of ``BOS + text + EOS`` under the LLM.
"""
from __future__ import annotations

import argparse
import logging
import math
from collections import defaultdict
from typing import Dict, Optional

import torch

from espnet_llm_asr.data_io import read_kaldi_map
from espnet_llm_asr.utils import atomic_write_text


def _by_lang(text: Dict[str, str], utt2lang: Optional[Dict[str, str]]) -> Dict[str, Dict[str, str]]:
    groups: Dict[str, Dict[str, str]] = defaultdict(dict)
    for k, t in text.items():
        groups[utt2lang.get(k, "?") if utt2lang else "all"][k] = t
    return dict(sorted(groups.items()))


def text_stats(llm: str, text: Dict[str, str], utt2lang=None) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llm)
    rows = ["| lang | utts | words | tokens | tokens/word | unk rate |", "|---|---|---|---|---|---|"]
    for lang, group in _by_lang(text, utt2lang).items():
        words = sum(len(t.split()) for t in group.values())
        ids = [i for t in group.values() for i in tok(t, add_special_tokens=False)["input_ids"]]
        unk = sum(i == tok.unk_token_id for i in ids) if tok.unk_token_id is not None else 0
        rows.append(f"| {lang} | {len(group)} | {words} | {len(ids)} | {len(ids) / max(words, 1):.2f} "
                    f"| {unk / max(len(ids), 1):.4f} |")
    return "\n".join(rows) + "\n"


@torch.no_grad()
def perplexity(llm: str, text: Dict[str, str], utt2lang=None, batch_size: int = 16) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llm)
    # float32: a checkpoint's own dtype ("auto", bf16 for Gemma) is what transformers 5 loads by default,
    # and bf16 matmuls crawl on CPUs without native bf16 (Gemma-3-270M's dev perplexity: minutes, not seconds)
    model = AutoModelForCausalLM.from_pretrained(llm, dtype=torch.float32).eval()
    rows = ["| lang | utts | tokens | perplexity |", "|---|---|---|---|"]
    total_nll, total_n = 0.0, 0
    for lang, group in _by_lang(text, utt2lang).items():
        nll, n = 0.0, 0
        seqs = [[tok.bos_token_id] * (tok.bos_token_id is not None)
                + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in group.values()]
        for b in range(0, len(seqs), batch_size):
            batch = seqs[b: b + batch_size]
            width = max(map(len, batch))
            ids = torch.full((len(batch), width), tok.eos_token_id)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for i, s in enumerate(batch):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target, tmask = ids[:, 1:], mask[:, 1:].bool()
            lp = torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
            nll -= lp[tmask].sum().item()
            n += int(tmask.sum())
        rows.append(f"| {lang} | {len(group)} | {n} | {math.exp(nll / max(n, 1)):.3f} |")
        total_nll, total_n = total_nll + nll, total_n + n
    rows.append(f"| all | {len(text)} | {total_n} | {math.exp(total_nll / max(total_n, 1)):.3f} |")
    return "\n".join(rows) + "\n"


def main(cmd=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["stats", "perplexity"])
    p.add_argument("--llm", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--utt2lang", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args(cmd)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    from pathlib import Path

    text = read_kaldi_map(args.text)
    utt2lang = read_kaldi_map(args.utt2lang) if args.utt2lang and Path(args.utt2lang).exists() else None
    fn = text_stats if args.command == "stats" else perplexity
    table = fn(args.llm, text, utt2lang)
    atomic_write_text(args.out, table)
    logging.info(f"{args.command} of {args.text} under {args.llm}:\n{table}")


if __name__ == "__main__":
    main()
