"""The LLM-ASR model through ESPnet: training, resuming, checkpoints, decoding, dumping."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from tiny_setup import (UTTS, data_args, epoch_losses, make_data_dir, make_tiny_models, run_module,
                        train_config, train_in_process)

TRAIN = "espnet_llm_asr.bin.llm_asr_train"
DECODE = "espnet_llm_asr.bin.llm_asr_inference"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_asr")
    data = make_data_dir(root)
    models = make_tiny_models(root, [t for _, _, t, _, _ in UTTS])
    return root, data, models


def _train(root, data, conf, out, epochs, extra=()):
    return run_module(TRAIN, ["--config", str(conf), "--output_dir", str(out), "--ngpu", "0",
                              "--max_epoch", str(epochs), *data_args(data), *extra], cwd=root)


@pytest.mark.slow
def test_train_resume_checkpoint(assets):
    root, data, models = assets
    conf = train_config(root, models, "smear_moe")
    out = root / "exp_smear"
    proc = _train(root, data, conf, out, 3, ["--num_iters_per_epoch", "8"])
    losses = epoch_losses(proc.stderr)
    assert len(losses) == 3, proc.stderr[-3000:]
    assert losses[-1] < losses[0], losses
    # checkpoint: trainable parameters only
    state = torch.load(out / "3epoch.pth", map_location="cpu", weights_only=True)
    from espnet_llm_asr.inference import load_trained_model

    model, _ = load_trained_model(out / "config.yaml", out / "3epoch.pth")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    assert not any(k.startswith(("llm.", "frontend.encoder.")) for k in state)
    # resume: continues at epoch 4 from the saved checkpoint
    proc2 = _train(root, data, conf, out, 4, ["--num_iters_per_epoch", "8", "--resume", "true"])
    assert "The training was resumed" in proc2.stderr
    assert len(epoch_losses(proc2.stderr)) == 1
    assert (out / "4epoch.pth").exists()
    # n-best averaging ran on the trainable-only checkpoints
    assert (out / "valid.acc.ave.pth").exists()


@pytest.mark.parametrize("frontend", ["linear", "conv", "mono", "multi", "dense", "hard_moe", "cif", "cif_smear"])
def test_every_projector_trains_one_step(assets, frontend):
    """One optimizer step of each projector through ESPnet's trainer (in-process)."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.task import LLMASRTask

    root, data, models = assets
    conf = train_config(root, models, frontend)
    out = root / f"exp_{frontend}"
    LLMASRTask.main(cmd=["--config", str(conf), "--output_dir", str(out), "--ngpu", "0",
                         "--max_epoch", "1", "--num_iters_per_epoch", "1", *data_args(data)])
    states = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    train_stats = states["reporter"]["stats"][1]["train"]
    assert np.isfinite(train_stats["loss"]), train_stats
    model_state = torch.load(out / "1epoch.pth", map_location="cpu", weights_only=True)
    assert all(k.startswith("frontend.projector.") for k in model_state), list(model_state)[:5]


@pytest.mark.slow
def test_overfit_and_decode(assets):
    """A model trained to overfit three utterances transcribes them exactly,
    and batch decoding equals one-by-one decoding."""
    root, data, models = assets
    conf = train_config(root, models, "smear_moe", llm_conf={"freeze": False}, lr=5e-3)
    out = root / "exp_overfit"
    _train(root, data, conf, out, 30, ["--num_iters_per_epoch", "10"])
    outputs = {}
    for bs in (1, 3):
        dec = root / f"decode_bs{bs}"
        run_module(DECODE, ["--asr_train_config", str(out / "config.yaml"),
                            "--asr_model_file", str(out / "latest.pth"),
                            "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
                            "--data_path_and_name_and_type", f"{data / 'utt2lang'},lang,text",
                            "--output_dir", str(dec), "--batch_size", str(bs)], cwd=root)
        outputs[bs] = (dec / "1best_recog" / "text").read_text(encoding="utf-8")
        gates = (dec / "1best_recog" / "gates").read_text(encoding="utf-8").splitlines()
        assert len(gates) == 3 and all(abs(sum(map(float, g.split()[1:])) - 1) < 1e-4 for g in gates)
    assert outputs[1] == outputs[3]
    ref = (data / "text").read_text(encoding="utf-8")
    assert outputs[1] == ref
    # the Python API: three lines from an exp dir to a transcript
    from espnet_llm_asr.inference import Speech2Text

    s2t = Speech2Text(out, model_file=out / "latest.pth")
    uid, lang, text, _, _ = UTTS[0]
    hyp = s2t(root / "wav" / f"{uid}.wav", lang=lang)
    assert hyp.text == text and len(hyp.gates) == 2


@pytest.mark.slow
def test_dumped_features_equal_on_the_fly(assets):
    root, data, models = assets
    out = root / "feats"
    run_module("espnet_llm_asr.bin.dump_encoder_feats",
               ["--encoder", str(models["whisper"]), "--encoder_conf", "{pad_to_30s: false}",
                "--data_dir", str(data), "--out_dir", str(out), "--nj", "2", "--batch_size", "2"], cwd=root)
    import kaldiio
    import soundfile

    from espnet_llm_asr.encoder import WhisperEncoder

    enc = WhisperEncoder(str(models["whisper"]), pad_to_30s=False)
    dumped = dict(kaldiio.load_scp(str(out / "feats.scp")))
    shapes = dict(ln.split() for ln in (out / "feats_shape").read_text().splitlines())
    assert sorted(dumped) == sorted(u for u, *_ in UTTS)
    for uid, *_ in UTTS:
        wav, _ = soundfile.read(root / "wav" / f"{uid}.wav", dtype="float32")
        feats, lens = enc(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
        ref = feats[0, : int(lens[0])].numpy()
        assert dumped[uid].shape == ref.shape
        assert shapes[uid] == f"{ref.shape[0]},{ref.shape[1]}"
        np.testing.assert_allclose(dumped[uid], ref, atol=1e-4)
    # a second run finds every shard done and re-encodes nothing
    mtime = (out / "split2" / "feats.1.ark").stat().st_mtime
    proc = run_module("espnet_llm_asr.bin.dump_encoder_feats",
                      ["--encoder", str(models["whisper"]), "--data_dir", str(data),
                       "--out_dir", str(out), "--nj", "2"], cwd=root)
    assert "already done" in proc.stderr
    assert (out / "split2" / "feats.1.ark").stat().st_mtime == mtime


def test_decoding_faults_and_resume(assets, monkeypatch):
    """One failing utterance becomes an empty hypothesis listed in `failed`; a job killed
    mid-way decodes only the missing utterances when re-run."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.bin import llm_asr_inference as inf
    from espnet_llm_asr.inference import Speech2Text
    from espnet_llm_asr.task import LLMASRTask

    root, data, models = assets
    conf = train_config(root, models, "mono")
    out = root / "exp_faults"
    LLMASRTask.main(cmd=["--config", str(conf), "--output_dir", str(out), "--ngpu", "0",
                         "--max_epoch", "1", "--num_iters_per_epoch", "1", *data_args(data)])
    bad_len = int(1.0 * 16000)  # UTTS[1] is 1.0 s long
    decoded = []
    real_batch = Speech2Text.batch

    def flaky_batch(self, speeches, langs=None):
        if any(len(s) == bad_len for s in speeches):
            raise RuntimeError("simulated CUDA OOM")
        decoded.extend(len(s) for s in speeches)
        return real_batch(self, speeches, langs)

    monkeypatch.setattr(Speech2Text, "batch", flaky_batch)
    cmd = ["--asr_train_config", str(out / "config.yaml"), "--asr_model_file", str(out / "1epoch.pth"),
           "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
           "--data_path_and_name_and_type", f"{data / 'utt2lang'},lang,text",
           "--output_dir", str(root / "dec_faults"), "--batch_size", "1", "--num_workers", "0"]
    inf.main(cmd)
    res = root / "dec_faults" / "1best_recog"
    text = dict((ln.split(" ", 1) + [""])[:2] for ln in (res / "text").read_text().splitlines())
    assert sorted(text) == sorted(u for u, *_ in UTTS)
    assert text[UTTS[1][0]] == ""
    assert (res / "failed").read_text().startswith(f"{UTTS[1][0]} RuntimeError: simulated CUDA OOM")
    assert not (res / "alphas").exists() and not (res / "cif_count").exists()  # not a CIF projector

    # a crash after the first utterance: the re-run decodes only the other two
    monkeypatch.setattr(Speech2Text, "batch", real_batch)
    calls = []

    def crash_after_one(self, speeches, langs=None):
        if calls:
            raise KeyboardInterrupt  # like a kill: not caught as a decoding fault
        calls.append(len(speeches))
        return real_batch(self, speeches, langs)

    monkeypatch.setattr(Speech2Text, "batch", crash_after_one)
    cmd[cmd.index(str(root / "dec_faults"))] = str(root / "dec_resume")
    with pytest.raises(KeyboardInterrupt):
        inf.main(cmd)
    res = root / "dec_resume" / "1best_recog"
    assert not (res / "text").exists() and len((res / ".partial.jsonl").read_text().splitlines()) == 1
    decoded.clear()
    monkeypatch.setattr(Speech2Text, "batch", flaky_batch)
    bad_len = -1  # nothing fails now
    inf.main(cmd)
    assert len(decoded) == 2
    assert len((res / "text").read_text().splitlines()) == 3 and not (res / ".partial.jsonl").exists()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(assets):
    """SIGKILL during epoch 2, then --resume true: the final weights equal an
    uninterrupted run with the same seed (to 1e-5; ESPnet re-seeds every epoch)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tiny_setup import ROOT

    root, data, models = assets
    conf = train_config(root, models, "smear_moe")
    common = ["--config", str(conf), "--ngpu", "0", "--max_epoch", "3", "--num_iters_per_epoch", "30",
              "--batch_size", "1", *data_args(data)]
    ref = root / "exp_uninterrupted"
    _train(root, data, conf, ref, 3, ["--num_iters_per_epoch", "30", "--batch_size", "1"])

    out = root / "exp_killed"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", TRAIN, *common, "--output_dir", str(out)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "1epoch.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # well inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "3epoch.pth").exists(), "training finished before the kill; make epochs longer"
    run_module(TRAIN, [*common, "--output_dir", str(out), "--resume", "true"], cwd=root)
    a = torch.load(ref / "3epoch.pth", weights_only=True)
    b = torch.load(out / "3epoch.pth", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)


def test_cif_decoding_writes_alphas(assets):
    """A CIF projector's decoding writes `alphas`: one weight per encoder frame of each
    utterance (unpadded, in a batch of different lengths), whose sum gives `cif_count`
    by the projector's inference rule (floor(sum / threshold), plus a tail vector when
    the remainder reaches tail_threshold, at least one).  Other projectors write none."""
    import math

    import espnet_llm_asr  # noqa: F401
    import soundfile

    from espnet_llm_asr.bin import llm_asr_inference as inf
    from espnet_llm_asr.encoder import WhisperEncoder
    from espnet_llm_asr.task import LLMASRTask

    root, data, models = assets
    conf = train_config(root, models, "cif")
    out = root / "exp_cif_alphas"
    LLMASRTask.main(cmd=["--config", str(conf), "--output_dir", str(out), "--ngpu", "0",
                         "--max_epoch", "1", "--num_iters_per_epoch", "1", *data_args(data)])
    dec = root / "dec_cif_alphas"
    inf.main(["--asr_train_config", str(out / "config.yaml"), "--asr_model_file", str(out / "1epoch.pth"),
              "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
              "--output_dir", str(dec), "--batch_size", "3", "--num_workers", "0", "--max_new_tokens", "2"])
    res = dec / "1best_recog"
    alphas = {k: [float(v) for v in vals.split()]
              for k, vals in (ln.split(" ", 1) for ln in (res / "alphas").read_text().splitlines())}
    counts = {k: int(v) for k, v in (ln.split() for ln in (res / "cif_count").read_text().splitlines())}
    assert sorted(alphas) == sorted(counts) == sorted(u for u, *_ in UTTS)

    enc = WhisperEncoder(str(models["whisper"]), pad_to_30s=False)
    threshold, tail = 1.0, 0.45  # the cif projector's defaults, which train_config keeps
    for uid, *_ in UTTS:
        a = alphas[uid]
        n_samples = soundfile.info(str(root / "wav" / f"{uid}.wav")).frames
        assert len(a) == int(enc.output_lengths(torch.tensor([n_samples]))[0])  # 50 Hz encoder frames
        assert all(0.0 < v < 1.0 for v in a)  # sigmoid weights: none of the padding's zeros
        # the written weights have 4 decimals: allow their rounding in the sum
        slack = len(a) * 0.5e-4 + 1e-5

        def rule(total):
            full = math.floor(total / threshold)
            return max(1, full + (total / threshold - full >= tail / threshold))

        total = sum(a)
        assert counts[uid] in {rule(total - slack), rule(total + slack)}, (uid, total, counts[uid])


def test_specaug_masks_encoder_features_in_training_only(assets):
    """``specaug: specaug`` (ESPnet's SpecAug) masks the projector's input while
    training and never in decoding; the model trains and saves with it."""
    import yaml

    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.inference import load_trained_model
    from espnet_llm_asr.task import LLMASRTask

    root, data, models = assets
    conf_path = train_config(root, models, "mono")
    conf = yaml.safe_load(conf_path.read_text())
    conf["specaug"] = "specaug"
    conf["specaug_conf"] = {"apply_time_warp": False, "apply_freq_mask": True,
                            "freq_mask_width_range": [8, 16], "num_freq_mask": 1,
                            "apply_time_mask": True, "time_mask_width_range": [2, 4], "num_time_mask": 1}
    conf_path = root / "train_specaug.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    out = root / "exp_specaug"
    LLMASRTask.main(cmd=["--config", str(conf_path), "--output_dir", str(out), "--ngpu", "0",
                         "--max_epoch", "1", "--num_iters_per_epoch", "2", *data_args(data)])
    model, _ = load_trained_model(out / "config.yaml", out / "1epoch.pth")
    assert type(model.specaug).__name__ == "SpecAug"

    seen = []
    model.frontend.projector.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    feats = torch.randn(2, 40, model.frontend.input_dim) + 3.0  # no exact zeros of its own
    lengths = torch.tensor([40, 30])
    text = torch.tensor([[5, 6], [7, -1]])
    model.train()
    model(feats, lengths, text, torch.tensor([2, 1]), lang=torch.tensor([[0], [1]]))
    assert (seen[-1] == 0).any(dim=-1).float().mean() > 0.2  # frequency masks zero dims in every frame
    model.eval()
    with torch.no_grad():
        model(feats, lengths, text, torch.tensor([2, 1]), lang=torch.tensor([[0], [1]]))
    assert torch.equal(seen[-1], feats)


@pytest.mark.slow
def test_lora_hold_through_espnet_resume(assets):
    """model_conf.hold_steps.lora=6 with 4 batches an epoch: epoch 1 leaves the adapters at their
    start (lora_B zero), the count survives --resume, and epoch 2 trains them from batch 7 on."""
    root, data, models = assets
    llm_conf = {"freeze": True, "lora_conf": {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}}
    conf = train_config(root, models, "mono", llm_conf=llm_conf)
    out = root / "exp_lora_hold"
    extra = ["--num_iters_per_epoch", "4", "--model_conf", "hold_steps.lora=6"]
    _train(root, data, conf, out, 1, extra)
    first = torch.load(out / "1epoch.pth", map_location="cpu", weights_only=True)
    lora_b = [k for k in first if "lora_B" in k]
    assert lora_b and all(first[k].abs().sum() == 0 for k in lora_b)
    assert int(first["train_batches"]) == 4
    proc = _train(root, data, conf, out, 2, extra + ["--resume", "true"])
    assert "The training was resumed" in proc.stderr
    second = torch.load(out / "2epoch.pth", map_location="cpu", weights_only=True)
    assert int(second["train_batches"]) == 8
    assert any(second[k].abs().sum() > 0 for k in lora_b)
    assert "lora_held=0.500" in proc.stderr  # batches 5-6 held, 7-8 not


_train_in_process = train_in_process


def test_joint_ctc_decoding(assets):
    """Decoding with ctc_weight: a model trained with the auxiliary CTC (and a blank offset) decodes a batch
    as it decodes each utterance alone (greedy and beam search), ctc_weight 0 is the
    LLM-only decoding, and a model trained without the CTC is refused before decoding."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.inference import Speech2Text
    from espnet_llm_asr.task import LLMASRTask

    root, data, models = assets
    conf = train_config(root, models, "cif_smear")
    out = _train_in_process(assets, "cif_smear", "exp_joint_ctc", "ctc_weight=1.0", "ctc_blank_bias=5.0")
    wavs = [root / "wav" / f"{uid}.wav" for uid, *_ in UTTS]
    langs = [lang for _, lang, *_ in UTTS]
    base = Speech2Text(out, model_file=out / "1epoch.pth", max_new_tokens=6)
    llm_only = [h.tokens for h in base.batch(wavs, langs)]
    for beams in (1, 2):
        s2t = Speech2Text(out, model_file=out / "1epoch.pth", max_new_tokens=6, num_beams=beams, ctc_weight=0.6)
        batched = s2t.batch(wavs, langs)
        alone = [s2t(w, lang=lang) for w, lang in zip(wavs, langs)]
        assert [h.tokens for h in batched] == [h.tokens for h in alone]
        assert all(np.isfinite(h.score) for h in batched)
    # the trained blank offset came back with the checkpoint, and decoding's CTC is the model's
    assert float(s2t.model.ctc_blank_bias) != 5.0
    calls, ctc_log_probs = [], s2t.model.ctc_log_probs
    s2t.model.ctc_log_probs = lambda embeds, **kw: calls.append(embeds.shape) or ctc_log_probs(embeds, **kw)
    s2t(wavs[0], lang=langs[0])
    assert len(calls) == 1
    zero = Speech2Text(out, model_file=out / "1epoch.pth", max_new_tokens=6, ctc_weight=0.0)
    assert [h.tokens for h in zero.batch(wavs, langs)] == llm_only

    no_ctc = root / "exp_no_ctc"
    LLMASRTask.main(cmd=["--config", str(conf), "--output_dir", str(no_ctc), "--ngpu", "0", "--max_epoch", "1",
                         "--num_iters_per_epoch", "1", *data_args(data)])
    with pytest.raises(ValueError, match="model_conf.ctc_weight > 0"):
        Speech2Text(no_ctc, model_file=no_ctc / "1epoch.pth", ctc_weight=0.5)


def test_ctc_vocab_train_text_is_resolved_into_the_config(assets):
    """model_conf.ctc_vocab: train_text: the task writes the training transcripts' token ids into
    config.yaml, decoding rebuilds the same restricted CTC from them, and joint decoding runs
    with it, batched as alone."""
    import yaml

    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.ctc_vocab import transcript_token_ids
    from espnet_llm_asr.inference import Speech2Text

    root, data, models = assets
    out = _train_in_process(assets, "smear_moe", "exp_ctc_vocab", "ctc_weight=1.0", "ctc_vocab=train_text")
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["model_conf"]["ctc_vocab"]
    s2t = Speech2Text(out, model_file=out / "1epoch.pth", max_new_tokens=6, ctc_weight=0.5)
    expected = transcript_token_ids(str(data / "text"), s2t.model.llm.tokenizer)
    assert saved == expected and len(expected) > 1
    assert s2t.model.ctc_vocab.ids.tolist() == sorted(set(expected) | {s2t.model.llm.pad_token_id})
    wavs = [root / "wav" / f"{uid}.wav" for uid, *_ in UTTS]
    langs = [lang for _, lang, *_ in UTTS]
    batched = s2t.batch(wavs, langs)
    assert [h.tokens for h in batched] == [s2t(w, lang=lang).tokens for w, lang in zip(wavs, langs)]
    assert all(np.isfinite(h.score) for h in batched)
