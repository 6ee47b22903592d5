"""Stage 13: sclite scoring, RESULTS.md and routing analysis.

The tiny test set has hand-counted errors (code points counted with
``list(text)``):

======  ====  ==============================  ============================  ===================  ====================
utt     lang  reference                       hypothesis                    words                characters
======  ====  ==============================  ============================  ===================  ====================
u1      hi    नमस्ते दुनिया यह                 नमस्ते दुनिया वह                  1 sub of 3           1 sub of 16
u2      hi    मेरा नाम राम है                   मेरा नाम है                      1 del of 4           4 del of 15
u3      ta    வணக்கம் உலகம்                    வணக்கம் உலகம் நன்றி               1 ins of 2           6 ins of 13
u4      ta    நன்றி                           (missing)                     1 del of 1           5 del of 5
u5      hi    ठीक है                           ठीक है                          0 of 2               0 of 6
======  ====  ==============================  ============================  ===================  ====================
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from espnet_llm_asr.analysis import (
    cif_fire_positions,
    gate_language_id_accuracy,
    plot_cif_firing,
    plot_routing_heatmap,
    read_gates,
)
from espnet_llm_asr.bin import make_results as make_results_cli
from espnet_llm_asr.bin import score as score_cli
from espnet_llm_asr.scoring import (
    ScliteNotFoundError,
    char_tokens,
    disagreement_level,
    find_sclite,
    read_sclite_result,
    score_dir,
)

ROOT = Path(__file__).resolve().parents[1]
REFS = {
    "u1": ("hi", "नमस्ते दुनिया यह"),
    "u2": ("hi", "मेरा नाम राम है"),
    "u3": ("ta", "வணக்கம் உலகம்"),
    "u4": ("ta", "நன்றி"),
    "u5": ("hi", "ठीक है"),
}
HYPS = {"u1": "नमस्ते दुनिया वह", "u2": "मेरा नाम है", "u3": "வணக்கம் உலகம் நன்றி", "u5": "ठीक है"}


def write_map(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {v}".rstrip() + "\n" for k, v in sorted(d.items())), encoding="utf-8")


def make_ref(root: Path) -> Path:
    ref = root / "dump" / "raw" / "test"
    write_map(ref / "text", {k: t for k, (_, t) in REFS.items()})
    write_map(ref / "utt2lang", {k: lang for k, (lang, _) in REFS.items()})
    write_map(ref / "utt2spk", {k: f"spk{k}" for k in REFS})
    return ref


def make_hyp(root: Path, exp: str = "asr_a", hyps=None) -> Path:
    hyp = root / "exp" / exp / "decode_x" / "test"
    write_map(hyp / "text", HYPS if hyps is None else hyps)
    return hyp


def test_find_sclite():
    assert Path(find_sclite()).name == "sclite"


def test_char_tokens_count_code_points():
    assert char_tokens("नमस्ते  जी") == ["न", "म", "स", "्", "त", "े", "<space>", "ज", "ी"]
    assert char_tokens("a <noise> b", ["<noise>"]) == ["a", "<space>", "b"]


def test_wer_cer_hand_counts_and_jiwer(tmp_path):
    ref, hyp = make_ref(tmp_path), make_hyp(tmp_path)
    res = score_dir(ref, hyp)

    w = res["wer"]
    assert (w["snt"], w["wrd"], w["sub"], w["dele"], w["ins"], w["err"], w["s_err"]) == (5, 12, 1, 2, 1, 4, 4)
    assert w["error_rate"] == pytest.approx(100 * 4 / 12)
    assert w["pct"]["Err"] == pytest.approx(33.3)
    assert w["jiwer_error_rate"] == pytest.approx(w["error_rate"])

    c = res["cer"]
    assert (c["wrd"], c["sub"], c["dele"], c["ins"], c["err"]) == (55, 1, 9, 6, 16)
    assert c["jiwer_error_rate"] == pytest.approx(100 * 16 / 55)

    # files ESPnet-style, read back from disk
    for unit in ("wer", "cer"):
        d = hyp / f"score_{unit}"
        assert {"ref.trn", "hyp.trn", "result.txt"} <= {p.name for p in d.iterdir()}
        assert read_sclite_result(d / "result.txt").err == res[unit]["err"]
    assert "(spku1-u1)" in (hyp / "score_wer" / "ref.trn").read_text(encoding="utf-8")
    cer_ref = (hyp / "score_cer" / "ref.trn").read_text(encoding="utf-8")
    assert "न म स ् त े <space> द" in cer_ref
    assert not list(hyp.glob(".score_*"))  # no temp dirs left


def test_per_language_split(tmp_path):
    ref, hyp = make_ref(tmp_path), make_hyp(tmp_path)
    res = score_dir(ref, hyp)
    hi, ta = res["per_lang"]["hi"], res["per_lang"]["ta"]
    assert (hi["wer"]["wrd"], hi["wer"]["sub"], hi["wer"]["dele"], hi["wer"]["ins"]) == (9, 1, 1, 0)
    assert (ta["wer"]["wrd"], ta["wer"]["sub"], ta["wer"]["dele"], ta["wer"]["ins"]) == (3, 0, 1, 1)
    assert (hi["cer"]["wrd"], hi["cer"]["err"]) == (37, 5)
    assert (ta["cer"]["wrd"], ta["cer"]["err"]) == (18, 11)
    for unit in ("wer", "cer"):
        for lang, d in (("hi", hi), ("ta", ta)):
            assert read_sclite_result(hyp / f"score_{unit}" / lang / "result.txt").err == d[unit]["err"]
    trn = (hyp / "score_wer" / "ta" / "hyp.trn").read_text(encoding="utf-8").splitlines()
    assert [ln.rsplit("(", 1)[1] for ln in trn] == ["spku3-u3)", "spku4-u4)"]


def test_missing_and_empty_hypotheses(tmp_path, caplog):
    ref = make_ref(tmp_path)
    hyp = make_hyp(tmp_path, hyps={**HYPS, "u5": ""})  # u4 missing, u5 present but empty
    with caplog.at_level("WARNING"):
        res = score_dir(ref, hyp)
    assert res["missing_hyp"] == ["u4"]
    assert (hyp / "missing_hyp").read_text() == "u4\n"
    assert any("no hypothesis" in r.message and "u4" in r.message for r in caplog.records)
    w = res["wer"]
    assert (w["snt"], w["wrd"], w["dele"], w["err"]) == (5, 12, 4, 6)  # u4 (1) + u5 (2) deleted too


def test_unknown_hypothesis_id_is_an_error(tmp_path):
    ref = make_ref(tmp_path)
    hyp = make_hyp(tmp_path, hyps={**HYPS, "stray_utt": "x"})
    with pytest.raises(ValueError, match="stray_utt"):
        score_dir(ref, hyp)
    assert not (hyp / "score_wer").exists()


def test_missing_sclite_clear_error_and_no_result(tmp_path):
    ref, hyp = make_ref(tmp_path), make_hyp(tmp_path)
    with pytest.raises(ScliteNotFoundError, match="apt-get install sctk"):
        score_cli.main(["--ref_dir", str(ref), "--hyp_dir", str(hyp), "--sclite", "/nonexistent/sclite"])
    assert not list(hyp.rglob("result.txt"))


def test_failing_sclite_leaves_old_results_intact(tmp_path):
    ref, hyp = make_ref(tmp_path), make_hyp(tmp_path)
    score_dir(ref, hyp)
    before = (hyp / "score_wer" / "result.txt").read_text(encoding="utf-8")
    fake = tmp_path / "fake_sclite"
    fake.write_text("#!/bin/sh\necho '| Sum/Avg| partial'\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="exit 3"):
        score_dir(ref, make_hyp(tmp_path, hyps={"u1": "x"}), sclite=str(fake))
    assert (hyp / "score_wer" / "result.txt").read_text(encoding="utf-8") == before
    assert not list(hyp.glob(".score_*"))


def test_score_cli_and_nlsyms(tmp_path, capsys):
    ref = make_ref(tmp_path)
    hyp = make_hyp(tmp_path, hyps={**HYPS, "u4": "<noise> நன்றி", "u5": "ठीक <noise> है"})
    nlsyms = tmp_path / "nlsyms.txt"
    nlsyms.write_text("<noise>\n")
    res = score_cli.main(["--ref_dir", str(ref), "--hyp_dir", str(hyp), "--nlsyms", str(nlsyms)])
    assert res["wer"]["err"] == 3 and res["cer"]["err"] == 11
    assert "WER 25.00 %" in capsys.readouterr().out


# ------------------------------------------------------------ analysis
def _gates(n_per_lang: int, langs, separable: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    gates, utt2lang = {}, {}
    for li, lang in enumerate(langs):
        for i in range(n_per_lang):
            alpha = np.ones(len(langs))
            if separable:
                alpha[li] = 30.0
            gates[f"{lang}_{i:03d}"] = rng.dirichlet(alpha)
            utt2lang[f"{lang}_{i:03d}"] = lang
    return gates, utt2lang


def test_gate_lid_separable_is_perfect():
    gates, utt2lang = _gates(25, ["hi", "mr", "ta", "te"], separable=True)
    lid = gate_language_id_accuracy(gates, utt2lang)
    assert lid.accuracy == 1.0
    assert lid.langs == ["hi", "mr", "ta", "te"] and lid.mean_gates.shape == (4, 4)
    assert np.allclose(lid.mean_gates.sum(1), 1.0)
    assert (lid.mean_gates.argmax(1) == np.arange(4)).all()
    assert np.trace(lid.confusion) == 100


def test_gate_lid_random_is_near_chance():
    gates, utt2lang = _gates(100, ["hi", "mr", "ta", "te"], separable=False, seed=1)
    lid = gate_language_id_accuracy(gates, utt2lang)
    assert lid.chance == 0.25
    assert 0.1 < lid.accuracy < 0.37


def test_gate_lid_identical_gates_is_chance_not_rounding_noise():
    """Input-independent gates (dense's static weights) carry no language:
    rounding in the leave-one-out centroids must not pass for identification."""
    weights = np.array([0.243138, 0.236696, 0.276203, 0.243963])  # exp_cmp4k dense, as decoded
    langs = ["hi", "mr", "ta", "te"]
    gates = {f"{lang}_{i:03d}": weights.copy() for lang in langs for i in range(40)}
    utt2lang = {k: k[:2] for k in gates}
    lid = gate_language_id_accuracy(gates, utt2lang)
    assert lid.accuracy == pytest.approx(0.25)  # every utterance tied, first language wins
    assert lid.per_lang_accuracy == {"hi": 1.0, "mr": 0.0, "ta": 0.0, "te": 0.0}


def test_gate_lid_needs_two_languages():
    gates, utt2lang = _gates(5, ["hi"], separable=False)
    with pytest.raises(ValueError, match="at least 2 languages"):
        gate_language_id_accuracy(gates, utt2lang)


def test_plots_are_written(tmp_path):
    png = plot_routing_heatmap(np.array([[0.7, 0.3], [0.2, 0.8]]), ["hi", "ta"], tmp_path / "h.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    alphas = np.full(19, 0.35)
    fires = cif_fire_positions(alphas)
    assert len(fires) == 6 and fires[0] == pytest.approx(2 + 0.3 / 0.35)
    spec = np.random.default_rng(0).standard_normal((16, 40))
    out = plot_cif_firing(spec, alphas, fires, tmp_path / "cif.png")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="fire positions"):
        plot_cif_firing(np.zeros(320), alphas, [25.0], tmp_path / "bad.png")


# ------------------------------------------------------------ RESULTS.md
def test_make_results_two_experiments(tmp_path):
    ref = make_ref(tmp_path)
    hyp_a = make_hyp(tmp_path, "asr_linear")
    hyp_b = make_hyp(tmp_path, "asr_smear", hyps={**HYPS, "u4": "நன்றி"})  # one error fewer
    gates = {k: ([0.9, 0.1] if lang == "hi" else [0.15, 0.85]) for k, (lang, _) in REFS.items()}
    write_map(hyp_b / "gates", {k: " ".join(map(str, g)) for k, g in gates.items()})
    (hyp_b.parent.parent / "config.yaml").write_text(
        f"frontend: smear_moe\nfrontend_conf:\n  encoder: models/whisper-base\nllm: {ROOT}/tools/models/gemma-3-270m\n"
        "llm_conf:\n  speech_embed_scale: 25.25\n  speech_rms: 1.0291315\n")  # removed keys, read as speech_scale
    (hyp_b.parent / "decode_config.yaml").write_text("# conf/decode.yaml --ctc_weight 0.5\nnum_beams: 1\n")
    (hyp_b.parent.parent / "images").mkdir()
    for stat in ("loss", "acc"):  # what ESPnet's trainer plots
        plot_routing_heatmap(np.eye(2), ["hi", "ta"], hyp_b.parent.parent / "images" / f"{stat}.png")
    score_dir(ref, hyp_a)
    score_dir(ref, hyp_b)
    shutil.copy(hyp_b / "gates", tmp_path / "gates_copy")
    assert read_gates(tmp_path / "gates_copy")["u1"].tolist() == [0.9, 0.1]

    out = tmp_path / "RESULTS.md"
    text = make_results_cli.main(["--exp_dirs", str(tmp_path / "exp" / "asr_linear"),
                                  str(tmp_path / "exp" / "asr_smear"), "--out", str(out)])
    assert out.read_text(encoding="utf-8") == text
    assert "## asr_linear" in text and "## asr_smear (smear_moe)" in text
    assert "- pytorch version: `pytorch " in text
    # which frozen models and which decoding produced each system (as stage 12 records it)
    # a path inside the repository relative to it (a checkout's absolute path means nothing elsewhere)
    assert "- encoder: `models/whisper-base`; LLM: `tools/models/gemma-3-270m` (speech scale: rms 1.02913)" in text
    assert "- decoding `decode_x`: `conf/decode.yaml --ctc_weight 0.5` (num_beams=1)" in text
    assert "- decoding `decode_x`: config not recorded" in text  # asr_linear has none

    def sum_avg(path):  # the numbers exactly as sclite printed them
        line = next(ln for ln in path.read_text(encoding="utf-8").splitlines() if "Sum/Avg" in ln)
        cells = line.replace("|", " ").split()[1:]
        return "|".join(cells)

    for hyp in (hyp_a, hyp_b):
        assert f"|decode_x/test|{sum_avg(hyp / 'score_wer' / 'result.txt')}|" in text
        assert f"|decode_x/test|{sum_avg(hyp / 'score_cer' / 'result.txt')}|" in text
        assert f"|decode_x/test/ta|{sum_avg(hyp / 'score_wer' / 'ta' / 'result.txt')}|" in text
    assert "|decode_x/test|5|12|75.0|8.3|16.7|8.3|33.3|80.0|" in text  # asr_linear, by hand
    # summary: experiments side by side
    assert "|test set|lang|asr_linear|asr_smear (smear_moe)|" in text
    assert "|test|all|33.3|25.0|" in text and "|test|ta|66.7|33.3|" in text
    # gates: LID accuracy and the heatmap, linked relative to RESULTS.md
    assert "gate language-ID accuracy" in text and "**1.000**" in text
    png = hyp_b / "routing_heatmap.png"
    assert png.stat().st_size > 1000
    assert "](exp/asr_smear/decode_x/test/routing_heatmap.png)" in text
    assert not (hyp_a / "routing_heatmap.png").exists()
    # training curves of the experiment that has them, linked relative to RESULTS.md
    assert "- training curves: [loss](exp/asr_smear/images/loss.png), [acc](exp/asr_smear/images/acc.png)" in text
    assert text.count("- training curves:") == 1


def test_make_results_cif_firing_plots(tmp_path):
    """Decode dir with `alphas`: CIF firing plots for the first 3 utterances over their
    log-mel (a blank strip where the audio is missing), linked relative to RESULTS.md."""
    import soundfile

    from conftest import synth_wave
    from espnet_llm_asr.bin.make_results import _spectrogram

    ref = make_ref(tmp_path)
    hyp = make_hyp(tmp_path, "asr_cif")
    secs = {"u1": 1.0, "u2": 0.5}  # audio for two of the plotted utterances; u3 has none
    wavs = {}
    for i, (uid, s) in enumerate(secs.items()):
        wavs[uid] = tmp_path / f"{uid}.wav"
        soundfile.write(wavs[uid], synth_wave(s, seed=i), 16000, subtype="PCM_16")
    write_map(ref / "wav.scp", wavs)
    rng = np.random.default_rng(0)
    frames = {"u1": 50, "u2": 25, "u3": 40, "u5": 30}  # 20 ms encoder frames: 1.0 s -> 50
    alphas = {k: rng.uniform(0.0, 0.6, n).round(4) for k, n in frames.items()}
    write_map(hyp / "alphas", {k: " ".join(f"{v:.4f}" for v in a) for k, a in alphas.items()})
    write_map(hyp / "cif_count", {k: int(a.sum()) for k, a in alphas.items()})
    exp = hyp.parent.parent
    (exp / "config.yaml").write_text("frontend: cif\nfrontend_conf: {threshold: 1.0, tail_threshold: 0.45}\n")
    score_dir(ref, hyp)

    out = tmp_path / "docs" / "RESULTS.md"  # not next to exp/: links must climb out of docs/
    args = ["--exp_dirs", str(exp), "--out", str(out), "--ref_root", str(tmp_path / "dump" / "raw")]
    text = make_results_cli.main(args)
    plot_dir = hyp / "cif_firing"
    assert sorted(p.name for p in plot_dir.iterdir()) == ["u1.png", "u2.png", "u3.png"]  # first 3 only
    for uid in ("u1", "u2", "u3"):
        png = plot_dir / f"{uid}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
        assert f"![CIF firing {uid}](../exp/asr_cif/decode_x/test/cif_firing/{uid}.png)" in text
    assert "CIF firing over the log-mel spectrogram" in text
    assert "drawn over a blank strip: u3 (not in" in text
    assert "### Routing: decode_x/test" in text and "- CIF: " in text

    # time axes: 100 Hz log-mel frames, exactly two per 20 ms CIF weight
    mel, warning = _spectrogram(str(wavs["u1"]), "u1", None, frames["u1"])
    assert mel.shape == (80, 100) and warning == ""
    mel, warning = _spectrogram(str(wavs["u2"]), "u2", None, 60)  # weights of a longer utterance
    assert mel.shape == (80, 120) and "50 log-mel frames" in warning

    # --plots false: no plot at all
    shutil.rmtree(plot_dir)
    text = make_results_cli.main(args + ["--plots", "false"])
    assert not plot_dir.exists() and "CIF firing" not in text


def test_sclite_jiwer_disagreement_level():
    """sclite counting a few more errors than jiwer (its weighted alignment) is INFO; a token
    count that differs, fewer sclite errors or a gap over 1 point is a WARNING (measured: 5
    more errors of 3866 tokens, 0.13 points, used to warn for every language of every decode)."""
    import logging

    assert disagreement_level(1731, 3866, 1726, 3866) == logging.INFO
    assert disagreement_level(1731, 3866, 1731, 3866) == logging.INFO
    assert disagreement_level(1731, 3866, 1726, 3865) == logging.WARNING  # tokens differ
    assert disagreement_level(1720, 3866, 1726, 3866) == logging.WARNING  # sclite cannot count fewer
    assert disagreement_level(1800, 3866, 1726, 3866) == logging.WARNING  # 1.9 points
    assert disagreement_level(0, 0, 0, 0) == logging.WARNING


def test_unseen_words_counted_and_matched_by_the_alignment(tmp_path):
    """Words unseen in training: counted per language over the reference words, and transcribed
    exactly only where the alignment matches the same word (a word elsewhere in the hypothesis or
    misspelt does not count); make_results --train_text adds the table."""
    from espnet_llm_asr.unseen_words import score_unseen_words, score_unseen_words_by_lang, training_words

    train = tmp_path / "train_text"
    write_map(train, {"t1": "नमस्ते मेरा नाम", "t2": "வணக்கம் ठीक"})
    known = training_words(train)
    assert known == {"नमस्ते", "मेरा", "नाम", "வணக்கம்", "ठीक"}
    ref = {k: t for k, (_, t) in REFS.items()}
    utt2lang = {k: lang for k, (lang, _) in REFS.items()}
    scores = score_unseen_words_by_lang(ref, HYPS, known, utt2lang)
    # hi: unseen दुनिया यह (u1), राम है (u2), है (u5); exact: दुनिया (u1), है (u2: राम deleted), है (u5)
    assert (scores["hi"].words, scores["hi"].unseen, scores["hi"].exact) == (9, 5, 3)
    # ta: unseen உலகம் (u3), நன்றி (u4, no hypothesis); exact: உலகம்
    assert (scores["ta"].words, scores["ta"].unseen, scores["ta"].exact) == (3, 2, 1)
    assert (scores["all"].words, scores["all"].unseen, scores["all"].exact) == (12, 7, 4)
    assert abs(scores["all"].exact_share - 4 / 7) < 1e-9
    # the same word placed elsewhere, or misspelt, is not transcribed exactly
    assert score_unseen_words({"a": "x y z"}, {"a": "y z"}, {"y"}, ["a"]).exact == 1
    assert score_unseen_words({"a": "x y z"}, {"a": "z y"}, {"y"}, ["a"]).exact == 0
    assert score_unseen_words({"a": "राम है"}, {"a": "रम है"}, {"है"}, ["a"]).exact == 0

    make_ref(tmp_path)
    hyp = make_hyp(tmp_path)
    score_dir(tmp_path / "dump" / "raw" / "test", hyp)
    text = make_results_cli.main(["--exp_dirs", str(tmp_path / "exp" / "asr_a"), "--out", str(tmp_path / "R.md"),
                                  "--ref_root", str(tmp_path / "dump" / "raw"), "--train_text", str(train)])
    assert "### Words unseen in training" in text
    assert "|decode_x/test|hi|9|5 (55.6 %)|3 (60.0 %)|" in text
    assert "|decode_x/test|all|12|7 (58.3 %)|4 (57.1 %)|" in text
