"""Benchmark parts that need a whole LLM-ASR model: decoding, CIF, dumped features, training memory.

* Decoding (part 2): RTF and utt/s at batch 1, 8 and 16 (hypotheses compared
  to batch 1), smear_moe vs mono decoding time.
* CIF (part 3): LLM input positions per second of audio, stride 5 vs CIF
  (untrained and fitted to the transcripts), decoding time cif vs mono.
* Dumped features (part 4): one training step on dumped features vs encoding
  on the fly, for the default tiny encoder and a Whisper-large-v3-sized one.
* Memory (part 5): peak RSS of a short training run in a child process and
  the saved checkpoint's size vs the trainable parameters' bytes.

Models and utterances come from :mod:`espnet_llm_asr.benchmark.assets`.
Imports common, assets and system.
"""
from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from espnet_llm_asr.benchmark.assets import (DEFAULT_PROJECTOR_CONF, Assets, Utt, build_model, make_assets,
                                             pad_waves, trained_model)
from espnet_llm_asr.benchmark.common import BenchSettings, best_time
from espnet_llm_asr.benchmark.system import build_sized_whisper, encoder_dims, time_encoder_scaled

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RECIPE_TRAIN_CONF = ROOT / "egs2" / "indic" / "asr1" / "conf" / "train_smear_moe.yaml"
#: the recipe's decoding options (conf/decode.yaml)
DECODE_CONF = dict(num_beams=1, max_new_tokens=120, max_tokens_per_second=25.0)


# ---------------------------------------------------------------------- decoding helpers
def _lang_tensor(model, utts: List[Utt]) -> Optional[torch.Tensor]:
    if not model.lang_list or any(u.lang not in model.lang_list for u in utts):
        return None
    return torch.tensor([model.lang_list.index(u.lang) for u in utts]).view(-1, 1)


def decode_conf(settings: Optional[BenchSettings] = None) -> Dict:
    """:data:`DECODE_CONF`; quick mode caps every hypothesis at 8 tokens."""
    return dict(DECODE_CONF, max_new_tokens=8) if settings is not None and settings.quick else dict(DECODE_CONF)


def decode(model, utts: List[Utt], batch_size: int, speech: Optional[List[torch.Tensor]] = None,
           conf: Optional[Dict] = None) -> Tuple[List[List[int]], float]:
    """Greedy-decode ``utts`` in batches of ``batch_size`` (given order) with ``conf``
    (default :data:`DECODE_CONF`).

    ``speech``: per-utterance (T, D) dumped features to decode instead of the waveforms.
    Returns token ids per utterance and wall seconds.
    """
    import time

    hyps: List[List[int]] = []
    start = time.perf_counter()
    for i in range(0, len(utts), batch_size):
        chunk = utts[i: i + batch_size]
        if speech is None:
            x, lens = pad_waves(chunk)
        else:
            feats = speech[i: i + batch_size]
            lens = torch.tensor([f.size(0) for f in feats])
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        out, _, _ = model.generate(x, lens, _lang_tensor(model, chunk), **(conf or DECODE_CONF))
        hyps.extend(out)
    return hyps, time.perf_counter() - start


def compare_decoding(models: Dict[str, object], utts: List[Utt], batch_size: int, repeats: int,
                     speech: Optional[List[torch.Tensor]] = None, conf: Optional[Dict] = None
                     ) -> Dict[str, Tuple[List[List[int]], float]]:
    """Decode with every model in turn, ``repeats`` rounds (a load change hits all alike);
    per model: hypotheses of the first round and the best time.  Warm-up first."""
    for model in models.values():
        decode(model, utts[:1], 1, None if speech is None else speech[:1], conf)
    out: Dict[str, Tuple[List[List[int]], float]] = {}
    for _ in range(max(1, repeats)):
        for name, model in models.items():
            hyps, secs = decode(model, utts, batch_size, speech, conf)
            out[name] = (out[name][0], min(secs, out[name][1])) if name in out else (hyps, secs)
    return out


def _decode_conf_text(conf: Dict) -> str:
    return (f"greedy, per-utterance cap ceil({conf['max_tokens_per_second']:g} tokens × seconds), "
            f"at most {conf['max_new_tokens']} tokens (conf/decode.yaml)")


# ---------------------------------------------------------------------- part 2: decoding
def bench_decoding(settings: BenchSettings, assets: Assets) -> Dict[str, object]:
    """RTF at batch 1, utt/s at batch 1, 8 and 16 with the hypotheses compared to batch 1,
    and smear_moe vs mono decoding time (batch 1)."""
    if settings.asr_exp:
        model, label = trained_model(settings), f"trained model {settings.asr_exp}"
    else:
        model = build_model(assets)
        label = ("default model (tiny encoder d_model 256 × 4 layers, smear_moe hidden 512 × 4 experts, "
                 "tiny Llama 256 × 4 layers), random weights" if not settings.quick else "quick toy model")
        if not assets.random_models:
            label = f"tiny models of {settings.models_dir}, random smear_moe projector"
    utts = assets.utts
    audio_s = sum(u.seconds for u in utts)
    conf = decode_conf(settings)
    decode(model, utts[:1], 1, conf=conf)  # warm-up (loads the encoder)
    batches, ref = {}, None
    for bs in (1, 8, 16):
        logger.info("decoding: batch %d", bs)
        hyps, secs = decode(model, utts, bs, conf=conf)
        if ref is None:
            ref, ref_s = hyps, secs
        batches[str(bs)] = {"seconds": secs, "utt_per_s": len(utts) / secs, "speedup": ref_s / secs,
                            "rtf": secs / audio_s, "tokens": sum(len(h) for h in hyps),
                            "same_as_batch1": hyps == ref}
    mono = trained_model(settings, "mono") if settings.asr_exp else build_model(assets, "mono")
    cmp_bs = min(8, len(utts))
    logger.info("decoding: smear_moe vs mono, batch %d, %d alternating rounds", cmp_bs, settings.repeats)
    cmp = compare_decoding({"smear_moe": model, "mono": mono}, utts, cmp_bs, settings.repeats, conf=conf)
    (smear_hyps, smear_s), (mono_hyps, mono_s) = cmp["smear_moe"], cmp["mono"]
    smear_tokens, mono_tokens = sum(len(h) for h in smear_hyps), sum(len(h) for h in mono_hyps)
    return {
        "model": label, "num_utts": len(utts), "audio_s": audio_s, "decode_conf": conf,
        "decode_conf_text": _decode_conf_text(conf), "batches": batches,
        "rtf": batches["1"]["rtf"],
        "speedup_16_over_1": batches["16"]["speedup"],
        "hypotheses_equal": all(b["same_as_batch1"] for b in batches.values()),
        "hypotheses": [model.llm.decode(h) for h in ref[:3]],
        "mono_vs_smear": {"batch": cmp_bs, "smear_s": smear_s, "mono_s": mono_s, "ratio": smear_s / mono_s,
                          "smear_tokens": smear_tokens, "mono_tokens": mono_tokens,
                          "ratio_per_token": (smear_s / max(1, smear_tokens)) / (mono_s / max(1, mono_tokens))},
    }


# ---------------------------------------------------------------------- part 3: CIF
def fit_cif_quantity(projector, feats: List[torch.Tensor], targets: List[int], steps: int, lr: float = 1e-2
                     ) -> List[float]:
    """Train only the CIF weight predictor of ``projector`` on its quantity loss
    (sum of alphas -> transcript token count), as CIF training does; returns the losses."""
    from espnet_llm_asr.projectors.cif import quantity_loss

    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    lens = torch.tensor([f.size(0) for f in feats])
    tgt = torch.tensor(targets)
    predictor = projector.cif.predictor
    opt = torch.optim.Adam(predictor.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = quantity_loss(predictor(x, lens), tgt, projector.cif.threshold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def bench_cif(settings: BenchSettings, assets: Assets) -> Dict[str, object]:
    """LLM input positions per second: stride 5 (mono), CIF untrained, CIF after fitting its
    weight predictor to the transcripts' token counts; decoding time cif vs mono."""
    if settings.asr_exp:
        mono, cif = trained_model(settings, "mono"), trained_model(settings, "cif")
    else:
        mono, cif = build_model(assets, "mono"), build_model(assets, "cif")
    utts = assets.utts
    with torch.no_grad():
        feats = []
        for u in utts:
            f, n = mono.frontend.encode(*pad_waves([u]))
            feats.append(f[0, : int(n[0])].float())
    frames = torch.tensor([f.size(0) for f in feats])
    audio_s = sum(u.seconds for u in utts)
    targets = [len(cif.llm.tokenize(u.text)) for u in utts]

    def positions(model) -> int:
        with torch.no_grad():
            return sum(int(model.projector(f[None], torch.tensor([f.size(0)])).lengths[0]) for f in feats)

    stride5 = positions(mono)
    untrained = positions(cif)
    steps = 10 if settings.quick else 300
    losses = fit_cif_quantity(cif.projector, feats, targets, steps)
    fitted = positions(cif)
    rows = {
        "stride 5 (mono, smear_moe, ...)": {"positions": stride5},
        "cif, untrained weight predictor": {"positions": untrained},
        f"cif, weight predictor fitted to the token counts ({steps} steps)": {"positions": fitted},
    }
    for r in rows.values():
        r["positions_per_s"] = r["positions"] / audio_s
        r["ratio_to_stride5"] = r["positions"] / stride5
    bs = min(8, len(utts))
    logger.info("cif: decoding mono and cif (batch %d, %d alternating rounds)", bs, settings.repeats)
    cmp = compare_decoding({"mono": mono, "cif": cif}, utts, bs, settings.repeats, feats, decode_conf(settings))
    (mono_hyps, mono_s), (cif_hyps, cif_s) = cmp["mono"], cmp["cif"]
    return {
        "note": "tiny default encoder features of the same utterances as part 2; positions counted from the "
                "projectors' output lengths; the CIF weight predictor starts random (untrained CIF fires "
                "wherever its random alphas add up) and is then fitted on its quantity loss alone; decoding "
                "from encoder features, random projector MLPs",
        "frames": int(frames.sum()), "audio_s": audio_s, "stride5_expected": int(((frames + 4) // 5).sum()),
        "tokens": sum(targets), "tokens_per_s": sum(targets) / audio_s, "rows": rows,
        "quantity_loss_first_last": [losses[0], losses[-1]],
        "reduction_untrained": stride5 / max(1, untrained), "reduction_fitted": stride5 / max(1, fitted),
        "decode_batch": bs, "mono_decode_s": mono_s, "cif_decode_s": cif_s, "decode_ratio": cif_s / mono_s,
        "mono_tokens": sum(len(h) for h in mono_hyps), "cif_tokens": sum(len(h) for h in cif_hyps),
    }


# ---------------------------------------------------------------------- part 4: dumped features
def _text_batch(model, utts: List[Utt]) -> Tuple[torch.Tensor, torch.Tensor]:
    ids = [model.llm.tokenize(u.text) or [model.llm.eos_token_id] for u in utts]
    lens = torch.tensor([len(i) for i in ids])
    text = torch.full((len(ids), int(lens.max())), -1, dtype=torch.long)
    for i, row in enumerate(ids):
        text[i, : len(row)] = torch.tensor(row)
    return text, lens


def train_step_time(model, speech: torch.Tensor, speech_lengths: torch.Tensor, text: torch.Tensor,
                    text_lengths: torch.Tensor, repeats: int) -> float:
    """Best seconds of one training step: forward (loss), backward, AdamW step, zero grads.

    speech: (B, L) waveforms or (B, T, D) dumped features; text: (B, N) ids padded with -1.
    """
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss, _, _ = model(speech, speech_lengths, text, text_lengths)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (and the encoder's lazy load)
    t = best_time(step, repeats)
    model.eval()
    return t


def bench_dumped(settings: BenchSettings, assets: Assets) -> Dict[str, object]:
    """Training step on dumped features vs on-the-fly encoding, for the default tiny encoder
    (measured end to end) and for a Whisper-large-v3-sized one (its encoding time, scaled
    from the layers run, added to the dumped step of a 1280-dim projector)."""
    from espnet_llm_asr.encoder import WhisperEncoder

    batch = min(16, len(assets.utts))
    utts = assets.utts[:batch]
    wave, wave_lens = pad_waves(utts)
    model = build_model(assets, freeze_llm=False)  # the heavier case: the toy LM is trained too
    text, text_lens = _text_batch(model, utts)
    logger.info("dumped: tiny encoder, batch %d, on the fly", batch)
    fly = train_step_time(model, wave, wave_lens, text, text_lens, settings.repeats)
    with torch.no_grad():
        feats, feat_lens = model.frontend.encode(wave, wave_lens)
    logger.info("dumped: tiny encoder, dumped features")
    dumped = train_step_time(model, feats.clone(), feat_lens, text, text_lens, settings.repeats)
    tiny = {"label": "tiny default (d_model 256, 4 layers)" if not settings.quick else "quick toy encoder",
            "batch": batch, "on_the_fly_s": fly, "dumped_s": dumped, "speedup": fly / dumped,
            "encoder_share": max(0.0, fly - dumped) / fly}
    del model
    gc.collect()

    dims = encoder_dims(settings)
    layers_run = min(settings.encoder_layers, dims["encoder_layers"])
    logger.info("dumped: Whisper-large-v3-sized encoder (%d of %d layers run)", layers_run, dims["encoder_layers"])
    enc = WhisperEncoder(str(build_sized_whisper(assets.root, dims, layers_run)))
    enc_time = time_encoder_scaled(enc, wave, wave_lens, dims["encoder_layers"], settings.repeats)
    frames = int(enc.output_lengths(wave_lens).max())
    lens = enc.output_lengths(wave_lens)
    del enc
    gc.collect()
    big = build_model(assets, freeze_llm=False, with_encoder=False, input_dim=dims["d_model"])
    big_feats = torch.randn(batch, frames, dims["d_model"])
    dumped_big = train_step_time(big, big_feats, lens, text, text_lens, settings.repeats)
    fly_big = dumped_big + enc_time["scaled_s"]
    large = {"label": f"Whisper-large-v3-sized (d_model {dims['d_model']}, {dims['encoder_layers']} layers; "
                      f"{layers_run} run, scaled)", "batch": batch, "on_the_fly_s": fly_big,
             "dumped_s": dumped_big, "speedup": fly_big / dumped_big,
             "encoder_share": enc_time["scaled_s"] / fly_big, "encoder": enc_time}
    return {"note": "default tiny model (smear_moe hidden 512 × 4 experts, toy LM trained too), "
                    f"batch of {batch} utterances ({sum(u.seconds for u in utts):.1f} s of audio), fp32 CPU; "
                    "large-v3 row: on-the-fly = dumped step with 1280-dim features + the frozen encoder's "
                    "time for the batch (no_grad), the encoder timed with "
                    f"{layers_run} layers and with none and scaled to {dims['encoder_layers']} layers",
            "tiny": tiny, "large_v3": large}


# ---------------------------------------------------------------------- part 5: memory
def _train_config(assets: Assets, settings: BenchSettings, batch: int) -> Dict:
    import yaml

    conf = {"frontend": "smear_moe", "frontend_conf": dict(DEFAULT_PROJECTOR_CONF), "llm_conf": {"freeze": False},
            "optim": "adamw", "optim_conf": {"lr": 1e-3}, "batch_type": "unsorted", "num_workers": 0, "seed": 0,
            "best_model_criterion": [["valid", "acc", "max"]], "keep_nbest_models": 1}
    if RECIPE_TRAIN_CONF.exists():
        conf = yaml.safe_load(RECIPE_TRAIN_CONF.read_text(encoding="utf-8"))
    conf["frontend_conf"] = dict(conf.get("frontend_conf") or {}, encoder=str(assets.whisper),
                                 encoder_conf={"pad_to_30s": False})
    conf.update(llm=str(assets.llm), lang_list=str(assets.lang_list), batch_size=batch, max_epoch=1,
                num_iters_per_epoch=1 if settings.quick else 5, use_tensorboard=False, nbest_averaging_interval=0,
                num_att_plot=0)
    conf.pop("scheduler_conf", None) if conf.get("scheduler") is None else None
    return conf


def bench_memory(settings: BenchSettings, assets: Assets) -> Dict[str, object]:
    """Peak RSS of a short default training run (a child process, read with ``os.wait4``)
    on dumped features, and the saved checkpoint's size vs the trainable parameters' bytes."""
    import kaldiio
    import yaml

    from espnet_llm_asr.inference import load_trained_model

    root = assets.root / "train_run"
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    model = build_model(assets)
    utts = assets.utts
    with torch.no_grad(), kaldiio.WriteHelper(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}") as writer:
        shapes = []
        for u in utts:
            f, n = model.frontend.encode(*pad_waves([u]))
            arr = f[0, : int(n[0])].numpy()
            writer(u.uid, arr)
            shapes.append(f"{u.uid} {arr.shape[0]},{arr.shape[1]}")
    del model
    (data / "feats_shape").write_text("\n".join(shapes) + "\n", encoding="utf-8")
    (data / "text").write_text("".join(f"{u.uid} {u.text}\n" for u in utts), encoding="utf-8")
    lang = assets.lang_list.read_text(encoding="utf-8").split()[0]
    (data / "utt2lang").write_text("".join(f"{u.uid} {u.lang or lang}\n" for u in utts), encoding="utf-8")
    conf = _train_config(assets, settings, min(16, len(utts)))
    (root / "train.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    out = root / "exp"
    args = ["--config", str(root / "train.yaml"), "--output_dir", str(out), "--ngpu", "0"]
    for split in ("train", "valid"):
        args += [f"--{split}_data_path_and_name_and_type", f"{data / 'feats.scp'},speech,kaldi_ark",
                 f"--{split}_data_path_and_name_and_type", f"{data / 'text'},text,text",
                 f"--{split}_data_path_and_name_and_type", f"{data / 'utt2lang'},lang,text",
                 f"--{split}_shape_file", str(data / "feats_shape")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = root / "train.log"
    logger.info("memory: training run (%d steps) in a child process, log %s", conf["num_iters_per_epoch"], log)
    with open(log, "w", encoding="utf-8") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "espnet_llm_asr.bin.llm_asr_train", *args],
                                cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark training run failed ({proc.returncode}); see {log}:\n"
                           + log.read_text(encoding="utf-8")[-3000:])
    ckpt = out / "1epoch.pth"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    trained, _ = load_trained_model(out / "config.yaml", None)
    trainable = {n: p for n, p in trained.named_parameters() if p.requires_grad}
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    ptrs = {p.data_ptr() for p in trainable.values()}
    full = trained.state_dict(keep_vars=True)
    ckpt_bytes = ckpt.stat().st_size
    resume = out / "checkpoint.pth"
    lm_state = "frozen" if (conf.get("llm_conf") or {}).get("freeze") else "trained too"
    return {
        "note": f"embedded default config ({RECIPE_TRAIN_CONF.name if RECIPE_TRAIN_CONF.exists() else 'built-in'}: "
                f"{conf.get('frontend')}, toy LM {lm_state}) on dumped features, {conf['num_iters_per_epoch']} steps of batch "
                f"{conf['batch_size']} + validation, ESPnet trainer in a child process, peak RSS from os.wait4",
        "peak_rss_bytes": usage.ru_maxrss * 1024, "steps": conf["num_iters_per_epoch"],
        "trainable_params": sum(p.numel() for p in trainable.values()), "trainable_bytes": trainable_bytes,
        "checkpoint": ckpt.name, "checkpoint_bytes": ckpt_bytes, "checkpoint_ratio": ckpt_bytes / trainable_bytes,
        # a tied weight (lm_head = embeddings) is saved under both names but stored once
        "only_trainable": all(k in trainable or full[k].data_ptr() in ptrs for k in state),
        "saved_not_trainable": sorted(set(state) - set(trainable))[:10],
        "trainable_not_saved": sorted(set(trainable) - set(state))[:10],
        "resume_checkpoint_bytes": resume.stat().st_size if resume.exists() else None,
    }


def run_asr_parts(parts: List[str], settings: BenchSettings) -> Dict[str, object]:
    """Run the requested ASR parts on one set of assets."""
    assets = make_assets(settings)
    funcs = {"decoding": bench_decoding, "cif": bench_cif, "dumped": bench_dumped, "memory": bench_memory}
    out = {}
    for part in parts:
        logger.info("part: %s", part)
        out[part] = funcs[part](settings, assets)
        gc.collect()
    return out
