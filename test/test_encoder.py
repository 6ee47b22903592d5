"""The Whisper log-mel and the frozen Whisper encoder, on a tiny real HF Whisper checkpoint.

The tiny model has ``max_source_positions=50``: one window is 100 mel
frames = 1 s, so the long-audio (multi-window) path is cheap to exercise.
"""
import numpy as np
import pytest
import torch
from conftest import synth_wave

from espnet_llm_asr import tiny_models
from espnet_llm_asr.encoder import WhisperEncoder
from espnet_llm_asr.features import WhisperLogMel

HOP = 160
TINY = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """Tiny Whisper with a 1 s window (max_source_positions=50)."""
    return tiny_models.build_tiny_whisper(tmp_path_factory.mktemp("w") / "whisper", max_source_positions=50, **TINY)


def pad_batch(waves, extra=0):
    """List of (L,) arrays -> ((B, max L + extra) zero-padded, (B,) lengths)."""
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()) + extra)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lengths


def encode_alone(enc, wave):
    feats, lengths = enc(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    return feats[0, : int(lengths[0])]


# ---------------------------------------------------------------------- log-mel
@pytest.mark.parametrize("n_mels", [80, 128])
def test_logmel_matches_hf_feature_extractor(n_mels):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    logmel = WhisperLogMel(fe)
    waves = [synth_wave(s, seed=i) for i, s in enumerate([1.234, 0.517, 2.0])]
    batch, lengths = pad_batch(waves, extra=333)
    mel, mel_lengths = logmel(batch, lengths)
    assert mel.shape == (3, n_mels, batch.shape[1] // HOP)
    assert mel_lengths.tolist() == [len(w) // HOP for w in waves]
    for i, w in enumerate(waves):
        # the utterance alone, no 30 s padding
        ref = fe(w, sampling_rate=16000, padding="longest", return_tensors="np")["input_features"][0]
        assert ref.shape == (n_mels, len(w) // HOP)
        np.testing.assert_allclose(mel[i, :, : mel_lengths[i]].numpy(), ref, atol=1e-4)

    # edge="zeros" on audio padded to 30 s is Whisper's own input, frame for frame
    mel30, _ = logmel(torch.nn.functional.pad(batch, (0, 480000 - batch.shape[1])), lengths, edge="zeros")
    for i, w in enumerate(waves):
        ref = fe(w, sampling_rate=16000, return_tensors="np")["input_features"][0]
        assert ref.shape == mel30[i].shape == (n_mels, 3000)
        np.testing.assert_allclose(mel30[i].numpy(), ref, atol=1e-4)


def test_logmel_ignores_whatever_lies_past_the_length():
    """Loud junk after an utterance's end (instead of zeros) changes none of its frames: batch == alone."""
    from transformers import WhisperFeatureExtractor

    logmel = WhisperLogMel(WhisperFeatureExtractor())
    quiet = 0.01 * synth_wave(0.6, seed=1)
    quiet[-100:] = 0.9  # a click at the very end: the frame after the last one (dropped) would be the loudest
    loud = synth_wave(1.0, seed=2)
    batch, lengths = pad_batch([quiet, loud])
    junk = batch.clone()
    junk[0, len(quiet):] = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, batch.shape[1] - len(quiet)))
    n = len(quiet) // HOP
    alone, _ = logmel(torch.from_numpy(quiet)[None], torch.tensor([len(quiet)]))
    mel, mel_lengths = logmel(junk, lengths)
    assert int(mel_lengths[0]) == n
    torch.testing.assert_close(mel[0, :, :n], alone[0], atol=1e-5, rtol=0)
    zeros_ref, _ = logmel(batch, lengths, edge="zeros")
    zeros_junk, _ = logmel(junk, lengths, edge="zeros")
    torch.testing.assert_close(zeros_junk, zeros_ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="edge"):
        logmel(batch, lengths, edge="mirror")


# ---------------------------------------------------------------------- encoder
def test_padded_batch_equals_alone(whisper_dir):
    enc = WhisperEncoder(str(whisper_dir), pad_to_30s=False)
    waves = [synth_wave(s, seed=i) for i, s in enumerate([0.37, 0.83, 0.61, 0.3])]
    batch, lengths = pad_batch(waves, extra=1000)  # padding beyond the longest too
    feats, feats_lengths = enc(batch, lengths)
    expected = [-(-(len(w) // HOP) // 2) for w in waves]  # ceil(mel frames / 2)
    assert feats_lengths.tolist() == expected == enc.output_lengths(lengths).tolist()
    assert feats.shape == (4, max(expected), enc.output_size())
    for i, w in enumerate(waves):
        n = expected[i]
        torch.testing.assert_close(feats[i, :n], encode_alone(enc, w), atol=1e-4, rtol=0)
        assert torch.all(feats[i, n:] == 0)  # padded frames are zero
    assert enc.frame_rate == 50
    assert enc.window_seconds == pytest.approx(1.0)


def test_masked_path_is_the_hf_encoder_on_a_full_window(whisper_dir):
    """Nothing padded: our conv/positions/layers/layer_norm pass equals transformers' forward."""
    enc = WhisperEncoder(str(whisper_dir), pad_to_30s=False)
    mel = torch.randn(2, 80, enc.window_frames)
    with torch.no_grad():
        ref = enc.encoder(input_features=mel).last_hidden_state
        ours = enc.encode_masked(mel, torch.full((2,), enc.window_frames))
    assert ours.shape == ref.shape == (2, 50, 32)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # output frames per utterance = ceil(mel frames / 2), as the stride-2 conv gives
    for frames in (1, 2, 37, 38):
        with torch.no_grad():
            out = enc.encode_masked(mel[:1, :, :frames], torch.tensor([frames]))
        assert out.shape[1] == (frames + 1) // 2


@pytest.mark.parametrize("pad_to_30s", [False, True])
def test_output_layer_runs_the_first_layers_then_the_final_norm(whisper_dir, pad_to_30s):
    """encoder_conf.output_layer N: transformers' hidden state after layer N through the encoder's
    final layer norm (N = all layers: the usual output); out-of-range values are refused."""
    enc = WhisperEncoder(str(whisper_dir), pad_to_30s=pad_to_30s, output_layer=1)
    full = WhisperEncoder(str(whisper_dir), pad_to_30s=pad_to_30s, output_layer=2)
    assert len(enc.encoder.layers) == 1 and len(full.encoder.layers) == 2
    mel = torch.randn(1, 80, enc.window_frames)
    with torch.no_grad():
        hidden = full.encoder(input_features=mel, output_hidden_states=True).hidden_states
        ours, _ = enc.forward_mel(mel, torch.tensor([enc.window_frames]))
        last, _ = full.forward_mel(mel, torch.tensor([enc.window_frames]))
    torch.testing.assert_close(ours, full.encoder.layer_norm(hidden[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(last, hidden[-1], atol=1e-5, rtol=0)  # hidden[-1]: after the final norm
    assert not torch.allclose(ours, last, atol=1e-3)
    for bad in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match="output_layer must be an integer in 1..2"):
            WhisperEncoder(str(whisper_dir), output_layer=bad)


def test_pad_to_30s_is_hf_whisper_trimmed(whisper_dir):
    """pad_to_30s=True: HF feature extractor (window padding) + HF encoder, trimmed to the real frames."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    hf = WhisperForConditionalGeneration.from_pretrained(str(whisper_dir)).model.encoder.eval()
    fe = WhisperFeatureExtractor.from_pretrained(str(whisper_dir))
    enc = WhisperEncoder(str(whisper_dir), pad_to_30s=True)
    waves = [synth_wave(s, seed=10 + i) for i, s in enumerate([0.45, 0.9])]
    feats, feats_lengths = enc(*pad_batch(waves))
    for i, w in enumerate(waves):
        x = fe(w, sampling_rate=16000, return_tensors="pt")["input_features"]
        assert x.shape[-1] == enc.window_frames
        with torch.no_grad():
            ref = hf(x).last_hidden_state[0]
        n = int(feats_lengths[i])
        assert n == -(-(len(w) // HOP) // 2)
        torch.testing.assert_close(feats[i, :n], ref[:n], atol=1e-4, rtol=0)
        assert torch.all(feats[i, n:] == 0)


@pytest.mark.parametrize("pad_to_30s", [False, True])
def test_long_audio_is_windowed_and_joined(whisper_dir, pad_to_30s):
    enc = WhisperEncoder(str(whisper_dir), pad_to_30s=pad_to_30s)
    long = synth_wave(2.57, seed=3)  # 257 mel frames: windows of 100, 100, 57 frames
    short = synth_wave(0.4, seed=4)
    batch, lengths = pad_batch([long, short])
    feats, feats_lengths = enc(batch, lengths)
    assert feats_lengths.tolist() == [50 + 50 + 29, 20]
    assert feats.shape[1] == 129
    # each window is the encoding of that window's log-mel alone
    edge = "zeros" if pad_to_30s else "reflect"
    mel, mel_lengths = enc.logmel(torch.from_numpy(long)[None], torch.tensor([len(long)]), edge=edge)
    for k in range(2):
        win = mel[:, :, 100 * k: 100 * (k + 1)]
        alone, alone_len = enc.forward_mel(win, torch.tensor([100]))
        assert int(alone_len[0]) == 50
        torch.testing.assert_close(feats[0, 50 * k: 50 * (k + 1)], alone[0], atol=1e-4, rtol=0)
    # the long utterance alone, and the short one, give the same as in the batch
    torch.testing.assert_close(feats[0], encode_alone(enc, long), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats[1, :20], encode_alone(enc, short), atol=1e-4, rtol=0)


def test_frozen_and_differentiable_downstream(whisper_dir):
    enc = WhisperEncoder(str(whisper_dir))
    assert not any(p.requires_grad for p in enc.parameters())
    parent = torch.nn.ModuleDict({"enc": enc, "proj": torch.nn.Linear(32, 4)})
    parent.train()
    assert not enc.training and not enc.encoder.training and parent["proj"].training
    parent.double()  # ESPnet casts the whole model: the frozen encoder keeps its dtype
    assert enc.encoder.conv1.weight.dtype == torch.float32
    parent.float()
    wave = synth_wave(0.5, seed=5)
    feats, _ = enc(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert not feats.requires_grad and not feats.is_inference()
    parent["proj"](feats).sum().backward()  # no inference-mode error
    assert parent["proj"].weight.grad is not None

    trainable = WhisperEncoder(str(whisper_dir), freeze=False)
    trainable.train()
    assert trainable.training
    grads = {n for n, p in trainable.named_parameters() if p.requires_grad}
    assert "encoder.conv1.weight" in grads and "encoder.embed_positions.weight" not in grads


def test_bfloat16_encoder(whisper_dir):
    enc32 = WhisperEncoder(str(whisper_dir))
    enc16 = WhisperEncoder(str(whisper_dir), dtype="bfloat16")
    assert enc16.encoder.conv1.weight.dtype == torch.bfloat16
    assert enc16.logmel.mel_filters.dtype == torch.float32
    wave = synth_wave(0.7, seed=6)
    ref = encode_alone(enc32, wave)
    out = encode_alone(enc16, wave)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with pytest.raises(ValueError, match="float64"):
        WhisperEncoder(str(whisper_dir), dtype="float64")


def test_checkpoint_layouts_and_errors(tmp_path, whisper_dir):
    """A sharded WhisperModel checkpoint loads the same weights; missing paths name the path."""
    from transformers import WhisperModel

    model = WhisperModel.from_pretrained(str(whisper_dir))
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    enc = WhisperEncoder(str(sharded))  # no preprocessor_config.json: default extractor
    for name, p in model.encoder.state_dict().items():
        torch.testing.assert_close(enc.encoder.state_dict()[name], p, atol=0, rtol=0)

    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        WhisperEncoder(str(missing))
    with pytest.raises(FileNotFoundError, match="whisper-nonexistent"):  # offline, not cached
        WhisperEncoder("example-org/whisper-nonexistent-tiny")


def test_dump_shards_take_every_nj_th_key():
    """bin/dump_encoder_feats: the shards partition the keys, each a like mix of the sorted ids."""
    from espnet_llm_asr.bin.dump_encoder_feats import shard

    keys = [f"u{i:02d}" for i in range(10)]
    shards = [shard(keys, 3, j) for j in (1, 2, 3)]
    assert sorted(k for s in shards for k in s) == keys
    assert shards[0] == ["u00", "u03", "u06", "u09"] and [len(s) for s in shards] == [4, 3, 3]
    with pytest.raises(ValueError, match="outside 1..3"):
        shard(keys, 3, 4)
