"""Bad data, non-finite losses and interrupted writes get clear errors and lose nothing;
neither a model dir's own code nor a crafted checkpoint.pth runs unless allowed."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import synth_wave

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ data validation
def _bad_data_dir(root):
    """A data dir with one utterance per kind of problem (and two good ones)."""
    wav = root / "wav"
    wav.mkdir()
    good = synth_wave(0.5, seed=1)
    files = {
        "a-good1": ("ok", good, 16000),
        "a-good2": ("ok", good, 16000),
        "b-rate": ("wrong rate", good, 8000),
        "c-stereo": ("stereo", np.stack([good, good], 1), 16000),
        "d-silent": ("silent", np.zeros(8000, dtype=np.float32), 16000),
        "e-long": ("too long", np.tile(good, 8), 16000),
        "g-emptytext": ("   ", good, 16000),
        "h-noaudio": ("text only", None, None),
    }
    scp, text, lang = [], [], []
    for uid, (txt, audio, sr) in files.items():
        if audio is not None:
            soundfile.write(wav / f"{uid}.wav", audio, sr)
            scp.append(f"{uid} {wav / uid}.wav")
        text.append(f"{uid} {txt}")
        if uid != "a-good2":
            lang.append(f"{uid} hi")
    (wav / "f-zero.wav").write_bytes(b"")  # unreadable
    scp.append(f"f-zero {wav / 'f-zero.wav'}")
    scp.append(f"i-missing {wav / 'nope.wav'}")
    scp.append(f"j-notext {wav / 'a-good1.wav'}")
    text += ["f-zero x", "i-missing y"]
    lang += ["f-zero hi", "i-missing hi", "j-notext hi"]
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2lang", lang)):
        (root / name).write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return root


EXPECTED = {
    "b-rate": "sample rate 8000",
    "c-stereo": "2 channels",
    "d-silent": "silent",
    "e-long": "s long",
    "f-zero": "unreadable",
    "g-emptytext": "empty transcript",
    "h-noaudio": "no audio",
    "i-missing": "does not exist",
    "j-notext": "no transcript",
    "a-good2": "no language id",
}


def test_validate_reports_every_problem_with_utterance_and_file(tmp_path):
    from espnet_llm_asr.validate import validate_data_dir

    root = _bad_data_dir(tmp_path)
    report = validate_data_dir(root, max_duration=3.0, require_16k_mono=True)
    assert set(report.problems) == set(EXPECTED)
    for uid, needle in EXPECTED.items():
        assert needle in report.problems[uid], (uid, report.problems[uid])
    assert "a-good1" not in report.problems
    msg = report.message(root)
    assert "utterance c-stereo" in msg and "c-stereo.wav" in msg


def test_validate_non_utf8_names_file_and_line(tmp_path):
    from espnet_llm_asr.validate import validate_data_dir

    wav = tmp_path / "u1.wav"
    soundfile.write(wav, synth_wave(0.3), 16000)
    (tmp_path / "wav.scp").write_text(f"u1 {wav}\n")
    (tmp_path / "text").write_bytes(b"u1 caf\xe9\n")
    report = validate_data_dir(tmp_path)
    assert any("text:1" in e and "not UTF-8" in e for e in report.file_errors)


def test_format_stops_or_drops_with_a_report(tmp_path):
    from espnet_llm_asr.datadir import format_data_dir

    (tmp_path / "src").mkdir()
    src = _bad_data_dir(tmp_path / "src")
    with pytest.raises(ValueError, match="utterance"):
        format_data_dir(src, tmp_path / "dst")
    assert not (tmp_path / "dst" / "wav.scp").exists()  # nothing half written
    dropped = format_data_dir(src, tmp_path / "dst", fix_data=True)
    kept = (tmp_path / "dst" / "wav.scp").read_text().split("\n")
    kept = {ln.split()[0] for ln in kept if ln}
    # wrong rate and stereo are converted by sox, not dropped; the rest is dropped
    assert {"a-good1", "b-rate", "c-stereo", "e-long"} <= kept
    assert {"d-silent", "f-zero", "g-emptytext", "h-noaudio", "i-missing", "j-notext"} <= set(dropped)
    report = (tmp_path / "dst" / "dropped_format").read_text()
    assert "d-silent" in report and "silent" in report
    info = soundfile.info(dict(ln.split(" ", 1) for ln in
                               (tmp_path / "dst" / "wav.scp").read_text().splitlines())["c-stereo"])
    assert info.samplerate == 16000 and info.channels == 1


# ------------------------------------------------------------------ training faults
def test_nonfinite_loss_is_skipped_then_stops(tmp_path):
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel
    from tiny_setup import UTTS, make_tiny_models

    models = make_tiny_models(tmp_path, [t for _, _, t, _, _ in UTTS])
    llm = CausalLLM(str(models["llm"]))
    frontend = FRONTEND_CLASSES["mono"](output_dim=llm.hidden_size, input_dim=8, hidden_dim=16)
    model = LLMASRModel(frontend, llm, max_nonfinite_batches=3)
    feats = torch.randn(1, 20, 8)
    text, tl = torch.tensor([[5, 6]]), torch.tensor([2])
    bad = feats.clone()
    bad[0, 3] = float("nan")
    for _ in range(2):
        loss, stats, _ = model(bad, torch.tensor([20]), text, tl)
        assert torch.isfinite(loss) and stats["nonfinite"] == 1 and not torch.isfinite(stats["loss"])
        loss.backward()
        assert all(p.grad is None or (p.grad == 0).all() for p in model.parameters())
    loss, stats, _ = model(feats, torch.tensor([20]), text, tl)  # a good batch resets the count
    assert stats["nonfinite"] == 0
    for _ in range(2):
        model(bad, torch.tensor([20]), text, tl)
    with pytest.raises(RuntimeError, match="NaN/inf loss"):
        model(bad, torch.tensor([20]), text, tl)


def test_checkpoint_writes_are_atomic(tmp_path):
    from espnet_llm_asr.trainer import atomic_saves

    target = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed while writing")

    with atomic_saves():
        with pytest.raises(RuntimeError, match="killed"):
            torch.save({"epoch": 2, "bad": Unpicklable()}, target)
        torch.save({"epoch": 3}, tmp_path / "3epoch.pth")
    assert torch.load(target, weights_only=True) == {"epoch": 1}  # the old file is intact
    assert torch.load(tmp_path / "3epoch.pth", weights_only=True) == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3epoch.pth", "checkpoint.pth"]  # no temp left


# ------------------------------------------------------------------ custom code (trust_remote_code)
CUSTOM_MODEL_PY = '''
from transformers import LlamaConfig, LlamaForCausalLM

open({marker!r}, "w").write("custom code ran")


class TinyCustomConfig(LlamaConfig):
    model_type = "tiny_custom"


class TinyCustomForCausalLM(LlamaForCausalLM):
    config_class = TinyCustomConfig
'''


def _custom_code_llm(root):
    """A tiny Llama dir whose config.json asks for its own code (custom_model.py writes a marker)."""
    from espnet_llm_asr import tiny_models
    from tiny_setup import PROMPT_TEXT, TINY_LLM

    tok = tiny_models.train_tokenizer(["नमस्ते भारत", *PROMPT_TEXT], root / "tok", model_type="char")
    llm = root / "custom llm"
    tiny_models.build_tiny_llm(llm, tok, **TINY_LLM)
    marker = root / "custom_code_ran"
    (llm / "custom_model.py").write_text(CUSTOM_MODEL_PY.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((llm / "config.json").read_text())
    config["model_type"] = "tiny_custom"
    config["architectures"] = ["TinyCustomForCausalLM"]
    config["auto_map"] = {"AutoConfig": "custom_model.TinyCustomConfig",
                          "AutoModelForCausalLM": "custom_model.TinyCustomForCausalLM"}
    (llm / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return llm, marker


def test_custom_code_needs_trust_remote_code(tmp_path):
    from espnet_llm_asr.frontend import encoder_output_size
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.task import LLMASRPreprocessor

    llm, marker = _custom_code_llm(tmp_path)
    for build in (lambda: CausalLLM(str(llm)), lambda: LLMASRPreprocessor(str(llm), [])):
        with pytest.raises(ValueError) as err:
            build()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith("llm_conf.trust_remote_code is false but") and str(llm) in msg
        assert "auto_map" in msg and "'tiny_custom'" in msg and "set llm_conf.trust_remote_code: true" in msg
    assert not marker.exists()  # nothing from the dir was imported

    # a tokenizer_config.json that maps AutoTokenizer to its own class
    tok_only = tmp_path / "custom tokenizer"
    tok_only.mkdir()
    (tok_only / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "MyTokenizer", "auto_map": {"AutoTokenizer": ["tok.MyTokenizer", None]}}))
    with pytest.raises(ValueError, match=r"^llm_conf.trust_remote_code is false .*tokenizer_config.json auto_map"):
        LLMASRPreprocessor(str(tok_only), [])

    # the encoder config is checked the same way, under its own key
    enc = tmp_path / "custom encoder"
    enc.mkdir()
    (enc / "config.json").write_text(json.dumps(
        {"model_type": "my_whisper", "d_model": 8, "auto_map": {"AutoConfig": "enc.MyConfig"}}))
    with pytest.raises(ValueError, match=r"^frontend_conf.encoder_conf.trust_remote_code is false but .*custom encoder"):
        encoder_output_size(str(enc))

    # allowed in the config: the dir's code is used
    code = (f"from espnet_llm_asr.llm import CausalLLM; "
            f"print(type(CausalLLM({str(llm)!r}, trust_remote_code=True).model).__name__)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"),
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "TinyCustomForCausalLM" and marker.exists()


# ------------------------------------------------------------------ resume loads weights only
class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_resume_loads_checkpoint_weights_only(tmp_path, monkeypatch):
    import yaml

    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr import trainer
    from espnet_llm_asr.task import LLMASRTask
    from tiny_setup import UTTS, data_args, make_data_dir, make_tiny_models, train_config

    data = make_data_dir(tmp_path)
    models = make_tiny_models(tmp_path, [t for _, _, t, _, _ in UTTS])
    conf_path = train_config(tmp_path, models, "mono")
    conf = yaml.safe_load(conf_path.read_text())
    conf.update(scheduler="warmuplr", scheduler_conf={"warmup_steps": 10})  # a scheduler state too
    conf_path.write_text(yaml.safe_dump(conf))
    out = tmp_path / "exp"
    cmd = ["--config", str(conf_path), "--output_dir", str(out), "--ngpu", "0",
           "--num_iters_per_epoch", "2", *data_args(data)]
    assert LLMASRTask.trainer is trainer.AtomicCheckpointTrainer
    LLMASRTask.main(cmd=[*cmd, "--max_epoch", "1"])

    loaded = []
    real_load = trainer.load_checkpoint
    monkeypatch.setattr(trainer, "load_checkpoint", lambda *a, **k: loaded.append(a[0]) or real_load(*a, **k))
    LLMASRTask.main(cmd=[*cmd, "--max_epoch", "2", "--resume", "true"])
    assert loaded == [out / "checkpoint.pth"]
    states = trainer.load_checkpoint(out / "checkpoint.pth")
    assert sorted(states["reporter"]["stats"]) == [1, 2]  # epoch 1's stats came from the resumed file
    assert states["schedulers"][0]["last_epoch"] == 4  # warmup continued: 2 steps an epoch
    assert (out / "2epoch.pth").exists()

    # a checkpoint.pth with a pickled object that runs code is refused; the code never runs
    marker = tmp_path / "pwned"
    torch.save({**states, "reporter": _Payload(marker)}, out / "checkpoint.pth")
    with pytest.raises(pickle.UnpicklingError) as err:
        LLMASRTask.main(cmd=[*cmd, "--max_epoch", "3", "--resume", "true"])
    msg = str(err.value)
    assert "\n" not in msg and "weights_only=True" in msg and "builtins.exec" in msg
    assert str(out / "checkpoint.pth") in msg
    assert not marker.exists() and not (out / "3epoch.pth").exists()
    torch.load(out / "checkpoint.pth", weights_only=False)  # the payload is real: unrestricted loading runs it
    assert marker.read_text() == "pwned"
