"""The recipe scripts end to end: a new Bengali recipe made by setup.sh runs stages 1-13
with the fast configuration, its RESULTS.md reads sclite's numbers, and a re-run does nothing."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--encoder", "tiny", "--llm", "tiny", "--local_data_opts", "--config conf/corpus.yaml --size fast --nj 2",
        "--tiny_config", "conf/fast/tiny_models.yaml", "--asr_config", "conf/fast/train_smear_moe.yaml",
        "--inference_config", "conf/fast/decode.yaml", "--test_sets", "test test_unseen_voice", "--nj", "2", "--inference_nj", "2"]


def _run(recipe: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _bengali_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "my corpora" / "egs2" / "bengali" / "asr1"  # a space: the scripts must quote paths
    proc = subprocess.run([str(ROOT / "egs2" / "TEMPLATE" / "llm_asr1" / "setup.sh"), str(recipe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (recipe / "llm_asr.sh").is_symlink() and (recipe / "utils").is_symlink()
    # adding a language is configuration: the corpus config lists Bengali only
    conf_path = recipe / "conf" / "corpus.yaml"
    conf = yaml.safe_load(conf_path.read_text(encoding="utf-8"))
    conf["languages"] = [{"code": "bn", "espeak_voice": "bn", "script": "BENGALI", "word_list": "words/bn.txt"}]
    conf_path.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    return recipe


@pytest.mark.slow
def test_bengali_recipe_stages_1_to_13(tmp_path):
    from espnet_llm_asr.scoring import read_sclite_result

    recipe = _bengali_recipe(tmp_path)
    _run(recipe, "--stage", "1", "--stop_stage", "13", *FAST)

    assert (recipe / "data" / "lang_list").read_text().split() == ["bn"]
    exp = recipe / "exp" / "asr_train_smear_moe"  # the experiment and decode tag take the configs' basenames
    decode = exp / "decode_decode_valid.acc.ave"
    results = (recipe / "RESULTS.md").read_text(encoding="utf-8")
    for test_set in ("test", "test_unseen_voice"):
        for unit in ("wer", "cer"):
            result = decode / test_set / f"score_{unit}" / "result.txt"
            assert result.exists(), result
            score = read_sclite_result(result)
            # RESULTS.md copies the numbers of sclite's Sum/Avg line
            assert f"|{score.snt}|{score.wrd}|" in results.replace(" ", ""), (unit, test_set)
        hyp = (decode / test_set / "text").read_text(encoding="utf-8").splitlines()
        ref = (recipe / "dump" / "raw" / test_set / "text").read_text(encoding="utf-8").splitlines()
        assert [h.split()[0] for h in hyp] == [r.split()[0] for r in ref]
    assert (decode / "test" / "gates").exists()

    # re-running finished stages does nothing
    watched = [exp / "valid.acc.ave.pth", decode / "test" / "text", recipe / "dump" / "feats" / "train" / "feats.scp",
               recipe / "exp" / "tiny_models" / "llm" / "config.json"]
    before = [p.stat().st_mtime_ns for p in watched]
    proc = _run(recipe, "--stage", "2", "--stop_stage", "12", *FAST)
    assert [p.stat().st_mtime_ns for p in watched] == before
    skipped = set(re.findall(r"Stage (\d+): .*(?:skipped)", proc.stdout))
    assert {"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} <= skipped, proc.stdout[-3000:]

    # --stage 12 --stop_stage 13 --redo true redoes only decoding and scoring
    proc = _run(recipe, "--stage", "12", "--stop_stage", "13", "--redo", "true", *FAST)
    assert "Stage 11" not in proc.stdout and "Stage 12: decoding test" in proc.stdout
    assert (decode / "test" / "text").stat().st_mtime_ns != before[1]

    _pack_and_decode_elsewhere(recipe, exp, decode / "test", tmp_path / "elsewhere")
    _stage11_resumes_only_its_own_run(recipe, exp)
    _gpu_jobs_each_on_its_own_card(recipe, decode)
    _dump_float16(recipe)
    _compare_two_projectors(recipe)


def _pack_and_decode_elsewhere(recipe: Path, exp: Path, decoded: Path, elsewhere: Path) -> None:
    """Stage 14 packs the model with its toy frozen models; the pack, copied to another
    directory, decodes in a fresh process the hypotheses stage 12 wrote (same dumped features)."""
    import shutil

    proc = _run(recipe, "--stage", "14", "--stop_stage", "14", *FAST)
    assert "Stage 14: done" in proc.stdout, proc.stdout[-3000:]
    pack = exp / "pack"
    manifest = yaml.safe_load((pack / "frozen_models.yaml").read_text(encoding="utf-8"))
    assert manifest["llm"]["embedded"] == "frozen/llm" and manifest["encoder"]["embedded"] == "frozen/encoder"
    assert "|test|" in (pack / "README.md").read_text(encoding="utf-8")  # the sclite summary
    copy = elsewhere / "pack"
    shutil.copytree(pack, copy)
    feats = recipe / "dump" / "feats" / "test" / "feats.scp"
    script = (
        "import sys, kaldiio; from espnet_llm_asr.inference import Speech2Text\n"
        "s2t = Speech2Text.from_pretrained(sys.argv[1])\n"
        "langs = dict(l.split() for l in open(sys.argv[3]))\n"
        "feats = sorted(kaldiio.load_scp(sys.argv[2]).items())\n"
        "for (uid, x), h in zip(feats, s2t.batch([x for _, x in feats], [langs[u] for u, _ in feats])):\n"
        "    print(uid, h.text)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script, str(copy), str(feats),
                           str(recipe / "dump" / "raw" / "test" / "utt2lang")],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [ln.rstrip() for ln in proc.stdout.splitlines() if ln.strip()]
    assert got == [ln.rstrip() for ln in (decoded / "text").read_text(encoding="utf-8").splitlines()]


def _stage11_resumes_only_its_own_run(recipe: Path, exp: Path) -> None:
    """Stage 11 continues an exp dir's checkpoint only when it was started with the same
    inputs: other arguments, or a run whose inputs were not recorded, stop it with a message
    naming both and the ways out; the same run interrupted (no .done) resumes."""
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def stage11(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["./run.sh", "--stage", "11", "--stop_stage", "11", *FAST, *extra],
                              cwd=recipe, env=env, capture_output=True, text=True, timeout=600)

    started = exp / ".started.stage11"
    assert "conf/fast/train_smear_moe.yaml" in started.read_text(encoding="utf-8")
    checkpoint = (exp / "checkpoint.pth").stat().st_mtime_ns
    other = stage11("--asr_args", "--max_epoch 7")
    assert other.returncode != 0
    assert "holds a run of other inputs" in other.stderr, other.stderr[-2000:]
    that_run, this_one = (next(ln for ln in other.stderr.splitlines() if ln.strip().startswith(k))
                          for k in ("that run:", "this one:"))
    assert "asr_args ''" in that_run and "asr_args '--max_epoch 7'" in this_one, other.stderr[-2000:]
    assert "--redo true" in other.stderr and "--asr_tag" in other.stderr
    assert (exp / "checkpoint.pth").stat().st_mtime_ns == checkpoint  # nothing trained, nothing lost
    # on purpose: the same run trained on with other arguments (here its own max_epoch: nothing to add)
    on = stage11("--asr_args", "--max_epoch 2", "--continue_run", "true")
    assert on.returncode == 0, on.stdout[-3000:] + on.stderr[-3000:]
    assert "--continue_run true: resuming" in on.stdout
    assert "asr_args '--max_epoch 2'" in started.read_text(encoding="utf-8")
    assert stage11("--asr_args", "--max_epoch 2").stdout.count("skipped") == 1  # done with these inputs

    (exp / ".done.stage11").unlink()  # as if the run had been interrupted
    saved = started.read_text(encoding="utf-8")
    started.unlink()
    unknown = stage11("--asr_args", "--max_epoch 2")
    assert unknown.returncode != 0 and "whose inputs were not recorded" in unknown.stderr, unknown.stderr[-2000:]
    started.write_text(saved, encoding="utf-8")
    same = stage11("--asr_args", "--max_epoch 2")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert "resuming the interrupted run" in same.stdout and (exp / ".done.stage11").is_file()
    back = stage11("--continue_run", "true")  # the recipe's own inputs again, for what follows
    assert back.returncode == 0 and "asr_args ''" in started.read_text(encoding="utf-8"), back.stderr[-2000:]


STAND_IN_CUDA_CMD = r'''#!/usr/bin/env bash
# A GPU job runner stood in on a CPU machine: utils/run_jobs.sh with three
# pretend cards; each job records the cards it sees and its command, then runs on the CPU.
export CUDA_VISIBLE_DEVICES=0,1,2
opts=(); while [[ "$1" == --* ]]; do opts+=("$1" "$2"); shift 2; done
jobs=(); if [[ "$1" == JOB=* ]]; then jobs=("$1"); shift; fi
log="$1"; shift
exec utils/run_jobs.sh "${opts[@]}" "${jobs[@]}" "${log}" ./record_job.sh "${log}" "$@"
'''
RECORD_JOB = r'''#!/usr/bin/env bash
log="$1"; shift
echo "${log} cards=${CUDA_VISIBLE_DEVICES} $*" >> gpu_jobs.txt
args=(); prev=""
for a in "$@"; do
    [ "${prev}" = --device ] && a=cpu
    [ "${prev}" = --ngpu ] && a=0
    args+=("${a}"); prev="${a}"
done
exec "${args[@]}"
'''


def _gpu_jobs_each_on_its_own_card(recipe: Path, decode: Path) -> None:
    """With --ngpu 2, every stage 9 dumping job and stage 12 decoding job goes through
    ${cuda_cmd} --gpu 1 and sees a card of its own (a stand-in runner records what each
    sees and runs it on the CPU); the decoding gives the same hypotheses."""
    for name, text in (("fake_cuda.sh", STAND_IN_CUDA_CMD), ("record_job.sh", RECORD_JOB)):
        (recipe / name).write_text(text)
        (recipe / name).chmod(0o755)
    with (recipe / "cmd.sh").open("a") as f:
        f.write('export cuda_cmd="./fake_cuda.sh"\n')
    before = (decode / "test" / "text").read_text(encoding="utf-8")
    for st in ("9", "12"):
        _run(recipe, "--stage", st, "--stop_stage", st, "--ngpu", "2", "--redo", "true", *FAST)
    jobs = (recipe / "gpu_jobs.txt").read_text().splitlines()
    for kind, module, device_arg in (("dump", "dump_encoder_feats", "--device cuda"),
                                     ("decode", "llm_asr_inference", "--ngpu 1")):
        mine = [ln for ln in jobs if f"/logs/{kind}." in ln.split()[0]]
        assert mine and all(module in ln and device_arg in ln for ln in mine), jobs
        per_dir = {}
        for ln in mine:
            per_dir.setdefault(ln.split()[0].rsplit("/logs/", 1)[0], []).append(ln.split()[1])
        for cards in per_dir.values():  # the two jobs of a data set: cards 0 and 1, one each
            assert sorted(cards) == ["cards=0", "cards=1"], per_dir
    assert (decode / "test" / "text").read_text(encoding="utf-8") == before


def _dump_float16(recipe: Path) -> None:
    """--dump_dtype float16 re-dumps stage 9 in half the bytes (the mono model of the comparison
    below then trains on these features); another dtype stops with the option named."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    bad = subprocess.run(["./run.sh", "--stage", "9", "--stop_stage", "9", "--dump_dtype", "float64", *FAST],
                         cwd=recipe, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--dump_dtype must be float32 or float16, got 'float64'" in bad.stderr, bad.stderr
    train = recipe / "dump" / "feats" / "train"
    fp32_bytes = sum(p.stat().st_size for p in train.rglob("*.ark"))
    proc = _run(recipe, "--stage", "9", "--stop_stage", "9", "--dump_dtype", "float16", *FAST)
    assert "Stage 9: dumping frozen encoder features of train" in proc.stdout and "float16" in proc.stdout
    fp16_bytes = sum(p.stat().st_size for p in train.rglob("*.ark"))
    assert 0.4 * fp32_bytes < fp16_bytes < 0.6 * fp32_bytes, (fp16_bytes, fp32_bytes)


def _compare_two_projectors(recipe: Path) -> None:
    """local/compare_projectors.sh on the stages 1-10 above: the finished smear_moe
    experiment is reused, a mono one trained; the table's numbers are sclite's."""
    from espnet_llm_asr.scoring import read_sclite_result

    mono = yaml.safe_load((recipe / "conf" / "fast" / "train_smear_moe.yaml").read_text(encoding="utf-8"))
    mono.update(frontend="mono", frontend_conf={"hidden_dim": 32})
    (recipe / "conf" / "fast" / "train_mono.yaml").write_text(yaml.safe_dump(mono), encoding="utf-8")
    args = [a for i, a in enumerate(FAST) if "--asr_config" not in FAST[max(i - 1, 0):i + 1]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(["local/compare_projectors.sh", "--stage", "11", "--config_prefix", "conf/fast/train_",
                           "--projectors", "smear_moe mono", *args],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = (recipe / "exp" / "compare_projectors.md").read_text(encoding="utf-8")
    wer = table.split("### WER (%)")[1].split("###")[0]
    header = next(ln for ln in wer.splitlines() if ln.startswith("|test set|"))
    assert header.split("|")[3:5] == ["asr_train_smear_moe (smear_moe)", "asr_train_mono (mono)"], header
    for test_set in ("test", "test_unseen_voice"):
        row = next(ln for ln in wer.splitlines() if ln.startswith(f"|{test_set}|all|"))
        for col, name in enumerate(("train_smear_moe", "train_mono")):
            result = recipe / "exp" / f"asr_{name}" / "decode_decode_valid.acc.ave" / test_set / "score_wer" / "result.txt"
            assert row.split("|")[3 + col] == f"{read_sclite_result(result).pct['Err']:.1f}", (row, name)
    # routing only for the MoE; parameters and training time from train.log
    routing = table.split("### Routing")[1]
    assert "|asr_train_smear_moe (smear_moe)|test|2|" in routing and "asr_train_mono" not in routing
    assert re.search(r"\|asr_train_mono \(mono\)\|[\d,]+\|[\d,]+\|0:\d\d:\d\d\|", table), table


def test_bad_data_stops_stage3_or_is_dropped_with_fix_data(tmp_path):
    """Stage 3 on a corrupted train set: stops naming each bad utterance and file;
    with --fix_data true drops them, lists each with its reason, and stage 4 finishes."""
    import numpy as np
    import soundfile

    recipe = _bengali_recipe(tmp_path)
    _run(recipe, "--stage", "1", "--stop_stage", "1", *FAST)
    data = recipe / "data" / "train"
    scp = dict(ln.split(" ", 1) for ln in (data / "wav.scp").read_text(encoding="utf-8").splitlines())
    text = dict((ln.split(" ", 1) + [""])[:2] for ln in (data / "text").read_text(encoding="utf-8").splitlines())
    ids = sorted(scp)
    bad = recipe / "bad wavs"
    bad.mkdir()
    wave, sr = soundfile.read(scp[ids[3]], dtype="float32")
    text[ids[0]] = "   "                                      # empty transcript
    scp[ids[1]] = str(bad / "gone.wav")                       # missing file
    soundfile.write(bad / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    scp[ids[2]] = str(bad / "empty.wav")                      # zero-length audio
    (bad / "broken.wav").write_bytes(b"RIFF\x00\x00")
    scp[ids[3]] = str(bad / "broken.wav")                     # unreadable
    soundfile.write(bad / "stereo 8k.wav", np.stack([wave[::2], wave[::2]], 1), sr // 2)
    scp[ids[4]] = str(bad / "stereo 8k.wav")                  # converted by sox, kept
    (data / "wav.scp").write_text("".join(f"{u} {scp[u]}\n" for u in ids), encoding="utf-8")
    (data / "text").write_text("".join(f"{u} {text[u]}\n" for u in ids), encoding="utf-8")
    expected = {ids[0]: ("empty transcript", "data/train/text"), ids[1]: ("does not exist", "gone.wav"),
                ids[2]: ("zero length", "empty.wav"), ids[3]: ("unreadable", "broken.wav")}

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(["./run.sh", "--stage", "2", "--stop_stage", "4", *FAST], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    for uid, (reason, file) in expected.items():
        line = next((ln for ln in log.splitlines() if f"utterance {uid}:" in ln), "")
        assert reason in line and file in line, (uid, log[-3000:])
    assert "--fix_data true" in log and "Stage 4" not in log
    assert not (recipe / "dump" / "raw" / "train" / "wav.scp").exists()

    _run(recipe, "--stage", "2", "--stop_stage", "4", "--fix_data", "true", *FAST)
    dump = recipe / "dump" / "raw" / "train"
    for name in ("wav.scp", "text", "utt2spk", "utt2lang"):
        kept = {ln.split()[0] for ln in (dump / name).read_text(encoding="utf-8").splitlines()}
        assert kept == set(ids) - set(expected), name
    report = dict(ln.split(" ", 1) for ln in (dump / "dropped_format").read_text(encoding="utf-8").splitlines())
    assert set(report) == set(expected)
    for uid, (reason, file) in expected.items():
        assert reason in report[uid] and file in report[uid], report[uid]
    converted = dict(ln.split(" ", 1) for ln in (dump / "wav.scp").read_text(encoding="utf-8").splitlines())[ids[4]]
    info = soundfile.info(converted)
    assert (info.samplerate, info.channels) == (16000, 1)


def test_recipe_encoder_conf_defaults_to_the_training_config(tmp_path):
    """llm_asr.sh without --encoder_conf dumps features and builds the model with the
    asr_config's own frontend_conf.encoder_conf (conf/real_small: the real frames, pad_to_30s
    false; a config with its own options below), else {pad_to_30s: false}; a bad config is a
    clear error."""
    from espnet_llm_asr.bin.datadir import config_encoder_conf

    recipe = Path(__file__).resolve().parents[1] / "egs2" / "indic" / "asr1"
    assert config_encoder_conf(str(recipe / "conf" / "real_small" / "train_smear_moe.yaml")) == "{pad_to_30s: false}"
    assert config_encoder_conf(str(recipe / "conf" / "train_mono.yaml")) == "{pad_to_30s: false}"
    conf = tmp_path / "c.yaml"
    conf.write_text("frontend: mono\nfrontend_conf:\n  encoder_conf: {pad_to_30s: true, dtype: bfloat16}\n")
    assert yaml.safe_load(config_encoder_conf(str(conf))) == {"pad_to_30s": True, "dtype": "bfloat16"}
    conf.write_text("frontend_conf:\n  encoder_conf: [1, 2]\n")
    with pytest.raises(ValueError, match=r"c\.yaml: frontend_conf\.encoder_conf must be a mapping"):
        config_encoder_conf(str(conf))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        config_encoder_conf(str(tmp_path / "nope.yaml"))
    script = (recipe.parents[1] / "TEMPLATE" / "llm_asr1" / "llm_asr.sh").read_text()
    assert 'encoder_conf=""' in script and "datadir encoder_conf --config" in script


RECIPE_CONF = ROOT / "egs2" / "indic" / "asr1" / "conf"
OTHER_CONFIGS = sorted(p for p in RECIPE_CONF.rglob("*.yaml") if not p.name.startswith("train_"))


@pytest.mark.parametrize("path", OTHER_CONFIGS, ids=[str(p.relative_to(RECIPE_CONF)) for p in OTHER_CONFIGS])
def test_recipe_configs_are_read_by_their_loaders(path):
    """Every yaml under conf/ that is not a training config (conf/tuning/ and conf/fast/ included; the
    train_*.yaml are parsed by test_paper_configs) is read without error by the program
    that reads it: the tiny models' builder, the corpus synthesizer, the decoder. A yaml of no known
    kind fails here."""
    from espnet_llm_asr.bin.llm_asr_inference import parse_args
    from espnet_llm_asr.bin.make_tiny_models import load_config
    from espnet_llm_asr.data.corpus_config import load_corpus_config

    if path.name.startswith("tiny_models"):
        load_config(str(path))
    elif path.name.startswith("corpus"):
        assert load_corpus_config(path).languages
    elif path.name.startswith("decode"):
        parse_args(["--config", str(path), "--output_dir", "x", "--data_path_and_name_and_type", "wav.scp,speech,sound"])
    else:
        pytest.fail(f"{path}: no loader known for this kind of config (tiny_models*, corpus*, decode*, train_*)")


def test_recipe_conf_holds_the_configs_in_use_and_tuning_the_variants():
    """conf/ holds what the README, run.sh, run_paper.sh, the comparison and the tests use; every
    other variant lives in conf/tuning/ with its result in its header comment, which points to the
    recipe README's table for the rest (date, machine, what it was compared with)."""
    assert sorted(p.name for p in (RECIPE_CONF / "tuning").glob("*.yaml")), "conf/tuning/ is empty"
    for path in sorted((RECIPE_CONF / "tuning").glob("*.yaml")):
        header = " ".join(ln.lstrip("#").strip() for ln in path.read_text(encoding="utf-8").splitlines()[:6]
                          if ln.startswith("#"))
        assert re.match(r"Variant, (not adopted|superseded): ", header), f"{path.name}: no 'Variant, not adopted: '"
        assert "Result" in header and "the recipe README" in header, f"{path.name}: no result, no README pointer"
        assert not re.search(r"[Ss]ession \d", path.read_text(encoding="utf-8")), f"{path.name} names a session"
