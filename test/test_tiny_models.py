"""Tiny HF models: tokenizer, Whisper and causal LM builders, their pretraining and CLIs."""
import json

import numpy as np
import pytest
import torch
from conftest import synth_wave

from espnet_llm_asr import tiny_models
from espnet_llm_asr.encoder import WhisperEncoder

TEXTS = [
    "नमस्ते भारत", "मेरा नाम राम है", "क़लम और किताब",  # Hindi (with a nukta letter)
    "आमचे घर मोठे आहे",  # Marathi
    "வணக்கம் உலகம்", "தமிழ் மொழி",  # Tamil
    "నమస్కారం ప్రపంచం", "తెలుగు భాష",  # Telugu
]
TINY_WHISPER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                    max_source_positions=50)
TINY_LLM = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


# ---------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("model_type", ["char", "unigram", "bpe"])
def test_tokenizer_round_trip(tmp_path, model_type):
    from transformers import AutoTokenizer

    text_file = tmp_path / "train.txt"
    text_file.write_text("\n".join(TEXTS * 3) + "\n", encoding="utf-8")
    vocab = None if model_type == "char" else 80
    tiny_models.train_tokenizer(text_file, tmp_path / "tok", vocab_size=vocab, model_type=model_type)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    if model_type == "char":  # one token per character, "▁" for the space
        assert tok.convert_ids_to_tokens(tok("नमस्ते", add_special_tokens=False)["input_ids"]) == \
            ["▁", "न", "म", "स", "्", "त", "े"]
    prompt = "USER: Transcribe speech to text. The speech is in Tamil.\n ASSISTANT:"
    for text in TEXTS + ["राम और भारत", "தமிழ் உலகம்", "తెలుగు ప్రపంచం", prompt]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
        with_bos = tok(text)["input_ids"]
        assert with_bos[0] == tok.bos_token_id and with_bos[1:] == ids
        assert tok.decode(with_bos, skip_special_tokens=True) == text
    assert tok.unk_token_id in tok("ঝ", add_special_tokens=False)["input_ids"]  # Bengali: unseen


# ---------------------------------------------------------------------- LLM
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return tiny_models.train_tokenizer(TEXTS, tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_llm_loads_with_auto_classes_and_generates(tmp_path, tokenizer_dir, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny_models.build_tiny_llm(tmp_path / "llm", tokenizer_dir, arch=arch, **TINY_LLM)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "llm"))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "llm"))
    assert model.config.model_type == arch
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    inputs = tok(["नमस्ते"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0], skip_special_tokens=True), str)


def test_pretrain_causal_lm_loss_falls(tmp_path, tokenizer_dir):
    from transformers import AutoModelForCausalLM

    llm = tiny_models.build_tiny_llm(tmp_path / "llm", tokenizer_dir, **TINY_LLM)
    before = AutoModelForCausalLM.from_pretrained(str(llm)).model.embed_tokens.weight.clone()
    result = tiny_models.pretrain_causal_lm(llm, TEXTS, out_dir=tmp_path / "trained", steps=40,
                                            batch_size=8, lr=3e-3, log_every=10)
    assert result["last_loss"] < 0.7 * result["first_loss"], result
    # the original stays untouched, the trained copy differs and loads with its tokenizer
    unchanged = AutoModelForCausalLM.from_pretrained(str(llm)).model.embed_tokens.weight
    trained = AutoModelForCausalLM.from_pretrained(str(tmp_path / "trained")).model.embed_tokens.weight
    torch.testing.assert_close(unchanged, before)
    assert not torch.allclose(trained, before)
    assert (tmp_path / "trained" / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm", "trained"]  # no temporary dirs left


@pytest.mark.slow
def test_pretrain_causal_lm_copy_examples(tmp_path, tokenizer_dir):
    """copy_fraction trains on ASR-shaped sequences: BOS + text + prompt after the speech + text + EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = tiny_models.build_tiny_llm(tmp_path / "llm", tokenizer_dir, **TINY_LLM)
    for frac in (0.0, 1.0):
        tiny_models.pretrain_causal_lm(llm, TEXTS, out_dir=tmp_path / f"copy{frac}", steps=40, batch_size=8,
                                       lr=3e-3, log_every=10, copy_fraction=frac)
    tok = AutoTokenizer.from_pretrained(str(llm))
    suffix = tok(tiny_models.prompt_after_speech(), add_special_tokens=False)["input_ids"]
    assert tiny_models.prompt_after_speech() == "USER: Transcribe speech to text.\n ASSISTANT:"

    def prompt_loss(model_dir):  # loss on the prompt between the two copies of the transcript
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        total = 0.0
        for t in TEXTS:
            ids = tok(t, add_special_tokens=False)["input_ids"]
            seq = [tok.bos_token_id] + ids + suffix + ids + [tok.eos_token_id]
            labels = [-100] * (1 + len(ids)) + suffix + [-100] * (len(ids) + 1)
            with torch.no_grad():
                total += model(input_ids=torch.tensor([seq]), labels=torch.tensor([labels])).loss.item()
        return total / len(TEXTS)

    # only the model trained on copy examples has seen the prompt there (learning to copy takes far longer)
    assert prompt_loss(tmp_path / "copy1.0") < 0.7 * prompt_loss(tmp_path / "copy0.0")
    with pytest.raises(ValueError, match="copy_fraction"):
        tiny_models.pretrain_causal_lm(llm, TEXTS, steps=1, copy_fraction=1.5)
    with pytest.raises(ValueError, match="copy_text"):
        tiny_models.pretrain_causal_lm(llm, TEXTS, steps=1, copy_fraction=1.0, copy_text="lines")
    # copy examples of random words (tiny_models.copy_examples.RandomSentences), aligned and spelled too
    result = tiny_models.pretrain_causal_lm(llm, TEXTS, out_dir=tmp_path / "random", steps=3, batch_size=8,
                                            copy_fraction=1.0, aligned_fraction=0.5, copy_text="random_words",
                                            aligned_slot={"unit": "char"})
    assert np.isfinite(result["last_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["token", "char"])
def test_pretrain_with_aligned_examples_learns_to_read_them(tmp_path, tokenizer_dir, unit):
    """After pretraining on aligned copies, the LM predicts the transcript after an
    aligned slot (unseen draws of it) far better than the same LM pretrained on
    plain copies only; with ``unit: char`` the slot holds the transcript spelled."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from espnet_llm_asr.ctc_vocab import CharSpeller
    from espnet_llm_asr.tiny_models.copy_examples import AlignedSlotConfig, CopyExampleMaker, token_char_counts

    llm = tiny_models.build_tiny_llm(tmp_path / "llm", tokenizer_dir, **TINY_LLM)
    slot_cfg = {"positions_per_char": [0.7, 1.2], "noise": 0.0, "unit": unit}
    for frac in (0.0, 1.0):
        tiny_models.pretrain_causal_lm(llm, TEXTS, out_dir=tmp_path / f"aligned{frac}", steps=400, batch_size=8,
                                       lr=3e-3, log_every=50, copy_fraction=1.0, aligned_fraction=frac,
                                       aligned_slot=slot_cfg)
    tok = AutoTokenizer.from_pretrained(str(llm))
    maker = CopyExampleMaker([tok.bos_token_id], tok.eos_token_id,
                             tok(tiny_models.prompt_after_speech(), add_special_tokens=False)["input_ids"],
                             filler=tok.pad_token_id, chars=token_char_counts(tok), vocab=[5],
                             aligned=AlignedSlotConfig(positions_per_char=(0.7, 1.2), noise=0.0, unit=unit),
                             speller=CharSpeller(tok, boundary=tok.pad_token_id))

    def transcript_loss(model_dir):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        gen = torch.Generator().manual_seed(123)
        total = 0.0
        for t in TEXTS:
            ids = tok(t, add_special_tokens=False)["input_ids"]
            seq, _ = maker.make(ids, "aligned", gen, t)
            lab = [-100] * (len(seq) - len(ids) - 1) + seq[-len(ids) - 1:]  # the transcript and EOS only
            with torch.no_grad():
                total += model(input_ids=torch.tensor([seq]), labels=torch.tensor([lab])).loss.item()
        return total / len(TEXTS)

    aligned, plain = transcript_loss(tmp_path / "aligned1.0"), transcript_loss(tmp_path / "aligned0.0")
    print(f"transcript loss after an aligned slot: aligned-pretrained {aligned:.3f}, copy-pretrained {plain:.3f}")
    assert aligned < 0.5 * plain
    # the read check measures the same: accuracy after aligned slots, higher for the aligned-pretrained LM
    read = {frac: tiny_models.slot_reading_accuracy(tmp_path / f"aligned{frac}", TEXTS, aligned_slot=slot_cfg)
            for frac in (0.0, 1.0)}
    print("read check:", read)
    assert read[1.0]["aligned"]["token_acc"] > read[0.0]["aligned"]["token_acc"]
    with pytest.raises(ValueError, match="aligned_fraction"):
        tiny_models.pretrain_causal_lm(llm, TEXTS, steps=1, aligned_fraction=-0.1)


# ---------------------------------------------------------------------- Whisper
def test_build_tiny_whisper_defaults(tmp_path):
    """The recipe's default tiny encoder: d_model 256, 4 layers, 80 mels, a 30 s window at 50 Hz."""
    path = tiny_models.build_tiny_whisper(tmp_path / "whisper")
    enc = WhisperEncoder(str(path))
    assert enc.output_size() == 256 and len(enc.encoder.layers) == 4
    assert enc.logmel.n_mels == 80 and enc.window_seconds == 30.0 and enc.frame_rate == 50.0
    # conv1 + conv2 + 4 x (attention + MLP + 2 norms) + final norm; positions are not trained
    d, ffn, mels = 256, 1024, 80
    attention = 4 * d * d + 3 * d  # q, k, v, out; Whisper's k_proj has no bias
    layer = attention + 2 * d * ffn + ffn + d + 2 * (2 * d)
    expected = mels * d * 3 + d + d * d * 3 + d + 4 * layer + 2 * d
    assert sum(p.numel() for n, p in enc.encoder.named_parameters() if "embed_positions" not in n) == expected


FREQS = {"क": 300.0, "म": 700.0, "ल": 1200.0, " ": None}


def tone_utterance(text: str, sr: int = 16000) -> np.ndarray:
    """One 120 ms tone per character (silence for a space), 30 ms gaps: learnable by CTC in seconds."""
    t = np.arange(int(0.12 * sr)) / sr
    parts = []
    for c in text:
        f = FREQS[c]
        parts += [0.5 * np.sin(2 * np.pi * f * t) if f else np.zeros_like(t), np.zeros(int(0.03 * sr))]
    return np.concatenate(parts).astype(np.float32)


def test_speed_perturbation_shifts_tempo_and_pitch_together():
    from espnet_llm_asr.tiny_models.encoder_ctc import speed_perturbed

    sr = 16000
    t = np.arange(sr) / sr
    wave = np.sin(2 * np.pi * 400 * t).astype(np.float32)
    for factor in (0.9, 1.1):
        out = speed_perturbed(wave, factor)
        assert abs(len(out) - sr / factor) <= 2
        peak = np.argmax(np.abs(np.fft.rfft(out))) * sr / len(out)  # the tone, in Hz
        assert abs(peak - 400 * factor) < 3, (factor, peak)
    assert speed_perturbed(wave, 1.0) is wave
    with pytest.raises(ValueError, match="speed factor"):
        speed_perturbed(wave, 0.0)
    with pytest.raises(ValueError, match="speed_perturb"):  # checked before any training
        tiny_models.pretrain_whisper_encoder_ctc("/nonexistent", [(wave, "a")], speed_perturb=[1.0, 0.0])


def test_mel_augment_warps_the_mel_axis_and_masks_inside_the_utterance():
    from espnet_llm_asr.tiny_models.mel_augment import MelAugment, warp_mel_axis

    n_mels, frames = 40, 50
    peak = torch.zeros(n_mels, frames)
    peak[10] = 1.0  # a "formant" at bin 10
    assert int(warp_mel_axis(peak, 1.2)[:, 0].argmax()) == 12  # moved up by the factor
    assert int(warp_mel_axis(peak, 0.8)[:, 0].argmax()) == 8
    assert torch.equal(warp_mel_axis(peak, 1.0), peak)

    mel = torch.randn(2, n_mels, frames)
    lengths = torch.tensor([50, 30])
    aug = MelAugment(freq_warp=0.1, freq_masks=2, freq_width=5, time_masks=2, time_width=4)
    out = aug(mel, lengths, torch.Generator().manual_seed(0))
    assert out.shape == mel.shape and not torch.equal(out, mel)
    assert torch.equal(out[1, :, 30:], mel[1, :, 30:])  # padding frames untouched
    assert torch.equal(aug(mel, lengths, torch.Generator().manual_seed(0)), out)  # the generator decides
    masks_only = MelAugment(time_masks=1, time_width=4)(mel, lengths, torch.Generator().manual_seed(1))
    changed = (masks_only[0] != mel[0]).all(dim=0)  # whole frames replaced by the utterance mean
    assert 1 <= int(changed.sum()) <= 4
    assert torch.allclose(masks_only[0][:, changed], mel[0].mean().expand(n_mels, int(changed.sum())))
    assert torch.equal(MelAugment()(mel, lengths, torch.Generator()), mel)  # all off: unchanged
    with pytest.raises(ValueError, match="freq_warp"):
        MelAugment(freq_warp=0.7)
    with pytest.raises(ValueError, match="time_masks"):
        MelAugment(time_masks=-1)
    with pytest.raises(TypeError):  # an unknown key in the config fails before any training
        tiny_models.pretrain_whisper_encoder_ctc("/nonexistent", [(np.zeros(16000, np.float32), "a")],
                                                 spec_augment={"freq_wrap": 0.1})


def test_length_pooled_batches_cover_every_item_once_a_pass_with_little_padding():
    from espnet_llm_asr.tiny_models.common import batch_indices

    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 100, size=103).tolist()
    gen = torch.Generator().manual_seed(0)
    batches = batch_indices(lengths, 8, gen, length_pool=4)
    one_pass = [next(batches) for _ in range(4 * 3 + 1)]  # 103 items: pools of 32, 32, 32, 7 -> 13 batches
    assert sorted(i for b in one_pass for i in b) == list(range(103))
    assert sorted(len(b) for b in one_pass) == [7] + [8] * 12

    def padding(bs):
        return 1 - sum(lengths[i] for b in bs for i in b) / sum(max(lengths[i] for i in b) * len(b) for b in bs)

    random_batches = batch_indices(lengths, 8, torch.Generator().manual_seed(0), length_pool=None)
    assert padding(one_pass) < 0.5 * padding([next(random_batches) for _ in range(13)])
    # the next pass is a new shuffle, the same seed gives the same batches
    assert [next(batches) for _ in range(13)] != one_pass
    again = batch_indices(lengths, 8, torch.Generator().manual_seed(0), length_pool=4)
    assert [next(again) for _ in range(13)] == one_pass
    # bad arguments fail at the call, before any batch is asked for (and any model loaded)
    with pytest.raises(ValueError, match="length_pool"):
        batch_indices(lengths, 8, gen, length_pool=-1)
    with pytest.raises(ValueError, match="no items"):
        batch_indices([], 8, gen)
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(lengths, 0, gen)


def test_pretrain_whisper_encoder_ctc_loss_falls(tmp_path):
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("कमल "), size=rng.integers(3, 7))) for _ in range(24)]
    utts = [(tone_utterance(t), t) for t in texts]
    path = tiny_models.build_tiny_whisper(tmp_path / "whisper", **TINY_WHISPER)
    before = {k: v.clone() for k, v in WhisperEncoder(str(path)).encoder.state_dict().items()}
    result = tiny_models.pretrain_whisper_encoder_ctc(path, utts, steps=60, batch_size=8, lr=3e-3, log_every=20,
                                                      speed_perturb=[0.9, 1.0, 1.1], length_pool=2,
                                                      spec_augment={"freq_warp": 0.1, "time_masks": 1,
                                                                    "time_width": 3})
    assert result["num_symbols"] == 4
    assert result["last_loss"] < 0.5 * result["first_loss"], result
    # saved in place as a Whisper checkpoint (feature extractor kept), encoder weights changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper"]
    assert (path / tiny_models.CTC_HEAD_FILE).is_file()
    assert (path / "preprocessor_config.json").is_file()
    after = WhisperEncoder(str(path)).encoder.state_dict()
    assert not torch.allclose(after["conv1.weight"], before["conv1.weight"])
    torch.testing.assert_close(after["embed_positions.weight"], before["embed_positions.weight"])
    # the CTC head is kept beside the weights: CTC-only transcripts of the training tones
    hyps = tiny_models.ctc_greedy_decode(path, [w for w, _ in utts], batch_size=5)
    assert len(hyps) == len(utts) and all(set(h) <= set("कमल ") for h in hyps)
    # best path collapses repeats and drops blanks: a head that always says symbol 2 gives it once
    head = torch.load(path / tiny_models.CTC_HEAD_FILE, weights_only=True)
    assert head["symbols"] == sorted("कमल ") and head["weight"].shape[0] == 5
    head["weight"].zero_()
    head["bias"] = torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0])  # 0 = blank, k = symbols[k - 1]
    torch.save(head, path / tiny_models.CTC_HEAD_FILE)
    assert tiny_models.ctc_greedy_decode(path, [utts[0][0], utts[1][0]]) == [head["symbols"][2]] * 2
    # a fresh encoder has no head: a clear error, not random output
    with pytest.raises(FileNotFoundError, match="ctc_head.pt"):
        tiny_models.ctc_greedy_decode(tiny_models.build_tiny_whisper(tmp_path / "fresh", **TINY_WHISPER), [utts[0][0]])


def test_atomic_dir_keeps_the_old_dir_on_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with tiny_models.atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half-written")
            raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "old"
    with tiny_models.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ---------------------------------------------------------------------- CLIs
def test_clis_build_and_pretrain_from_a_kaldi_dir(tmp_path, capsys):
    import soundfile
    import yaml

    from espnet_llm_asr.bin import make_tiny_models, pretrain_tiny_models

    data = tmp_path / "data"
    data.mkdir()
    scp, text = [], []
    for i, t in enumerate(TEXTS[:4]):
        wav = tmp_path / f"utt{i}.wav"
        soundfile.write(wav, synth_wave(0.8, seed=i), 16000, subtype="PCM_16")
        scp.append(f"utt{i} {wav}")
        text.append(f"utt{i} {t}")
    (data / "wav.scp").write_text("\n".join(scp) + "\n", encoding="utf-8")
    (data / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump({
        "whisper": TINY_WHISPER, "llm": TINY_LLM,
        "pretrain_encoder": {"steps": 4, "batch_size": 2, "device": "cpu"},
        "pretrain_llm": {"steps": 4, "batch_size": 2, "device": "cpu"},
    }), encoding="utf-8")
    out = tmp_path / "exp"

    make_tiny_models.main(["--config", str(conf), "--out_dir", str(out), "--train_text", str(data / "text"),
                           "--encoder_layers", "2"])
    assert WhisperEncoder(str(out / "whisper")).encoder.config.encoder_layers == 2  # CLI beats config
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "llm"))
    assert tok.decode(tok(TEXTS[0], add_special_tokens=False)["input_ids"]) == TEXTS[0]
    assert "utt0" not in tok.get_vocab() and tok.unk_token_id not in tok("utt", add_special_tokens=False)["input_ids"]

    capsys.readouterr()
    pretrain_tiny_models.main(["encoder", "--config", str(conf), "--model_dir", str(out / "whisper"),
                               "--data_dir", str(data), "--lr", "1e-3"])
    pretrain_tiny_models.main(["llm", "--config", str(conf), "--model_dir", str(out / "llm"),
                               "--text", str(data / "text"), "--steps", "3"])
    pretrain_tiny_models.main(["ctc_decode", "--model_dir", str(out / "whisper"), "--data_dir", str(data),
                               "--out", str(tmp_path / "ctc" / "text")])
    pretrain_tiny_models.main(["read_check", "--config", str(conf), "--model_dir", str(out / "llm"),
                               "--text", str(data / "text")])
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["what"] for r in results] == ["encoder", "llm", "ctc_decode", "read_check"]
    read = results.pop()
    assert set(read) == {"what", "model_dir", "copy", "aligned"} and read["copy"]["lines"] == 4
    assert all(0 <= read[k]["exact"] <= read[k]["token_acc"] <= 1 for k in ("copy", "aligned"))
    hyp_keys = [line.split(maxsplit=1)[0] for line in (tmp_path / "ctc" / "text").read_text().splitlines()]
    assert hyp_keys == [f"utt{i}" for i in range(4)] and 0 <= results[2]["cer"] and results[2]["wer"] >= 0
    results = results[:2]
    assert all(np.isfinite(r["first_loss"]) and np.isfinite(r["last_loss"]) for r in results)

    # partial builds (the recipe rebuilds only what a config change touches) and section signatures
    make_tiny_models.main(["--config", str(conf), "--out_dir", str(tmp_path / "lm_only"), "--parts", "tokenizer,llm",
                           "--train_text", str(data / "text")])
    assert sorted(p.name for p in (tmp_path / "lm_only").iterdir()) == ["llm", "tokenizer"]
    with pytest.raises(SystemExit, match="unknown.*'decoder'"):
        make_tiny_models.main(["--out_dir", str(out), "--parts", "decoder", "--train_text", str(data / "text")])
    capsys.readouterr()
    make_tiny_models.main(["--config", str(conf), "--print_config", "--sections", "seed,whisper"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert list(printed) == ["seed", "whisper"] and printed["whisper"]["d_model"] == TINY_WHISPER["d_model"]
    # a key added later is left out of the signature while off (model dirs built before it stay up to
    # date) and is in it once set
    make_tiny_models.main(["--config", str(conf), "--print_config", "--sections", "pretrain_encoder"])
    printed = yaml.safe_load(capsys.readouterr().out)["pretrain_encoder"]
    assert "length_pool" not in printed and "speed_perturb" in printed
    pooled = tmp_path / "pooled.yaml"
    pooled_conf = yaml.safe_load(conf.read_text(encoding="utf-8"))
    pooled_conf["pretrain_llm"]["length_pool"] = 8
    pooled.write_text(yaml.safe_dump(pooled_conf), encoding="utf-8")
    make_tiny_models.main(["--config", str(pooled), "--print_config", "--sections", "pretrain_llm"])
    assert yaml.safe_load(capsys.readouterr().out)["pretrain_llm"]["length_pool"] == 8
    assert tiny_models.prompt_text_lines() == ["USER: Transcribe speech to text.", " ASSISTANT:"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("whisper: {d_modle: 8}\n", encoding="utf-8")
    with pytest.raises(KeyError, match="d_modle"):
        make_tiny_models.main(["--config", str(bad), "--out_dir", str(out), "--train_text", str(data / "text")])


def test_llm_pretraining_second_phase_from_the_config(tmp_path, capsys):
    """``pretrain_llm.then``: a second phase continues from the first phase's weights, with its own keys."""
    import yaml

    from espnet_llm_asr.bin import make_tiny_models, pretrain_tiny_models

    text = tmp_path / "text"
    text.write_text("".join(f"utt{i} {t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    base = {"llm": TINY_LLM, "pretrain_llm": {"steps": 3, "batch_size": 4, "device": "cpu", "copy_fraction": 0.5}}
    two = yaml.safe_load(yaml.safe_dump(base))
    two["pretrain_llm"]["then"] = {"steps": 2, "copy_fraction": 1.0, "aligned_fraction": 1.0,
                                   "copy_slot_loss": False, "aligned_slot": {"noise": 0.0}}
    weights = {}
    for name, conf in (("one", base), ("two", two)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(conf), encoding="utf-8")
        make_tiny_models.main(["--config", str(path), "--out_dir", str(tmp_path / name), "--parts", "tokenizer,llm",
                               "--train_text", str(text)])
        capsys.readouterr()
        pretrain_tiny_models.main(["llm", "--config", str(path), "--model_dir", str(tmp_path / name / "llm"),
                                   "--text", str(text)])
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        weights[name] = _state(tmp_path / name / "llm")
        if name == "two":
            assert set(result["then"]) == {"first_loss", "last_loss"}
            assert all(np.isfinite(v) for v in result["then"].values())
        else:
            assert "then" not in result
    # same seed and first phase: the second phase alone makes them differ
    assert any(not torch.equal(weights["one"][k], weights["two"][k]) for k in weights["one"])

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pretrain_llm": {"then": {"stepz": 2}}}), encoding="utf-8")
    with pytest.raises(KeyError, match="stepz.*pretrain_llm.then"):
        make_tiny_models.load_config(str(bad))
    bad.write_text(yaml.safe_dump({"pretrain_llm": {"then": 5}}), encoding="utf-8")
    with pytest.raises(ValueError, match="pretrain_llm.then must be a mapping"):
        make_tiny_models.load_config(str(bad))


def _state(llm_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(llm_dir)).state_dict()
