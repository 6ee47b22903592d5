"""ESPnet task for LLM-based ASR (``python -m espnet_llm_asr.bin.llm_asr_train``).

Data names: ``speech`` (wav.scp ``sound`` or dumped ``kaldi_ark`` features),
``text`` (transcripts, tokenized here with the LLM's own tokenizer) and the
optional ``lang`` (utt2lang, mapped to ids through ``--lang_list``).

Example yaml::

    llm: exp/tiny_models/llm
    llm_conf: {dtype: float32, freeze: true}
    frontend: smear_moe
    frontend_conf: {input_dim: 256, hidden_dim: 512, num_experts: 4}
    lang_list: data/lang_list
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from espnet_llm_asr._compat import import_espnet

_abs_task = import_espnet("espnet2.tasks.abs_task")
from espnet2.asr.specaug.abs_specaug import AbsSpecAug  # noqa: E402
from espnet2.asr.specaug.specaug import SpecAug  # noqa: E402
from espnet2.train.class_choices import ClassChoices  # noqa: E402
from espnet2.train.collate_fn import CommonCollateFn  # noqa: E402
from espnet2.utils.nested_dict_action import NestedDictAction  # noqa: E402
from espnet2.utils.types import str2bool, str_or_none  # noqa: E402

from espnet_llm_asr.ctc_vocab import (  # noqa: E402
    char_piece_ids,
    script_char_ids,
    script_token_ids,
    training_text_path,
    transcript_chars,
    transcript_scripts,
    transcript_token_ids,
    word_boundary_id,
)
from espnet_llm_asr.frontend import FRONTEND_CLASSES, ProjectorFrontend  # noqa: E402
from espnet_llm_asr.frozen_models import (MANIFEST, check_frozen_models, frozen_model_sources,  # noqa: E402
                                          write_manifest)
from espnet_llm_asr.llm import CausalLLM, is_lora_name  # noqa: E402
from espnet_llm_asr.model import LLMASRModel  # noqa: E402
from espnet_llm_asr.removed_options import migrate_removed_options  # noqa: E402
from espnet_llm_asr.torch_utils import flush_denormals  # noqa: E402
from espnet_llm_asr.trainer import AtomicCheckpointTrainer  # noqa: E402

frontend_choices = ClassChoices(
    name="frontend",
    classes=FRONTEND_CLASSES,
    type_check=ProjectorFrontend,
    default="smear_moe",
)

#: ``specaug: specaug`` + ``specaug_conf`` (as in ESPnet's ASR task): masks on
#: the (dumped) encoder features, training only; default none.
specaug_choices = ClassChoices(
    name="specaug",
    classes=dict(specaug=SpecAug),
    type_check=AbsSpecAug,
    default=None,
    optional=True,
)


def record_frozen_models(output_dir: str, config: Dict) -> None:
    """``<output_dir>/frozen_models.yaml``: the frozen models' fingerprints
    (:mod:`espnet_llm_asr.frozen_models`); a resumed training checks that its
    models are still the ones it started with."""
    manifest = Path(output_dir) / MANIFEST
    sources = frozen_model_sources(config)
    if manifest.is_file():
        check_frozen_models(manifest, sources)
    else:
        write_manifest(output_dir, sources)


def read_lang_list(path: Optional[str]) -> List[str]:
    """One language code a line; the line index is the language id."""
    if path is None:
        return []
    langs = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(set(langs)) != len(langs):
        raise ValueError(f"lang_list {path}: duplicate language codes {langs}")
    return langs


class LLMASRPreprocessor:
    """Turns one utterance's raw data into arrays.

    - ``text`` (str) -> int64 token ids of the LLM tokenizer (no special tokens);
    - ``lang`` (str, e.g. ``"hi"``) -> int64 ``[id]`` via ``lang_list``;
    - ``speech``: a waveform is checked to be mono; features pass through.
    """

    def __init__(self, tokenizer_path: str, lang_list: List[str], trust_remote_code: bool = False):
        from transformers import AutoTokenizer

        from espnet_llm_asr.llm import check_remote_code

        check_remote_code(tokenizer_path, trust_remote_code, "llm_conf.trust_remote_code")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=trust_remote_code)
        self.lang2id = {lang: i for i, lang in enumerate(lang_list)}

    def __call__(self, uid: str, data: Dict) -> Dict[str, np.ndarray]:
        if "text" in data:
            text = data["text"]
            if not isinstance(text, str):
                raise TypeError(f"utterance {uid}: text must be read as a string ('text' type)")
            ids = self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
            if text.strip() and not ids:
                raise ValueError(f"utterance {uid}: transcript {text!r} gives no LLM tokens")
            data["text"] = np.asarray(ids, dtype=np.int64)
        if "lang" in data:
            lang = data["lang"].strip() if isinstance(data["lang"], str) else data["lang"]
            if isinstance(lang, str):
                if lang not in self.lang2id:
                    raise ValueError(
                        f"utterance {uid}: language {lang!r} not in lang_list {list(self.lang2id)}"
                    )
                data["lang"] = np.asarray([self.lang2id[lang]], dtype=np.int64)
        if "speech" in data:
            speech = data["speech"]
            if speech.ndim == 2 and speech.shape[1] <= 8 and speech.shape[0] > speech.shape[1]:
                raise ValueError(
                    f"utterance {uid}: audio has {speech.shape[1]} channels; the recipe needs mono "
                    "(stage 3 converts audio to 16 kHz mono)"
                )
            data["speech"] = speech.astype(np.float32)
        return data


class LLMASRTask(_abs_task.AbsTask):
    """Frozen speech encoder + projector + frozen LLM, trained by ESPnet's Trainer."""

    num_optimizers: int = 1
    class_choices_list = [frontend_choices, specaug_choices]
    trainer = AtomicCheckpointTrainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Task related")
        required = parser.get_default("required")
        required += ["llm"]
        group.add_argument("--llm", type=str_or_none, default=None,
                           help="Hugging Face causal LM: local dir or hub name (never downloaded)")
        group.add_argument("--llm_conf", action=NestedDictAction, default=dict(),
                           help="kwargs of espnet_llm_asr.llm.CausalLLM (dtype, freeze, lora_conf, "
                                "trust_remote_code, prompt_template, use_chat_template, lang_instruction)")
        group.add_argument("--lang_list", type=str_or_none, default=None,
                           help="file with one language code a line (id = line index)")
        group.add_argument("--model_conf", action=NestedDictAction, default=dict(),
                           help="kwargs of espnet_llm_asr.model.LLMASRModel")
        group.add_argument("--lora_lr_scale", type=float, default=1.0,
                           help="learning rate of the LLM's LoRA adapters relative to optim_conf.lr "
                                "(needs llm_conf.lora_conf); 1.0: one rate for every trainable parameter")
        group.add_argument("--use_preprocessor", type=str2bool, default=True,
                           help="tokenize text with the LLM tokenizer and map languages to ids")
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        """ESPnet's training (or collect-stats) process, with subnormal floats flushed
        (:func:`~espnet_llm_asr.torch_utils.flush_denormals`; each DDP worker process sets its own)."""
        flush_denormals()
        if not getattr(args, "collect_stats", False) and getattr(args, "output_dir", None):
            record_frozen_models(args.output_dir, vars(args))
        super().main_worker(args)

    @classmethod
    def get_parser(cls):
        parser = super().get_parser()
        # tensorboard is no dependency of espnet's (nor ours); training curves
        # are still plotted with matplotlib under <exp>/images/
        parser.set_defaults(use_tensorboard=False)
        return parser

    @classmethod
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable:
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=-1, not_sequence=["lang"])

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool) -> Optional[Callable]:
        if not args.use_preprocessor:
            return None
        return LLMASRPreprocessor(
            args.llm,
            read_lang_list(args.lang_list),
            trust_remote_code=(getattr(args, "llm_conf", None) or {}).get("trust_remote_code", False),
        )

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("speech",) if inference else ("speech", "text")

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("lang",)

    @classmethod
    def build_optimizers(cls, args: argparse.Namespace, model: torch.nn.Module) -> List[torch.optim.Optimizer]:
        """ESPnet's single optimizer; with ``lora_lr_scale != 1`` the LoRA adapters get their own
        parameter group at ``optim_conf.lr * lora_lr_scale`` (the scheduler scales both groups alike)."""
        scale = float(getattr(args, "lora_lr_scale", 1.0))
        if scale == 1.0:
            return super().build_optimizers(args, model)
        if scale < 0:
            raise ValueError(f"lora_lr_scale must be >= 0, got {scale}")
        if args.sharded_ddp or args.exclude_weight_decay:
            raise ValueError("lora_lr_scale cannot be combined with sharded_ddp or exclude_weight_decay")
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        lora = [p for n, p in trainable if is_lora_name(n)]
        if not lora:
            raise ValueError(f"lora_lr_scale={scale} but the model has no trainable LoRA parameters "
                             "(set llm_conf.lora_conf)")
        others = [p for n, p in trainable if not is_lora_name(n)]
        optim_conf = dict(args.optim_conf)
        if "lr" not in optim_conf:
            raise ValueError("lora_lr_scale needs optim_conf.lr")
        optim_class = _abs_task.optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"optim must be one of {list(_abs_task.optim_classes)}: {args.optim}")
        groups = [{"params": others}, {"params": lora, "lr": optim_conf["lr"] * scale}]
        logging.info(f"optimizer: {len(others)} projector tensors at lr {optim_conf['lr']}, "
                     f"{len(lora)} LoRA tensors at lr {optim_conf['lr'] * scale}")
        return [optim_class(groups, **optim_conf)]

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> LLMASRModel:
        if args.llm is None:
            raise ValueError("--llm is required: a Hugging Face causal LM dir or name")
        frontend_name = getattr(args, "frontend", None)
        if frontend_name not in FRONTEND_CLASSES:
            raise ValueError(
                f"frontend: unknown projector {frontend_name!r}; valid: {sorted(FRONTEND_CLASSES)}"
            )
        llm_conf = migrate_removed_options("llm_conf", getattr(args, "llm_conf", None))
        llm = CausalLLM(args.llm, **llm_conf)
        # config.yaml (written after build_model) records the scale the projector is trained with,
        # not "auto": decoding uses it whatever the LLM's library version says then
        args.llm_conf = {**llm_conf, "speech_scale": str(llm.speech_scale)}
        frontend_conf = dict(getattr(args, "frontend_conf", None) or {})
        frontend_conf.setdefault("output_dim", llm.hidden_size)
        if frontend_conf["output_dim"] != llm.hidden_size:
            raise ValueError(
                f"frontend_conf.output_dim={frontend_conf['output_dim']} but the LLM "
                f"{args.llm!r} has hidden size {llm.hidden_size}"
            )
        frontend = FRONTEND_CLASSES[frontend_name](**frontend_conf)
        lang_list = read_lang_list(getattr(args, "lang_list", None))
        if frontend.projector.needs_lang_ids and not lang_list:
            raise ValueError(f"frontend '{frontend_name}' needs language ids: set --lang_list")
        specaug = None
        if getattr(args, "specaug", None) is not None:
            specaug = specaug_choices.get_class(args.specaug)(**(getattr(args, "specaug_conf", None) or {}))
        model_conf = migrate_removed_options("model_conf", getattr(args, "model_conf", None))
        args.model_conf = model_conf
        if model_conf.get("ctc_vocab") in ("train_text", "train_scripts"):
            # config.yaml records the ids themselves: decoding needs no training data
            text_path = training_text_path(getattr(args, "train_data_path_and_name_and_type", None))
            scripts = transcript_scripts(text_path)
            if model_conf.get("ctc_unit", "token") == "char":
                ids = char_piece_ids(llm.tokenizer, transcript_chars(text_path))
                what = f"single-character pieces of the letters of {text_path}"
                if model_conf["ctc_vocab"] == "train_scripts":
                    ids = sorted(set(ids) | set(script_char_ids(llm.tokenizer, scripts)))
                    what = f"single-character pieces of {', '.join(scripts)} (the scripts of {text_path})"
                ids = sorted(set(ids) | {word_boundary_id(llm.tokenizer)})
                what += " and the word boundary"
            else:
                ids = transcript_token_ids(text_path, llm.tokenizer)
                what = f"tokens of {text_path}"
                if model_conf["ctc_vocab"] == "train_scripts":
                    ids = sorted(set(ids) | set(script_token_ids(llm.tokenizer, scripts)))
                    what = f"pieces in {', '.join(scripts)} (the scripts of {text_path}) and its tokens"
            model_conf["ctc_vocab"] = ids
            logging.info(f"model_conf.ctc_vocab: {len(ids)} {what}")
        model = LLMASRModel(frontend, llm, lang_list=lang_list, specaug=specaug, **model_conf)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        logging.info(f"LLM-ASR model: {n_train:,} trainable of {n_all:,} parameters")
        return model
