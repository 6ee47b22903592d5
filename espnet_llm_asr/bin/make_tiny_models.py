"""Build the embedded default models: a tiny Whisper encoder, a tokenizer and a tiny causal LM.

    python -m espnet_llm_asr.bin.make_tiny_models --config conf/tiny_models.yaml \\
        --out_dir exp/tiny_models --train_text dump/raw/train/text

writes ``OUT_DIR/whisper`` (HF Whisper checkpoint + feature extractor),
``OUT_DIR/tokenizer`` (sentencepiece wrapped as a HF fast tokenizer, trained
on the transcripts) and ``OUT_DIR/llm`` (HF causal LM + the same tokenizer).
All weights are random: pretrain them with
``python -m espnet_llm_asr.bin.pretrain_tiny_models``.  ``--parts whisper`` or
``--parts tokenizer,llm`` builds only those (the recipe rebuilds only what a
config change touches; ``--print_config --sections ...`` gives the part of the
config a part depends on).

The tokenizer is trained on the transcripts plus the LLM prompt's text
(``llm.DEFAULT_PROMPT`` without its placeholders, one line per 20
transcripts), so the prompt is a few whole-word tokens, as in a real LLM's
tokenizer, not one token per character.

The YAML config has one section per step (``--print_config`` shows the
defaults); options given on the command line override the config::

    seed: 0
    whisper:          {num_mel_bins: 80, d_model: 256, encoder_layers: 4, ...}
    tokenizer:        {model_type: char, vocab_size: null}
    llm:              {arch: llama, hidden_size: 256, num_layers: 4, ...}
    pretrain_encoder: {steps: 2000, batch_size: 16, lr: 1.0e-3, ...}
    pretrain_llm:     {steps: 1000, batch_size: 32, lr: 1.0e-3, ..., then: null}
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"

DEFAULT_CONFIG: Dict = {
    "seed": 0,
    "whisper": {  # kwargs of tiny_models.build_tiny_whisper
        "num_mel_bins": 80, "d_model": 256, "encoder_layers": 4, "encoder_attention_heads": 4,
        "encoder_ffn_dim": 1024, "max_source_positions": 1500,
    },
    "tokenizer": {"model_type": "char", "vocab_size": None},  # kwargs of tiny_models.train_tokenizer
    "llm": {  # kwargs of tiny_models.build_tiny_llm
        "arch": "llama", "hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024,
    },
    "pretrain_encoder": {  # tiny_models.pretrain_whisper_encoder_ctc (+ max_utts)
        "steps": 2000, "batch_size": 16, "lr": 1.0e-3, "warmup": None, "log_every": 50,
        "device": "auto", "max_utts": None, "speed_perturb": None,
        # tiny_models.mel_augment.MelAugment keys, or None (off)
        "spec_augment": None,
        # batches of similar length from sorted pools of this many batches, or None (random batches)
        "length_pool": None,
    },
    "pretrain_llm": {  # tiny_models.pretrain_causal_lm
        "steps": 1000, "batch_size": 32, "lr": 1.0e-3, "warmup": None, "log_every": 50, "device": "auto",
        "copy_fraction": 0.0, "aligned_fraction": 0.0, "copy_text": "transcripts", "copy_slot_loss": True,
        "length_pool": None,  # as pretrain_encoder's (by token count); slows the LM's learning to read
        # tiny_models.copy_examples.AlignedSlotConfig
        "aligned_slot": {"positions_per_char": [0.7, 1.6], "max_repeat": 3, "edge_fill": 3, "noise": 0.05,
                         "unit": "token"},
        # a second pretraining phase after the first, on the same text, from its weights with a
        # schedule of its own: keys of this section that change (e.g. {steps: 1500, aligned_fraction: 0.6})
        "then": None,
    },
}

BUILD_SECTIONS = ("whisper", "tokenizer", "llm")

#: keys added after recipes were first built, with the value that keeps the
#: earlier training: ``--sections`` (the recipe's stage signatures) leaves them
#: out at that value, so that a model dir built before they existed stays up to date
LATER_KEYS_OFF = {("pretrain_encoder", "length_pool"): None, ("pretrain_llm", "length_pool"): None}


def load_config(path: Optional[str]) -> Dict:
    """Defaults updated with the YAML at ``path``; unknown sections/keys are errors naming them."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if not path:
        return config
    user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(user, dict):
        raise ValueError(f"{path}: the tiny-model config must be a mapping, got {type(user).__name__}")
    for key, value in user.items():
        if key not in config:
            raise KeyError(f"{path}: unknown key {key!r}; known: {sorted(config)}")
        if isinstance(config[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{path}: {key!r} must be a mapping, got {value!r}")
            unknown = sorted(set(value) - set(config[key]))
            if unknown:
                raise KeyError(f"{path}: unknown key(s) {unknown} in section {key!r}; known: {sorted(config[key])}")
            config[key].update(value)
            then = config[key].get("then")
            if then is not None:
                if not isinstance(then, dict):
                    raise ValueError(f"{path}: {key}.then must be a mapping of {key} keys, got {then!r}")
                unknown = sorted(set(then) - set(config[key]) | ({"then"} & set(then)))
                if unknown:
                    raise KeyError(f"{path}: unknown key(s) {unknown} in {key}.then; known: "
                                   f"{sorted(set(config[key]) - {'then'})}")
        else:
            config[key] = value
    return config


def override(config: Dict, args: argparse.Namespace, sections) -> Dict:
    """Command-line options (those not None) replace the same keys of ``sections``."""
    for section in sections:
        for key in config[section]:
            value = getattr(args, key, None)
            if value is not None:
                config[section][key] = value
    if getattr(args, "seed", None) is not None:
        config["seed"] = args.seed
    return config


def read_text_lines(path: str, text_format: str) -> List[str]:
    """Transcripts of a Kaldi ``text`` file (``uttid words...``) or the lines of a plain file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if text_format == "plain":
        return [ln for ln in lines if ln.strip()]
    if text_format != "kaldi":
        raise ValueError(f"--text_format must be kaldi or plain, got {text_format!r}")
    out = []
    for ln in lines:
        parts = ln.split(maxsplit=1)
        if len(parts) == 2 and parts[1].strip():
            out.append(parts[1].strip())
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config with sections whisper/tokenizer/llm (see --print_config)")
    p.add_argument("--print_config", action="store_true", help="print the effective config as YAML and exit")
    p.add_argument("--sections", help="with --print_config: only these comma-separated sections")
    p.add_argument("--parts", default=",".join(BUILD_SECTIONS),
                   help="comma-separated parts to build: whisper, tokenizer, llm (llm needs the tokenizer)")
    p.add_argument("--out_dir", help="output dir; gets whisper/, tokenizer/ and llm/")
    p.add_argument("--train_text", help="transcripts to train the tokenizer on")
    p.add_argument("--text_format", default="kaldi", choices=["kaldi", "plain"],
                   help="kaldi: 'uttid words...' lines (a data dir's text); plain: one sentence a line")
    p.add_argument("--extra_text", action="append", default=[],
                   help="plain text file with more tokenizer training lines (repeatable)")
    p.add_argument("--seed", type=int, help="random seed of all three models")
    g = p.add_argument_group("whisper (tiny encoder)")
    g.add_argument("--num_mel_bins", type=int, help="log-mel bins (80, or 128 as large-v3)")
    g.add_argument("--d_model", type=int, help="encoder width = feature size D")
    g.add_argument("--encoder_layers", type=int, help="transformer layers")
    g.add_argument("--encoder_attention_heads", type=int, help="attention heads")
    g.add_argument("--encoder_ffn_dim", type=int, help="feed-forward width")
    g.add_argument("--max_source_positions", type=int,
                   help="output frames per window (1500 = 30 s); window = this / 50 seconds")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--model_type", choices=["char", "unigram", "bpe"], help="sentencepiece model type")
    g.add_argument("--vocab_size", type=int, help="at most this many tokens (default: all chars for char, 500)")
    g = p.add_argument_group("llm (tiny causal LM)")
    g.add_argument("--arch", choices=["llama", "qwen2"], help="LM architecture")
    g.add_argument("--hidden_size", type=int, help="LM hidden size")
    g.add_argument("--num_layers", type=int, help="LM layers")
    g.add_argument("--num_heads", type=int, help="LM attention heads")
    g.add_argument("--intermediate_size", type=int, help="LM MLP width")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config = override(load_config(args.config), args, BUILD_SECTIONS)
    if args.print_config:
        if args.sections:
            wanted = args.sections.split(",")
            unknown = sorted(set(wanted) - set(config))
            if unknown:
                raise SystemExit(f"make_tiny_models: --sections: unknown {unknown}; known: {sorted(config)}")
            config = {k: {key: v for key, v in config[k].items()
                          if (k, key) not in LATER_KEYS_OFF or v != LATER_KEYS_OFF[(k, key)]}
                      if isinstance(config[k], dict) else config[k] for k in wanted}
        yaml.safe_dump(config, sys.stdout, sort_keys=False, allow_unicode=True)
        return
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(BUILD_SECTIONS))
    if unknown or not parts:
        raise SystemExit(f"make_tiny_models: --parts: unknown {unknown or parts}; known: {list(BUILD_SECTIONS)}")
    if not args.out_dir or not args.train_text:
        raise SystemExit("make_tiny_models: --out_dir and --train_text are required")

    from espnet_llm_asr import tiny_models

    lines = read_text_lines(args.train_text, args.text_format)
    for extra in args.extra_text:
        lines += read_text_lines(extra, "plain")
    if not lines:
        raise SystemExit(f"make_tiny_models: no transcripts in {args.train_text} ({args.text_format} format)")
    out = Path(args.out_dir)
    seed = config["seed"]
    logging.info("config: %s", config)
    if "whisper" in parts:
        tiny_models.build_tiny_whisper(out / "whisper", seed=seed, **config["whisper"])
    if "tokenizer" in parts:
        prompt = tiny_models.prompt_text_lines() * max(1, len(lines) // 20)
        tiny_models.train_tokenizer(lines + prompt, out / "tokenizer", **config["tokenizer"])
    if "llm" in parts:
        tiny_models.build_tiny_llm(out / "llm", out / "tokenizer", seed=seed, **config["llm"])
    logging.info("tiny models (%s) written to %s from %d lines", ", ".join(parts), out, len(lines))


if __name__ == "__main__":
    main()
