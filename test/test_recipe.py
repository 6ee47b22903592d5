"""The recipe scripts end to end: a new Bengali recipe made by setup.sh runs stages 1-13
with the fast configuration, its RESULTS.md reads sclite's numbers, and a re-run does nothing."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--local_data_opts", "--size fast --nj 2", "--tiny_config", "conf/tiny_models_fast.yaml",
        "--asr_config", "conf/train_fast.yaml", "--inference_config", "conf/decode_fast.yaml",
        "--test_sets", "test test_unseen_voice", "--nj", "2", "--inference_nj", "2"]


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


def test_bengali_recipe_stages_1_to_13(tmp_path):
    from espnet_llm_asr.scoring import read_sclite_result

    recipe = _bengali_recipe(tmp_path)
    _run(recipe, "--stage", "1", "--stop_stage", "13", *FAST)

    assert (recipe / "data" / "lang_list").read_text().split() == ["bn"]
    exp = recipe / "exp" / "asr_train_fast"
    decode = exp / "decode_fast_valid.acc.ave"
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
