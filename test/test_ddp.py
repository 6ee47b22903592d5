"""Data-parallel training on two CPU processes (torchrun, gloo)."""
import re
import shutil
import sys

import pytest

from tiny_setup import UTTS, ROOT, data_args, make_data_dir, make_tiny_models, train_config


GLOO_ABORT = "terminate called without an active exception"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, cwd, timeout=300):
    import os
    import subprocess

    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}:{ROOT / 'test'}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    data = make_data_dir(tmp_path)
    models = make_tiny_models(tmp_path, [t for _, _, t, _, _ in UTTS])
    conf = train_config(tmp_path, models, "smear_moe")

    # both ranks hold the same averaged gradients
    proc = _torchrun([str(ROOT / "test" / "ddp_grad_check.py"), "--config", str(conf),
                      "--data_dir", str(data)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = re.findall(r"RANK(\d) params=(\d+) nonzero=(\d+) rank_diff=([0-9.e+-]+) mean_diff=([0-9.e+-]+)", proc.stdout)
    assert sorted(r for r, *_ in lines) == ["0", "1"], proc.stdout

    # the real train binary runs under torchrun as an external launcher
    out = tmp_path / "exp_ddp"
    train = ["-m", "espnet_llm_asr.bin.llm_asr_train", "--config", str(conf),
             "--output_dir", str(out), "--ngpu", "0", "--multiprocessing_distributed", "false",
             "--dist_backend", "gloo", "--max_epoch", "1", "--batch_size", "2", *data_args(data)]
    proc = _torchrun(train, tmp_path)
    if proc.returncode != 0 and GLOO_ABORT in proc.stderr and "1epoch results" not in proc.stderr:
        # a rank now and then aborts in gloo's C++ layer as training starts (about 1 run in 4 on
        # this 2-core machine, at earlier commits too; cause not found): one fresh launch, reported
        print("first launch: a rank aborted in gloo (terminate called without an active exception); relaunching")
        shutil.rmtree(out, ignore_errors=True)
        proc = _torchrun(train, tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (out / "1epoch.pth").exists()
    assert "1epoch results" in proc.stderr
    assert "[localhost:0/2]" in proc.stderr or ":0/2]" in proc.stderr  # rank 0 of a world of 2
