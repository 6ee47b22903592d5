"""The papers' configurations (conf/paper/*.yaml, conf/decode_paper.yaml) are checked
against the task's parser and the classes they configure WITHOUT building the 7-9B
models, so a typo fails here and not after hours on a GPU machine."""
from __future__ import annotations

import inspect
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2" / "indic" / "asr1"
PAPER = sorted((RECIPE / "conf" / "paper").glob("train_*.yaml"))
WHISPER_LARGE_DIM, LLM_DIM = 1280, 3584          # the papers: Whisper-large-v3; Gemma-2-9B / Qwen2.5-7B
PARAMS = {"smear_moe": 52_983_300, "mono": 18_160_384}   # the SMEAR-MoE paper's projector sizes


def _keys(fn, skip=("self",)):
    """Named parameters of ``fn`` (``**kwargs`` excluded)."""
    params = inspect.signature(fn).parameters
    return {n for n, p in params.items() if n not in skip and p.kind is not p.VAR_KEYWORD}


def test_paper_configs_exist():
    names = {p.name for p in PAPER}
    assert {"train_smear_moe_gemma2_9b.yaml", "train_mono_gemma2_9b.yaml", "train_moe_cif_qwen2_7b.yaml"} <= names


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_train_config(path, tmp_path):
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    from espnet_llm_asr.frontend import FRONTEND_CLASSES, ProjectorFrontend
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel
    from espnet_llm_asr.projectors.build import build_projector, projector_conf_keys
    from espnet_llm_asr.task import LLMASRTask

    conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    # 1. the task's own parser: unknown top-level keys and wrong types are errors there
    args = LLMASRTask.get_parser().parse_args(
        ["--config", str(path), "--llm", "google/gemma-2-9b", "--output_dir", str(tmp_path)])
    assert args.frontend == conf["frontend"] and args.frontend in FRONTEND_CLASSES

    # 2. nested confs against the signatures of what they configure
    frontend_keys = projector_conf_keys(args.frontend).keys() | (_keys(ProjectorFrontend.__init__) - {"output_dim"})
    assert set(args.frontend_conf) <= frontend_keys, set(args.frontend_conf) - frontend_keys
    assert "output_dim" not in args.frontend_conf          # filled from the LLM by the task
    assert set(args.llm_conf) <= _keys(CausalLLM.__init__), set(args.llm_conf) - _keys(CausalLLM.__init__)
    model_keys = _keys(LLMASRModel.__init__) - {"frontend", "llm", "lang_list"}
    assert set(args.model_conf) <= model_keys, set(args.model_conf) - model_keys
    assert args.llm_conf.get("freeze", True) is True       # the papers keep the LLM frozen
    assert args.llm_conf.get("dtype", "float32") in ("float32", "bfloat16", "float16")

    # 3. optimizer and schedule, built on a dummy parameter
    assert args.optim in optim_classes and args.scheduler in scheduler_classes
    w = torch.nn.Parameter(torch.zeros(1))
    opt = optim_classes[args.optim]([w], **args.optim_conf)
    sched = scheduler_classes[args.scheduler](opt, **args.scheduler_conf)
    if "lora" not in path.stem:                            # SMEAR: warm-up 10k steps, linear decay to 200k
        assert args.optim == "adamw" and args.optim_conf == {"lr": 1e-3, "weight_decay": 0.0}
        lrs = sched.get_lr
        sched.last_epoch = 10_000 - 1
        assert lrs()[0] == pytest.approx(1e-3)
        sched.last_epoch = 105_000 - 1
        assert lrs()[0] == pytest.approx(5e-4)
        assert args.num_iters_per_epoch * args.max_epoch == 200_000
        assert args.batch_size * args.accum_grad == 56        # 7 utterances x 8 GPUs
    else:
        assert args.llm_conf["lora_conf"]["r"] == 16

    # 4. the projector at the papers' sizes, on the meta device (no memory): paper parameter counts
    with torch.device("meta"):
        proj = build_projector(args.frontend, WHISPER_LARGE_DIM, LLM_DIM,
                               **{k: v for k, v in args.frontend_conf.items()
                                  if k not in ("encoder", "encoder_conf", "input_dim")})
    n = sum(p.numel() for p in proj.parameters())
    if args.frontend in PARAMS:
        assert n == PARAMS[args.frontend], (args.frontend, n)


def test_paper_decode_config_matches_reference():
    from espnet_llm_asr.bin.llm_asr_inference import get_parser

    conf = yaml.safe_load((RECIPE / "conf" / "decode_paper.yaml").read_text(encoding="utf-8"))
    dests = {a.dest for a in get_parser()._actions}
    assert set(conf) <= dests, set(conf) - dests
    # the SMEAR-MoE paper's decoding (the diverse-beam groups are not available, see the yaml)
    assert conf == {"num_beams": 4, "max_new_tokens": 200, "repetition_penalty": 1.3, "length_penalty": 0.8}


def test_run_paper_sh_names_existing_configs():
    script = (RECIPE / "run_paper.sh").read_text(encoding="utf-8")
    assert subprocess.run(["bash", "-n", str(RECIPE / "run_paper.sh")]).returncode == 0
    for token in script.split():
        if token.startswith("conf/") and token.endswith(".yaml"):
            assert (RECIPE / token.rstrip(";")).is_file(), token


# the default (conf/real/), the configs the README uses (conf/), the test suite's fast run (conf/fast/),
# the real checkpoints on the 40-word corpus (conf/real_small/), the variants tried (conf/tuning/)
RECIPE_TRAIN = (sorted((RECIPE / "conf" / "real").glob("train_*.yaml"))
                + sorted((RECIPE / "conf").glob("train_*.yaml"))
                + sorted((RECIPE / "conf" / "fast").glob("train_*.yaml"))
                + sorted((RECIPE / "conf" / "real_small").glob("train_*.yaml"))
                + sorted((RECIPE / "conf" / "tuning").glob("train_*.yaml")))
COMPARED = ["mono", "multi", "dense", "hard_moe", "smear_moe", "cif", "cif_smear_frozen"]


@pytest.mark.parametrize("path", RECIPE_TRAIN, ids=[str(p.relative_to(RECIPE / "conf")) for p in RECIPE_TRAIN])
def test_recipe_train_configs_parse(path, tmp_path):
    """Every train_*.yaml of the default recipe (conf/real/, conf/, conf/fast/, conf/real_small/, conf/tuning/)
    parses with the task's parser and its nested confs name only keys of what they configure
    (typos fail here, not in stage 11)."""
    from espnet_llm_asr.frontend import FRONTEND_CLASSES, ProjectorFrontend
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel
    from espnet_llm_asr.projectors.build import projector_conf_keys
    from espnet_llm_asr.removed_options import migrate_removed_options
    from espnet_llm_asr.task import LLMASRTask

    args = LLMASRTask.get_parser().parse_args(
        ["--config", str(path), "--llm", "exp/tiny_models/llm", "--output_dir", str(tmp_path)])
    assert args.frontend in FRONTEND_CLASSES
    frontend_keys = projector_conf_keys(args.frontend).keys() | (_keys(ProjectorFrontend.__init__) - {"output_dim"})
    assert set(args.frontend_conf) <= frontend_keys, set(args.frontend_conf) - frontend_keys
    llm_conf = migrate_removed_options("llm_conf", args.llm_conf, warn=False)  # as the task reads it
    assert set(llm_conf) <= _keys(CausalLLM.__init__), set(llm_conf) - _keys(CausalLLM.__init__)
    model_conf = migrate_removed_options("model_conf", args.model_conf, warn=False)
    model_keys = _keys(LLMASRModel.__init__) - {"frontend", "llm", "lang_list"}
    assert set(model_conf) <= model_keys, set(model_conf) - model_keys


@pytest.mark.parametrize("path", RECIPE_TRAIN, ids=[str(p.relative_to(RECIPE / "conf")) for p in RECIPE_TRAIN])
def test_recipe_train_configs_set_no_removed_option(path):
    """The recipe's configs use the current options, not the removed ones (which only older
    experiments' config.yaml files should still hold)."""
    from espnet_llm_asr.removed_options import removed_keys

    conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section in ("llm_conf", "model_conf"):
        assert not removed_keys(section) & set(conf.get(section) or {}), section


def test_compared_projectors_share_everything_but_the_projector():
    """The projector comparison's configs differ only in frontend / frontend_conf (same LM, schedule)."""
    confs = {n: yaml.safe_load((RECIPE / "conf" / f"train_{n}.yaml").read_text(encoding="utf-8")) for n in COMPARED}
    rest = {n: {k: v for k, v in c.items() if k not in ("frontend", "frontend_conf")} for n, c in confs.items()}
    for name in COMPARED[1:]:
        assert rest[name] == rest["mono"], name
    assert {c["frontend"] for c in confs.values()} == {"mono", "multi", "dense", "hard_moe", "smear_moe", "cif",
                                                        "cif_smear"}


def test_real_small_compared_projectors_share_everything_but_the_projector():
    """conf/real_small/train_frozen_{mono,smear_moe,cif_smear}.yaml: the real checkpoints' comparison, one
    schedule, the LLM fully frozen (no LoRA)."""
    names = ["mono", "smear_moe", "cif_smear"]
    confs = {n: yaml.safe_load((RECIPE / "conf" / "real_small" / f"train_frozen_{n}.yaml").read_text(encoding="utf-8"))
             for n in names}
    rest = {n: {k: v for k, v in c.items() if k not in ("frontend", "frontend_conf")} for n, c in confs.items()}
    for name in names[1:]:
        assert rest[name] == rest["mono"], name
    assert [confs[n]["frontend"] for n in names] == names
    assert confs["mono"]["llm_conf"]["freeze"] is True and "lora_conf" not in confs["mono"]["llm_conf"]
    for c in confs.values():
        assert c["frontend_conf"]["encoder_conf"] == {"pad_to_30s": False}
