"""Sharing a trained model: the frozen models' manifest and fingerprints, the pack (stage 14's
bin/pack_model), Speech2Text.from_pretrained on it in a fresh process elsewhere, and the
transcribe command on audio of any rate and channel count."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import yaml

from conftest import synth_wave
from tiny_setup import ROOT, UTTS, make_data_dir, make_tiny_models, train_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smear_moe model trained 2 steps on the tiny models (config with absolute paths)."""
    root = tmp_path_factory.mktemp("pack")
    data = make_data_dir(root)
    models = make_tiny_models(root, [t for _, _, t, _, _ in UTTS])
    return root, data, models, train_in_process((root, data, models), "smear_moe", "exp_smear")


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def _save_perturbed_llm(src, dst, seed: int = 1) -> None:
    """The same architecture and tokenizer, other weights (another conversion / seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(str(src))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(str(dst))


def test_fingerprint_follows_config_and_weights_only(trained, tmp_path):
    from espnet_llm_asr.frozen_models import fingerprint

    _, _, models, _ = trained
    copy = tmp_path / "llm"
    shutil.copytree(models["llm"], copy)
    base = fingerprint(copy)
    assert "config.json" in base["files"] and any(n.endswith(".safetensors") for n in base["files"])
    (copy / "README.md").write_text("notes\n")
    assert fingerprint(copy) == base  # documentation does not count
    shutil.rmtree(copy)
    _save_perturbed_llm(models["llm"], copy)
    assert fingerprint(copy)["sha256"] != base["sha256"]
    with pytest.raises(FileNotFoundError, match="no config.json"):
        fingerprint(tmp_path)


def test_training_records_the_frozen_models(trained):
    from espnet_llm_asr.frozen_models import MANIFEST, fingerprint, read_manifest

    _, _, models, exp = trained
    manifest = read_manifest(exp / MANIFEST)
    assert set(manifest) == {"llm", "encoder"}
    assert manifest["llm"]["source"] == str(models["llm"])
    assert manifest["llm"]["fingerprint"] == fingerprint(models["llm"])
    assert manifest["encoder"]["fingerprint"] == fingerprint(models["whisper"])


@pytest.mark.slow
def test_pack_loads_elsewhere_in_a_fresh_process_with_the_same_hypotheses(trained, tmp_path):
    from espnet_llm_asr.bin.pack_model import pack
    from espnet_llm_asr.frozen_models import MANIFEST, read_manifest
    from espnet_llm_asr.inference import Speech2Text

    root, _, _, exp = trained
    wavs = [str(root / "wav" / f"{uid}.wav") for uid, *_ in UTTS]
    langs = [lang for _, lang, *_ in UTTS]
    expected = [h.tokens for h in Speech2Text(exp, model_file=exp / "1epoch.pth", max_new_tokens=6).batch(wavs, langs)]
    (exp / "decode_x").mkdir(exist_ok=True)
    (exp / "decode_x" / "decode_config.yaml").write_text("# conf/decode_x.yaml \nnum_beams: 1\nmax_new_tokens: 6\n")
    out = pack(exp, "1epoch.pth", tmp_path / "pack", decode_tag="decode_x")
    names = {p.name for p in out.iterdir()}
    assert {"README.md", "config.yaml", "model.pth", "decode.yaml", MANIFEST, "lang_list", "frozen"} <= names
    conf = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert conf["llm"] == "frozen/llm" and conf["frontend_conf"]["encoder"] == "frozen/encoder"
    assert conf["lang_list"] == "lang_list"
    manifest = read_manifest(out / MANIFEST)
    assert manifest["llm"]["embedded"] == "frozen/llm"
    assert manifest["llm"]["fingerprint"] == read_manifest(exp / MANIFEST)["llm"]["fingerprint"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Frozen models" in card and "hf upload" in card and "bin.transcribe" in card
    assert not list(tmp_path.glob(".pack.*"))  # the temporary dir is gone

    moved = tmp_path / "elsewhere" / "my model"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    script = ("import json, sys; from espnet_llm_asr.inference import Speech2Text; "
              "s2t = Speech2Text.from_pretrained(sys.argv[1]); "
              "print(json.dumps([h.tokens for h in s2t.batch(sys.argv[2:5], sys.argv[5:8])]))")
    proc = subprocess.run([sys.executable, "-c", script, str(moved), *wavs, *langs], cwd=tmp_path / "elsewhere",
                          capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_pack_next_to_other_llm_weights_is_refused(trained, tmp_path, caplog):
    from espnet_llm_asr.bin.pack_model import pack
    from espnet_llm_asr.frozen_models import MANIFEST, FrozenModelMismatch, fingerprint, read_manifest
    from espnet_llm_asr.inference import Speech2Text

    _, _, models, exp = trained
    out = pack(exp, "1epoch.pth", tmp_path / "pack")
    shutil.rmtree(out / "frozen" / "llm")
    _save_perturbed_llm(models["llm"], out / "frozen" / "llm")
    with pytest.raises(FrozenModelMismatch) as err:
        Speech2Text.from_pretrained(out)
    message = str(err.value)
    assert "frozen llm" in message and str(out / "frozen" / "llm") in message
    assert "--allow_frozen_mismatch" in message and "model.safetensors" in message
    trained_with = read_manifest(out / MANIFEST)["llm"]["fingerprint"]["sha256"]
    assert fingerprint(out / "frozen" / "llm")["sha256"][:16] in message and trained_with[:16] in message
    with caplog.at_level(logging.WARNING):
        Speech2Text.from_pretrained(out, allow_frozen_mismatch=True)
    assert "--allow_frozen_mismatch given" in caplog.text
    # another model dir for the LLM, pointed at explicitly, is checked the same way
    with pytest.raises(FrozenModelMismatch):
        Speech2Text.from_pretrained(exp, model_file=exp / "1epoch.pth",
                                    frozen_paths={"llm": str(out / "frozen" / "llm")})


def test_exp_dir_without_manifest_loads_with_a_warning(trained, tmp_path, caplog):
    from espnet_llm_asr.frozen_models import MANIFEST
    from espnet_llm_asr.inference import Speech2Text

    _, _, _, exp = trained
    old = tmp_path / "old_exp"
    shutil.copytree(exp, old)
    (old / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING):
        Speech2Text(old, model_file=old / "1epoch.pth")
    assert f"no {MANIFEST}" in caplog.text and "not checked" in caplog.text


@pytest.mark.slow
def test_transcribe_reads_any_rate_and_channels_and_names_a_corrupt_file(trained, tmp_path):
    from espnet_llm_asr.bin.pack_model import pack
    from espnet_llm_asr.inference import Speech2Text

    _, _, _, exp = trained
    out = pack(exp, "1epoch.pth", tmp_path / "pack")
    wave = synth_wave(1.0, seed=4)
    files = {}
    for name, rate, channels in (("a8k.wav", 8000, 1), ("b16k_stereo.wav", 16000, 2), ("c44k.flac", 44100, 1),
                                 ("d16k.wav", 16000, 1)):
        import soxr

        x = soxr.resample(wave, 16000, rate) if rate != 16000 else wave
        x = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
        soundfile.write(tmp_path / name, x, rate)
        files[name] = str(tmp_path / name)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    order = [files["a8k.wav"], str(corrupt), files["b16k_stereo.wav"], files["c44k.flac"], files["d16k.wav"]]
    cmd = [sys.executable, "-m", "espnet_llm_asr.bin.transcribe", "--model", str(out), "--lang", "hi",
           "--batch_size", "2", "--max_new_tokens", "6"]
    env = _env()
    proc = subprocess.run(cmd + order, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"cannot read audio {corrupt}" in proc.stderr and "1 of 5 files" in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [p for p in order if p != str(corrupt)]
    s2t = Speech2Text.from_pretrained(out, max_new_tokens=6)
    assert lines[-1].split("\t", 1)[1] == s2t(files["d16k.wav"], lang="hi").text
    proc = subprocess.run(cmd + ["--json", files["d16k.wav"]], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip())
    assert record["file"] == files["d16k.wav"] and len(record["gates"]) == 2 and "score" in record


def test_load_audio_16k_mixes_and_resamples(tmp_path):
    from espnet_llm_asr.data_io import load_audio_16k

    wave = synth_wave(0.5, seed=5)
    soundfile.write(tmp_path / "s.wav", np.stack([wave, wave], axis=1), 16000)
    np.testing.assert_allclose(load_audio_16k(str(tmp_path / "s.wav")), wave, atol=1e-4)
    soundfile.write(tmp_path / "r.wav", wave[::2], 8000)
    assert abs(len(load_audio_16k(str(tmp_path / "r.wav"))) - len(wave)) <= 2
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="empty.wav holds no samples"):
        load_audio_16k(str(tmp_path / "empty.wav"))
