"""Fast paths give what the plain paths give, on tiny real models (CPU).

* length-sorted decoding batches (``--sort_window``): the same output files;
* static KV cache (``cache_implementation: static``) and the compiled decoding
  step's options: the same hypotheses as the dynamic cache, greedy and beam;
* joint CTC decoding (``--ctc_weight``) with the static cache and sorted batches: the
  files of the dynamic cache one utterance at a time;
* the frozen encoder in bf16 (``encoder_conf.dtype: bfloat16``): features and
  loss within the stated tolerances of fp32;
* fp16 feature dumps (``dump_encoder_feats --dtype float16``): read back as
  float32 within fp16 rounding of the fp32 dump, half the disk.

No timings here: the benchmark measures speed.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tiny_setup import data_args, make_data_dir, make_tiny_models, train_config

DECODE = "espnet_llm_asr.bin.llm_asr_inference"

# seven utterances of different lengths in two languages (data-dir order is not length order)
FAST_UTTS = [
    ("a-utt1", "hi", "नमस्ते भारत", 1.2, 11),
    ("a-utt2", "ta", "வணக்கம்", 0.5, 12),
    ("a-utt3", "hi", "भारत", 1.7, 13),
    ("b-utt4", "ta", "வணக்கம் வணக்கம்", 0.8, 14),
    ("b-utt5", "hi", "नमस्ते", 1.4, 15),
    ("b-utt6", "hi", "भारत नमस्ते", 0.6, 16),
    ("c-utt7", "ta", "வணக்கம்", 1.0, 17),
]

#: bf16 encoder vs fp32 (tiny 1-layer encoder): relative RMS error of the features and the
#: largest error relative to the largest feature; relative difference of the training loss
BF16_FEATURE_RMS_TOL = 2e-2
BF16_FEATURE_MAX_TOL = 5e-2
BF16_LOSS_TOL = 1e-2
#: fp16 dump vs fp32 dump: every value within its fp16 rounding (half an ulp: 2^-11 relative,
#: 2^-25 absolute below the normal range)
FP16_REL, FP16_ABS = 2.0 ** -11, 2.0 ** -25


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Data dir, tiny models and a smear_moe model trained a few steps (LM trained too, so
    hypotheses are not a repeated token)."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.task import LLMASRTask

    root = tmp_path_factory.mktemp("fast_paths")
    data = make_data_dir(root, FAST_UTTS)
    models = make_tiny_models(root, [t for _, _, t, _, _ in FAST_UTTS])
    conf = train_config(root, models, "smear_moe", llm_conf={"freeze": False}, lr=5e-3)
    exp = root / "exp"
    LLMASRTask.main(cmd=["--config", str(conf), "--output_dir", str(exp), "--ngpu", "0", "--max_epoch", "3",
                         "--num_iters_per_epoch", "10", *data_args(data)])
    return root, data, models, exp


def _load(exp):
    from espnet_llm_asr.inference import load_trained_model

    model, _ = load_trained_model(exp / "config.yaml", exp / "3epoch.pth")
    return model


def _waves(root, uids):
    import soundfile

    waves = [soundfile.read(root / "wav" / f"{u}.wav", dtype="float32")[0] for u in uids]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lengths


def _decode_cmd(data, exp, out, *extra):
    return ["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(exp / "3epoch.pth"),
            "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
            "--data_path_and_name_and_type", f"{data / 'utt2lang'},lang,text",
            "--output_dir", str(out), "--num_workers", "0", "--max_new_tokens", "10",
            "--repetition_penalty", "1.2", *extra]


def _outputs(out):
    res = out / "1best_recog"
    return {name: (res / name).read_text(encoding="utf-8") for name in ("text", "token", "score", "gates")}


def _assert_same_outputs(a, b):
    """Same text and tokens; scores and gates equal up to float rounding (they are printed
    with 6 decimals, and a batch's padding may move the last one)."""
    assert a["text"] == b["text"]
    assert a["token"] == b["token"]
    for name, tol in (("score", 1e-4), ("gates", 1e-5)):
        rows_a = [ln.split() for ln in a[name].splitlines()]
        rows_b = [ln.split() for ln in b[name].splitlines()]
        assert [r[0] for r in rows_a] == [r[0] for r in rows_b]
        np.testing.assert_allclose(np.array([list(map(float, r[1:])) for r in rows_a]),
                                   np.array([list(map(float, r[1:])) for r in rows_b]), atol=tol, rtol=0)


def _spy_batches(monkeypatch):
    """The lengths of each batch's utterances that Speech2Text.batch decodes, as it decodes them."""
    from espnet_llm_asr.inference import Speech2Text

    seen = []
    real_batch = Speech2Text.batch

    def spy(self, speeches, langs=None):
        seen.append([len(s) for s in speeches])
        return real_batch(self, speeches, langs)

    monkeypatch.setattr(Speech2Text, "batch", spy)
    return seen


# ---------------------------------------------------------------------- sorted batches
def test_length_sorted_batches_order():
    from espnet_llm_asr.bin.llm_asr_inference import length_sorted_batches

    lens = [3, 9, 1, 7, 5, 5, 2]
    utts = [(f"u{i}", {"speech": np.zeros(n), "lang": np.array([i % 2])}) for i, n in enumerate(lens)]
    batches = list(length_sorted_batches(iter(utts), batch_size=2, window=4))
    # window 1: u0..u3 -> 9 7 3 1; window 2: u4..u6 -> 5 5 2 (ties keep data-dir order)
    assert [keys for keys, _ in batches] == [["u1", "u3"], ["u0", "u2"], ["u4", "u5"], ["u6"]]
    assert [len(s) for s in batches[0][1]["speech"]] == [9, 7]
    assert batches[0][1]["lang"][1].tolist() == [1]  # every stream travels with its utterance
    whole = list(length_sorted_batches(iter(utts), batch_size=3, window=100))
    assert [k for keys, _ in whole for k in keys] == ["u1", "u3", "u4", "u5", "u0", "u6", "u2"]
    plain = list(length_sorted_batches(iter(utts), batch_size=3, window=0))
    assert [k for keys, _ in plain for k in keys] == [f"u{i}" for i in range(7)]
    with pytest.raises(ValueError, match="--sort_window"):
        list(length_sorted_batches(iter(utts), batch_size=2, window=-1))


def test_sorted_decoding_writes_what_unsorted_writes(assets, monkeypatch):
    """--sort_window: batches are decoded longest first, the files are those of data-dir
    order decoding and of batch 1 (same hypotheses, key order)."""
    from espnet_llm_asr.bin import llm_asr_inference as inf

    root, data, _, exp = assets
    seen = _spy_batches(monkeypatch)
    outs = {}
    for name, extra in {"batch1": ["--batch_size", "1"],
                        "unsorted": ["--batch_size", "3", "--sort_window", "0"],
                        "sorted": ["--batch_size", "3"],
                        "sorted_window4": ["--batch_size", "2", "--sort_window", "4"]}.items():
        seen.clear()
        inf.main(_decode_cmd(data, exp, root / f"dec_{name}", *extra))
        outs[name] = _outputs(root / f"dec_{name}")
        order = [n for batch in seen for n in batch]
        if name == "sorted":
            assert order == sorted(order, reverse=True) and len(seen) == 3
        elif name == "sorted_window4":
            assert order[:4] == sorted(order[:4], reverse=True) and order[4:] == sorted(order[4:], reverse=True)
        else:
            assert order != sorted(order, reverse=True)  # the data dir is not in length order
    for name in ("unsorted", "sorted", "sorted_window4"):
        _assert_same_outputs(outs[name], outs["batch1"])
    keys = [ln.split()[0] for ln in outs["sorted"]["token"].splitlines()]
    assert keys == sorted(u for u, *_ in FAST_UTTS)


def test_sorted_decoding_resumes(assets, monkeypatch):
    """A sorted run killed after its first batch decodes only the rest when re-run."""
    from espnet_llm_asr.bin import llm_asr_inference as inf
    from espnet_llm_asr.inference import Speech2Text

    root, data, _, exp = assets
    real_batch = Speech2Text.batch
    calls = []

    def crash_after_one(self, speeches, langs=None):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(speeches))
        return real_batch(self, speeches, langs)

    monkeypatch.setattr(Speech2Text, "batch", crash_after_one)
    cmd = _decode_cmd(data, exp, root / "dec_sorted_resume", "--batch_size", "3")
    with pytest.raises(KeyboardInterrupt):
        inf.main(cmd)
    decoded = []

    def count(self, speeches, langs=None):
        decoded.extend(len(s) for s in speeches)
        return real_batch(self, speeches, langs)

    monkeypatch.setattr(Speech2Text, "batch", count)
    inf.main(cmd)
    assert len(decoded) == len(FAST_UTTS) - 3
    assert decoded == sorted(decoded, reverse=True)
    assert len((root / "dec_sorted_resume" / "1best_recog" / "text").read_text().splitlines()) == len(FAST_UTTS)


# ---------------------------------------------------------------------- static KV cache
@pytest.mark.parametrize("num_beams", [1, 3])
def test_static_cache_same_hypotheses(assets, num_beams):
    root, _, _, exp = assets
    model = _load(exp)
    uids = [u for u, *_ in FAST_UTTS]
    speech, lengths = _waves(root, uids)
    lang = torch.tensor([[0 if lg == "hi" else 1] for _, lg, *_ in FAST_UTTS])
    conf = dict(num_beams=num_beams, max_new_tokens=12, max_tokens_per_second=8.0,
                repetition_penalty=1.1, length_penalty=0.8)
    ref, ref_scores, _ = model.generate(speech, lengths, lang, **conf)
    assert any(len(set(h)) > 1 for h in ref)  # not one repeated token
    for extra in ({"cache_implementation": "static"},
                  {"cache_implementation": "static", "compile_decoding": False, "length_multiple": 8}):
        hyps, scores, _ = model.generate(speech, lengths, lang, **conf, **extra)
        assert hyps == ref, extra
        np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=1e-4)
    # one utterance at a time with the static cache: the batch's hypotheses and scores again
    # (utterance 1 is left-padded in the batch, 2 is the longest)
    for i in (1, 2):
        alone, alone_scores, _ = model.generate(speech[i:i + 1, : int(lengths[i])], lengths[i:i + 1],
                                                lang[i:i + 1], **conf, cache_implementation="static")
        assert alone[0] == ref[i]
        assert alone_scores[0] == pytest.approx(ref_scores[i], abs=1e-4)


def test_repetition_penalty_ignores_left_padding(assets):
    """The repetition penalty counts every generated token of a row whatever its left padding
    (transformers' own skips as many as the row has padding positions when it gets
    inputs_embeds): a padded row's score equals the utterance's alone."""
    root, _, _, exp = assets
    model = _load(exp)
    speech, lengths = _waves(root, ["a-utt2", "a-utt3"])  # 0.5 s, left-padded next to 1.7 s
    for num_beams in (1, 2):
        conf = dict(num_beams=num_beams, max_new_tokens=8, repetition_penalty=1.5)
        hyps, scores, _ = model.generate(speech, lengths, None, **conf)
        for i in range(2):
            alone, alone_scores, _ = model.generate(speech[i:i + 1, : int(lengths[i])], lengths[i:i + 1], None,
                                                    **conf)
            assert alone[0] == hyps[i]
            assert alone_scores[0] == pytest.approx(scores[i], abs=1e-4), (num_beams, i)
    plain, plain_scores, _ = model.generate(speech, lengths, None, max_new_tokens=8)
    assert plain_scores != pytest.approx(scores, abs=1e-3)  # the penalty did act


@pytest.mark.parametrize("conf", [dict(max_new_tokens=12), dict(max_new_tokens=3),
                                  dict(max_new_tokens=12, repetition_penalty=1.3, cache_implementation="static")])
def test_greedy_scores_equal_transformers_transition_scores(assets, monkeypatch, conf):
    """Greedy scores are gathered step by step (no (B, V) scores kept per step): the same
    values as transformers' compute_transition_scores over output_scores."""
    root, _, _, exp = assets
    model = _load(exp)
    real = model.llm.model.generate
    box = {}

    def with_scores(**kwargs):
        out = real(**dict(kwargs, output_scores=True))
        box["trans"] = model.llm.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        box["sequences"] = out.sequences
        return out

    monkeypatch.setattr(model.llm.model, "generate", with_scores)
    speech, lengths = _waves(root, [u for u, *_ in FAST_UTTS])
    hyps, scores, _ = model.generate(speech, lengths, None, **conf)
    eos = model.llm.eos_token_id
    for i, ids in enumerate(box["sequences"].tolist()):
        n = ids.index(eos) if eos in ids else len(ids)
        assert hyps[i] == ids[:n]
        assert scores[i] == pytest.approx(float(box["trans"][i, : min(n + 1, len(ids))].sum()), abs=1e-5)


@pytest.mark.slow
def test_compiled_decoding_step_same_hypotheses(assets):
    """compile_decoding: true forces torch.compile of the decoding step on CPU (by default it
    runs on GPUs only): same hypotheses and scores as the plain dynamic cache.  About a minute
    of compilation on a 2-core machine."""
    root, _, _, exp = assets
    model = _load(exp)
    speech, lengths = _waves(root, ["a-utt1", "a-utt2"])
    ref, ref_scores, _ = model.generate(speech, lengths, None, max_new_tokens=6)
    hyps, scores, _ = model.generate(speech, lengths, None, max_new_tokens=6, cache_implementation="static",
                                     compile_decoding=True)
    assert hyps == ref
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=1e-4)


def test_static_cache_options_reach_generate(assets, monkeypatch):
    """What the options hand to transformers' generate; bad values name their key."""
    from espnet_llm_asr.decoding import generation_cache_kwargs

    root, _, _, exp = assets
    model = _load(exp)
    cpu = torch.device("cpu")
    assert generation_cache_kwargs("dynamic", None, cpu) == {}
    assert generation_cache_kwargs("static", None, cpu) == {"cache_implementation": "static"}  # no compile on CPU
    assert generation_cache_kwargs("static", False, cpu) == {"cache_implementation": "static",
                                                             "disable_compile": True}
    forced = generation_cache_kwargs("static", True, cpu)
    assert forced["compile_config"]._compile_all_devices is True
    assert "compile_config" not in generation_cache_kwargs("static", True, torch.device("cuda"))  # HF's own
    with pytest.raises(ValueError, match="cache_implementation"):
        generation_cache_kwargs("paged", None, cpu)
    with pytest.raises(ValueError, match="compile_decoding.*static"):
        generation_cache_kwargs("dynamic", True, cpu)

    seen = {}
    real = model.llm.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model.llm.model, "generate", spy)
    speech, lengths = _waves(root, ["a-utt1", "a-utt2"])
    model.generate(speech, lengths, None, max_new_tokens=5, cache_implementation="static", compile_decoding=False,
                   length_multiple=16)
    assert seen["cache_implementation"] == "static" and seen["disable_compile"] is True
    assert seen["inputs_embeds"].size(1) % 16 == 0
    assert (seen["inputs_embeds"].size(1) + seen["max_new_tokens"]) % 16 == 0
    with pytest.raises(ValueError, match="length_multiple"):
        model.generate(speech, lengths, None, length_multiple=0)


def test_static_cache_through_the_binary(assets):
    """--cache_implementation static --compile_decoding false --length_multiple 8: the files
    of the default decoding; bad options are named."""
    from espnet_llm_asr.bin import llm_asr_inference as inf

    root, data, _, exp = assets
    inf.main(_decode_cmd(data, exp, root / "dec_dynamic", "--batch_size", "4"))
    inf.main(_decode_cmd(data, exp, root / "dec_static", "--batch_size", "4", "--cache_implementation", "static",
                         "--compile_decoding", "false", "--length_multiple", "8"))
    _assert_same_outputs(_outputs(root / "dec_static"), _outputs(root / "dec_dynamic"))
    bad = root / "decode_bad.yaml"
    bad.write_text("compile_decoding: maybe\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="--compile_decoding"):
        inf.main(_decode_cmd(data, exp, root / "dec_bad", "--config", str(bad)))
    with pytest.raises(ValueError, match="compile_decoding"):
        inf.main(_decode_cmd(data, exp, root / "dec_bad", "--compile_decoding", "true"))


@pytest.mark.parametrize("num_beams, length_multiple", [
    (1, 8), (2, 1),
    # a beam hypothesis that reaches its cap ends with the forced EOS whatever room length_multiple
    # adds (model.generate), so its score, and the best hypothesis, do not depend on the rounding
    (2, 8),
], ids=["greedy-multiple8", "beam2", "beam2-multiple8"])
def test_joint_ctc_decoding_static_cache_sorted_batches(assets, monkeypatch, num_beams, length_multiple):
    """--ctc_weight (joint CTC decoding) with --cache_implementation static and --sort_window
    (batches of 3, longest first): the files of joint decoding with the dynamic cache one
    utterance at a time, in data-dir order; the CTC does act (other scores than without it).
    The model is the assets' one read as trained with a CTC over the LLM's tokens
    (model_conf.ctc_weight; that CTC adds no parameters)."""
    from espnet_llm_asr.bin import llm_asr_inference as inf

    root, data, _, exp = assets
    conf = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
    conf["model_conf"] = dict(conf.get("model_conf") or {}, ctc_weight=0.3)
    ctc_config = root / "config_ctc.yaml"
    ctc_config.write_text(yaml.safe_dump(conf), encoding="utf-8")
    seen = _spy_batches(monkeypatch)

    def decode(name, *extra):
        out = root / f"dec_ctc_b{num_beams}_m{length_multiple}_{name}"
        cmd = _decode_cmd(data, exp, out, "--ctc_weight", "0.5", "--num_beams", str(num_beams), *extra)
        cmd[cmd.index(str(exp / "config.yaml"))] = str(ctc_config)
        seen.clear()
        inf.main(cmd)
        return _outputs(out)

    ref = decode("dynamic", "--batch_size", "1", "--sort_window", "0")
    assert [len(b) for b in seen] == [1] * len(FAST_UTTS)
    fast = decode("static_sorted", "--batch_size", "3", "--cache_implementation", "static",
                  "--compile_decoding", "false", "--length_multiple", str(length_multiple))
    order = [n for batch in seen for n in batch]
    assert len(seen) == 3 and order == sorted(order, reverse=True)  # decoded longest first
    keys = [ln.split()[0] for ln in fast["token"].splitlines()]
    assert keys == [u for u, *_ in FAST_UTTS]  # written in data-dir (key) order
    assert sum(len(ln.split()) - 1 for ln in ref["token"].splitlines()) > len(FAST_UTTS)  # not all empty
    no_ctc = decode("no_ctc", "--ctc_weight", "0", "--batch_size", "1")
    assert no_ctc["score"] != ref["score"]
    _assert_same_outputs(fast, ref)


# ---------------------------------------------------------------------- bf16 encoder
def test_bf16_encoder_within_tolerance_of_fp32(assets):
    """encoder_conf.dtype: bfloat16 -> features within BF16_FEATURE_* of fp32, and the model's
    training loss within BF16_LOSS_TOL; the projector still gets float32."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.encoder import WhisperEncoder
    from espnet_llm_asr.task import LLMASRTask

    root, _, models, exp = assets
    speech, lengths = _waves(root, [u for u, *_ in FAST_UTTS])
    enc32 = WhisperEncoder(str(models["whisper"]))
    enc16 = WhisperEncoder(str(models["whisper"]), dtype="bfloat16")
    f32, n32 = enc32(speech, lengths)
    f16, n16 = enc16(speech, lengths)
    assert f16.dtype == torch.bfloat16 and torch.equal(n16, n32)
    valid = torch.arange(f32.size(1))[None, :] < n32[:, None]
    err = (f16.float() - f32)[valid]
    ref = f32[valid]
    assert float(err.norm() / ref.norm()) < BF16_FEATURE_RMS_TOL
    assert float(err.abs().max() / ref.abs().max()) < BF16_FEATURE_MAX_TOL

    conf = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
    losses = {}
    for dtype in ("float32", "bfloat16"):
        c = dict(conf, frontend_conf=dict(conf["frontend_conf"], encoder_conf={"pad_to_30s": False,
                                                                                "dtype": dtype}))
        torch.manual_seed(0)
        model = LLMASRTask.build_model(argparse.Namespace(**c))
        model.load_state_dict(torch.load(exp / "3epoch.pth", weights_only=True))
        model.eval()
        seen = []
        model.frontend.projector.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
        text = [model.llm.tokenize(t) for _, _, t, _, _ in FAST_UTTS]
        text_lens = torch.tensor([len(t) for t in text])
        padded = torch.full((len(text), int(text_lens.max())), -1, dtype=torch.long)
        for i, t in enumerate(text):
            padded[i, : len(t)] = torch.tensor(t)
        with torch.no_grad():
            loss, _, _ = model(speech, lengths, padded, text_lens)
        losses[dtype] = float(loss)
        assert seen == [torch.float32]
        assert model.frontend.encoder.dtype == getattr(torch, dtype)
    assert abs(losses["bfloat16"] - losses["float32"]) < BF16_LOSS_TOL * losses["float32"]


# ---------------------------------------------------------------------- fp16 dumps
def test_fp16_dump_reads_back_as_float32_within_rounding(assets):
    import os

    from espnet2.train.dataset import ESPnetDataset

    from espnet_llm_asr.bin import dump_encoder_feats as dump
    from espnet_llm_asr.bin.llm_asr_inference import build_iterator

    root, data, models, _ = assets
    outs = {}
    for dtype in ("float32", "float16"):
        out = root / f"feats_{dtype}"
        dump.main(["--encoder", str(models["whisper"]), "--encoder_conf", "{pad_to_30s: false}",
                   "--data_dir", str(data), "--out_dir", str(out), "--nj", "2", "--batch_size", "3",
                   "--dtype", dtype])
        outs[dtype] = out
    assert (outs["float16"] / "feats_shape").read_text() == (outs["float32"] / "feats_shape").read_text()

    def ark_bytes(out):
        return sum(os.path.getsize(p) for p in (out / "split2").glob("*.ark"))

    # half the disk (+ numpy's 128-byte header per utterance: 0.5001 at 500 x 1280 features)
    assert ark_bytes(outs["float16"]) < 0.55 * ark_bytes(outs["float32"])

    def training_reader(out):
        ds = ESPnetDataset([(str(out / "feats.scp"), "speech", "kaldi_ark")], float_dtype="float32")
        return {uid: ds[uid][1]["speech"] for uid in ds.loader_dict["speech"].keys()}

    def decoding_reader(out):
        it = build_iterator([(str(out / "feats.scp"), "speech", "kaldi_ark")], None, 3, 0, ["hi", "ta"])
        return {k: s for keys, batch in it for k, s in zip(keys, batch["speech"])}

    for reader in (training_reader, decoding_reader):
        ref, half = reader(outs["float32"]), reader(outs["float16"])
        assert sorted(ref) == sorted(half) == sorted(u for u, *_ in FAST_UTTS)
        for uid in ref:
            assert half[uid].dtype == np.float32 and half[uid].shape == ref[uid].shape
            assert np.all(np.abs(half[uid] - ref[uid]) <= FP16_REL * np.abs(ref[uid]) + FP16_ABS), uid
            assert not np.array_equal(half[uid], ref[uid])  # it really went through fp16

    # a finished dump is never completed in another dtype
    with pytest.raises(SystemExit, match="--dtype float16"):
        dump.main(["--encoder", str(models["whisper"]), "--data_dir", str(data), "--out_dir",
                   str(outs["float16"]), "--nj", "2"])


def test_fp16_dump_refuses_values_it_cannot_hold():
    from espnet_llm_asr.bin.dump_encoder_feats import to_stored

    mat = np.ones((2, 3), dtype=np.float32)
    assert to_stored(mat, "float16", "u1").dtype == np.float16
    assert to_stored(mat, "float32", "u1") is mat
    mat[1, 2] = 1e5
    with pytest.raises(ValueError, match="u1.*float32"):
        to_stored(mat, "float16", "u1")


FLUSH_PROBE = """
import sys, torch
from espnet_llm_asr.torch_utils import flush_denormals
on = flush_denormals()
torch.set_num_threads(2)
x = torch.full((1 << 22,), 1e-39) * 1.0   # a parallel op: every worker thread computes a part
print(on, int((x != 0).sum()))
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the flush-to-zero mode is x86's")
def test_flush_denormals_reaches_the_worker_threads():
    """Subnormal floats are zero in every compute thread once flushed (they slow x86 arithmetic
    many times), and stay as they are with ESPNET_LLM_ASR_KEEP_DENORMALS=1."""
    def probe(env):
        out = subprocess.run([sys.executable, "-c", FLUSH_PROBE], check=True, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "2", **env}).stdout.split()
        return out[0] == "True", int(out[1])

    assert probe({}) == (True, 0)
    assert probe({"ESPNET_LLM_ASR_KEEP_DENORMALS": "1"}) == (False, 1 << 22)
