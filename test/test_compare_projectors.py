"""local/compare_projectors.sh's table: params and training time from train.log, WER/CER
per test set and language from sclite's result files (scored here on synthetic decode
dirs; the full fast recipe run of two projectors takes ~8 min on the shared 2 cores,
too long for the suite)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from espnet_llm_asr.bin.compare_projectors import compare_projectors, train_log_facts
from espnet_llm_asr.scoring import read_sclite_result, score_dir

RECIPE = Path(__file__).resolve().parents[1] / "egs2" / "indic" / "asr1"
REFS = {"hi_s1-u1": ("hi", "नमस्ते दुनिया आज"), "hi_s1-u2": ("hi", "मौसम अच्छा है"),
        "ta_s2-u1": ("ta", "வணக்கம் உலகம்"), "ta_s2-u2": ("ta", "இது ஒரு சோதனை")}


def _write(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")


def _exp(root: Path, name: str, frontend: str, hyps: dict, trainable: int, seconds: int) -> Path:
    exp = root / "exp" / f"asr_{name}"
    _write(exp / "config.yaml", [f"frontend: {frontend}"])
    _write(exp / "train.log", ["# python -m espnet_llm_asr.bin.llm_asr_train ...",
                               f"[host] 2026 (task:180) INFO: LLM-ASR model: {trainable:,} trainable of "
                               f"{trainable + 1000:,} parameters",
                               f"# Accounting: time={seconds} threads=1", "# Ended (code 0)"])
    for test_set in ("test", "test_other"):
        ref = root / "dump" / "raw" / test_set
        _write(ref / "text", [f"{k} {t}" for k, (_, t) in REFS.items()])
        _write(ref / "utt2lang", [f"{k} {lang}" for k, (lang, _) in REFS.items()])
        _write(ref / "utt2spk", [f"{k} {k.split('-')[0]}" for k in REFS])
        hyp = exp / "decode_x_valid.acc.ave" / test_set
        _write(hyp / "text", [f"{k} {hyps.get(k, t)}" for k, (_, t) in REFS.items()])
        score_dir(ref, hyp)
    return exp


def test_compare_table_reads_sclite_and_train_log(tmp_path):
    pytest.importorskip("jiwer")
    mono = _exp(tmp_path, "train_mono", "mono", {"hi_s1-u1": "नमस्ते", "ta_s2-u2": "இது ஒரு"}, 18_160_384, 3725)
    smear = _exp(tmp_path, "train_smear_moe", "smear_moe", {"hi_s1-u2": "मौसम अच्छा"}, 52_983_300, 59)
    assert train_log_facts(mono) == (18_160_384, 18_161_384, 3725)
    out = tmp_path / "exp" / "compare_projectors.md"
    text = compare_projectors([mono, smear], out)
    assert out.read_text(encoding="utf-8") == text
    assert "|asr_train_mono (mono)|18,160,384|18,161,384|1:02:05|decode_x_valid.acc.ave|" in text
    assert "|asr_train_smear_moe (smear_moe)|52,983,300|52,984,300|0:00:59|" in text
    for unit in ("wer", "cer"):
        section = text.split(f"### {unit.upper()} (%)")[1].split("###")[0]
        rows = {tuple(ln.split("|")[1:3]): ln.split("|")[3:5] for ln in section.splitlines()
                if ln.startswith("|test") and not ln.startswith("|test set")}
        assert set(rows) == {(s, lang) for s in ("test", "test_other") for lang in ("all", "hi", "ta")}
        for col, exp in enumerate((mono, smear)):
            for (test_set, lang), vals in rows.items():
                d = exp / "decode_x_valid.acc.ave" / test_set / f"score_{unit}"
                score = read_sclite_result(d / "result.txt" if lang == "all" else d / lang / "result.txt")
                assert vals[col] == f"{score.pct['Err']:.1f}", (unit, exp.name, test_set, lang)
    # hi (6 words): mono 2 deletions, smear_moe 1; ta (5 words): mono 1 deletion, smear_moe none
    wer = text.split("### WER (%)")[1].split("###")[0]
    assert "|test|hi|33.3|16.7|" in wer and "|test|ta|20.0|0.0|" in wer and "|test|all|27.3|9.1|" in wer

    with pytest.raises(FileNotFoundError, match="run stage 13"):
        (tmp_path / "exp" / "asr_unscored").mkdir()
        compare_projectors([mono, tmp_path / "exp" / "asr_unscored"], out)


def test_compare_projectors_sh_checks_its_arguments(tmp_path):
    def run(*args):
        return subprocess.run(["local/compare_projectors.sh", *args], cwd=RECIPE, capture_output=True,
                              text=True, timeout=60)

    proc = run("--projectors", "mono no_such_projector")
    assert proc.returncode != 0 and "no config conf/train_no_such_projector.yaml" in proc.stderr
    proc = run("--projectors", "mono", "--asr_config", "conf/train_mono.yaml")
    assert proc.returncode != 0 and "set per projector" in proc.stderr
    assert run("--help").stdout.startswith("Train, decode and score several projectors")


def test_compare_table_has_routing_for_moes(tmp_path):
    """Usage per expert, gate entropy and gate LID, computed from the decoded gates files."""
    pytest.importorskip("jiwer")
    mono = _exp(tmp_path, "train_mono", "mono", {}, 10, 1)
    smear = _exp(tmp_path, "train_smear_moe", "smear_moe", {}, 20, 2)
    # hi utterances lean on expert 0, ta on expert 1: the gates identify the language
    gates = {"hi_s1-u1": (0.7, 0.3), "hi_s1-u2": (0.9, 0.1), "ta_s2-u1": (0.2, 0.8), "ta_s2-u2": (0.4, 0.6)}
    for test_set in ("test", "test_other"):
        _write(smear / "decode_x_valid.acc.ave" / test_set / "gates",
               [f"{k} {a} {b}" for k, (a, b) in gates.items()])
    text = compare_projectors([mono, smear], tmp_path / "out.md", ref_root=tmp_path / "dump" / "raw")
    routing = text.split("### Routing")[1]
    rows = [ln for ln in routing.splitlines() if ln.startswith("|asr_")]
    assert len(rows) == 2 and all(r.startswith("|asr_train_smear_moe (smear_moe)|") for r in rows)
    cells = rows[0].split("|")
    assert cells[2:5] == ["test", "2", "0.55 / 0.45"]
    import numpy as np

    g = np.array(list(gates.values()))
    entropy = -(g * np.log(g)).sum(1).mean()
    assert cells[5].startswith(f"{entropy:.3f} (max {np.log(2):.3f})")
    assert cells[6] == "1.000 (chance 0.50)"


def test_compare_routing_names_the_decode_tag_and_no_negative_zero(tmp_path):
    """An experiment decoded with two tags gets one routing row per tag, each naming its tag;
    gates all on one expert give entropy 0.000 (not -0.000)."""
    pytest.importorskip("jiwer")
    hard = _exp(tmp_path, "train_hard_moe", "hard_moe", {}, 20, 2)
    _write(hard / "decode_y_valid.acc.ave" / "test" / "score_wer" / "result.txt",
           (hard / "decode_x_valid.acc.ave" / "test" / "score_wer" / "result.txt").read_text().splitlines())
    gates = {"hi_s1-u1": (1.0, 0.0), "hi_s1-u2": (1.0, 0.0), "ta_s2-u1": (1.0, 0.0), "ta_s2-u2": (1.0, 0.0)}
    for tag in ("decode_x_valid.acc.ave", "decode_y_valid.acc.ave"):
        _write(hard / tag / "test" / "gates", [f"{k} {a} {b}" for k, (a, b) in gates.items()])
    text = compare_projectors([hard], tmp_path / "out.md", ref_root=tmp_path / "dump" / "raw")
    rows = [ln for ln in text.split("### Routing")[1].splitlines() if ln.startswith("|asr_")]
    assert sorted(r.split("|")[2] for r in rows) == ["decode_x_valid.acc.ave/test", "decode_y_valid.acc.ave/test"]
    assert all(r.split("|")[5].startswith("0.000 (max") for r in rows), rows
