#!/usr/bin/env bash
# Default recipe: multilingual LLM-ASR on Hindi, Marathi, Tamil and Telugu.
# The embedded default synthesizes the corpus with espeak-ng, builds a tiny
# Whisper-shaped encoder and a tiny causal LM, pretrains them (encoder: CTC;
# LM: the transcripts plus ASR-shaped copy examples), then trains the
# SMEAR-MoE + CIF projector on dumped encoder features into the frozen LM;
# see README.md.  Other projectors: --asr_config conf/train_{mono,smear_moe}.yaml
# or local/compare_projectors.sh.
#   ./run.sh --stage 1 --stop_stage 13
set -euo pipefail
cd "$(dirname "$0")"

./llm_asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test test_unseen_voice" \
    --lang_list data/lang_list \
    --encoder tiny \
    --llm tiny \
    --tiny_config conf/tiny_models.yaml \
    --asr_config conf/train_cif_smear.yaml \
    --inference_config conf/decode.yaml \
    --inference_model valid.acc.ave.pth \
    "$@"
