"""Real checkpoints (opt-in, ``bash tools/install_models.sh``): the conversions checked against references.

* Whisper base: our CTranslate2 -> Hugging Face conversion runs the same
  encoder as ``ctranslate2.models.Whisper.encode`` on the same log-mel of
  espeak-ng speech, and its decoder transcribes that speech.
* Gemma 3 270M: the GGUF -> Hugging Face conversion gives a perplexity on
  real Hindi and English sentences far below the same architecture with
  random weights, sensible greedy continuations, and a tokenizer whose chat
  template writes Gemma's turn markup.

The model dirs come from ``tools/install_models.sh``; without them these
tests FAIL saying so, unless ``ESPNET_LLM_ASR_NO_REAL_MODELS=1`` (then they
skip); the ones that load a checkpoint are marked ``real_models`` (``pytest -m
"not real_models"`` leaves them out).  Each model is loaded once per module.
The reader tests at the end use synthetic ``model.bin`` bytes and need no model.
"""
from __future__ import annotations

import math
import os
import shutil
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "tools" / "models"
WHISPER_DIR = MODELS_DIR / "whisper-base"
GEMMA_DIR = MODELS_DIR / "gemma-3-270m"
SKIP_ENV = "ESPNET_LLM_ASR_NO_REAL_MODELS"

SPEECH = [
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("hi", "भारत की राजधानी नई दिल्ली है।"),
]
HINDI = [
    "भारत की राजधानी नई दिल्ली है।",
    "मुझे सुबह चाय पीना और अख़बार पढ़ना अच्छा लगता है।",
    "बच्चे स्कूल से घर लौटकर मैदान में खेलने गए।",
    "आज मौसम बहुत अच्छा है, आसमान साफ़ है।",
]
ENGLISH = [
    "The capital of India is New Delhi.",
    "I like to drink tea and read the newspaper in the morning.",
    "The children went to play in the field after coming home from school.",
    "The weather is very nice today and the sky is clear.",
]


def require(model_dir: Path) -> Path:
    """The converted model dir, or FAIL (skip with ESPNET_LLM_ASR_NO_REAL_MODELS=1) saying how to make it."""
    if (model_dir / "convert_stamp.json").is_file():
        return model_dir
    msg = (f"{model_dir} is missing: run `bash tools/install_models.sh` to install and convert the real "
           f"checkpoints (or set {SKIP_ENV}=1 to skip the real-model tests)")
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)


# ---------------------------------------------------------------- fixtures (loaded once)
@pytest.fixture(scope="module")
def speech_mel(tmp_path_factory):
    """espeak-ng speech, one English and one Hindi utterance -> Whisper log-mel (2, 80, 3000) float32."""
    import soundfile
    from transformers import WhisperFeatureExtractor

    from espnet_llm_asr.data.espeak import synthesize_wav

    out = tmp_path_factory.mktemp("speech")
    waves = []
    for i, (voice, text) in enumerate(SPEECH):
        synthesize_wav(text, voice, 150, 50, out / f"utt{i}.wav", uttid=f"utt{i}")
        wave, sr = soundfile.read(str(out / f"utt{i}.wav"), dtype="float32")
        assert sr == 16000 and 1.5 < len(wave) / sr < 10
        waves.append(wave)
    fe = WhisperFeatureExtractor.from_pretrained(str(WHISPER_DIR))
    mel = fe(waves, sampling_rate=16000, return_tensors="np").input_features  # padded to 30 s
    return np.ascontiguousarray(mel, dtype=np.float32)


@pytest.fixture(scope="module")
def whisper_hf():
    from transformers import AutoTokenizer, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(str(WHISPER_DIR), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(WHISPER_DIR))


@pytest.fixture(scope="module")
def whisper_hf_encoded(whisper_hf, speech_mel):
    """The converted encoder's output on ``speech_mel``: (2, 1500, 512) float32."""
    with torch.no_grad():
        return whisper_hf[0].model.encoder(torch.from_numpy(speech_mel)).last_hidden_state.numpy()


@pytest.fixture(scope="module")
def ct2_whisper_dir(tmp_path_factory):
    """The CTranslate2 model as ctranslate2 loads it: the two packages' parts joined into one model.bin."""
    from espnet_llm_asr.bin.convert_models import whisper_sources

    src = whisper_sources()
    out = tmp_path_factory.mktemp("ct2_whisper")
    with open(out / "model.bin", "wb") as f:
        for part in src["model_parts"]:
            with open(part, "rb") as p:
                shutil.copyfileobj(p, f)
    for path in src["model_parts"][-1].parent.glob("*.json"):
        shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="module")
def gemma():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(GEMMA_DIR), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(GEMMA_DIR))


# ---------------------------------------------------------------- Whisper
def _compare(ours: np.ndarray, ref: np.ndarray):
    """(max |diff| / max |ref|, min cosine over frames, mean cosine over frames)."""
    diff = np.abs(ours - ref).max() / np.abs(ref).max()
    cos = (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))
    return float(diff), float(cos.min()), float(cos.mean())


@pytest.mark.real_models
@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_whisper_encoder_matches_ctranslate2(request, compute_type):
    """Converted HF encoder (fp32) vs ctranslate2's own ``Whisper.encode``, same log-mel (2, 80, 3000).

    The CTranslate2 weights are float16; this CPU build cannot compute in
    float16, so ``compute_type="float32"`` runs on exactly the values our
    conversion stored (fp16 -> fp32 is exact).  What differs is only float32
    arithmetic (summation order, GELU / softmax kernels) through 6 layers:
    seen 1.6e-5 of the output scale; allowed 1e-3 (60x margin for other
    CPUs' kernels), and a cosine >= 0.9999 on every frame.
    ``compute_type="int8"`` quantizes the weights per row when loading
    (127 levels), a real approximation: there only the average frame is
    asked to agree (mean cosine >= 0.98; seen 0.996).
    """
    require(WHISPER_DIR)
    import ctranslate2

    mel = request.getfixturevalue("speech_mel")
    ours = request.getfixturevalue("whisper_hf_encoded")
    model = ctranslate2.models.Whisper(str(request.getfixturevalue("ct2_whisper_dir")), device="cpu",
                                       compute_type=compute_type, intra_threads=2)
    ref = np.asarray(model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True), dtype=np.float32)
    assert ref.shape == ours.shape == (2, 1500, 512)
    rel_max, cos_min, cos_mean = _compare(ours, ref)
    print(f"whisper encoder vs ctranslate2 ({compute_type}): max|diff|/max|ref| {rel_max:.2e}, "
          f"cosine min {cos_min:.7f} mean {cos_mean:.7f}")
    if compute_type == "float32":
        assert rel_max < 1e-3 and cos_min > 0.9999
    else:
        assert cos_mean > 0.98


@pytest.mark.real_models
def test_whisper_weights_are_the_fp16_values(request):
    """Every converted encoder weight is a float16 value held exactly in float32 (nothing re-rounded)."""
    require(WHISPER_DIR)
    model, _ = request.getfixturevalue("whisper_hf")
    for name, param in model.model.encoder.named_parameters():
        assert torch.equal(param, param.half().float()), name
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


@pytest.mark.slow
@pytest.mark.real_models
def test_whisper_transcribes_speech(request):
    """The converted decoder (greedy, English, no timestamps) reads the espeak-ng English utterance."""
    require(WHISPER_DIR)
    model, tokenizer = request.getfixturevalue("whisper_hf")
    mel = torch.from_numpy(request.getfixturevalue("speech_mel")[:1])
    with torch.no_grad():
        out = model.generate(mel, language="en", task="transcribe", max_new_tokens=30)
    text = tokenizer.batch_decode(out, skip_special_tokens=True)[0].lower()
    print(f"whisper transcript: {text!r}")
    assert "fox" in text and "lazy" in text and "dog" in text


# ---------------------------------------------------------------- Gemma
def _perplexity(model, tokenizer, sentences) -> float:
    """exp(mean NLL per predicted token) over ``sentences``, one right-padded batch, BOS prepended."""
    side, tokenizer.padding_side = tokenizer.padding_side, "right"  # positions 0.. for every row
    try:
        batch = tokenizer(sentences, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100)
    return math.exp(nll.item())


@pytest.mark.slow
@pytest.mark.real_models
def test_gemma_perplexity_far_below_random_weights(request):
    """Real Hindi / English: converted Gemma-3-270M < 0.2 x the same architecture with random weights.

    Seen: Hindi 142, English 17 (bf16-saved weights computed in fp32); random
    weights give ~3e5 (about the vocabulary size, 262,144).
    """
    require(GEMMA_DIR)
    from transformers.models.gemma3 import Gemma3ForCausalLM

    model, tokenizer = request.getfixturevalue("gemma")
    real = {"hi": _perplexity(model, tokenizer, HINDI), "en": _perplexity(model, tokenizer, ENGLISH)}
    torch.manual_seed(0)
    random_model = Gemma3ForCausalLM(model.config).eval()
    rand = {"hi": _perplexity(random_model, tokenizer, HINDI), "en": _perplexity(random_model, tokenizer, ENGLISH)}
    del random_model
    print(f"gemma perplexity: converted {real}, random weights {rand}")
    for lang in ("hi", "en"):
        assert real[lang] < 0.2 * rand[lang], lang
    assert real["en"] < 60 and real["hi"] < 500


@pytest.mark.real_models
@pytest.mark.parametrize("prompt, expected", [
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("Monday, Tuesday, Wednesday,", "Thursday"),
    ("भारत की राजधानी", "दिल्ली"),
])
def test_gemma_greedy_continuation(request, prompt, expected):
    """Greedy decoding of a few prompts continues them sensibly (the checkpoint is the pretrained,
    not the instruction-tuned, Gemma 3 270M, so plain-text prompts)."""
    require(GEMMA_DIR)
    model, tokenizer = request.getfixturevalue("gemma")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"gemma: {prompt!r} -> {text!r}")
    assert expected in text


@pytest.mark.real_models
def test_gemma_chat_template(request):
    """The converted tokenizer renders Gemma's turn markup, with the markers as single special tokens."""
    require(GEMMA_DIR)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(GEMMA_DIR))  # as saved, not the fixture's object
    assert len(tokenizer) == 262144
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<bos>", "<eos>", "<pad>")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Transcribe speech to text."}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nTranscribe speech to text.<end_of_turn>\n<start_of_turn>model\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    start, end = tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert ids[0] == tokenizer.bos_token_id and ids.count(start) == 2 and ids.count(end) == 1
    assert tokenizer.convert_ids_to_tokens(ids[1:3]) == ["<start_of_turn>", "user"]

    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
    ]
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == (
        "<bos><start_of_turn>user\nAnswer briefly.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n")
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                      tokenize=False)


# ---------------------------------------------------------------- reader (no model needed)
def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(variables, aliases=(), version=6) -> bytes:
    """Serialize ``[(name, np.ndarray), ...]`` in CTranslate2's model.bin layout (test fixture)."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2,
                np.dtype("int32"): 3, np.dtype("float16"): 4}
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables:
        value = np.ascontiguousarray(value)
        out += _string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", type_ids[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases:
        out += _string(alias) + _string(target)
    return out


def test_reader_parses_variables_aliases_and_int8(tmp_path):
    from espnet_llm_asr.convert.ctranslate2_whisper import dequantize, read_model_bin

    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    q = np.array([[127, -64], [10, 20]], dtype=np.int8)
    scale = np.array([127 / 2.0, 2.0], dtype=np.float32)
    data = _model_bin([("a/weight", w), ("a/num_heads", np.array(8, dtype=np.int16)),
                       ("b/weight", q), ("b/weight_scale", scale)], aliases=[("c/weight", "a/weight")])
    half = len(data) // 2
    (tmp_path / "p1").write_bytes(data[:half])
    (tmp_path / "p2").write_bytes(data[half:])
    model = read_model_bin([tmp_path / "p1", tmp_path / "p2"])
    assert model.spec_name == "WhisperSpec" and model.spec_revision == 3
    assert model.variables["a/weight"].dtype == torch.float16
    assert torch.equal(model.variables["c/weight"], torch.from_numpy(w))
    assert model.scalar("a/num_heads") == 8
    assert torch.allclose(dequantize(model, "b/weight"), torch.tensor([[2.0, -64 / 63.5], [5.0, 10.0]]))


def test_reader_errors_name_the_file(tmp_path):
    from espnet_llm_asr.convert.ctranslate2_whisper import CT2FormatError, read_model_bin

    data = _model_bin([("a/weight", np.zeros((4, 4), np.float32))])
    bad = tmp_path / "model.bin"
    bad.write_bytes(data[:-20])
    with pytest.raises(CT2FormatError, match=r"model\.bin.*truncated.*a/weight"):
        read_model_bin([bad])
    bad.write_bytes(_model_bin([], version=5))
    with pytest.raises(CT2FormatError, match="binary version 5"):
        read_model_bin([bad])
    bad.write_bytes(data)
    with pytest.raises(ValueError, match="sha256 of .*model.bin"):
        read_model_bin([bad], expected_sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="nope.part2"):
        read_model_bin([bad, tmp_path / "nope.part2"])


def test_convert_one_is_atomic_and_stamped(tmp_path, monkeypatch):
    """A failing conversion leaves the old dir and no scratch; a matching stamp skips; --force redoes."""
    from espnet_llm_asr.bin import convert_models

    calls = []

    def fake(out: Path, dtype: str) -> None:
        calls.append(dtype)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        if dtype == "boom":
            raise RuntimeError("conversion failed half way")

    monkeypatch.setitem(convert_models.CONVERTERS, "whisper-base", fake)
    stamp = {"dtype": "float32"}
    assert convert_models.convert_one("whisper-base", tmp_path, stamp)
    assert not convert_models.convert_one("whisper-base", tmp_path, stamp)
    assert convert_models.convert_one("whisper-base", tmp_path, stamp, force=True)
    assert calls == ["float32", "float32"]
    with pytest.raises(RuntimeError, match="half way"):
        convert_models.convert_one("whisper-base", tmp_path, {"dtype": "boom"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base"]
    assert convert_models._read_stamp(tmp_path / "whisper-base") == stamp


def test_missing_package_says_how_to_install():
    from espnet_llm_asr.bin.convert_models import _import_package

    with pytest.raises(SystemExit, match=r"no-such-model-package .*install_models\.sh"):
        _import_package("no_such_model_package")


@pytest.mark.real_models
def test_ctc_script_vocabulary_of_gemma_spells_unseen_words(tmp_path):
    """model_conf.ctc_vocab: train_scripts over Gemma 3's tokenizer: the pieces of Devanagari, Tamil
    and Telugu (and none of another script), enough to spell words the training text never holds,
    which the training text's own tokens cannot."""
    from transformers import AutoTokenizer

    from espnet_llm_asr.ctc_vocab import script_token_ids, transcript_scripts, transcript_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(require(GEMMA_DIR)))
    train = tmp_path / "text"
    train.write_text("u1 आज मौसम अच्छा है\nu2 வணக்கம் நண்பர்களே\nu3 తెలుగు భాష\n", encoding="utf-8")
    scripts = transcript_scripts(str(train))
    assert scripts == ["DEVANAGARI", "TAMIL", "TELUGU"]
    ids = script_token_ids(tokenizer, scripts)
    train_ids = transcript_token_ids(str(train), tokenizer)
    assert 3000 < len(ids) < 60000 and set(train_ids) <= set(ids)
    for i in ids[:: max(1, len(ids) // 500)]:  # a sample of the pieces: letters of the three scripts only
        piece = "".join(tokenizer.decode([i]).split())
        assert piece and all(unicodedata.name(c).split()[0] in scripts for c in piece), (i, piece)
    assert tokenizer.convert_tokens_to_ids("▁the") not in ids
    unseen = tokenizer("बच्चे स्कूल से घर लौटकर मैदान में खेलने गए", add_special_tokens=False)["input_ids"]
    unseen = [i for i in unseen if tokenizer.decode([i]).strip()]  # a lone word-boundary piece aside
    assert set(unseen) <= set(ids)
    assert not set(unseen) <= set(train_ids)


@pytest.mark.real_models
def test_ctc_char_vocabulary_of_gemma_spells_every_letter(tmp_path):
    """ctc_unit: char with ctc_vocab: train_scripts over Gemma 3's tokenizer: a single-character
    piece for every letter and mark of the three scripts (so any word can be spelled), the word
    boundary, and an unseen sentence spelled without the unknown token."""
    from transformers import AutoTokenizer

    from espnet_llm_asr.ctc_vocab import CharSpeller
    from espnet_llm_asr.ctc_vocab import char_piece_ids, script_char_ids, transcript_chars, word_boundary_id

    tokenizer = AutoTokenizer.from_pretrained(str(require(GEMMA_DIR)))
    train = tmp_path / "text"
    train.write_text("u1 आज मौसम अच्छा है\nu2 வணக்கம் நண்பர்களே\nu3 తెలుగు భాష\n", encoding="utf-8")
    chars = transcript_chars(str(train))
    assert "म" in chars and " " not in chars and "u" not in chars  # utterance ids skipped
    ids = script_char_ids(tokenizer, ["DEVANAGARI", "TAMIL", "TELUGU"])
    assert set(char_piece_ids(tokenizer, chars)) <= set(ids) and 150 < len(ids) < 400
    assert all(len(tokenizer.convert_ids_to_tokens(i)) == 1 for i in ids)
    boundary = word_boundary_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(boundary) == "▁" and boundary not in ids
    spelled = CharSpeller(tokenizer, boundary=boundary).spell("बच्चे स्कूल से घर लौटकर")
    assert tokenizer.unk_token_id not in spelled and set(spelled) <= set(ids) | {boundary}
    assert spelled.count(boundary) == 4
