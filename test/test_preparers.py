"""Real-corpus preparers (local/data.sh --corpus ...): tiny fake corpora of each public
layout become Kaldi dirs that pass validate_data_dir; bad input gets an error naming
file and line, or is dropped and counted; a failure never leaves a half-written dir."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_llm_asr.bin import validate_data_dir as validate_cli
from espnet_llm_asr.data import preparers
from espnet_llm_asr.data.preparers import PrepareError, prepare_corpus

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2" / "indic" / "asr1"
TEXTS = {"hi": ["नमस्ते दुनिया", "आज मौसम अच्छा है", "यह एक परीक्षा है"],
         "mr": ["नमस्कार जग", "आज हवा छान आहे", "ही एक चाचणी आहे"],
         "ta": ["வணக்கம் உலகம்", "இன்று வானிலை நன்று", "இது ஒரு சோதனை"]}


def _wav(path: Path, seed: int, sr: int = 16000, fmt: str = "WAV", seconds: float = 0.4) -> Path:
    from conftest import synth_wave

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), synth_wave(seconds, seed, sr), sr, format=fmt)
    return path


def _valid(data_dir: Path, require_16k: bool = True) -> None:
    with pytest.raises(SystemExit) as e:
        validate_cli.main([str(data_dir), "--need_lang", "true", "--require_16k_mono", str(require_16k).lower()])
    assert e.value.code == 0, data_dir


def _lines(path: Path):
    return path.read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------ FLEURS
def _fleurs(root: Path, langs=("hi", "mr"), splits=("train", "dev", "test")) -> Path:
    for li, lang in enumerate(langs):
        d = root / f"{lang}_in"
        for si, split in enumerate(splits):
            rows = []
            for i, text in enumerate(TEXTS[lang]):
                name = f"{1000 + 100 * li + 10 * si + i}.wav"
                _wav(d / "audio" / split / name, seed=li * 100 + si * 10 + i)
                rows.append("\t".join([str(i), name, text + "!", text, " ".join(text), "6400", "FEMALE"]))
            (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_fleurs(tmp_path):
    root = _fleurs(tmp_path / "fleurs")
    out = tmp_path / "data"
    summary = prepare_corpus("fleurs", out, root=root, langs=["hi", "mr"])
    assert set(summary.sets) == {"train", "dev", "test"}
    assert summary.sets["test"] == {"hi": 3, "mr": 3}
    assert _lines(out / "lang_list") == ["hi", "mr"]
    for s in ("train", "dev", "test"):
        _valid(out / s)
        text = dict(ln.split(" ", 1) for ln in _lines(out / s / "text"))
        assert "नमस्ते दुनिया" in text.values()          # the normalised transcription, not the raw one
        assert all(v.split()[0] for v in text.values())
        langs = {ln.split()[1] for ln in _lines(out / s / "utt2lang")}
        assert langs == {"hi", "mr"}
    # a second run with the same options does nothing
    mtime = (out / "train" / "text").stat().st_mtime_ns
    assert prepare_corpus("fleurs", out, root=root, langs=["hi", "mr"]).skipped
    assert (out / "train" / "text").stat().st_mtime_ns == mtime
    # a suffix names the sets after the corpus, and lang_list keeps existing ids
    prepare_corpus("fleurs", out, root=root, langs=["hi"], splits=["test"], suffix="_fleurs")
    assert (out / "test_fleurs" / "wav.scp").is_file() and _lines(out / "lang_list") == ["hi", "mr"]


def test_fleurs_errors_name_file_and_line_and_write_nothing(tmp_path):
    out = tmp_path / "data"
    with pytest.raises(PrepareError, match="root is not set"):
        prepare_corpus("fleurs", out, root="")
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_corpus("fleurs", out, root=tmp_path / "nowhere")
    root = _fleurs(tmp_path / "fleurs", langs=("hi",))
    with pytest.raises(PrepareError, match=r"ta_in"):               # language dir missing: paths tried
        prepare_corpus("fleurs", out, root=root, langs=["hi", "ta"])
    (root / "hi_in" / "dev.tsv").unlink()
    with pytest.raises(PrepareError, match=r"hi_in/dev\.tsv does not exist"):
        prepare_corpus("fleurs", out, root=root, langs=["hi"])
    assert not out.exists()

    # a row without a transcript and a row whose audio is missing
    prepare_corpus("fleurs", out, root=root, langs=["hi"], splits=["train"])
    before = _lines(out / "train" / "text")
    tsv = root / "hi_in" / "train.tsv"
    rows = _lines(tsv)
    rows[1] = "\t".join(rows[1].split("\t")[:3] + ["", "", "6400", "MALE"])
    (root / "hi_in" / "audio" / "train" / rows[2].split("\t")[1]).unlink()
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(PrepareError) as e:
        prepare_corpus("fleurs", out, root=root, langs=["hi"], splits=["train"])
    msg = str(e.value)
    assert "2 bad row(s)" in msg and f"{tsv}:2" in msg and "empty transcript" in msg
    assert f"{tsv}:3" in msg and "does not exist" in msg
    assert _lines(out / "train" / "text") == before                  # the old dir is untouched
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary dir left

    summary = prepare_corpus("fleurs", out, root=root, langs=["hi"], splits=["train"], skip_bad=True)
    assert summary.sets["train"] == {"hi": 1} and summary.dropped["train"] == 2
    assert len(_lines(out / "train" / "dropped_prepare")) == 2
    _valid(out / "train")


# ------------------------------------------------------------------ Common Voice
def _commonvoice(root: Path, fmt: str = "MP3") -> Path:
    ext = ".mp3" if fmt == "MP3" else ".wav"
    for lang in ("hi", "ta"):
        d = root / lang
        for si, split in enumerate(("train", "dev", "test")):
            lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"]
            for i, text in enumerate(TEXTS[lang]):
                name = f"common_voice_{lang}_{si}{i}{ext}"
                _wav(d / "clips" / name, seed=si * 10 + i, sr=48000, fmt=fmt, seconds=0.6)
                client = f"{'ab' if i % 2 else 'cd'}{'0' * 100}{i}"
                lines.append(f"{client}\t{name}\t\"{text}\"\t2\t0\t\t\t\t{lang}\t")
            (d / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_commonvoice_mp3_decoded_to_wav(tmp_path):
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile has no MP3 support: covered by the tsv test below")
    root = _commonvoice(tmp_path / "cv")
    out, wavs = tmp_path / "data", tmp_path / "wavs"
    summary = prepare_corpus("commonvoice", out, root=root, langs=["hi", "ta"], wav_dir=wavs, nj=2)
    assert summary.sets["train"] == {"hi": 3, "ta": 3}
    for s in ("train", "dev", "test"):
        _valid(out / s, require_16k=False)          # 48 kHz wav: stage 3 resamples
        for ln in _lines(out / s / "wav.scp"):
            assert ln.endswith(".wav") and str(wavs) in ln
    text = _lines(out / "train" / "text")
    assert any('"नमस्ते दुनिया"' in t for t in text)   # quotes are literal in Common Voice tsvs
    spk = {ln.split()[1] for ln in _lines(out / "train" / "utt2spk")}
    assert len(spk) == 4                               # two clients per language


def test_commonvoice_tsv_and_missing_decoder(tmp_path, monkeypatch):
    root = _commonvoice(tmp_path / "cv", fmt="WAV")
    # the tsv parsing with the clips stood in by wavs
    for lang in ("hi", "ta"):
        for split in ("train", "dev", "test"):
            tsv = root / lang / f"{split}.tsv"
            tsv.write_text(tsv.read_text(encoding="utf-8").replace(".wav", ".mp3"), encoding="utf-8")
            for wav in (root / lang / "clips").glob("*.wav"):
                wav.rename(wav.with_suffix(".mp3"))
    monkeypatch.setattr(preparers.audio, "_soundfile_reads", lambda path: False)
    monkeypatch.setattr(preparers.audio.shutil, "which", lambda name: None)
    out = tmp_path / "data"
    with pytest.raises(PrepareError, match=r"cannot decode .*\.mp3.*ffmpeg"):
        prepare_corpus("commonvoice", out, root=root, langs=["hi"])
    assert not out.exists()
    bad = root / "hi" / "train.tsv"
    bad.write_text("path\tfoo\nx.mp3\ty\n", encoding="utf-8")
    with pytest.raises(PrepareError, match=rf"{bad}:1: header must name"):
        prepare_corpus("commonvoice", out, root=root, langs=["hi"])


# ------------------------------------------------------------------ Kathbath
def _kathbath(root: Path, audio_subdir: bool) -> Path:
    for lang, name in (("hi", "hindi"), ("ta", "tamil")):
        for si, split in enumerate(("train", "valid", "test_known", "test_unknown")):
            d = root / name / split
            lines = []
            for i, text in enumerate(TEXTS[lang]):
                fname = f"84442493153{si}{i % 2}-{594 + i}-{'f' if i % 2 else 'm'}.wav"
                _wav((d / "audio" if audio_subdir else d) / fname, seed=si * 10 + i)
                lines.append(f"{fname}\t{text}\u00a0")   # a no-break space, as in the corpus
            (d / "transcription_n2w.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("audio_subdir", [False, True])
def test_kathbath(tmp_path, audio_subdir):
    root = _kathbath(tmp_path / "kathbath", audio_subdir)
    out = tmp_path / "data"
    summary = prepare_corpus("kathbath", out, root=root, langs=["hi", "ta"])
    assert set(summary.sets) == {"train", "dev", "test_known", "test_unknown"}
    for s in summary.sets:
        _valid(out / s)
    utt2spk = dict(ln.split() for ln in _lines(out / "dev" / "utt2spk"))
    assert len(set(utt2spk.values())) == 4 and all(u.startswith(s) for u, s in utt2spk.items())
    assert all(not t.endswith(" ") for t in _lines(out / "dev" / "text"))


def test_kathbath_m4a_without_decoder(tmp_path, monkeypatch):
    d = tmp_path / "kb" / "hindi" / "train"
    d.mkdir(parents=True)
    (d / "1-2-f.m4a").write_bytes(b"\0" * 100)
    (d / "transcription_n2w.txt").write_text("1-2-f.m4a\tनमस्ते\n", encoding="utf-8")
    monkeypatch.setattr(preparers.audio.shutil, "which", lambda name: None)
    with pytest.raises(PrepareError, match="cannot decode .*1-2-f.m4a"):
        prepare_corpus("kathbath", tmp_path / "data", root=tmp_path / "kb", langs=["hi"], splits=["train"])
    with pytest.raises(PrepareError, match="unknown split"):
        prepare_corpus("kathbath", tmp_path / "data", root=tmp_path / "kb", langs=["hi"], splits=["dev"])


# ------------------------------------------------------------------ IndicVoices
def test_indicvoices(tmp_path):
    root = tmp_path / "iv"
    for lang, name in (("hi", "hindi"), ("mr", "marathi")):
        d = root / name
        long = _wav(d / "audio" / f"{lang}_long.wav", seed=5, seconds=2.0)
        items = [{"audio_filepath": f"audio/{lang}_{i}.wav", "text": t, "speaker_id": f"S{i % 2}",
                  "duration": 0.4} for i, t in enumerate(TEXTS[lang][:2])]
        for i in range(2):
            _wav(d / "audio" / f"{lang}_{i}.wav", seed=i)
        # one segment of a longer recording (offset + duration)
        items.append({"audio_filepath": str(long), "text": TEXTS[lang][2], "offset": 0.5, "duration": 0.7})
        (d / "train.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in items) + "\n",
                                       encoding="utf-8")
        (d / "valid.json").write_text(json.dumps(items[:2], ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "data"
    summary = prepare_corpus("indicvoices", out, root=root, langs=["hi", "mr"], splits=["train", "valid"],
                             wav_dir=tmp_path / "wavs")
    assert summary.sets == {"train": {"hi": 3, "mr": 3}, "dev": {"hi": 2, "mr": 2}}
    for s in ("train", "dev"):
        _valid(out / s)
    segs = [ln.split(" ", 1)[1] for ln in _lines(out / "train" / "wav.scp") if "wavs" in ln]
    assert len(segs) == 2
    assert soundfile.info(segs[0]).frames == int(0.7 * 16000)

    (root / "hindi" / "train.jsonl").write_text('{"audio_filepath": "audio/hi_0.wav"}\n{oops\n', encoding="utf-8")
    with pytest.raises(PrepareError) as e:
        prepare_corpus("indicvoices", out, root=root, langs=["hi"], splits=["train"])
    assert "train.jsonl:1: utterance" in str(e.value) and "empty transcript" in str(e.value)
    assert "train.jsonl:2: not valid JSON" in str(e.value)


# ------------------------------------------------------------------ Kaldi dir
def test_kaldi_import_with_pipe_and_segments(tmp_path):
    src = tmp_path / "src" / "data" / "eval"
    src.mkdir(parents=True)
    a = _wav(tmp_path / "audio" / "a.wav", seed=1)
    b = _wav(tmp_path / "audio" / "b.wav", seed=2, sr=8000)
    (src / "wav.scp").write_text(f"spk1-u1 {a}\nspk2-u2 cat '{b}' |\n", encoding="utf-8")
    (src / "text").write_text("spk1-u1 नमस्ते दुनिया\nspk2-u2 आज मौसम\n", encoding="utf-8")
    (src / "utt2spk").write_text("spk1-u1 spk1\nspk2-u2 spk2\n", encoding="utf-8")
    out = tmp_path / "data"
    with pytest.raises(PrepareError, match="--utt2lang FILE or --lang CODE"):
        prepare_corpus("kaldi", out, src_dir=src)
    summary = prepare_corpus("kaldi", out, src_dir=src, lang="hi", wav_dir=tmp_path / "wavs")
    assert summary.sets == {"eval": {"hi": 2}}
    _valid(out / "eval", require_16k=False)
    wav = dict(ln.split(" ", 1) for ln in _lines(out / "eval" / "wav.scp"))
    assert wav["spk1-u1"] == str(a) and not wav["spk2-u2"].endswith("|")   # the pipe was run once
    assert _lines(out / "eval" / "utt2spk") == ["spk1-u1 spk1", "spk2-u2 spk2"]

    # segments of one recording, languages from an utt2lang file
    seg = tmp_path / "src" / "data" / "seg"
    seg.mkdir()
    long = _wav(tmp_path / "audio" / "long.wav", seed=3, seconds=2.0)
    (seg / "wav.scp").write_text(f"rec1 {long}\n", encoding="utf-8")
    (seg / "segments").write_text("rec1-a rec1 0.0 0.5\nrec1-b rec1 0.5 -1\n", encoding="utf-8")
    (seg / "text").write_text("rec1-a नमस्ते\nrec1-b வணக்கம்\n", encoding="utf-8")
    (tmp_path / "u2l").write_text("rec1-a hi\nrec1-b ta\n", encoding="utf-8")
    summary = prepare_corpus("kaldi", out, src_dir=seg, utt2lang=tmp_path / "u2l", set_name="test_seg",
                             wav_dir=tmp_path / "wavs")
    assert summary.sets == {"test_seg": {"hi": 1, "ta": 1}}
    _valid(out / "test_seg")
    wav = dict(ln.split(" ", 1) for ln in _lines(out / "test_seg" / "wav.scp"))
    assert soundfile.info(wav["rec1-a"]).frames == 8000 and soundfile.info(wav["rec1-b"]).frames == 24000
    assert _lines(out / "lang_list") == ["hi", "ta"]


# ------------------------------------------------------------------ local/data.sh
def test_data_sh_corpus_from_db_sh(tmp_path):
    root = _fleurs(tmp_path / "fleurs", langs=("hi", "mr"), splits=("train", "dev", "test"))
    env = dict(os.environ, FLEURS=str(root), OMP_NUM_THREADS="1")
    data = tmp_path / "data"
    proc = subprocess.run(["local/data.sh", "--corpus", "fleurs", "--langs", "mr,hi", "--data_dir", str(data)],
                          cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _lines(data / "lang_list") == ["mr", "hi"]
    assert len(_lines(data / "test" / "wav.scp")) == 6
    # a bad root is a clear error and a non-zero exit
    env["FLEURS"] = str(tmp_path / "missing")
    proc = subprocess.run(["local/data.sh", "--corpus", "fleurs", "--data_dir", str(tmp_path / "d2")],
                          cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "missing does not exist" in proc.stderr
    assert not (tmp_path / "d2").exists()
