"""Run by torchrun (2 CPU processes, gloo) from test_ddp.py.

Each rank builds the model from the same train config and seed, wraps it in
DistributedDataParallel, runs one backward pass on ITS OWN utterance, and
then checks that (a) the gradients DDP left on every trainable parameter
are the same on both ranks, and (b) they equal the mean of the two ranks'
local (non-DDP) gradients.
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist

import espnet_llm_asr  # noqa: F401
from espnet_llm_asr.task import LLMASRTask


def batch_for(data_dir, rank, preprocess):
    import soundfile

    uids = sorted(ln.split()[0] for ln in open(f"{data_dir}/wav.scp", encoding="utf-8"))
    uid = uids[rank]
    wav = dict(ln.strip().split(" ", 1) for ln in open(f"{data_dir}/wav.scp", encoding="utf-8"))[uid]
    text = dict(ln.strip().split(" ", 1) for ln in open(f"{data_dir}/text", encoding="utf-8"))[uid]
    lang = dict(ln.strip().split(" ", 1) for ln in open(f"{data_dir}/utt2lang", encoding="utf-8"))[uid]
    speech, _ = soundfile.read(wav, dtype="float32")
    item = preprocess(uid, {"speech": speech, "text": text, "lang": lang})
    return dict(
        speech=torch.from_numpy(item["speech"])[None], speech_lengths=torch.tensor([len(speech)]),
        text=torch.from_numpy(item["text"])[None], text_lengths=torch.tensor([len(item["text"])]),
        lang=torch.from_numpy(item["lang"])[None],
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--data_dir")
    a = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    args = LLMASRTask.get_parser().parse_args(["--config", a.config])
    torch.manual_seed(0)
    model = LLMASRTask.build_model(args)
    batch = batch_for(a.data_dir, rank, LLMASRTask.build_preprocess_fn(args, train=True))
    # warm up the lazily loaded encoder before DDP wraps the model
    model.frontend.encode(batch["speech"], batch["speech_lengths"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    loss, _, _ = model(**batch)
    loss.backward()
    local = [model.get_parameter(n).grad.clone() for n in names]
    model.zero_grad()

    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss, _, _ = ddp(**batch)
    loss.backward()
    synced = [model.get_parameter(n).grad for n in names]

    worst_rank_diff, worst_mean_diff = 0.0, 0.0
    for name, g_local, g in zip(names, local, synced):
        gathered = [torch.zeros_like(g) for _ in range(world)]
        dist.all_gather(gathered, g)
        worst_rank_diff = max(worst_rank_diff, (gathered[0] - gathered[1]).abs().max().item())
        locals_ = [torch.zeros_like(g_local) for _ in range(world)]
        dist.all_gather(locals_, g_local)
        mean = sum(locals_) / world
        worst_mean_diff = max(worst_mean_diff, (g - mean).abs().max().item())
    nonzero = sum(int(g.abs().sum() > 0) for g in synced)
    print(f"RANK{rank} params={len(names)} nonzero={nonzero} "
          f"rank_diff={worst_rank_diff:.3e} mean_diff={worst_mean_diff:.3e}", flush=True)
    ok = worst_rank_diff == 0.0 and worst_mean_diff < 1e-6 and nonzero > 0
    dist.barrier()
    dist.destroy_process_group()
    # gloo's teardown can hang at interpreter exit on some machines: leave at once
    sys.stdout.flush()
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
