"""Training-step time of a real LLM, two ways side by side.

In one run, alternating (so that machine load hits both alike), with the
same projector, batch and loss:

- ``--compare layout`` (default): the transcript-aligned batch with
  ``logits_to_keep`` (:mod:`espnet_llm_asr.layout`) vs the right-padded batch
  with every position's logits (what training did before); optionally with
  the auxiliary CTC through the LLM head (``--ctc_weight``);
- ``--compare ctc_vocab``: the auxiliary CTC over the LLM's whole vocabulary
  vs over ``--ctc_vocab_size`` tokens (``model_conf.ctc_vocab``,
  :mod:`espnet_llm_asr.ctc_vocab`; the transcripts' tokens among them);
- ``--compare dtype``: the LLM in bfloat16 vs float32 (``llm_conf.dtype``),
  two models with the same projector weights, the aligned batch.

The features are random (the step's cost does not depend on their values),
of the given encoder's width and frame rate::

    python -m espnet_llm_asr.benchmark.train_step --llm tools/models/gemma-3-270m \\
        --encoder_dim 512 --batch_size 16 --seconds 3 --tokens 15 --repeats 5
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable, Dict, Tuple
from unittest import mock

import torch


def build(args, ctc_vocab=None, dtype=None) -> "torch.nn.Module":
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel

    torch.manual_seed(0)  # the same projector weights in every model built
    llm = CausalLLM(args.llm, dtype=dtype or args.dtype)
    conf = {"num_experts": 4} if args.projector in ("smear_moe", "multi", "dense", "hard_moe") else {}
    frontend = FRONTEND_CLASSES[args.projector](output_dim=llm.hidden_size, input_dim=args.encoder_dim,
                                                hidden_dim=args.hidden_dim, **conf)
    return LLMASRModel(frontend, llm, lang_list=["hi", "mr", "ta", "te"], ctc_weight=args.ctc_weight,
                       ctc_vocab=ctc_vocab).train()


Way = Tuple["torch.nn.Module", Callable]


def _ways(model, compare: str, other_dtype_model=None) -> Dict[str, Way]:
    """name -> (model, context manager that sets it up that way)."""
    from espnet_llm_asr.llm import CausalLLM

    if compare == "layout":  # max_aligned_length 0: no aligned batch fits -> right padded, all logits
        return {"aligned": (model, lambda: mock.patch.object(CausalLLM, "max_aligned_length", None)),
                "right_padded": (model, lambda: mock.patch.object(CausalLLM, "max_aligned_length", 0))}
    if compare == "dtype":
        return {str(m.llm.dtype).replace("torch.", ""): (m, contextlib.nullcontext)
                for m in (model, other_dtype_model)}
    return {"ctc_subset": (model, contextlib.nullcontext),
            "ctc_full": (model, lambda: mock.patch.object(model, "ctc_vocab", None))}


def time_steps(model, batch, repeats: int, compare: str = "layout", other_dtype_model=None) -> Dict[str, list]:
    """{way: [...]} seconds of forward + backward, alternating (:func:`_ways`).

    ``other_dtype_model``: with ``compare="dtype"``, the model in the second dtype.
    """
    ways = _ways(model, compare, other_dtype_model)
    times = {name: [] for name in ways}
    for r in range(repeats + 1):  # the first round warms up
        for name in times:
            model, setup = ways[name]
            with setup():
                start = time.perf_counter()
                loss, _, _ = model(*batch)
                loss.backward()
                elapsed = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            if r:
                times[name].append(elapsed)
            print(f"  round {r} {name}: {elapsed:.2f} s, loss {loss.item():.4f}{'' if r else ' (warm-up)'}", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", required=True)
    parser.add_argument("--dtype", default="auto",
                        help="llm_conf.dtype: float32 | bfloat16 | auto (bf16 where the CPU has bf16 units); "
                             "--compare dtype: the first of the two (the other one is its counterpart)")
    parser.add_argument("--projector", default="smear_moe")
    parser.add_argument("--hidden_dim", type=int, default=2048)
    parser.add_argument("--encoder_dim", type=int, default=512)
    parser.add_argument("--frame_rate", type=float, default=50.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tokens", type=int, default=15, help="transcript tokens per utterance")
    parser.add_argument("--ctc_weight", type=float, default=0.0)
    parser.add_argument("--compare", choices=("layout", "ctc_vocab", "dtype"), default="layout")
    parser.add_argument("--ctc_vocab_size", type=int, default=400,
                        help="--compare ctc_vocab: tokens of the restricted CTC")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from espnet_llm_asr.benchmark.common import load_average, machine_info
    from espnet_llm_asr.torch_utils import flush_denormals

    flush_denormals()  # as training does (LLMASRTask.main_worker)
    if args.compare == "ctc_vocab" and args.ctc_weight <= 0:
        parser.error("--compare ctc_vocab needs --ctc_weight > 0")
    torch.manual_seed(0)
    info = machine_info()
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(args.llm))
    b, frames = args.batch_size, int(args.seconds * args.frame_rate)
    lengths = torch.linspace(frames // 2, frames, b).long()  # a spread of lengths, as a real batch
    text_lengths = torch.linspace(max(1, args.tokens // 2), args.tokens, b).long()
    text = torch.randint(min(1000, vocab // 2), vocab, (b, args.tokens))  # past the special tokens
    for i, n in enumerate(text_lengths.tolist()):
        text[i, n:] = -1
    ctc_vocab = None
    if args.compare == "ctc_vocab":
        ctc_vocab = sorted(set(text[text >= 0].tolist()))
        extra = torch.randperm(vocab)[: max(0, args.ctc_vocab_size - len(ctc_vocab))].tolist()
        ctc_vocab = sorted(set(ctc_vocab) | set(extra))
    model = build(args, ctc_vocab)
    other = None
    if args.compare == "dtype":
        other = build(args, ctc_vocab, "float32" if model.llm.dtype == torch.bfloat16 else "bfloat16")
    batch = (torch.randn(b, frames, args.encoder_dim), lengths, text, text_lengths, torch.randint(0, 4, (b, 1)))
    times = time_steps(model, batch, args.repeats, args.compare, other)
    med = {k: statistics.median(v) for k, v in times.items()}
    ctc_note = f" over {len(ctc_vocab)} tokens vs all {vocab}" if ctc_vocab else ""
    print(f"CPU: {info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads; torch {info['torch']}, "
          f"transformers {info.get('transformers')}; bf16: {info['bf16']}; load average at start {info['loadavg_start']}, "
          f"at end {load_average()}")
    print(f"{args.llm} ({model.llm.dtype if args.compare != 'dtype' else 'two dtypes'}), {args.projector}, batch {b} x {args.seconds} s, {args.tokens} tokens, "
          f"ctc_weight {args.ctc_weight}{ctc_note}; median of {args.repeats} forward+backward:")
    for k, v in med.items():
        print(f"  {k:13s} {v:.3f} s   ({', '.join(f'{x:.2f}' for x in times[k])})")
    slow, fast = list(med)[1], list(med)[0]
    print(f"  ratio {slow} / {fast}: {med[slow] / med[fast]:.2f}")


if __name__ == "__main__":
    main()
