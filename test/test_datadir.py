"""Data-dir operations of the recipe stages, through their command line
(``python -m espnet_llm_asr.bin.datadir``), on real wav files."""
from __future__ import annotations

import numpy as np
import soundfile

from tiny_setup import UTTS, make_data_dir, run_module


def _read(path):
    return dict(line.rstrip("\n").split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())


def test_speed_perturb_writes_a_copy_per_factor(tmp_path):
    """Stage 2: ``speed_perturb --factors "0.9 1.0 1.1"``: the 1.0 copy keeps the ids and the
    audio; the others get ``sp<f>-`` ids and speakers, sox-sped audio 1/f as long (the same
    signal, time-compressed), the transcript and language of their source; every file is in
    C-locale key order, and no stale utt2dur comes along."""
    src = make_data_dir(tmp_path / "src")
    (src / "utt2dur").write_text("".join(f"{u} {secs}\n" for u, _, _, secs, _ in sorted(UTTS)), encoding="utf-8")
    dst = tmp_path / "sp"
    run_module("espnet_llm_asr.bin.datadir",
               ["speed_perturb", "--src", str(src), "--dst", str(dst), "--factors", "0.9 1.0 1.1", "--nj", "2"],
               cwd=tmp_path)
    src_wav, src_text, src_lang = _read(src / "wav.scp"), _read(src / "text"), _read(src / "utt2lang")
    wav, text, lang, spk = (_read(dst / n) for n in ("wav.scp", "text", "utt2lang", "utt2spk"))
    keys = [line.split(" ", 1)[0] for line in (dst / "wav.scp").read_text(encoding="utf-8").splitlines()]
    ids = [u for u, *_ in UTTS]
    expected = set(ids) | {f"sp{f}-{u}" for f in ("0.9", "1.1") for u in ids}
    assert set(keys) == expected and len(keys) == 3 * len(ids)
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
    for name in ("text", "utt2lang", "utt2spk"):
        assert [ln.split(" ", 1)[0] for ln in (dst / name).read_text(encoding="utf-8").splitlines()] == keys, name
    assert not (dst / "utt2dur").exists()
    spk2utt = {ln.split()[0]: ln.split()[1:] for ln in (dst / "spk2utt").read_text().splitlines()}
    assert {u for us in spk2utt.values() for u in us} == expected
    assert all(spk[u] == s for s, us in spk2utt.items() for u in us)

    for u in ids:
        assert wav[u] == src_wav[u] and spk[u] == u.split("-")[0]
        orig, sr = soundfile.read(src_wav[u], dtype="float32")
        for factor in (0.9, 1.1):
            key = f"sp{factor}-{u}"
            assert text[key] == src_text[u] and lang[key] == src_lang[u]
            assert spk[key] == f"sp{factor}-{u.split('-')[0]}"
            info = soundfile.info(wav[key])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert abs(info.frames - len(orig) / factor) <= 0.002 * len(orig) + 16, (key, info.frames, len(orig))
            sped, _ = soundfile.read(wav[key], dtype="float32")
            # sample t of the copy is sample t * factor of the source
            back = np.interp(np.arange(len(orig)) / factor, np.arange(len(sped)), sped)
            inner = slice(len(orig) // 20, -len(orig) // 20)  # the resampler's edges aside
            corr = np.corrcoef(back[inner], orig[inner])[0, 1]
            assert corr > 0.99, (key, corr)
            # not the unperturbed audio: read at the original rate it does not line up
            same = slice(inner.start, min(len(sped), len(orig)) - len(orig) // 20)
            assert np.corrcoef(sped[same], orig[same])[0, 1] < 0.5
