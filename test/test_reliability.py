"""Bad data, non-finite losses and interrupted writes get clear errors and lose nothing."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from conftest import synth_wave


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
