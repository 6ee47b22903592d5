#!/usr/bin/env bash
# Default recipe: multilingual LLM-ASR on Hindi, Marathi, Tamil and Telugu with
# real checkpoints: frozen Whisper-base -> SMEAR-MoE projector -> Gemma-3-270M
# (frozen, LoRA adapters), trained on real sentences (LibreOffice's translated
# messages, conf/corpus_sentences.yaml) spoken by espeak-ng; see README.md.
#   bash ../../../tools/install.sh && bash ../../../tools/install_models.sh
#   ./run.sh --stage 1 --stop_stage 13
# The fast toy (tiny Whisper-shaped encoder and tiny LM built in stage 5, the
# 40-word corpus of conf/corpus.yaml):
#   ./run.sh --encoder tiny --llm tiny --local_data_opts "--config conf/corpus.yaml" \
#       --asr_config conf/train_cif_smear.yaml --inference_config conf/decode.yaml
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh  # MAIN_ROOT

./llm_asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test test_unseen_voice" \
    --lang_list data/lang_list \
    --local_data_opts "--config conf/corpus_sentences.yaml" \
    --encoder "${MAIN_ROOT}/tools/models/whisper-base" \
    --llm "${MAIN_ROOT}/tools/models/gemma-3-270m" \
    --tiny_config conf/tiny_models.yaml \
    --asr_config conf/real/train_smear_moe.yaml \
    --inference_config conf/real/decode.yaml \
    --inference_model valid.acc.ave.pth \
    "$@"
